"""`DatabaseTarget`: the database of a service (SQLite or PostgreSQL), and an engine factory for it.

Why it is built this way:
- the whole SQLAlchemy URL is one ``SecretStr``, because it usually carries the password; it is
  checked with ``sqlalchemy.engine.make_url`` when the block is built, and a refusal never
  repeats it (``make_url``'s own message quotes the string, so it is not passed on);
- every wait is bounded: connecting (``connect_timeout_seconds``, also the wait for a pooled
  connection), each statement on PostgreSQL (``statement_timeout``), and lock waits
  (PostgreSQL ``lock_timeout``; SQLite's busy timeout). A migration's ``ALTER TABLE`` queued
  behind a long transaction would otherwise block every writer queued behind *it*;
- SQLite: the engine takes over ``BEGIN`` from ``sqlite3`` (SQLAlchemy's documented recipe), so
  DDL runs inside the transaction it belongs to (``sqlite3`` would run it outside one), and it
  begins with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers wait for each
  other through the busy timeout instead of failing at once with "database is locked" when a
  reader tries to upgrade (the deadlock SQLite refuses to wait for; Rails does the same);
- only the backends the project runs on are accepted (SQLite, PostgreSQL through psycopg 3):
  each gets its timeouts set explicitly, which another backend would not.

``sqlalchemy`` is imported inside the factory (rule 5 of the package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

_POSTGRESQL_DRIVERS = frozenset({"postgresql", "postgresql+psycopg"})
_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})


class DatabaseTarget(Block):
    """The database of a service that runbooks migrate or check: a SQLAlchemy URL (SQLite or
    PostgreSQL) kept secret, with explicit connect, statement and lock timeouts.

    Example:
        Read the migrations applied to the service's database:
        ```python
        from sqlalchemy import text

        from blocks import DatabaseTarget

        database = DatabaseTarget.load("BLOCK_NAME")
        engine = database.get_engine()
        with engine.connect() as connection:
            print(connection.execute(text("SELECT 1")).scalar_one())
        engine.dispose()
        ```
    """

    _block_type_name: ClassVar[str] = "Database Target"
    _block_type_slug: ClassVar[str] = "database-target"
    _description: ClassVar[str] = (
        "A service's database (SQLite or PostgreSQL) given by a secret SQLAlchemy URL, with "
        "explicit connect, statement and lock timeouts."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    url: SecretStr = Field(
        default=...,
        title="URL",
        description=(
            "SQLAlchemy URL of the database, e.g. sqlite:////var/lib/shop/shop.db or "
            "postgresql+psycopg://user:password@db.internal:5432/shop; kept secret."
        ),
    )
    connect_timeout_seconds: int = Field(
        default=5,
        ge=2,
        le=300,
        title="Connect timeout (seconds)",
        description=(
            "Time allowed to open a connection, and to wait for a free pooled one "
            "(whole seconds; PostgreSQL's minimum is 2)."
        ),
    )
    statement_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        title="Statement timeout (seconds)",
        description=(
            "PostgreSQL: longest a statement may run (statement_timeout). "
            "SQLite: longest a statement waits for another writer's lock (busy timeout)."
        ),
    )
    lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        title="Lock timeout (seconds)",
        description=(
            "PostgreSQL: longest a statement waits for a table or row lock (lock_timeout), so "
            "a migration never queues writers behind it for long; unused by SQLite."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url_is_a_supported_sqlalchemy_url(cls, value: SecretStr) -> SecretStr:
        from sqlalchemy.engine import make_url

        raw = value.get_secret_value().strip()
        try:
            url = make_url(raw)
        except Exception:  # ArgumentError, or ValueError for a bad port; both quote the URL
            raise ValueError(
                "url is not a valid SQLAlchemy URL (expected e.g. sqlite:///path/to/file.db or "
                "postgresql+psycopg://user:password@host:5432/database)"
            ) from None
        driver = url.drivername
        if driver not in _POSTGRESQL_DRIVERS | _SQLITE_DRIVERS:
            raise ValueError(
                f"url uses the backend {driver!r}; supported are sqlite and "
                "postgresql (postgresql+psycopg)"
            )
        if driver in _POSTGRESQL_DRIVERS and not url.database:
            raise ValueError("url must name the PostgreSQL database (…:5432/<database>)")
        return SecretStr(raw)

    def get_url(self) -> URL:
        """The parsed URL (plain ``postgresql://`` means psycopg 3); its repr hides the password."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url.get_secret_value())
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.get_url().get_backend_name()

    @property
    def target(self) -> str:
        """Where the database is, without credentials, for messages and errors."""
        url = self.get_url()
        if url.get_backend_name() == "sqlite":
            return f"sqlite {url.database or ':memory:'}"
        return f"postgresql {url.host or 'localhost'}:{url.port or 5432}/{url.database}"

    def get_engine(self) -> Engine:
        """A new ``sqlalchemy.Engine`` with pre-ping and this block's timeouts; ``dispose()`` it
        when done. Statement parameters are kept out of error messages (``hide_parameters``).
        """
        from sqlalchemy import create_engine, event

        url = self.get_url()
        options: dict[str, Any] = {
            "pool_pre_ping": True,
            "pool_timeout": self.connect_timeout_seconds,
            "hide_parameters": True,
        }
        if url.get_backend_name() == "sqlite":
            options["connect_args"] = {"timeout": self.statement_timeout_seconds}
            engine = create_engine(url, **options)
            event.listen(engine, "connect", _sqlite_leave_begin_to_us)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            return engine
        milliseconds = {
            "statement_timeout": round(self.statement_timeout_seconds * 1000),
            "lock_timeout": round(self.lock_timeout_seconds * 1000),
        }
        options["connect_args"] = {
            "connect_timeout": self.connect_timeout_seconds,
            "options": " ".join(f"-c {name}={value}" for name, value in milliseconds.items()),
            "application_name": "runbooks",
        }
        return create_engine(url, **options)


def _sqlite_leave_begin_to_us(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # sqlite3 stops emitting BEGIN (and skipping DDL)


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
