"""A throwaway PostgreSQL cluster for the tests that need a real server (``postgres`` fixture).

Shared by the migration tests and the end-to-end blue-green tests, so it lives here and the
root ``tests/conftest.py`` registers it as a plugin: one cluster per session, whoever asks first.

The cluster is started from the Debian server binaries (``/usr/lib/postgresql/<version>/bin``),
as the unprivileged ``postgres`` user when the tests run as root, in a temporary folder that
holds its data and its unix socket; it listens on 127.0.0.1 on a free port, with password
(SCRAM) authentication and fsync off, and is stopped at the end of the session with no process
left. Each test takes its own empty database (:meth:`PostgresCluster.create_database`).

Without the binaries (or without a ``postgres`` user to run them as root), the tests that need
the cluster are skipped on a developer's machine, naming the package to install
(``postgresql``; ``bin/runbooks`` installs it), and *fail* under CI (``CI=true``): a CI run that
silently skipped the PostgreSQL half of the acceptance would prove nothing about it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

_PG_PACKAGE = "postgresql"
_START_TIMEOUT_SECONDS = 30


def _postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and postgres."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if (d / "postgres").is_file() and d.parent.name.isdigit()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresCluster:
    """A running cluster: superuser ``postgres`` with ``password``, on ``host:port``."""

    host: str
    port: int
    password: str
    version: str
    _counter: Iterator[int]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, *, timeout_seconds: int = 5) -> Any:
        """A psycopg connection to the ``postgres`` database as the superuser (autocommit)."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            password=self.password,
            dbname="postgres",
            connect_timeout=timeout_seconds,
            autocommit=True,
        )

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (with the password)."""
        name = f"shop_{next(self._counter)}"
        with self.connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _wait_until_ready(process: subprocess.Popen, cluster: PostgresCluster, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log.read_text()}")
        try:
            with cluster.connect(timeout_seconds=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres not ready after {_START_TIMEOUT_SECONDS}s:\n{log.read_text()}"
                ) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; bounded at each step."""
    for sig, wait_seconds in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait_seconds)
    # postgres was started in its own process group: nothing of it may outlive the session
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _unavailable(reason: str) -> NoReturn:
    """Skip the test that needs PostgreSQL, or fail it under CI (see the module docstring)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true and PostgreSQL is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's cluster (started on first use); skipped without PostgreSQL, failed in CI."""
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            f"install the Debian package {_PG_PACKAGE!r} to run the PostgreSQL cases"
        )
    as_user: dict[str, Any] = {}
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="runbooks-pg-"))  # /tmp: reachable by that user
    log_file = None
    process: subprocess.Popen | None = None
    try:
        password = secrets.token_urlsafe(18)
        password_file = base / "password"
        password_file.write_text(password)
        if owner is not None:
            for path in (base, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(base / "data"),
                "--username",
                "postgres",
                "--auth",
                "scram-sha-256",
                "--pwfile",
                str(password_file),
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=base,
            check=True,
            capture_output=True,
            timeout=120,
            **as_user,
        )
        port = free_port()
        log = base / "postgres.log"
        log_file = log.open("wb")
        process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(base / "data"),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={base}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=60",
            ],
            cwd=base,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
        cluster = PostgresCluster(
            "127.0.0.1", port, password, bindir.parent.name, itertools.count()
        )
        _wait_until_ready(process, cluster, log)
        yield cluster
    finally:
        if process is not None:
            _stop(process)
            assert process.returncode is not None
        if log_file is not None:
            log_file.close()
        shutil.rmtree(base, ignore_errors=True)


def new_database(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """The SQLAlchemy URL of a new empty database: a SQLite file in ``folder``, or a database of
    the session's cluster (asked of ``request``, so PostgreSQL starts only when a test needs it)."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'service.db'}"
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return cluster.create_database()
    raise ValueError(f"backend must be sqlite or postgresql, got {backend!r}")
