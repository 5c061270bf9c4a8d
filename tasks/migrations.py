"""Run the due steps of a rollout's migration against the service's database, exactly once each.

What is due is decided by ``decisions.migrations`` (pure); this module runs it:

- a ledger table, ``runbooks_migrations`` (step id, phase, SHA-256 of the SQL, applied_at,
  target), records every applied step, so re-running after a crash skips what is done (the
  task is idempotent) and a step whose SQL changed since it was applied is refused before
  anything runs: the database no longer matches the spec, and re-running "the same" step with
  other SQL would silently diverge environments (Flyway and Liquibase refuse it too);
- each step runs in its own transaction with its ledger row, so a step is either applied and
  recorded or neither: PostgreSQL has transactional DDL; SQLite too, once ``sqlite3`` stops
  committing around DDL (``DatabaseTarget.get_engine`` sees to it). Statements that cannot run
  in a transaction (PostgreSQL's ``CREATE INDEX CONCURRENTLY``) are refused by PostgreSQL;
- runs are serialised per database: the step's transaction takes PostgreSQL's transaction-level
  advisory lock (SQLite's ``BEGIN IMMEDIATE`` write lock does the same) and re-reads the ledger
  under it, so two runners never apply one step twice;
- SQLAlchemy errors are translated into ``runbooks.errors``: lost connections, lock and busy
  timeouts, deadlocks and serialization failures are transient (the task retries them through
  ``retry_transient``, a failed step having been rolled back); syntax, constraint and other
  errors in the SQL are permanent.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    exc,
    insert,
    inspect,
    select,
    text,
)

from blocks.database import DatabaseTarget
from decisions.migrations import MigrationSpec, MigrationStep, Phase
from runbooks.errors import (
    ConflictError,
    InvalidRequestError,
    PermanentError,
    RunbookError,
    UnavailableError,
    retry_transient,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

LEDGER_TABLE = "runbooks_migrations"

_metadata = MetaData()
ledger = Table(
    LEDGER_TABLE,
    _metadata,
    Column("step_id", String(100), primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("target", String(255), nullable=False),
)
"""The ledger of applied steps, one row per step id."""

# Key of the PostgreSQL advisory lock that serialises migration runs on one database: the first
# 8 bytes of SHA-256("runbooks_migrations"), as the signed bigint pg_advisory_xact_lock takes.
_ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(LEDGER_TABLE.encode()).digest()[:8], "big", signed=True
)

_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
_UNAVAILABLE_SQLSTATES = frozenset(
    {"55P03", "57P01", "57P02", "57P03", "53300", "53400"}  # lock timeout, shutdowns, too many
)
_TRANSIENT_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PROTOCOL")


def checksum(sql: str) -> str:
    """SHA-256 (hex) of a step's SQL; line endings and surrounding whitespace do not count."""
    normalised = sql.replace("\r\n", "\n").replace("\r", "\n").strip()
    return hashlib.sha256(normalised.encode()).hexdigest()


def sqlite_statements(sql: str) -> list[str]:
    """``sql`` cut into single statements for ``sqlite3`` (which runs one per call).

    Cuts at the semicolons SQLite itself sees as statement ends (``sqlite3.complete_statement``),
    so semicolons inside strings, comments and ``CREATE TRIGGER ... BEGIN ... END`` stay put.
    """
    statements: list[str] = []
    buffer = ""
    pieces = sql.split(";")
    for index, piece in enumerate(pieces):
        buffer += piece
        if index < len(pieces) - 1:
            buffer += ";"
            if not sqlite3.complete_statement(buffer):
                continue
        if buffer.strip(" \t\r\n;"):
            statements.append(buffer.strip())
        buffer = ""
    return statements


def applied_steps(engine: Engine) -> frozenset[str]:
    """Ids of the steps recorded in the ledger (empty when no migration ever ran)."""
    try:
        if not inspect(engine).has_table(LEDGER_TABLE):
            return frozenset()
        with engine.connect() as connection:
            return frozenset(connection.execute(select(ledger.c.step_id)).scalars())
    except exc.SQLAlchemyError as error:
        raise from_sqlalchemy(
            error, f"reading the migration ledger of {_where(engine)}", target=_where(engine)
        ) from error


@task(
    name="apply-migrations",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_jitter_factor=1.0,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def apply_migrations(
    database: DatabaseTarget, spec: MigrationSpec, phase: Phase, *, runbook_target: str
) -> tuple[str, ...]:
    """Apply the steps of ``phase`` not yet applied, each in its own transaction with its ledger
    row; return the ids applied by this call, in order (empty when nothing was due).

    Refuses (``PermanentError``, before running anything) when a step of ``spec`` was applied
    with other SQL. Contract steps run only when ``spec.run_contract`` is set.
    """
    phase = Phase(phase)
    log = _logger()
    if not runbook_target.strip() or len(runbook_target) > 255:
        raise InvalidRequestError(
            "runbook_target must be a non-empty name of at most 255 characters, e.g. shop/checkout"
        )
    wanted = spec.due(phase)
    if not wanted:
        why = " (run_contract is off)" if phase is Phase.CONTRACT and spec.steps else ""
        log.info("No %s migration steps to run on %s%s", phase, database.target, why)
        return ()
    engine = database.get_engine()
    try:
        _ensure_ledger(engine, database.target)
        recorded = _read_ledger(engine, database.target)
        for step in spec.steps:
            if step.id in recorded and recorded[step.id] != checksum(step.sql):
                raise _changed(step, recorded[step.id])
        already = [step.id for step in wanted if step.id in recorded]
        if already:
            log.info("Skipping %s steps already applied: %s", phase, ", ".join(already))
        applied: list[str] = []
        for step in spec.due(phase, frozenset(recorded)):
            if _apply_step(engine, step, database, runbook_target):
                log.info("Applied %s step %s on %s", phase, step.id, database.target)
                applied.append(step.id)
            else:
                log.info("Step %s was applied meanwhile by another run; skipped", step.id)
        return tuple(applied)
    finally:
        engine.dispose()


def _apply_step(
    engine: Engine, step: MigrationStep, database: DatabaseTarget, runbook_target: str
) -> bool:
    """Run one step and record it in one transaction; False when it was recorded already."""
    action = f"migration step {step.id!r} ({step.phase}) on {database.target} (rolled back)"
    digest = checksum(step.sql)
    try:
        with engine.begin() as connection:
            _serialise(connection)
            row = connection.execute(
                select(ledger.c.checksum).where(ledger.c.step_id == step.id)
            ).first()
            if row is not None:
                if row.checksum != digest:
                    raise _changed(step, row.checksum)
                return False
            for statement in _statements(connection, step.sql):
                connection.exec_driver_sql(statement, execution_options={"no_parameters": True})
            connection.execute(
                insert(ledger).values(
                    step_id=step.id,
                    phase=str(step.phase),
                    checksum=digest,
                    applied_at=datetime.now(UTC),
                    target=runbook_target,
                )
            )
    except exc.SQLAlchemyError as error:
        raise from_sqlalchemy(error, action, target=database.target) from error
    return True


def _ensure_ledger(engine: Engine, where: str) -> None:
    try:
        with engine.begin() as connection:
            _serialise(connection)
            ledger.create(connection, checkfirst=True)
    except exc.SQLAlchemyError as error:
        raise from_sqlalchemy(
            error, f"creating the migration ledger of {where}", target=where
        ) from error


def _read_ledger(engine: Engine, where: str) -> dict[str, str]:
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(ledger.c.step_id, ledger.c.checksum))
            return {row.step_id: row.checksum for row in rows}
    except exc.SQLAlchemyError as error:
        raise from_sqlalchemy(
            error, f"reading the migration ledger of {where}", target=where
        ) from error


def _serialise(connection: Connection) -> None:
    """Hold the database's migration lock until the transaction ends (SQLite: already held)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})


def _statements(connection: Connection, sql: str) -> list[str]:
    if connection.dialect.name == "sqlite":
        return sqlite_statements(sql)
    return [sql]  # PostgreSQL runs several statements in one call when no parameters are passed


def _changed(step: MigrationStep, recorded: str) -> PermanentError:
    return PermanentError(
        f"migration step {step.id!r} was applied with different SQL (checksum "
        f"{recorded[:12]}, now {checksum(step.sql)[:12]}); restore its SQL and put the change "
        "in a new step"
    )


def from_sqlalchemy(error: Exception, action: str, *, target: str | None = None) -> RunbookError:
    """Translate a SQLAlchemy error (and the driver error inside it) into the project's tree.

    Transient: lost or refused connections, pool and lock timeouts, busy SQLite files,
    deadlocks and serialization failures. Permanent: everything the SQL itself got wrong
    (syntax, unknown objects, constraints) and statements killed by ``statement_timeout``.
    Messages carry the database's own first line, never statement parameters.
    """
    if isinstance(error, RunbookError):
        return error
    if isinstance(error, exc.TimeoutError):
        return UnavailableError(
            f"{action} found no free connection in time (pool timeout); retry later",
            target=target,
        )
    original = getattr(error, "orig", None)
    detail = _detail(original) or type(error).__name__
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    sqlite_name = str(getattr(original, "sqlite_errorname", "") or "")
    if sqlstate in _CONFLICT_SQLSTATES:
        return ConflictError(
            f"{action} was aborted by the database ({detail}); run it again", target=target
        )
    if sqlstate == "57014":
        return InvalidRequestError(
            f"{action} was cancelled ({detail}); raise the block's statement_timeout_seconds "
            "or split the step",
            target=target,
        )
    transient = (
        (isinstance(error, exc.DBAPIError) and error.connection_invalidated)
        or isinstance(error, exc.InterfaceError)
        or (sqlstate is not None and (sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate[:2] == "08"))
        or sqlite_name.startswith(_TRANSIENT_SQLITE)
        # a psycopg OperationalError without SQLSTATE never reached the server: connect failure
        or (isinstance(error, exc.OperationalError) and sqlstate is None and not sqlite_name)
    )
    if transient:
        return UnavailableError(f"{action} failed: {detail}; retry later", target=target)
    return InvalidRequestError(f"{action} failed: {detail}", target=target)


def _detail(original: Any) -> str:
    if original is None:
        return ""
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text_ = primary or str(original)
    first = text_.strip().splitlines()[0] if text_.strip() else ""
    return first if len(first) <= 300 else first[:299] + "…"


def _where(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database or ':memory:'}"
    return f"postgresql {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The task run's logger (its lines reach the Prefect UI); the module's outside a run."""
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is not None:
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger(__name__)
