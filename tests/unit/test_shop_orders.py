"""Demo shop, ``POST /orders``: the order document, the database URL, which failures are 503, and
the route answered in process against a SQLite file (the HTTP server is ``tests/integration``)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import exc

from sandbox.shop.app import Request, Shop
from sandbox.shop.behaviour import behaviour_for_image
from sandbox.shop.config import ConfigError, settings_from_env
from sandbox.shop.orders import V1_SCHEMA, OrderError, open_orders, parse_order, status_of


def test_an_order_is_a_customer_and_whole_cents() -> None:
    assert parse_order({"customer": " ada ", "amount_cents": 1250}) == ("ada", 1250)
    assert parse_order({"customer": "bob", "amount_cents": 0, "note": "ignored"}) == ("bob", 0)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "JSON object"),
        ({"amount_cents": 1}, "customer"),
        ({"customer": "  ", "amount_cents": 1}, "customer"),
        ({"customer": "x" * 201, "amount_cents": 1}, "customer"),
        ({"customer": "ada"}, "amount_cents"),
        ({"customer": "ada", "amount_cents": 12.5}, "amount_cents"),
        ({"customer": "ada", "amount_cents": True}, "amount_cents"),
        ({"customer": "ada", "amount_cents": -1}, "amount_cents"),
        ({"customer": "ada", "amount_cents": 2**31}, "amount_cents"),
    ],
)
def test_bad_orders_are_refused_naming_the_field(document: object, field: str) -> None:
    with pytest.raises(OrderError, match=field):
        parse_order(document)


def test_the_database_url_is_checked_without_repeating_it() -> None:
    env = {"SHOP_IMAGE": "demo/shop:v1", "SHOP_ROLE": "payments"}
    assert settings_from_env(env).database_url is None
    url = "sqlite:////tmp/shop.db"
    assert settings_from_env(env | {"SHOP_DATABASE_URL": f" {url} "}).database_url == url
    with pytest.raises(ConfigError, match="SHOP_DATABASE_URL") as caught:
        settings_from_env(env | {"SHOP_DATABASE_URL": "mysql://root:s3cret@db/shop"})
    assert "s3cret" not in str(caught.value)
    for bad, message in [
        ("postgresql://u:s3cret@db:notaport/shop", "not a SQLAlchemy URL"),
        ("sqlite+aiosqlite:///tmp/shop.db", "sqlite\\+aiosqlite"),
    ]:
        with pytest.raises(ConfigError, match=message) as caught:
            open_orders(bad)
        assert "s3cret" not in str(caught.value)


class _DriverError(Exception):
    def __init__(self, message: str, *, sqlstate: str | None = None, sqlite_name: str = ""):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.sqlite_errorname = sqlite_name


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (exc.TimeoutError("QueuePool limit reached"), 503),
        (exc.OperationalError("x", {}, _DriverError("connection refused")), 503),
        (exc.OperationalError("x", {}, _DriverError("lock", sqlstate="55P03")), 503),
        (exc.OperationalError("x", {}, _DriverError("shutdown", sqlstate="57P01")), 503),
        (exc.OperationalError("x", {}, _DriverError("lost", sqlstate="08006")), 503),
        (exc.OperationalError("x", {}, _DriverError("busy", sqlite_name="SQLITE_BUSY")), 503),
        (exc.OperationalError("x", {}, _DriverError("gone", sqlite_name="SQLITE_ERROR")), 500),
        (exc.ProgrammingError("x", {}, _DriverError("no table", sqlstate="42P01")), 500),
        (exc.IntegrityError("x", {}, _DriverError("not null", sqlstate="23502")), 500),
    ],
)
def test_only_failures_that_can_pass_later_are_503(error: Exception, status: int) -> None:
    assert status_of(error) == status


@pytest.fixture
def shop_with(tmp_path: Path) -> Iterator[tuple[Shop, Path]]:
    """A payments v1 pod's state, writing to a SQLite file with the v1 ``orders`` table."""
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(V1_SCHEMA["sqlite"])
    env = {
        "SHOP_IMAGE": "demo/shop:v1",
        "SHOP_ROLE": "payments",
        "SHOP_DATABASE_URL": f"sqlite:///{path}",
    }
    settings = settings_from_env(env)
    shop = Shop(settings, behaviour_for_image(settings.image), env)
    try:
        yield shop, path
    finally:
        shop.close()


def _post(shop: Shop, body: bytes) -> tuple[int, dict]:
    request = Request("POST", "/orders", "", {}, body, "127.0.0.1")
    answer = shop.answer(request, shop.route_of("/orders"))
    return answer.status, json.loads(answer.body())


def test_orders_are_inserted_and_answered_with_their_id(shop_with: tuple[Shop, Path]) -> None:
    shop, path = shop_with
    ids = [
        _post(shop, json.dumps({"customer": f"c{i}", "amount_cents": i}).encode())
        for i in range(1, 4)
    ]
    assert [status for status, _ in ids] == [200, 200, 200]
    assert [body["id"] for _, body in ids] == [1, 2, 3]
    assert ids[0][1]["version"] == "v1"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT * FROM orders ORDER BY id").fetchall() == [
            (1, "c1", 1),
            (2, "c2", 2),
            (3, "c3", 3),
        ]
    status, body = _post(shop, b"{not json")
    assert status == 400
    status, body = _post(shop, b'{"customer": "ada"}')
    assert (status, "amount_cents" in body["error"]) == (400, True)


def test_a_database_error_is_a_5xx_naming_it(shop_with: tuple[Shop, Path]) -> None:
    shop, path = shop_with
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE orders")
    status, body = _post(shop, b'{"customer": "ada", "amount_cents": 1}')
    assert status == 500
    assert "no such table: orders" in body["error"]


def test_without_a_database_orders_answer_503() -> None:
    env = {"SHOP_IMAGE": "demo/shop:v1", "SHOP_ROLE": "payments"}
    shop = Shop(settings_from_env(env), behaviour_for_image("demo/shop:v1"), env)
    try:
        assert shop.orders is None
        status, body = _post(shop, b'{"customer": "ada", "amount_cents": 1}')
        assert status == 503
        assert "SHOP_DATABASE_URL is not set" in body["error"]
        get = shop.answer(Request("GET", "/orders", "", {}, b"", "127.0.0.1"), "/orders")
        assert get.status == 405
    finally:
        shop.close()
