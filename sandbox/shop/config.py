"""The pod's settings from its environment, and JSON files re-read when they change.

Everything a pod is told comes from environment variables, because that is how the pod runner
passes a Pod's spec (the container's ``env`` plus ``PORT``, ``POD_NAME``, ``POD_NAMESPACE``,
``SHOP_IMAGE``). Files named by ``SHOP_FLAGS_FILE``, ``SHOP_RETRY_CONFIG`` and
``SHOP_FAULT_FILE`` stand for mounted ConfigMaps: a runbook changes behaviour by rewriting them,
so they are re-read when they change, without a restart. Stdlib only: ``__main__`` reads the
settings before importing anything heavy, so a crash-looping image exits at once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

ROLES = ("frontend", "checkout", "payments")
DOWNSTREAM_OF = {"frontend": "checkout", "checkout": "payments"}
DEFAULT_PORT = 8080

T = TypeVar("T")


class ConfigError(ValueError):
    """The environment is wrong; the process exits 2 with this message."""


@dataclass(frozen=True, slots=True)
class Settings:
    role: str
    port: int
    image: str
    pod: str
    namespace: str
    downstream_url: str | None
    flags_file: str | None
    retry_config: str | None
    fault_file: str | None
    access_log: str | None
    database_url: str | None = None

    @property
    def dependency(self) -> str | None:
        """The name of the service this role calls (``None`` for payments)."""
        return DOWNSTREAM_OF.get(self.role)


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check the pod's environment (see the package docstring for the contract)."""
    env = os.environ if env is None else env
    role = env.get("SHOP_ROLE", "frontend").strip().lower()
    if role not in ROLES:
        raise ConfigError(f"SHOP_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
    raw_port = env.get("PORT", str(DEFAULT_PORT)).strip()
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise ConfigError(f"PORT must be a TCP port number (1-65535), got {raw_port!r}")
    image = env.get("SHOP_IMAGE", "").strip()
    if not image:
        raise ConfigError("SHOP_IMAGE is required (the container image, e.g. demo/shop:v1)")
    downstream = env.get("SHOP_DOWNSTREAM_URL", "").strip() or None
    if downstream is not None and not downstream.startswith(("http://", "https://")):
        raise ConfigError(f"SHOP_DOWNSTREAM_URL must be an http(s) URL, got {downstream!r}")
    database = env.get("SHOP_DATABASE_URL", "").strip() or None
    if database is not None and not database.startswith(("sqlite", "postgresql")):
        # the URL itself is not repeated: it usually carries a password
        raise ConfigError(
            "SHOP_DATABASE_URL must be a sqlite:// or postgresql:// SQLAlchemy URL "
            f"(it starts with {database.partition(':')[0][:20]!r})"
        )
    return Settings(
        role=role,
        port=int(raw_port),
        image=image,
        pod=env.get("POD_NAME", "").strip() or f"{role}-local",
        namespace=env.get("POD_NAMESPACE", "").strip() or "default",
        downstream_url=downstream.rstrip("/") if downstream else None,
        flags_file=env.get("SHOP_FLAGS_FILE", "").strip() or None,
        retry_config=env.get("SHOP_RETRY_CONFIG", "").strip() or None,
        fault_file=env.get("SHOP_FAULT_FILE", "").strip() or None,
        access_log=env.get("SHOP_ACCESS_LOG", "").strip() or None,
        database_url=database,
    )


def log(message: str) -> None:
    """One line on stderr: what the pod runner shows as the container's log."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} shop: {message}", file=sys.stderr, flush=True)


class WatchedJson(Generic[T]):
    """The parsed content of a JSON file, re-read when the file changes.

    A change is seen by ``stat`` (mtime, size and inode: a ConfigMap volume swaps a symlink,
    which changes the inode even within one mtime tick), at most every ``min_interval`` seconds,
    on use. A file that does not parse keeps the last good value (as a real service keeps
    running on its last good config) and is reported through ``on_error``; a missing file gives
    ``default``. ``generation`` grows with every value taken, so users can rebuild what depends
    on it. Thread-safe.
    """

    def __init__(
        self,
        path: str | None,
        parse: Callable[[object], T],
        default: T,
        *,
        name: str,
        on_reload: Callable[[str, bool], None] | None = None,
        min_interval: float = 0.2,
    ):
        self.path = path
        self.name = name
        self._parse = parse
        self._default = default
        self._on_reload = on_reload
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._value = default
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -1e9
        self.generation = 0
        self.last_error: str | None = None

    def get(self) -> T:
        if self.path is None:
            return self._value
        now = time.monotonic()
        if now - self._checked < self._min_interval:
            return self._value
        with self._lock:
            if now - self._checked >= self._min_interval:
                self._checked = now
                self._refresh()
            return self._value

    def _refresh(self) -> None:
        assert self.path is not None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None or self.generation == 0:
                self._take(self._default, None)
            return
        except OSError as exc:
            self._fail(f"cannot stat {self.path}: {exc}")
            return
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            value = self._parse(document)
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            self._stamp = stamp  # do not re-read a bad file until it changes again
            self._fail(f"{self.path}: {exc}")
            return
        self._take(value, stamp)

    def _take(self, value: T, stamp: tuple[int, int, int] | None) -> None:
        first = self.generation == 0
        self._value, self._stamp, self.last_error = value, stamp, None
        self.generation += 1
        if stamp is not None and not first:
            log(f"reloaded {self.name} from {self.path}")
        if self._on_reload is not None and not (first and stamp is None):
            self._on_reload(self.name, True)

    def _fail(self, message: str) -> None:
        self.last_error = message
        log(f"keeping the previous {self.name}: {message}")
        if self._on_reload is not None:
            self._on_reload(self.name, False)
