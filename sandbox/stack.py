"""The whole sandbox as one supervised stack: start in order, stop in reverse, nothing left over.

Components (each ``start() -> endpoints``, ``stop()``):

- ``kube``: the Kubernetes API emulator (threads in this process) and a kubeconfig beside it;
- ``cluster``: controller, pod runner and service proxy (threads + one process per pod);
- ``moto``: moto's server for AWS (a thread);
- ``traces``: the trace store, an OTLP/HTTP receiver and a Jaeger-shaped query API (threads;
  ``sandbox.traces.TracesComponent``);
- ``prometheus``: Debian's ``prometheus`` (a child process) scraping pods through a ``file_sd``
  file the cluster keeps current; skipped, and said so, when the binary is not installed;
- ``prefect``: a Prefect server with its UI (a child process), for ``runbooks sandbox up`` and
  the demo; tests start their own test server instead;
- ``serve``: the runbooks' deployments served on that server (``runbooks serve``, a child
  process), for the demo.

Why one process supervising threads and children: ``runbooks sandbox down`` must leave no
process and no port behind. Children are started in this process's session, so a crashed
supervisor's leftovers can be found (the process group recorded in the state folder) and ended
by the next ``up`` or ``down``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from runbooks.alerts import RULE_FILES

logger = logging.getLogger("sandbox")


class Component(Protocol):
    name: str

    def start(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


def free_port() -> int:
    """A port free on loopback now (the OS picks it; a tiny race is accepted for children)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http_ok(url: str, timeout_seconds: float, process: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 2xx, the child dies, or the deadline passes (bounded)."""
    deadline = time.monotonic() + timeout_seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{url}: the process exited with {process.returncode} while starting"
            )
        try:
            response = httpx.get(url, timeout=1.0)
            if response.is_success:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{url} was not ready within {timeout_seconds:g}s ({last})")


def stop_process(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: a child never outlives its component."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class MotoComponent:
    name: str = "moto"
    _server: object | None = None

    def start(self) -> dict[str, str]:
        from moto.server import ThreadedMotoServer

        # werkzeug sets its own logger to INFO on first use and logs every request there; with
        # a root handler (the CLI's) that is a line per AWS call in the demo's output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        return {"moto": f"http://{host}:{port}"}

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}
rule_files:
{rule_files}
scrape_configs:
  - job_name: sandbox-pods
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 5s
"""


def start_prometheus(
    binary: str,
    config: Path,
    tsdb: Path,
    log: Path,
    *extra: str,
    ready_seconds: float = 60,
) -> tuple[subprocess.Popen, str]:
    """A ``prometheus`` process on a free loopback port, ready; the process and its URL.

    Shared by the sandbox and the tests that need a Prometheus of their own (backfilled
    history, alerting rules): the caller stops it with :func:`stop_process`.
    """
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb}",
                f"--web.listen-address=127.0.0.1:{port}",
                *extra,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/-/ready", ready_seconds, process)
    return process, url


@dataclass
class PrometheusComponent:
    """Debian's ``prometheus`` on loopback, scraping the pods the cluster lists in ``targets``
    and evaluating the project's alerting rules (:mod:`runbooks.alerts`), as production would."""

    state_dir: Path
    targets: Path
    scrape_interval_seconds: float = 2.0
    binary: str | None = None
    name: str = "prometheus"
    _process: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        return shutil.which("prometheus")

    def start(self) -> dict[str, str]:
        binary = self.binary or self.available()
        if binary is None:
            logger.warning("prometheus is not installed (apt-get install prometheus): skipped")
            return {}
        data = self.state_dir / "prometheus"
        data.mkdir(parents=True, exist_ok=True)
        if not self.targets.exists():
            self.targets.write_text("[]\n")
        config = data / "prometheus.yml"
        interval = f"{self.scrape_interval_seconds:g}s"
        config.write_text(
            PROMETHEUS_CONFIG.format(
                interval=interval,
                timeout=interval,
                targets=self.targets,
                rule_files="\n".join(f'  - "{path}"' for path in RULE_FILES),
            )
        )
        self._process, url = start_prometheus(
            binary,
            config,
            data / "tsdb",
            data / "prometheus.log",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            ready_seconds=30,
        )
        return {"prometheus": url}

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


@dataclass
class PrefectComponent:
    """A Prefect server with its UI, its database in the state folder, telemetry off."""

    state_dir: Path
    name: str = "prefect"
    _process: subprocess.Popen | None = None

    def start(self) -> dict[str, str]:
        home = self.state_dir / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        # The UI asks the server where the API is (/ui-settings); unset, the server answers
        # with the default port 4200, and the UI in a browser shows nothing but an error.
        env = prefect_env(home) | {
            "PREFECT_SERVER_UI_ENABLED": "true",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        }
        log = (home / "server.log").open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        api = f"http://127.0.0.1:{port}/api"
        wait_http_ok(f"{api}/health", 120, self._process)
        return {"prefect_api": api, "prefect_ui": f"http://127.0.0.1:{port}"}

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, grace_seconds=15)
            self._process = None


def results_settings(state_dir: Path) -> dict[str, str]:
    """Flow results persisted in the state folder: a run executed by the served deployments (a
    process of its own) hands what it returned to whoever started it, which reads it there."""
    return {
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(state_dir / "results"),
    }


@dataclass
class ServeComponent:
    """Every runbook's deployment registered and served (``runbooks serve``, a child process
    and the flow runs it starts, in a process group of their own) on the Prefect API at
    ``api_url``; ready once ``expected`` deployments are registered.

    The runner polls for runs every second (Prefect's default is 10 s, a long wait for each
    run a person or the demo starts). On stop the group gets SIGINT, Prefect's own way out (it
    pauses the schedules it served, so no runs pile up for a runner that is gone), then
    SIGKILL after the grace period: no flow run outlives it.
    """

    state_dir: Path
    api_url: str
    ui_url: str
    expected: int
    name: str = "serve"
    grace_seconds: float = 15.0
    _process: subprocess.Popen | None = None

    def start(self) -> dict[str, str]:
        home = self.state_dir / "prefect-serve"
        home.mkdir(parents=True, exist_ok=True)
        env = prefect_env(home, self.api_url) | results_settings(self.state_dir)
        env |= {"PREFECT_UI_URL": self.ui_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        log = (home / "serve.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "runbooks.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
        log.close()
        try:
            wait_deployments(self.api_url, self.expected, 120, self._process)
        except BaseException:  # its own process group: nobody else would stop it
            self.stop()
            raise
        return {"serve_log": str(home / "serve.log")}

    def alive(self) -> bool:
        """Whether ``runbooks serve`` is still running (a run waiting for it waits in vain)."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.grace_seconds)
        kill_process_group(process.pid, grace_seconds=0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def wait_deployments(
    api_url: str, expected: int, timeout_seconds: float, process: subprocess.Popen
) -> None:
    """Poll the Prefect API until ``expected`` deployments exist, the child dies, or the
    deadline passes (bounded)."""
    deadline = time.monotonic() + timeout_seconds
    count = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runbooks serve exited with {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.post(f"{api_url}/deployments/count", json={}, timeout=5.0)
            count = int(response.json()) if response.is_success else count
            if count >= expected:
                return
        time.sleep(0.5)
    raise RuntimeError(
        f"runbooks serve registered {count} of {expected} deployments in {timeout_seconds:g} s"
    )


def prefect_settings(home: Path) -> dict[str, str]:
    """Settings for a quiet, private Prefect: its own home, no analytics or telemetry, no
    "database is locked" retries in the logs. Shared by the sandbox's Prefect processes, the
    test harness and the benchmarks (set before Prefect is imported: it reads them once)."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "false",
        "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a Prefect process of the sandbox: :func:`prefect_settings` and,
    optionally, the API it talks to; no other ``PREFECT_*`` leaks in from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= prefect_settings(home)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@dataclass
class Stack:
    """Components started in order and stopped in reverse; endpoints merged."""

    components: list[Component]
    on_started: Callable[[dict[str, str]], None] | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    _started: list[Component] = field(default_factory=list)

    def start(self) -> dict[str, str]:
        try:
            for component in self.components:
                began = time.monotonic()
                self.endpoints |= component.start()
                self._started.append(component)
                logger.info("%s up in %.1fs", component.name, time.monotonic() - began)
        except BaseException:
            self.stop()
            raise
        if self.on_started is not None:
            self.on_started(self.endpoints)
        return self.endpoints

    def stop(self) -> None:
        errors = []
        while self._started:
            component = self._started.pop()
            try:
                component.stop()
            except Exception as exc:  # keep stopping the others, then report
                errors.append(f"{component.name}: {exc}")
                logger.exception("stopping %s failed", component.name)
        if errors:
            raise RuntimeError("the sandbox did not stop cleanly: " + "; ".join(errors))

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def kill_process_group(pgid: int, grace_seconds: float = 10.0) -> None:
    """End a crashed supervisor's leftovers: SIGTERM the group, then SIGKILL what remains."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
