"""`tasks.migrations` against real databases: a SQLite file and a throwaway PostgreSQL cluster.

The PostgreSQL cluster is the session's ``postgres`` fixture (``tests/postgres_cluster.py``,
shared with the end-to-end tests): skipped without the server binaries, failed under CI.

Every task runs inside a small flow on the session's Prefect test server.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import PostgresCluster, free_port
from prefect import flow
from pydantic import SecretStr
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, select, text

from blocks import DatabaseTarget
from decisions.migrations import MigrationSpec, MigrationStep, Phase
from runbooks.errors import (
    ConflictError,
    InvalidRequestError,
    PermanentError,
    UnavailableError,
    is_transient,
)
from tasks.migrations import (
    LEDGER_TABLE,
    applied_steps,
    apply_migrations,
    checksum,
    from_sqlalchemy,
    ledger,
    sqlite_statements,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    """An empty database of each backend, with the service's v1 ``orders`` table."""
    if request.param == "sqlite":
        target = DatabaseTarget(url=f"sqlite:///{tmp_path / 'shop.db'}")
    else:
        target = DatabaseTarget(url=request.getfixturevalue("postgres").create_database())
    engine = target.get_engine()
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, "
                "amount_cents INTEGER NOT NULL)"
            )
    finally:
        engine.dispose()
    return target


@contextlib.contextmanager
def engine_of(database: DatabaseTarget) -> Iterator[Any]:
    engine = database.get_engine()
    try:
        yield engine
    finally:
        engine.dispose()


# --- the migration of the tests: expand / backfill / contract ------------------------------

_EXPAND_TRIGGER = {
    # old code keeps inserting without amount_eur: a trigger fills it for them
    "sqlite": """
ALTER TABLE orders ADD COLUMN amount_eur NUMERIC;
CREATE TRIGGER orders_amount_eur AFTER INSERT ON orders
WHEN NEW.amount_eur IS NULL
BEGIN
  UPDATE orders SET amount_eur = NEW.amount_cents / 100.0 WHERE id = NEW.id;
END;
""",
    "postgresql": """
ALTER TABLE orders ADD COLUMN amount_eur NUMERIC(12, 2);
CREATE FUNCTION orders_amount_eur() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.amount_eur IS NULL THEN NEW.amount_eur := NEW.amount_cents / 100.0; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER orders_amount_eur BEFORE INSERT ON orders
FOR EACH ROW EXECUTE FUNCTION orders_amount_eur();
""",
}
_CONTRACT = {
    "sqlite": "DROP TRIGGER orders_amount_eur; ALTER TABLE orders DROP COLUMN amount_cents;",
    "postgresql": (
        "DROP TRIGGER orders_amount_eur ON orders; DROP FUNCTION orders_amount_eur(); "
        "ALTER TABLE orders DROP COLUMN amount_cents;"
    ),
}


def shop_migration(backend: str, *, run_contract: bool = False) -> MigrationSpec:
    return MigrationSpec(
        steps=(
            MigrationStep(
                id="0001-orders-currency",
                phase=Phase.EXPAND,
                sql="ALTER TABLE orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR'",
            ),
            MigrationStep(
                id="0002-orders-amount-eur", phase=Phase.EXPAND, sql=_EXPAND_TRIGGER[backend]
            ),
            MigrationStep(
                id="0003-backfill-amount-eur",
                phase=Phase.BACKFILL,
                sql="UPDATE orders SET amount_eur = amount_cents / 100.0 WHERE amount_eur IS NULL",
            ),
            MigrationStep(
                id="0004-drop-amount-cents", phase=Phase.CONTRACT, sql=_CONTRACT[backend]
            ),
        ),
        run_contract=run_contract,
    )


@flow(name="migrate-shop", persist_result=False)
def migrate(database: DatabaseTarget, spec: MigrationSpec, phase: Phase) -> tuple[str, ...]:
    return apply_migrations(database, spec, phase, runbook_target="shop/orders")


def columns(database: DatabaseTarget, table: str = "orders") -> set[str]:
    with engine_of(database) as engine:
        return {column["name"] for column in inspect(engine).get_columns(table)}


def ledger_rows(database: DatabaseTarget) -> list[Any]:
    with engine_of(database) as engine, engine.connect() as connection:
        return list(connection.execute(select(ledger).order_by(ledger.c.step_id)))


# --- cases ---------------------------------------------------------------------------------


def test_expand_then_backfill_are_applied_in_order_and_recorded(
    prefect_server: str, database: DatabaseTarget
) -> None:
    spec = shop_migration(database.backend)
    with engine_of(database) as engine:
        assert applied_steps(engine) == frozenset()  # no ledger yet
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO orders (id, customer, amount_cents) VALUES (1, 'ada', 1250)"
            )

    assert migrate(database, spec, Phase.EXPAND) == (
        "0001-orders-currency",
        "0002-orders-amount-eur",
    )
    assert {"currency", "amount_eur"} <= columns(database)
    assert migrate(database, spec, Phase.BACKFILL) == ("0003-backfill-amount-eur",)

    with engine_of(database) as engine:
        assert applied_steps(engine) == {
            "0001-orders-currency",
            "0002-orders-amount-eur",
            "0003-backfill-amount-eur",
        }
        with engine.connect() as connection:
            row = connection.execute(text("SELECT currency, amount_eur FROM orders")).one()
    assert row.currency == "EUR"
    assert float(row.amount_eur) == 12.5

    rows = ledger_rows(database)
    by_step = {step.id: step for step in spec.steps}
    assert [r.step_id for r in rows] == [
        "0001-orders-currency",
        "0002-orders-amount-eur",
        "0003-backfill-amount-eur",
    ]
    for r in rows:
        assert r.phase == by_step[r.step_id].phase.value
        assert r.checksum == checksum(by_step[r.step_id].sql)
        assert r.target == "shop/orders"
        assert r.applied_at is not None
    assert [r.applied_at for r in rows] == sorted(r.applied_at for r in rows)


def test_re_running_applies_nothing(prefect_server: str, database: DatabaseTarget) -> None:
    spec = shop_migration(database.backend)
    assert len(migrate(database, spec, Phase.EXPAND)) == 2
    assert len(migrate(database, spec, Phase.BACKFILL)) == 1
    before = ledger_rows(database)
    assert migrate(database, spec, Phase.EXPAND) == ()
    assert migrate(database, spec, Phase.BACKFILL) == ()
    assert ledger_rows(database) == before


def test_changed_sql_of_an_applied_step_is_refused_before_anything_runs(
    prefect_server: str, database: DatabaseTarget
) -> None:
    spec = shop_migration(database.backend)
    migrate(database, spec, Phase.EXPAND)
    before = ledger_rows(database)
    first, *rest = spec.steps
    changed = MigrationSpec(
        steps=(
            first.model_copy(update={"sql": first.sql.replace("'EUR'", "'USD'")}),
            *rest[:1],
            MigrationStep(id="0002b-orders-note", phase=Phase.EXPAND, sql="SELECT 1"),
            *rest[1:],
        )
    )
    with pytest.raises(PermanentError) as caught:
        migrate(database, changed, Phase.EXPAND)
    message = str(caught.value)
    assert message.startswith("migration step '0001-orders-currency' was applied with different")
    assert "\n" not in message
    assert ". " not in message  # one sentence
    assert ledger_rows(database) == before  # the new step did not run either
    # a whitespace-only change (line endings, surrounding blanks) is the same SQL
    reformatted = MigrationSpec(
        steps=(first.model_copy(update={"sql": f"\n  {first.sql}  \r\n"}), *rest)
    )
    assert migrate(database, reformatted, Phase.EXPAND) == ()


def test_a_failing_step_rolls_back_alone_and_the_ledger_stays_consistent(
    prefect_server: str, database: DatabaseTarget
) -> None:
    good = shop_migration(database.backend).steps[:2]
    broken = MigrationStep(
        id="0003-orders-audit",
        phase=Phase.EXPAND,
        sql="CREATE TABLE orders_audit (id INTEGER PRIMARY KEY); "
        "INSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(InvalidRequestError) as caught:
        migrate(database, MigrationSpec(steps=(*good, broken)), Phase.EXPAND)
    assert not is_transient(caught.value)
    assert "'0003-orders-audit'" in str(caught.value)
    assert "rolled back" in str(caught.value)
    assert "no_such_table" in str(caught.value)
    assert isinstance(caught.value.__cause__, sa_exc.DBAPIError)

    with engine_of(database) as engine:
        assert applied_steps(engine) == {"0001-orders-currency", "0002-orders-amount-eur"}
        tables = set(inspect(engine).get_table_names())
    assert "orders_audit" not in tables  # the failed step's first statement was rolled back
    assert {"currency", "amount_eur"} <= columns(database)  # earlier steps stay applied
    assert len(ledger_rows(database)) == 2

    fixed = broken.model_copy(update={"sql": "CREATE TABLE orders_audit (id INTEGER PRIMARY KEY)"})
    assert migrate(database, MigrationSpec(steps=(*good, fixed)), Phase.EXPAND) == (
        "0003-orders-audit",
    )
    assert "orders_audit" in {t for t in _tables(database)}


def _tables(database: DatabaseTarget) -> set[str]:
    with engine_of(database) as engine:
        return set(inspect(engine).get_table_names())


def test_contract_runs_only_when_asked(prefect_server: str, database: DatabaseTarget) -> None:
    spec = shop_migration(database.backend)
    migrate(database, spec, Phase.EXPAND)
    migrate(database, spec, Phase.BACKFILL)
    assert migrate(database, spec, Phase.CONTRACT) == ()
    assert "amount_cents" in columns(database)
    assert "0004-drop-amount-cents" not in {r.step_id for r in ledger_rows(database)}

    asked = shop_migration(database.backend, run_contract=True)
    assert migrate(database, asked, Phase.CONTRACT) == ("0004-drop-amount-cents",)
    assert "amount_cents" not in columns(database)
    assert migrate(database, asked, Phase.CONTRACT) == ()


def test_rows_written_through_blue_during_the_rollout_are_all_present_afterwards(
    prefect_server: str, database: DatabaseTarget
) -> None:
    """Blue (old code: no currency, no amount_eur) keeps inserting while expand and backfill run;
    afterwards every acknowledged row is there, and backfilled."""
    spec = shop_migration(database.backend)
    existing = 500
    with engine_of(database) as engine, engine.begin() as connection:
        connection.execute(
            text("INSERT INTO orders (id, customer, amount_cents) VALUES (:id, :customer, :cents)"),
            [{"id": i, "customer": f"c{i}", "cents": i * 7} for i in range(1, existing + 1)],
        )

    acknowledged: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def blue_writer() -> None:
        engine = database.get_engine()  # the old version's own connection pool
        try:
            for order_id in itertools.count(existing + 1):
                if stop.is_set() or order_id > existing + 20_000:
                    return
                try:
                    with engine.begin() as connection:
                        connection.execute(
                            text(
                                "INSERT INTO orders (id, customer, amount_cents) "
                                "VALUES (:id, :customer, :cents)"
                            ),
                            {"id": order_id, "customer": f"c{order_id}", "cents": order_id * 7},
                        )
                except Exception as error:
                    failures.append(error)
                    return
                acknowledged.append(order_id)
                time.sleep(0.002)
        finally:
            engine.dispose()

    def wait_for_more_writes(count: int) -> None:
        target = len(acknowledged) + count
        deadline = time.monotonic() + 30
        while len(acknowledged) < target and not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acknowledged) >= target, failures

    writer = threading.Thread(target=blue_writer, name="blue-writer")
    writer.start()
    try:
        wait_for_more_writes(20)
        before_migration = len(acknowledged)
        assert migrate(database, spec, Phase.EXPAND) == (
            "0001-orders-currency",
            "0002-orders-amount-eur",
        )
        assert migrate(database, spec, Phase.BACKFILL) == ("0003-backfill-amount-eur",)
        during_migration = len(acknowledged) - before_migration
        wait_for_more_writes(20)  # blue keeps working on the expanded schema
    finally:
        stop.set()
        writer.join(30)
    assert not writer.is_alive()
    assert failures == []
    assert during_migration > 0  # the writes really overlapped the migration

    with engine_of(database) as engine, engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, amount_cents, amount_eur, currency FROM orders ORDER BY id")
        ).all()
    present = {row.id for row in rows}
    assert set(acknowledged) <= present
    assert set(range(1, existing + 1)) <= present
    assert all(row.currency == "EUR" for row in rows)
    missing = [row.id for row in rows if row.amount_eur is None]
    assert missing == []
    assert all(round(float(row.amount_eur) * 100) == row.amount_cents for row in rows)


def test_a_held_lock_is_a_transient_failure_bounded_by_the_block(
    database: DatabaseTarget,
) -> None:
    """Someone holds a lock the migration needs: it gives up within the block's lock/busy timeout
    (instead of queueing every writer behind it) with a transient error, applying nothing."""
    # SQLite waits for a lock up to its busy timeout (statement_timeout_seconds); PostgreSQL up
    # to lock_timeout, which must be shorter than its statement_timeout to be told apart
    waits = 0.3 if database.backend == "sqlite" else 3
    quick = DatabaseTarget(
        url=database.url, statement_timeout_seconds=waits, lock_timeout_seconds=0.3
    )
    spec = shop_migration(database.backend)
    with engine_of(database) as engine, engine.connect() as holder:
        holder.begin()
        if database.backend == "postgresql":
            holder.exec_driver_sql("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        else:
            holder.exec_driver_sql("INSERT INTO orders VALUES (1, 'ada', 100)")
        started = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            apply_migrations.fn(quick, spec, Phase.EXPAND, runbook_target="shop/orders")
        elapsed = time.monotonic() - started
        holder.rollback()
    assert elapsed < 5
    assert is_transient(caught.value)
    assert "retry later" in str(caught.value)
    with engine_of(database) as engine:
        assert applied_steps(engine) == frozenset()


def test_an_unreachable_database_is_transient(postgres: PostgresCluster) -> None:
    closed = free_port()
    block = DatabaseTarget(
        url=f"postgresql+psycopg://postgres:{postgres.password}@127.0.0.1:{closed}/shop",
        connect_timeout_seconds=2,
    )
    started = time.monotonic()
    with engine_of(block) as engine, pytest.raises(UnavailableError) as caught:
        applied_steps(engine)
    assert time.monotonic() - started < 10
    assert postgres.password not in str(caught.value)
    assert f"of postgresql 127.0.0.1:{closed}/shop failed: connection failed" in str(caught.value)
    assert caught.value.target == f"postgresql 127.0.0.1:{closed}/shop"


def test_the_postgresql_engine_sets_its_timeouts_on_the_server(postgres: PostgresCluster) -> None:
    block = DatabaseTarget(
        url=SecretStr(postgres.url()), statement_timeout_seconds=2.5, lock_timeout_seconds=0.75
    )
    with engine_of(block) as engine, engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar_one() == "2500ms"
        assert connection.exec_driver_sql("SHOW lock_timeout").scalar_one() == "750ms"
        assert connection.exec_driver_sql("SHOW application_name").scalar_one() == "runbooks"
        with pytest.raises(sa_exc.OperationalError) as caught:
            connection.exec_driver_sql("SELECT pg_sleep(5)")
    translated = from_sqlalchemy(caught.value, "a slow query")
    assert isinstance(translated, InvalidRequestError)
    assert "statement_timeout_seconds" in str(translated)


# --- translation of driver errors (the SQLSTATEs and SQLite codes we classify) ---------------


class _FakeDriverError(Exception):
    def __init__(self, message: str, **attributes: Any):
        super().__init__(message)
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            sa_exc.OperationalError(
                "x", {}, _FakeDriverError("deadlock detected", sqlstate="40P01")
            ),
            ConflictError,
        ),
        (
            sa_exc.OperationalError(
                "x", {}, _FakeDriverError("could not serialize", sqlstate="40001")
            ),
            ConflictError,
        ),
        (
            sa_exc.OperationalError("x", {}, _FakeDriverError("lock timeout", sqlstate="55P03")),
            UnavailableError,
        ),
        (
            sa_exc.OperationalError("x", {}, _FakeDriverError("admin shutdown", sqlstate="57P01")),
            UnavailableError,
        ),
        (
            sa_exc.OperationalError("x", {}, _FakeDriverError("conn lost", sqlstate="08006")),
            UnavailableError,
        ),
        (
            sa_exc.OperationalError("x", {}, _FakeDriverError("connection refused")),
            UnavailableError,
        ),
        (
            sa_exc.OperationalError(
                "x", {}, _FakeDriverError("database is locked", sqlite_errorname="SQLITE_BUSY")
            ),
            UnavailableError,
        ),
        (
            sa_exc.OperationalError(
                "x",
                {},
                _FakeDriverError("near 'SELEC': syntax error", sqlite_errorname="SQLITE_ERROR"),
            ),
            InvalidRequestError,
        ),
        (
            sa_exc.ProgrammingError("x", {}, _FakeDriverError("syntax error", sqlstate="42601")),
            InvalidRequestError,
        ),
        (
            sa_exc.IntegrityError("x", {}, _FakeDriverError("duplicate key", sqlstate="23505")),
            InvalidRequestError,
        ),
        (
            sa_exc.IntegrityError(
                "x", {}, _FakeDriverError("UNIQUE failed", sqlite_errorname="SQLITE_CONSTRAINT")
            ),
            InvalidRequestError,
        ),
        (sa_exc.TimeoutError("QueuePool limit reached"), UnavailableError),
    ],
)
def test_driver_errors_are_translated_into_the_tree(error: Exception, kind: type) -> None:
    translated = from_sqlalchemy(error, "migration step 'x' (expand)", target="sqlite /x")
    assert type(translated) is kind
    assert str(translated).startswith("migration step 'x' (expand)")
    assert translated.target == "sqlite /x"


def test_sqlite_statements_are_cut_where_sqlite_ends_them() -> None:
    assert sqlite_statements(_EXPAND_TRIGGER["sqlite"]) == [
        "ALTER TABLE orders ADD COLUMN amount_eur NUMERIC;",
        "CREATE TRIGGER orders_amount_eur AFTER INSERT ON orders\nWHEN NEW.amount_eur IS NULL\n"
        "BEGIN\n  UPDATE orders SET amount_eur = NEW.amount_cents / 100.0 WHERE id = NEW.id;\n"
        "END;",
    ]
    assert sqlite_statements("SELECT 'a;b'; SELECT 2") == ["SELECT 'a;b';", "SELECT 2"]
    assert sqlite_statements(" ; \n;") == []


def test_the_ledger_table_name_is_stable() -> None:
    assert LEDGER_TABLE == "runbooks_migrations"
    assert [c.name for c in ledger.columns] == [
        "step_id",
        "phase",
        "checksum",
        "applied_at",
        "target",
    ]
