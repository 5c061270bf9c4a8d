"""Issue 4's data acceptance, through the real flow: rows written through blue during a rollout
with an expand / backfill / contract migration are all present afterwards (SQLite, PostgreSQL).

Blue v1 (the ``shop`` fixture's two pods) is pointed at a fresh service database by its
Deployment's ``SHOP_DATABASE_URL``; the flow builds green from blue's live manifest, so green
writes to the same database. A writer POSTs orders through the active Service, one after the
other, for the whole run: every order answered 200 (with its row id) must be in the table
afterwards, and none may fail. The migration is portable SQL (one text for both backends):
expand adds a nullable ``amount_eur``, backfill fills it, contract drops ``legacy_note``, a
column v1's table still has but no version writes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bluegreen_shop import NAMESPACE, Shop
from postgres_cluster import new_database
from sqlalchemy import create_engine, inspect, text

from blocks.database import DatabaseTarget
from decisions.migrations import MigrationSpec, MigrationStep, Phase
from flows.blue_green import RolloutOutcome, blue_green
from sandbox.shop.orders import V1_SCHEMA
from tasks.migrations import applied_steps

EXPAND = MigrationStep(
    id="0001-orders-add-amount-eur",
    phase=Phase.EXPAND,
    sql="ALTER TABLE orders ADD COLUMN amount_eur NUMERIC(12, 2)",
)
BACKFILL = MigrationStep(
    id="0002-orders-backfill-amount-eur",
    phase=Phase.BACKFILL,
    sql="UPDATE orders SET amount_eur = amount_cents / 100.0 WHERE amount_eur IS NULL",
)
CONTRACT = MigrationStep(
    id="0003-orders-drop-legacy-note",
    phase=Phase.CONTRACT,
    sql="ALTER TABLE orders DROP COLUMN legacy_note",
)
MIGRATION = MigrationSpec(steps=(EXPAND, BACKFILL, CONTRACT), run_contract=True)
WARM_UP_WRITES = 20  # acknowledged before the flow starts: rows the backfill must fill
ROLLOUT_SECONDS = 60  # bound of the blue Deployment's own rollout onto the database


@dataclass
class Writer:
    """POSTs orders through ``url`` back to back in a thread; keeps every acknowledged id (with
    the version that wrote it) and every failure (what it was), never retrying."""

    url: str
    acknowledged: dict[int, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as client:
            while not self._stop.is_set():
                self.sent += 1
                order = {"customer": f"writer-{self.sent}", "amount_cents": self.sent}
                try:
                    answer = client.post("/orders", json=order)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code == 200:
                    body = answer.json()
                    self.acknowledged[body["id"]] = body["version"]
                else:
                    self.failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                time.sleep(0.005)  # a steady writer, not a flood: two cores run the sandbox

    def wait_for(self, more: int, timeout_seconds: float = 30) -> None:
        target = len(self.acknowledged) + more
        deadline = time.monotonic() + timeout_seconds
        while len(self.acknowledged) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.acknowledged) >= target, self.failures[:5]

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._loop, name="order-writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


@pytest.fixture(params=["sqlite", "postgresql"])
def orders_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new service database with v1's ``orders`` table and a legacy column no one writes."""
    url = new_database(request, request.param, tmp_path)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(V1_SCHEMA[request.param])
            connection.exec_driver_sql("ALTER TABLE orders ADD COLUMN legacy_note TEXT")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def blue_writing(shop: Shop, orders_db: str) -> tuple[Shop, str]:
    """The ``shop`` fixture's blue v1, rolled onto ``SHOP_DATABASE_URL=orders_db``."""
    env = [{"name": "SHOP_DATABASE_URL", "value": orders_db}]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "shop", "env": env}]}}}}
    with shop.k8s.get_api_client() as api:
        shop.k8s.apps_v1(api).patch_namespaced_deployment(f"{shop.service}-blue", NAMESPACE, patch)
    deadline = time.monotonic() + ROLLOUT_SECONDS
    while not _rolled_out(shop.deployment("blue")):
        assert time.monotonic() < deadline, f"blue not rolled out: {shop.deployment('blue')}"
        time.sleep(0.1)
    return shop, orders_db


def _rolled_out(deployment: Any) -> bool:
    """Every pod of the Deployment runs its current template and is available (no old pod)."""
    if deployment is None or deployment.status is None:
        return False
    status, wanted = deployment.status, deployment.spec.replicas
    return (status.observed_generation or 0) >= deployment.metadata.generation and (
        status.updated_replicas,
        status.available_replicas,
        status.replicas,
    ) == (wanted, wanted, wanted)


@dataclass(frozen=True)
class Table:
    columns: set[str]
    ledger: frozenset[str]
    rows: dict[int, tuple[int, Any]]  # id -> (amount_cents, amount_eur)


def _table(url: str) -> Table:
    engine = create_engine(url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("orders")}
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, amount_cents, amount_eur FROM orders"))
            by_id = {row.id: (row.amount_cents, row.amount_eur) for row in rows}
        return Table(columns, applied_steps(engine), by_id)
    finally:
        engine.dispose()


def _rollout(shop: Shop, url: str, image: str) -> tuple[Any, Writer, list[int]]:
    """Run the flow to ``image`` while the writer writes; (result, writer, ids acknowledged
    before the flow started). Writes must have been acknowledged while the flow ran."""
    params = shop.params(image, migration=MIGRATION)
    with Writer(shop.url) as writer:
        writer.wait_for(WARM_UP_WRITES)
        before = list(writer.acknowledged)
        started = time.monotonic()
        result = blue_green(params=params, kubernetes=shop.k8s, database=DatabaseTarget(url=url))
        elapsed = time.monotonic() - started
        during = len(writer.acknowledged) - len(before)
        writer.wait_for(10)  # whoever serves now keeps writing on the migrated schema
    print(f"{image}: flow {elapsed:.1f} s, {during} orders acknowledged while it ran")
    assert during > 0, "no write overlapped the rollout"
    return result, writer, before


def test_promotion_keeps_every_row_written_through_blue(blue_writing: tuple[Shop, str]) -> None:
    shop, url = blue_writing
    result, writer, before = _rollout(shop, url, "demo/shop:v2")

    assert result.rollout is RolloutOutcome.PROMOTED, result.reason
    assert result.migrations_applied == (EXPAND.id, BACKFILL.id, CONTRACT.id)
    steps = [entry.step for entry in result.timeline]
    assert steps.index("migrate_expand") < steps.index("migrate_backfill")
    assert steps.index("migrate_backfill") < steps.index("migrate_contract")
    assert writer.failures == [], writer.failures[:5]
    assert set(writer.acknowledged.values()) == {"v1", "v2"}  # through blue, then green
    table = _table(url)
    assert table.ledger == {EXPAND.id, BACKFILL.id, CONTRACT.id}
    assert "legacy_note" not in table.columns
    assert "amount_eur" in table.columns
    missing = sorted(set(writer.acknowledged) - set(table.rows))
    assert missing == [], f"{len(missing)} acknowledged orders are not in the table"
    for order_id in before:  # written before the backfill: filled by it
        cents, eur = table.rows[order_id]
        assert eur is not None
        assert round(float(eur) * 100) == cents


def test_rollback_keeps_every_row_and_never_contracts(blue_writing: tuple[Shop, str]) -> None:
    shop, url = blue_writing
    result, writer, _ = _rollout(shop, url, "demo/shop:v3-broken")

    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert result.migrations_applied == (EXPAND.id, BACKFILL.id)
    assert "migrate_contract" not in {entry.step for entry in result.timeline}
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert writer.failures == [], writer.failures[:5]
    assert set(writer.acknowledged.values()) == {"v1"}  # green never took traffic
    table = _table(url)
    assert table.ledger == {EXPAND.id, BACKFILL.id}  # expand and backfill kept
    assert {"legacy_note", "amount_eur"} <= table.columns  # contract never ran
    missing = sorted(set(writer.acknowledged) - set(table.rows))
    assert missing == [], f"{len(missing)} acknowledged orders are not in the table"
