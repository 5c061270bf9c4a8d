"""The retry-storm incident drill: the demo shop storms, ``retry-storm`` contains it, all heals.

Used by ``runbooks demo``, ``benchmarks/retry_storm_drill.py`` and the end-to-end test, on a
shop deployed by :func:`sandbox.showcase.deploy_shop` (callers mount ``<name>-retry``, every
role mounts ``<name>-fault``), all through the Kubernetes API and Prometheus, as in a cluster:

1. steady load on the frontend (``/buy``, open loop: a fixed rate whatever the latency, as
   users do not slow down because the shop is failing);
2. payments made to fail (its fault ConfigMap: 503 to every call) while the callers run the
   shop's naive retry defaults (5 attempts, no budget, no breaker): frontend retries checkout,
   checkout retries payments, so payments sees up to 25 attempts per purchase;
3. once Prometheus shows both callers storming (the alert's signal over the runbook's window),
   ``retry-storm`` runs, like the automation would start it; payments heals ``heal_after``
   seconds into the run (as an outage ends), so the run goes the whole way: contain, recover,
   restore;
4. afterwards: the callers' retry documents are back to ``{}`` (no annotation), and the
   frontend's calls succeed again.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.retry_storm import RetryStormParams, storming
from runbooks import catalogue
from runbooks.catalogue import Launch
from runbooks.errors import UnavailableError
from runbooks.kit.events import read_event_names
from runbooks.resilience import call_kubernetes
from sandbox.showcase import FAULT_KEY, fault_config_map

Say = Callable[[str], None]
RUNBOOK = "retry-storm"

DRILL_PARAMS = {
    "window": "20s",
    "poll_seconds": 1.0,
    "apply_timeout_seconds": 20.0,
    "verify_after_seconds": 8.0,
    "settle_seconds": 15.0,
    "recovery_window": "4s",
    "recovery_timeout_seconds": 90.0,
    "relapse_watch_seconds": 8.0,
}
"""Windows for a Prometheus scraping every 2 s (the sandbox's), so the drill takes a minute
(the benchmark's settings)."""
DEMO_OVERRIDES = {"verify_after_seconds": 6.0, "settle_seconds": 12.0, "relapse_watch_seconds": 6.0}
"""The demo judges over three scrapes instead of four, to keep ``runbooks demo`` short."""


@dataclass(frozen=True)
class IncidentReport:
    result: Any  # RetryStormResult
    storm_seconds: float  # fault injected -> storm visible in Prometheus
    requests: int
    failed: int
    restored_documents: dict[str, str]
    after_error_share: float | None
    events: tuple[str, ...] = ()

    def figures(self) -> dict[str, Any]:
        r = self.result
        payments = r.load.get("payments", {})
        return {
            "stage": r.stage,
            "outcome": r.outcome.value,
            "rungs": list(r.rungs_applied),
            "in_force": list(r.in_force),
            "contained_after_seconds": r.contained_after_seconds,
            "recovered_after_seconds": r.recovered_after_seconds,
            "payments_load_storm_per_second": _round(payments.get("storm")),
            "payments_load_contained_per_second": _round(payments.get("contained")),
            "payments_load_restored_per_second": _round(payments.get("restored")),
            "payments_load_reduction_percent": _round(payments.get("reduction_percent")),
            "storm_visible_after_seconds": round(self.storm_seconds, 1),
            "frontend_requests": self.requests,
            "frontend_failed": self.failed,
            "after_error_share": _round(self.after_error_share),
            "events": [e.removeprefix("runbooks.retry-storm.") for e in self.events],
        }


def _round(value: float | None) -> float | None:
    """One decimal; no data (None or NaN) is None, so the figures stay valid JSON."""
    return None if value is None or math.isnan(value) else round(value, 1)


def set_fault(k8s: KubernetesTarget, namespace: str, deployment: str, fault: dict) -> None:
    """Write the shop Deployment's fault ConfigMap (``{}``: healthy)."""
    with k8s.get_api_client() as api:
        call_kubernetes(
            f"write the fault of {namespace}/{deployment}",
            k8s.core_v1(api).patch_namespaced_config_map,
            fault_config_map(deployment),
            namespace,
            {"data": {FAULT_KEY: json.dumps(fault) + "\n"}},
            idempotent=True,
        )


class Storm:
    """A storm in progress (see :func:`storm`): when it became visible, and the load."""

    def __init__(self, load: Any, seconds: float):
        self.load, self.visible_after_seconds = load, seconds


@contextlib.contextmanager
def storm(
    k8s: KubernetesTarget,
    prometheus: HttpService,
    shop: dict[str, Any],
    params: RetryStormParams,
    *,
    rps: float = 4.0,
    say: Say = lambda _: None,
) -> Iterator[Storm]:
    """Steady load on the frontend, payments failing, until Prometheus shows both callers
    storming (frontend's retry chains are longer: it shows a few seconds after checkout, as an
    alert with ``for:`` would see it); payments heals and the load stops on leaving."""
    from flows.retry_storm.steps import measure
    from tasks.load import RequestLoad

    namespace, payments = params.namespaces[0], shop["payments"].name
    load = RequestLoad(
        shop["frontend"].url, path="/buy?user=drill", rps=rps, concurrency=24, max_seconds=600
    )
    with load:
        wait_for_traffic(prometheus, params)
        say(f"   load {rps:g} purchases/s on the frontend; payments now fails every call...")
        set_fault(k8s, namespace, payments, {"error_rate": 1.0, "status": 503})
        injected = time.monotonic()
        try:
            _wait(
                lambda: len(storming(measure(prometheus, params, params.window).signals,
                                     params.thresholds)) >= 2,
                90,
                "the storm of both callers in Prometheus",
            )  # fmt: skip
            yield Storm(load, time.monotonic() - injected)
        finally:
            set_fault(k8s, namespace, payments, {})


def storm_incident(
    k8s: KubernetesTarget,
    prometheus: HttpService,
    shop: dict[str, Any],
    *,
    namespace: str = "default",
    rps: float = 4.0,
    heal_after_seconds: float = 30.0,
    overrides: dict[str, Any] | None = None,
    say: Say = lambda _: None,
    launch: Launch = catalogue.run_in_process,
) -> IncidentReport:
    """Run the drill on ``shop`` (role -> ShopService), the runbook through ``launch``; the
    runbook's result and the checks."""
    from flows.retry_storm.steps import measure
    from tasks.retry_config import read_retry_config

    params = RetryStormParams.model_validate(
        {"namespaces": [namespace], **DRILL_PARAMS, **(overrides or {})}
    )
    payments = shop["payments"].name
    with storm(k8s, prometheus, shop, params, rps=rps, say=say) as incident:
        say(f"   storm visible after {incident.visible_after_seconds:.0f} s; retry-storm runs")
        heal = threading.Timer(heal_after_seconds, set_fault, (k8s, namespace, payments, {}))
        heal.start()
        try:
            blocks = {"prometheus": prometheus, "kubernetes": k8s}
            result = launch(catalogue.runbook(RUNBOOK), params, blocks).unwrap()
        finally:
            heal.cancel()
        after = measure(prometheus, params, "5s")
    documents = {}
    for role in ("frontend", "checkout"):
        ns, name = params.config_map_of(f"{namespace}/{role}")
        config = read_retry_config.fn(k8s, ns, name, params.config_key)
        documents[role] = json.dumps(config.document) + (
            "" if config.original is None else " (annotated)"
        )
    shares = [s.error_rate for s in after.signals]
    return IncidentReport(
        result=result,
        storm_seconds=incident.visible_after_seconds,
        requests=incident.load.total,
        failed=incident.load.failed,
        restored_documents=documents,
        after_error_share=max(shares) if shares else None,
        events=tuple(
            sorted(read_event_names(RUNBOOK, namespace, until=f"runbooks.{RUNBOOK}.restored"))
        ),
    )


def wait_for_traffic(prometheus: HttpService, params: RetryStormParams) -> None:
    """Until Prometheus sees both callers' calls over the runbook's window (bounded)."""
    from flows.retry_storm.steps import measure

    def seen() -> bool:
        m = measure(prometheus, params, params.window)
        floor = params.thresholds.min_request_rate
        return sum(1 for s in m.signals if s.request_rate >= floor) >= 2

    _wait(seen, 60, "the frontend's calls in Prometheus")


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise UnavailableError(f"the drill waited {seconds:g} s for {what} in vain")
        time.sleep(1.0)


def storm_step(
    shop: dict[str, Any],
    endpoints: dict[str, str],
    say: Say,
    launch: Launch = catalogue.run_in_process,
) -> dict[str, Any]:
    """The demo's retry-storm incident on its shop (namespace ``default``), with the saved
    sandbox blocks (``launch`` may run the runbook through its deployment); its figures."""
    if not endpoints.get("prometheus"):
        say("   Prometheus is not installed (apt-get install prometheus): skipped")
        return {"stage": "skipped"}
    blocks = catalogue.load_blocks(catalogue.runbook(RUNBOOK), {})
    target, prometheus = blocks["kubernetes"], blocks["prometheus"]
    report = storm_incident(target, prometheus, shop, namespace=target.namespace or "default",
                            heal_after_seconds=15, overrides=DEMO_OVERRIDES, say=say,
                            launch=launch)  # fmt: skip
    r = report.result
    say(f"   retry-storm: {r.outcome.value} ({r.stage}): {r.reason}")
    return report.figures() | {"documents_after": report.restored_documents}


def format_storm(figures: dict[str, Any]) -> str:
    """The retry-storm step of the demo, a few lines."""
    lines = ["retry-storm (payments fails; callers on naive retries: 5 attempts, no budget)"]
    if figures.get("stage") == "skipped":
        return "\n".join([*lines, "  skipped: no Prometheus"])
    lines += [
        f"  outcome              {figures['outcome']} ({figures['stage']}), rungs "
        f"{', '.join(figures['rungs']) or '-'}",
        f"  contained after      {figures['contained_after_seconds']} s (goal <= 30 s)",
        f"  payments load        {figures['payments_load_storm_per_second']}/s storm -> "
        f"{figures['payments_load_contained_per_second']}/s contained "
        f"(-{figures['payments_load_reduction_percent']} %, goal >= 70 %) -> "
        f"{figures['payments_load_restored_per_second']}/s restored",
        f"  recovered after      {figures['recovered_after_seconds']} s; settings restored: "
        + ", ".join(f"{k} {v}" for k, v in figures.get("documents_after", {}).items()),
    ]
    return "\n".join(lines)
