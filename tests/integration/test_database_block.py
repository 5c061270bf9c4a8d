"""`DatabaseTarget`: validation without echoing the URL, secrecy, and the engine it builds
(timeouts, pre-ping, SQLite transactions that hold DDL), against a SQLite file.

Prefect's standard block suite for it is in ``test_blocks.py``; the PostgreSQL side of the engine
is checked in ``test_migrations.py``, which owns the throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from blocks import DatabaseTarget

_SECRET = "pg-s3cr3t-never-shown"
_PG_URL = f"postgresql+psycopg://shop:{_SECRET}@127.0.0.1:5432/shop"


@pytest.mark.parametrize(
    ("settings", "field_named"),
    [
        ({"url": f"postgresql+psycopg://shop:{_SECRET}@db:notaport/shop"}, "url"),
        ({"url": f"not a url {_SECRET}"}, "url"),
        ({"url": f"mysql+pymysql://shop:{_SECRET}@db/shop"}, "url"),
        ({"url": f"postgresql://shop:{_SECRET}@db:5432"}, "url"),
        ({"url": _PG_URL, "connect_timeout_seconds": 1}, "connect_timeout_seconds"),
        ({"url": _PG_URL, "connect_timeout_seconds": 0}, "connect_timeout_seconds"),
        ({"url": _PG_URL, "statement_timeout_seconds": 0}, "statement_timeout_seconds"),
        ({"url": _PG_URL, "lock_timeout_seconds": -1}, "lock_timeout_seconds"),
    ],
)
def test_bad_settings_are_refused_naming_the_field_without_the_secret(
    settings: dict, field_named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        DatabaseTarget(**settings)
    message = str(caught.value)
    assert field_named in message
    assert _SECRET not in message


def test_url_is_required() -> None:
    with pytest.raises(ValidationError, match="url"):
        DatabaseTarget()


def test_defaults_and_descriptions_of_the_target() -> None:
    block = DatabaseTarget(url=_PG_URL)
    assert (block.connect_timeout_seconds, block.statement_timeout_seconds) == (5, 60)
    assert block.lock_timeout_seconds == 10
    assert block.backend == "postgresql"
    assert block.target == "postgresql 127.0.0.1:5432/shop"
    plain = DatabaseTarget(url=f"postgresql://shop:{_SECRET}@db.internal/shop")
    assert plain.get_url().drivername == "postgresql+psycopg"  # psycopg 3, not psycopg2
    assert plain.target == "postgresql db.internal:5432/shop"
    sqlite = DatabaseTarget(url="sqlite:////var/lib/shop/shop.db")
    assert (sqlite.backend, sqlite.target) == ("sqlite", "sqlite /var/lib/shop/shop.db")


def test_the_url_never_appears_unless_revealed() -> None:
    block = DatabaseTarget(url=_PG_URL)
    assert _SECRET not in repr(block)
    assert _SECRET not in str(block)
    assert _SECRET not in json.dumps(block.model_dump(mode="json"))
    assert _SECRET not in repr(block.get_url())
    engine = block.get_engine()
    try:
        assert _SECRET not in repr(engine)
    finally:
        engine.dispose()
    assert block.url.get_secret_value() == _PG_URL


def test_postgresql_engine_carries_every_timeout() -> None:
    block = DatabaseTarget(
        url=_PG_URL,
        connect_timeout_seconds=3,
        statement_timeout_seconds=2.5,
        lock_timeout_seconds=0.75,
    )
    engine = block.get_engine()
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping is True
        assert engine.pool._timeout == 3
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        assert not args
        assert kwargs["host"] == "127.0.0.1"
    finally:
        engine.dispose()
    # the connect arguments are what the driver receives on every new connection
    created = _connect_args(block)
    assert created["connect_timeout"] == 3
    assert created["options"] == "-c statement_timeout=2500 -c lock_timeout=750"


def _connect_args(block: DatabaseTarget) -> dict:
    seen: dict = {}
    from sqlalchemy import event

    engine = block.get_engine()

    @event.listens_for(engine, "do_connect")
    def capture(dialect, conn_rec, cargs, cparams):  # type: ignore[no-untyped-def]
        seen.update(cparams)
        raise OperationalError("captured", {}, Exception("not connecting in this test"))

    try:
        with pytest.raises(OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
    return seen


def test_sqlite_engine_is_transactional_for_ddl(tmp_path: Path) -> None:
    block = DatabaseTarget(url=f"sqlite:///{tmp_path / 'shop.db'}")
    engine = block.get_engine()
    try:
        assert engine.pool._pre_ping is True
        with engine.connect() as connection:
            connection.begin()
            connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            with pytest.raises(OperationalError):
                connection.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
            connection.rollback()
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'table'")
            ).scalars()
            assert list(names) == []  # the CREATE TABLE was rolled back with the failure
    finally:
        engine.dispose()


def test_sqlite_writers_wait_for_each_other_within_the_busy_timeout(tmp_path: Path) -> None:
    block = DatabaseTarget(url=f"sqlite:///{tmp_path / 'shop.db'}", statement_timeout_seconds=5)
    engine = block.get_engine()
    other = block.get_engine()
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        holding = threading.Event()
        release = threading.Event()

        def hold_the_write_lock() -> None:
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO orders VALUES (1)")
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        assert holding.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with other.begin() as connection:  # BEGIN IMMEDIATE waits for the holder, then writes
            connection.exec_driver_sql("INSERT INTO orders VALUES (2)")
        waited = time.monotonic() - started
        holder.join(10)
        assert 0.2 < waited < 5
        with other.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM orders").scalar_one() == 2
    finally:
        release.set()
        engine.dispose()
        other.dispose()


def test_sqlite_busy_timeout_is_bounded(tmp_path: Path) -> None:
    block = DatabaseTarget(url=f"sqlite:///{tmp_path / 'shop.db'}", statement_timeout_seconds=0.3)
    engine = block.get_engine()
    other = block.get_engine()
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            started = time.monotonic()
            with pytest.raises(OperationalError, match="locked"), other.begin():
                pass
            assert time.monotonic() - started < 3
    finally:
        engine.dispose()
        other.dispose()


def test_database_target_saves_and_loads_with_the_url_hidden(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    DatabaseTarget(url=_PG_URL, statement_timeout_seconds=30).save("shop-db", overwrite=True)
    loaded = DatabaseTarget.load("shop-db")
    assert loaded.url.get_secret_value() == _PG_URL
    assert loaded.statement_timeout_seconds == 30
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            name="shop-db", block_type_slug="database-target", include_secrets=False
        )
    assert _SECRET not in json.dumps(document.data, default=str)
