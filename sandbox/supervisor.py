"""``runbooks sandbox up|status|down|url``: one supervisor process per state folder.

State folder (default ``.sandbox/`` in the current directory, or ``RUNBOOKS_SANDBOX_DIR``):

- ``endpoints.json`` — what is up and where (keys ``kube_api``, ``kubeconfig``, ``moto``,
  ``traces`` (the trace store's query API), ``otlp`` (its OTLP/HTTP receiver: spans go to
  ``<otlp>/v1/traces``), ``prometheus``, ``prefect_api``, ``prefect_ui``, ``shop``, ...);
  written once everything answers (``shop``: the blue-green service :func:`seed_shop`
  deploys, with steady traffic);
- ``kubeconfig`` — for the official client and ``kubectl``;
- ``supervisor.json`` — pid and process group of the supervisor, so ``down`` (or the next
  ``up`` after a crash) can end every process it started;
- logs: ``supervisor.log``, ``prefect/server.log``, ``prometheus/prometheus.log``, pods' logs.

Starting twice reuses the running sandbox (and says so); a stale ``supervisor.json`` whose
process is gone is cleaned up (its process group ended) before starting again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sandbox.stack import (
    Component,
    MotoComponent,
    PrefectComponent,
    PrometheusComponent,
    Stack,
    kill_process_group,
    prefect_env,
    write_json_atomic,
)
from tasks.load import RequestLoad

logger = logging.getLogger("sandbox")

ENDPOINTS = "endpoints.json"
SUPERVISOR = "supervisor.json"
SEED_SERVICE = "shop"
SEED_RPS = 5.0


def state_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.resolve()
    return Path(os.environ.get("RUNBOOKS_SANDBOX_DIR", ".sandbox")).resolve()


class SandboxError(RuntimeError):
    """A sandbox command could not do what was asked; the message says what to do."""


def build_stack(state: Path, *, prefect: bool = True) -> Stack:
    from sandbox.cluster import Cluster
    from sandbox.kube import KubeApiServer
    from sandbox.traces import TracesComponent

    targets = state / "prometheus-targets.json"

    class Kube:
        name = "kube"

        def __init__(self) -> None:
            # graceful: deleted pods stay Terminating until the kubelet has stopped them
            self.server = KubeApiServer(host="127.0.0.1", port=0, graceful_pod_deletion=True)

        def start(self) -> dict[str, str]:
            self.server.start()
            kubeconfig = self.server.write_kubeconfig(state / "kubeconfig")
            return {"kube_api": self.server.url, "kubeconfig": str(kubeconfig)}

        def stop(self) -> None:
            self.server.stop()

    kube = Kube()

    class Pods:
        name = "cluster"

        def __init__(self) -> None:
            self.cluster: Cluster | None = None

        def start(self) -> dict[str, str]:
            self.cluster = Cluster(kube.server.url, state / "cluster", file_sd_path=targets)
            self.cluster.start()
            return {}

        def stop(self) -> None:
            if self.cluster is not None:
                self.cluster.stop()

    components: list[Component] = [kube, Pods(), MotoComponent(), TracesComponent()]
    components.append(PrometheusComponent(state, targets))
    if prefect:
        components.append(PrefectComponent(state))
    return Stack(components)


def seed_shop(kubeconfig: str) -> str:
    """Deploy the sandbox's own blue-green service, ``default/shop`` (blue ``demo/shop:v1``, two
    replicas, behind the active Service ``shop``); returns its URL.

    So that ``runbooks run blue-green -p service=shop -p image=demo/shop:v2`` works right after
    ``sandbox up``. The supervisor then sends it a steady trickle of traffic (:data:`SEED_RPS`
    requests per second to ``/pay``, loopback only, for as long as the sandbox runs), as
    production would: a post-promotion analysis judges real traffic, and without any it would
    rightly find no data.
    """
    from kubernetes import client, config

    from sandbox.showcase import deploy_blue_green

    with config.new_client_from_config(config_file=kubeconfig, context="sandbox") as api:
        return deploy_blue_green(client.AppsV1Api(api), client.CoreV1Api(api), SEED_SERVICE)


def register_blocks(state: Path, endpoints: dict[str, str]) -> list[str]:
    """Save blocks pointing at the sandbox, in a child process (keeps Prefect out of this one)."""
    api = endpoints.get("prefect_api")
    if not api:
        return []
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.blocks_registration", json.dumps(endpoints)],
        env=prefect_env(state / "prefect", api),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise SandboxError(f"registering the sandbox's blocks failed: {done.stderr.strip()[-500:]}")
    return done.stdout.split()


def run_foreground(state: Path, *, prefect: bool = True) -> None:
    """Start everything, write the endpoints, serve until SIGTERM/SIGINT, stop everything."""
    state.mkdir(parents=True, exist_ok=True)
    _refuse_or_clean(state)
    write_json_atomic(
        state / SUPERVISOR, {"pid": os.getpid(), "pgid": os.getpgid(0), "started": time.time()}
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stack = build_stack(state, prefect=prefect)
    traffic: RequestLoad | None = None
    try:
        endpoints = stack.start()
        endpoints["blocks"] = " ".join(register_blocks(state, endpoints))
        endpoints["shop"] = seed_shop(endpoints["kubeconfig"])
        traffic = RequestLoad(endpoints["shop"], path="/pay", rps=SEED_RPS, max_seconds=86400)
        traffic.__enter__()
        write_json_atomic(state / ENDPOINTS, endpoints)
        logger.warning("sandbox up: %s", json.dumps(endpoints))
        stopping.wait()
    finally:
        try:
            if traffic is not None:
                traffic.__exit__(None, None, None)
            stack.stop()
        finally:
            for name in (ENDPOINTS, SUPERVISOR):
                (state / name).unlink(missing_ok=True)


def up_detached(state: Path, *, prefect: bool = True, timeout_seconds: float = 180) -> dict:
    """Start a supervisor in its own session; return its endpoints once everything answers."""
    running = read_endpoints(state)
    if running is not None and is_running(state):
        return running
    state.mkdir(parents=True, exist_ok=True)
    _refuse_or_clean(state)
    log = (state / "supervisor.log").open("ab")
    args = [sys.executable, "-m", "sandbox", "up", "--state-dir", str(state)]
    if not prefect:
        args.append("--no-prefect")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        endpoints = read_endpoints(state)
        if endpoints is not None:
            return endpoints
        if process.poll() is not None:
            raise SandboxError(
                f"the sandbox failed to start (exit {process.returncode}); "
                f"see {state / 'supervisor.log'}"
            )
        time.sleep(0.2)
    kill_process_group(process.pid)
    raise SandboxError(f"the sandbox did not start within {timeout_seconds:g}s; see its log")


def down(state: Path, timeout_seconds: float = 60) -> bool:
    """Stop the supervisor and everything it started; True if something was running."""
    info = _supervisor(state)
    if info is None:
        return False
    pid, pgid = int(info["pid"]), int(info["pgid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if pgid == pid:  # a detached supervisor leads its own group: end whatever it left
        kill_process_group(pgid, grace_seconds=5)
    for name in (ENDPOINTS, SUPERVISOR):
        (state / name).unlink(missing_ok=True)
    return True


def read_endpoints(state: Path) -> dict | None:
    try:
        return json.loads((state / ENDPOINTS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _supervisor(state: Path) -> dict | None:
    try:
        return json.loads((state / SUPERVISOR).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def service_url(state: Path, service: str) -> str:
    """``http://127.0.0.1:<nodePort>`` of ``namespace/name`` (its first port)."""
    from runbooks.errors import InvalidRequestError
    from runbooks.resilience import call_kubernetes, no_urllib3_retries

    namespace, _, name = service.rpartition("/")
    if not name:
        raise InvalidRequestError(f"service must be namespace/name, got {service!r}")
    endpoints = read_endpoints(state)
    if endpoints is None or not is_running(state):
        raise SandboxError(
            f"no sandbox is running from {state}; start it with `runbooks sandbox up`"
        )
    import kubernetes

    configuration = kubernetes.client.Configuration(host=endpoints["kube_api"])
    no_urllib3_retries(configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        found = call_kubernetes(
            f"read Service {namespace or 'default'}/{name}",
            kubernetes.client.CoreV1Api(client).read_namespaced_service,
            name,
            namespace or "default",
        )
    ports = [p.node_port for p in found.spec.ports or [] if p.node_port]
    if not ports:
        raise SandboxError(f"Service {service} has no nodePort yet")
    return f"http://127.0.0.1:{ports[0]}"


def is_running(state: Path) -> bool:
    info = _supervisor(state)
    return info is not None and _pid_alive(int(info["pid"]))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _refuse_or_clean(state: Path) -> None:
    info = _supervisor(state)
    if info is None:
        return
    if int(info["pid"]) != os.getpid() and _pid_alive(int(info["pid"])):
        raise SandboxError(
            f"a sandbox is already running from {state} (pid {info['pid']}); "
            "use it, or stop it with `runbooks sandbox down`"
        )
    logger.warning("cleaning up after a sandbox that did not stop (pid %s)", info["pid"])
    if int(info["pgid"]) == int(info["pid"]):  # only a group the supervisor led is ours
        kill_process_group(int(info["pgid"]), grace_seconds=5)
    for name in (ENDPOINTS, SUPERVISOR):
        (state / name).unlink(missing_ok=True)
