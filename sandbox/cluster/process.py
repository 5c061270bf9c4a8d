"""One container = one local process: ports, logs, pid files, graceful and forced stops.

Why these choices:

- pod processes stay in the caller's process group (no new session): the sandbox supervisor
  records its group so that ``up`` after a crash, or ``down``, can end every child at once;
- each run writes a pid file holding the pid *and* the process's start time (from
  ``/proc/<pid>/stat``), so :func:`kill_leftovers` ends our orphans after a crash and never a
  process that merely reused the pid;
- logs go where the kubelet puts them, one file per container run:
  ``<state>/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log``;
- ports are picked by the OS on 127.0.0.1 and kept for the container's life (restarts reuse
  them), so the port annotation on the Pod stays true.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger("sandbox.cluster")

_ports_lock = threading.Lock()
_ports_in_use: set[int] = set()


def allocate_port() -> int:
    """A loopback port free now and not handed to another container of ours."""
    with _ports_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in _ports_in_use:
                _ports_in_use.add(port)
                return port
    raise RuntimeError("no free loopback port found for a pod")


def release_port(port: int) -> None:
    with _ports_lock:
        _ports_in_use.discard(port)


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks), or ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


class ContainerProcess:
    """The process of one container run; restart = a new :meth:`start` on the same object."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        log_dir: Path,
    ):
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_dir = log_dir
        self._popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def pid_file(self) -> Path:
        return self.log_dir / "pid"

    def start(self, run: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{run}.log"
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )
        self.started_at = time.monotonic()
        started = process_start_time(self._popen.pid) or ""
        self.pid_file.write_text(f"{self._popen.pid} {started}\n")

    def poll(self) -> int | None:
        """The exit code once the process ended (reaped), else ``None``."""
        if self._popen is None:
            return None
        code = self._popen.poll()
        if code is not None:
            self.pid_file.unlink(missing_ok=True)
        return code

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def signal(self, signum: int) -> bool:
        if not self.running():
            return False
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(signum)
            return True
        return False

    def stop(self, grace_seconds: float, *, terminate: bool = True) -> int | None:
        """SIGTERM (unless already sent), wait up to ``grace_seconds``, SIGKILL; the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            if terminate:
                self.signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=max(0.0, grace_seconds))
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                try:
                    self._popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    logger.error("pid %s survived SIGKILL for 5s", self._popen.pid)
        return self.poll()


def kill_leftovers(state_dir: Path) -> int:
    """SIGKILL the pod processes a crashed run left behind (pid + start time must match)."""
    killed = 0
    for pid_file in state_dir.glob("pods/*/*/pid"):
        try:
            pid_text, _, started = pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if started and process_start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        pid_file.unlink(missing_ok=True)
    if killed:
        logger.warning("ended %d pod process(es) left behind by a previous run", killed)
    return killed
