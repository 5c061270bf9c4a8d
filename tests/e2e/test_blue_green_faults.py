"""The ``blue-green`` flow when the API server or the flow's own process fails (issue 4, Faults).

What every test here proves, besides its own outcome: a load generator sends requests through
the active Service for the whole run with 0 failures, and a :class:`Watcher` samples the active
Service all along, twice over (the sandbox proxy's route table, which is what the load meets,
and the Kubernetes API: the selector and the ready pods it matches), recording any moment it
selects zero ready pods: there must be none.

- **API faults** come from the API emulator's fault injector (``/_sandbox/faults``), aimed at
  PATCHes of the active Service only (the selector switch and the switch back). Faults are
  matched in the order they were added, so a chain counts attempts exactly: a pass-through
  fault (``hang`` for 0 s, no status) lets a request through and counts it. The retry bounds are
  the resilience policy's (3 attempts); the autouse ``resilience.testing()`` switch records the
  backoff waits instead of sleeping them, so the bounds cost no time.
- **Crashes**: the flow runs in a child process (same Prefect API, same kubeconfig) that is
  SIGKILLed before the switch (during pre-promotion analysis) or right after it; the killed
  run's lock lease is freed with ``release_target`` (the operator's step, see
  ``runbooks.kit.locking``) and the flow is run again in this process: it converges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bluegreen_shop import FAST, NAMESPACE, Shop

from blocks import KubernetesTarget
from decisions.analysis import AnalysisSpec
from decisions.bluegreen import BlueGreenParams, PlanOutcome
from flows.blue_green import BlueGreenResult, RolloutOutcome, blue_green
from runbooks import resilience
from runbooks.kit import Outcome
from runbooks.kit.locking import release_target
from sandbox.cluster import Fault
from sandbox.cluster.objects import is_ready
from sandbox.load import Load
from tasks.kubernetes import patch_service_selector

REPO = Path(__file__).resolve().parents[2]
ATTEMPTS = resilience.ResiliencePolicy().backoff.max_attempts
DEADLINE_SECONDS = 90.0
LONG = AnalysisSpec(interval_seconds=0.5, count=40, success_rate_min=None, p95_latency_max_ms=None)
"""A 20 s analysis for the child runs: time to kill them in the middle of it."""


# -- the watcher -----------------------------------------------------------------------------


@dataclass
class Watcher:
    """Samples the active Service in a thread; ``gaps`` lists every moment it selected no
    ready pod, ``errors`` every sample that could not be taken.

    Two views: the sandbox proxy's route for the Service (every 20 ms; the route is swapped
    atomically, so an empty one is a real gap in service), and the API's selector plus the ready
    pods it matches (every 100 ms; an empty match counts only if a second read shows the same
    selector, so a switch landing between the two reads is not mistaken for a gap).
    """

    sandbox: Any
    shop: Shop
    gaps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    proxy_samples: int = 0
    api_samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _selector(self, core: Any) -> dict[str, str]:
        found = core.read_namespaced_service(self.shop.service, NAMESPACE)
        return dict(found.spec.selector or {})

    def _ready_pods(self, api: Any, core: Any, selector: dict[str, str]) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=labels).items
        return [pod.metadata.name for pod in pods if is_ready(api.sanitize_for_serialization(pod))]

    def _sample_api(self, api: Any, core: Any) -> None:
        selector = self._selector(core)
        if not self._ready_pods(api, core, selector) and self._selector(core) == selector:
            self.gaps.append(f"{time.monotonic():.3f} API: {selector} matches no ready pod")
        self.api_samples += 1

    def _sample_proxy(self) -> None:
        if not self.sandbox.cluster.endpoints(NAMESPACE, self.shop.service):
            self.gaps.append(f"{time.monotonic():.3f} proxy: no ready endpoint")
        self.proxy_samples += 1

    def _loop(self) -> None:
        with self.shop.k8s.get_api_client() as api:
            core = self.shop.k8s.core_v1(api)
            next_api = 0.0
            while not self._stop.wait(0.02):
                self._sample_proxy()
                if time.monotonic() >= next_api:
                    try:
                        self._sample_api(api, core)
                    except Exception as exc:  # no sample, but reported
                        self.errors.append(f"{time.monotonic():.3f} API read failed: {exc!r}")
                    next_api = time.monotonic() + 0.1

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@contextmanager
def guarded(sandbox: Any, shop: Shop) -> Iterator[None]:
    """Load through the active Service and a watcher on it, checked when the block ends."""
    with Load(shop.url) as load, Watcher(sandbox, shop) as watcher:
        yield
        time.sleep(0.3)  # a few samples after the last change
    assert watcher.gaps == [], watcher.gaps[:5]
    assert watcher.errors == [], watcher.errors[:5]
    assert watcher.proxy_samples > 20, watcher.proxy_samples
    assert watcher.api_samples > 5, watcher.api_samples
    assert load.failures == [], load.failures[:5]
    assert load.total > 100, load.total


def test_the_watcher_sees_a_service_selecting_no_ready_pod(sandbox, shop: Shop) -> None:
    """The instrument itself: a selector that matches nothing is seen by both views."""
    blue = {"app": shop.service, "colour": "blue"}
    with Watcher(sandbox, shop) as watcher:
        time.sleep(0.3)
        assert watcher.gaps == []
        patch_service_selector.fn(shop.k8s, NAMESPACE, shop.service, blue | {"colour": "none"})
        time.sleep(0.5)
        patch_service_selector.fn(shop.k8s, NAMESPACE, shop.service, blue)
        sandbox.cluster.wait_for_service(NAMESPACE, shop.service, endpoints=2)
    assert any("proxy: no ready endpoint" in gap for gap in watcher.gaps), watcher.gaps
    assert any("matches no ready pod" in gap for gap in watcher.gaps), watcher.gaps
    assert watcher.errors == []


# -- API faults on the active Service's PATCHes ----------------------------------------------------


@dataclass
class Faults:
    """The API emulator's fault injector, aimed at PATCHes of one Service."""

    client: httpx.Client

    def inject(self, service: str, **fault: Any) -> int:
        path = rf"/namespaces/{NAMESPACE}/services/{service}$"
        created = self.client.post(
            "/_sandbox/faults", json={"method": "PATCH", "path": path} | fault
        )
        created.raise_for_status()
        return created.json()["id"]

    def hits(self, *ids: int) -> tuple[int, ...]:
        """How many requests each fault caught, in the order asked."""
        listed = self.client.get("/_sandbox/faults").json()["faults"]
        by_id = {f["id"]: f["hits"] for f in listed}
        return tuple(by_id[i] for i in ids)


@pytest.fixture
def faults(sandbox) -> Iterator[Faults]:
    """The injector of the session's API emulator; every fault is cleared afterwards."""
    with httpx.Client(base_url=sandbox.endpoints["kube_api"], timeout=5) as client:
        yield Faults(client)
        client.delete("/_sandbox/faults").raise_for_status()


PASS = {"action": "hang", "seconds": 0}
"""A pass-through fault: the request is served normally, and counted."""


def assert_ended(result: BlueGreenResult, shop: Shop, rollout: RolloutOutcome) -> None:
    """``rollout`` happened and the cluster shows it: the selector, and the other colour at 0."""
    promoted = rollout is RolloutOutcome.PROMOTED
    active, idle = ("green", "blue") if promoted else ("blue", "green")
    assert result.rollout is rollout, result.reason
    assert result.outcome is (Outcome.SUCCEEDED if promoted else Outcome.ROLLED_BACK)
    assert (result.active_colour, result.active_image) == (active, f"demo/shop:v{1 + promoted}")
    assert shop.selector() == {"app": shop.service, "colour": active}
    assert (shop.deployment(active).spec.replicas, shop.deployment(idle).spec.replicas) == (2, 0)
    assert shop.deployment("green").spec.template.spec.containers[0].image == "demo/shop:v2"


@pytest.mark.parametrize("status", [503, 500])
def test_switch_answered_5xx_is_retried_and_promoted(
    sandbox, shop: Shop, faults: Faults, status: int
) -> None:
    failing = faults.inject(shop.service, status=status, times=ATTEMPTS - 1)
    passed = faults.inject(shop.service, **PASS, times=None)
    with guarded(sandbox, shop), resilience.testing() as waits:
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=shop.k8s)
    assert_ended(result, shop, RolloutOutcome.PROMOTED)
    # the switch: ATTEMPTS - 1 failures, then the last attempt the policy allows went through
    assert faults.hits(failing, passed) == (ATTEMPTS - 1, 1)
    assert len(waits) >= ATTEMPTS - 1  # backoff waits recorded, not slept


def test_switch_timing_out_is_retried_and_promoted(sandbox, shop: Shop, faults: Faults) -> None:
    impatient = KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"],
        context="sandbox",
        namespace=NAMESPACE,
        request_timeout_seconds=2,
    )
    # held longer than the client's read timeout: the client gives up and the emulator drops the
    # request unserved when it sees the client gone
    hung = faults.inject(shop.service, action="hang", seconds=6, times=1)
    passed = faults.inject(shop.service, **PASS, times=None)
    with guarded(sandbox, shop):
        started = time.monotonic()
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=impatient)
        elapsed = time.monotonic() - started
    assert_ended(result, shop, RolloutOutcome.PROMOTED)
    assert faults.hits(hung, passed) == (1, 1)
    assert elapsed < 60, elapsed


def test_switch_failing_every_time_rolls_back(sandbox, shop: Shop, faults: Faults) -> None:
    # the forward switch, then the switch back: both see only 503s
    switch = faults.inject(shop.service, status=503, times=ATTEMPTS)
    switch_back = faults.inject(shop.service, status=503, times=None)
    with guarded(sandbox, shop):
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=shop.k8s)
    assert_ended(result, shop, RolloutOutcome.ROLLED_BACK)
    assert f"patch the selector of Service {NAMESPACE}/{shop.service}" in result.reason
    assert "HTTP 503" in result.reason
    switch_hits, back_hits = faults.hits(switch, switch_back)
    assert switch_hits == ATTEMPTS  # retried within bounds, never more
    # the switch back failed too, but reading the selector back shows blue: nothing to undo
    assert 1 <= back_hits <= ATTEMPTS
    assert result.undone == ("undo_switch", "undo_deploy_idle")
    assert {row.phase for row in result.measurements} == {"pre_analysis"}


def test_switch_back_failing_transiently_is_retried(sandbox, shop: Shop, faults: Faults) -> None:
    """Green passes pre-promotion (checked on /ready), then fails the bake (/health degraded
    by a fault that leaves its business requests alone); the switch back meets two 503s."""
    switch = faults.inject(shop.service, **PASS, times=1)
    failing = faults.inject(shop.service, status=503, times=ATTEMPTS - 1)
    passed = faults.inject(shop.service, **PASS, times=None)
    preview = f"{shop.service}-preview"
    degraded: list[str] = []

    def degrade_green() -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(sandbox.cluster.endpoints(NAMESPACE, preview)) < 2:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        degraded.extend(
            sandbox.cluster.set_service_fault(NAMESPACE, preview, Fault(degrade_health=True))
        )

    params = shop.params(
        "demo/shop:v2", pre_promotion=FAST.model_copy(update={"health_path": "/ready"})
    )
    helper = threading.Thread(target=degrade_green, daemon=True)
    with guarded(sandbox, shop):
        helper.start()
        result = blue_green(params=params, kubernetes=shop.k8s)
    helper.join(5)
    assert len(degraded) == 2, degraded
    assert_ended(result, shop, RolloutOutcome.ROLLED_BACK)
    assert "post_analysis" in result.reason
    assert result.undone == ("undo_switch", "undo_deploy_idle")
    assert result.rollback_seconds is not None
    assert result.rollback_seconds < 15
    assert faults.hits(switch, failing, passed) == (1, ATTEMPTS - 1, 1)


# -- the flow's process killed mid-rollout -----------------------------------------------------

CHILD = """
import json, sys
from blocks import KubernetesTarget
from decisions.bluegreen import BlueGreenParams
from flows.blue_green import blue_green

params = BlueGreenParams.model_validate_json(sys.argv[1])
blue_green(params=params, kubernetes=KubernetesTarget(**json.loads(sys.argv[2])))
"""


@contextmanager
def child_run(
    prefect_server: str, shop: Shop, params: BlueGreenParams, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The flow in a child process against the same Prefect API and kubeconfig; killed at exit."""
    k8s = {
        "kubeconfig_path": str(shop.k8s.kubeconfig_path),
        "context": shop.k8s.context,
        "namespace": NAMESPACE,
    }
    env = os.environ | {"PREFECT_API_URL": prefect_server}
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, params.model_dump_json(), json.dumps(k8s)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)


def wait_until(check: Callable[[], bool], what: str, child: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if child.poll() is not None:
            raise AssertionError(
                f"the child ended ({child.returncode}) before {what}:\n" + log.read_text()[-3000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {DEADLINE_SECONDS:g}s")
        time.sleep(0.02)


def kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL


def free_the_dead_runs_lock(params: BlueGreenParams) -> None:
    """The operator's step after a crash: the killed run's lease would block the re-run."""
    released = release_target(params.target)
    assert released is not None, "the killed run held the lock"
    assert released.holder_type == "flow_run"


def test_killed_before_the_switch_converges_on_rerun(
    sandbox, prefect_server, shop: Shop, tmp_path: Path
) -> None:
    preview = f"{shop.service}-preview"
    log = tmp_path / "child.log"
    with guarded(sandbox, shop):
        params = shop.params("demo/shop:v2", pre_promotion=LONG)
        with child_run(prefect_server, shop, params, log) as child:
            wait_until(
                lambda: bool(sandbox.cluster.endpoints(NAMESPACE, preview)), "preview", child, log
            )
            time.sleep(1.0)  # inside pre-promotion analysis (20 s long)
            kill(child)
        assert shop.selector() == {"app": shop.service, "colour": "blue"}
        generation = shop.deployment("green").metadata.generation
        free_the_dead_runs_lock(params)
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=shop.k8s)
    assert result.plan is not None
    assert result.plan.outcome is PlanOutcome.ROLLOUT  # green deployed again, idempotently:
    assert shop.deployment("green").metadata.generation == generation  # no new rollout
    assert_ended(result, shop, RolloutOutcome.PROMOTED)


def test_killed_right_after_the_switch_resumes_on_rerun(
    sandbox, prefect_server, shop: Shop, tmp_path: Path
) -> None:
    green = {"app": shop.service, "colour": "green"}
    log = tmp_path / "child.log"
    with guarded(sandbox, shop):
        params = shop.params("demo/shop:v2", post_promotion=LONG)
        with child_run(prefect_server, shop, params, log) as child:
            wait_until(lambda: shop.selector() == green, "switch to green", child, log)
            kill(child)
        assert shop.deployment("blue").spec.replicas == 2  # killed before the scale-down
        free_the_dead_runs_lock(params)
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=shop.k8s)
    assert result.plan is not None
    assert result.plan.outcome is PlanOutcome.RESUME, result.plan.reason
    assert [s.key for s in result.plan.steps] == ["lock", "post_analysis", "scale_down_old"]
    assert {row.phase for row in result.measurements} == {"post_analysis"}
    assert_ended(result, shop, RolloutOutcome.PROMOTED)
