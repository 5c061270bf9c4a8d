"""``runbooks demo``: everything that exists, end to end, on a sandbox of its own.

It grows as runbooks land. Today, in order:

1. the sandbox comes up (Kubernetes API emulator, cluster, moto, Prometheus when installed),
   and a Prefect server boots in the background meanwhile (it takes ~20 s, the longest part);
2. the demo shop is deployed through the ``KubernetesTarget`` block and the official client,
   and real requests go through its Services (frontend -> checkout -> payments);
3. Prometheus, scraping the pods, reports the request rate per role;
4. ``blue-green``, run the way ``runbooks run`` runs it (blocks saved on the Prefect server, loaded
   by name, the flow run in-process): a blue v1 behind its active Service is rolled out to
   ``demo/shop:v2`` (promoted), then to ``demo/shop:v3-broken`` (rolled back), each under a load
   generator counting failed requests through the active Service. Analyses are short and health
   only (0.5 s x 3, no Prometheus thresholds) so the demo stays fast;
5. ``load-forecast`` and ``apply-scaling`` (:mod:`runbooks.demo_forecast`): four weeks of load
   written where the runbook's sources read (CloudWatch on moto, CSV files), three services
   backtested, forecast and planned for 48 h; an Auto Scaling group's scheduled actions written
   on moto, two HPAs' ``minReplicas`` set to this hour's plan;
6. ``tracing-rollout`` (:mod:`runbooks.demo_tracing`) traces the shop through its Deployments'
   env, checkout first as the canary, each service verified in the sandbox's trace store; one
   purchase's trace then shows frontend -> checkout -> payments;
7. ``retry-storm`` (:mod:`runbooks.demo_storm`): payments fails while the callers retry
   naively; once Prometheus shows the storm the runbook contains it in the callers' retry
   ConfigMaps, waits for payments to heal and restores the settings;
8. the retry-storm drill compares the recipe card's retry loop with our resilience layer; it runs
   after the sandbox has stopped, so its timings see a quiet machine.

Everything it started is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

Say = Callable[[str], None]


BLUE_GREEN_SERVICE = "bg-payments"
BLUE_GREEN_IMAGES = ("demo/shop:v1", "demo/shop:v2", "demo/shop:v3-broken")
_FAST_ANALYSIS = {
    "interval_seconds": 0.5,
    "count": 3,
    "success_rate_min": None,
    "p95_latency_max_ms": None,
}


def run_demo(
    say: Say, *, drill_settings: Any | None = None, requests: int = 30
) -> tuple[dict[str, Any], Any]:
    """Run the demo; report progress through ``say``; return its figures and the drill report."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="runbooks-demo-") as folder:
        _private_prefect(Path(folder) / "prefect-client")
        from blocks import KubernetesTarget
        from runbooks.demo_forecast import forecast_step
        from runbooks.demo_storm import storm_step
        from runbooks.demo_tracing import tracing_step
        from sandbox.showcase import deploy_shop
        from sandbox.stack import PrefectComponent
        from sandbox.storm import run_drill
        from sandbox.supervisor import build_stack

        say("1. starting the sandbox (Kubernetes API, cluster, moto, Prometheus)...")
        prefect = PrefectComponent(Path(folder))
        with ThreadPoolExecutor(1, thread_name_prefix="prefect-server") as pool:
            prefect_up = pool.submit(prefect.start)
            stack = build_stack(Path(folder), prefect=False)
            try:
                began = time.monotonic()
                endpoints = stack.start()
                figures["sandbox_up_seconds"] = round(time.monotonic() - began, 2)
                up = figures["sandbox_up_seconds"]
                say(f"   up in {up} s: Kubernetes API {endpoints['kube_api']}")

                say("2. deploying the demo shop v1 (3 Deployments x 2 pods, 3 Services)...")
                target = KubernetesTarget(
                    kubeconfig_path=endpoints["kubeconfig"], context="sandbox", namespace="default"
                )
                client = target.get_api_client()
                began = time.monotonic()
                shop = deploy_shop(target.apps_v1(client), target.core_v1(client), replicas=2)
                figures["shop_ready_seconds"] = round(time.monotonic() - began, 2)
                frontend = shop["frontend"].url
                say(
                    f"   all available in {figures['shop_ready_seconds']} s; frontend at {frontend}"
                )
                figures |= _shop_traffic(frontend, requests, say)

                if endpoints.get("prometheus"):
                    say("3. asking Prometheus for the request rate per role...")
                    figures["prometheus_rates_per_second"] = _rates(endpoints["prometheus"], say)
                else:
                    say("3. Prometheus is not installed (apt-get install prometheus): skipped")

                with _prefect_ready(endpoints, prefect_up, say):
                    say("4. blue-green: v1 -> v2 (promoted), then v2 -> v3-broken (rolled back)...")
                    figures["blue_green"] = _blue_green(target, client, say)
                    say("5. load-forecast (28 days of history, 48 h plan), then apply-scaling...")
                    figures["load_forecast"] = forecast_step(target, client, endpoints, say)
                    say("6. tracing-rollout: checkout as canary, then frontend and payments...")
                    figures["tracing"] = tracing_step(shop, endpoints, say)
                    say("7. retry-storm: payments fails, the callers storm, the runbook acts...")
                    figures["retry_storm"] = storm_step(target, shop, endpoints, say)
            finally:
                try:
                    stack.stop()
                finally:
                    with contextlib.suppress(Exception):  # its failure is reported above
                        prefect_up.result()
                    prefect.stop()
    say("8. the retry-storm drill: the recipe card's retry loop vs our resilience layer...")
    report = run_drill(drill_settings)
    figures["drill"] = report.figures()
    return figures, report


def _private_prefect(home: Path) -> None:
    """The demo's Prefect client: its own home, quiet, never the user's server or profile.

    Prefect reads these once, at import, so this runs before anything imports it; the API URL
    is set later, with ``temporary_settings``, once the demo's own server answers.
    """
    from sandbox.stack import prefect_settings

    for name in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[name]
    os.environ.update(prefect_settings(home) | {"PREFECT_LOGGING_LEVEL": "ERROR"})


@contextlib.contextmanager
def _prefect_ready(endpoints: dict[str, str], prefect_up: Future, say: Say) -> Iterator[None]:
    """Wait for the demo's Prefect server, point the client at it, save the sandbox's blocks;
    drain the logs and events before leaving, so nothing is lost when the server stops."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from sandbox.blocks_registration import main as save_sandbox_blocks

    began = time.monotonic()
    prefect = prefect_up.result()
    waited = round(time.monotonic() - began, 1)
    say(f"   Prefect server at {prefect['prefect_ui']} (waited {waited} s more for it)")
    settings = {PREFECT_API_URL: prefect["prefect_api"], PREFECT_UI_URL: prefect["prefect_ui"]}
    with temporary_settings(updates=settings):
        try:
            saved = save_sandbox_blocks(endpoints)
            say(f"   blocks saved: {', '.join(saved)}")
            yield
        finally:
            _drain_prefect()


def _blue_green(target: Any, client: Any, say: Say) -> dict[str, Any]:
    """Deploy blue v1, run the two rollouts; their figures."""
    from runbooks import catalogue
    from sandbox.showcase import deploy_blue_green

    service = BLUE_GREEN_SERVICE
    url = deploy_blue_green(
        target.apps_v1(client), target.core_v1(client), service, image=BLUE_GREEN_IMAGES[0]
    )
    say(f"   {service}-blue runs {BLUE_GREEN_IMAGES[0]} behind the active Service at {url}")
    entry = catalogue.runbook("blue-green")
    blocks = catalogue.load_blocks(entry, {"prometheus": None})
    return {
        name: _rollout(entry, blocks, service, image, url, say)
        for name, image in zip(("promote", "rollback"), BLUE_GREEN_IMAGES[1:], strict=True)
    }


def _rollout(
    entry: Any, blocks: dict[str, Any], service: str, image: str, url: str, say: Say
) -> dict[str, Any]:
    from runbooks import catalogue
    from sandbox.load import Load

    params = catalogue.build_params(
        entry,
        overrides={
            "service": service,
            "image": image,
            "replicas": 2,
            "pre_promotion": _FAST_ANALYSIS,
            "post_promotion": _FAST_ANALYSIS,
            "scale_down_delay_seconds": 1,
            "progress_deadline_seconds": 60,
        },
    )
    with Load(url) as load:
        began = time.monotonic()
        launched = catalogue.run_in_process(entry, params, blocks)
        seconds = round(time.monotonic() - began, 2)
    if launched.error is not None:
        raise launched.error
    result = launched.result
    run = {
        "image": image,
        "outcome": result.rollout.value,
        "requests": load.total,
        "failed_requests": len(load.failures),
        "rollback_seconds": result.rollback_seconds,
        "run_seconds": seconds,
    }
    rollback = f", restored in {result.rollback_seconds} s" if result.rollback_seconds else ""
    say(
        f"   -> {image}: {run['outcome']} in {seconds} s{rollback}; "
        f"{run['failed_requests']} of {run['requests']} requests failed"
    )
    return run


def _drain_prefect() -> None:
    """Send the buffered logs and events before the demo's server stops (no shutdown errors)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


def format_blue_green(runs: dict[str, Any]) -> str:
    """The two rollouts of the demo as a small table."""
    rows = [
        ("blue-green (analysis 0.5 s x 3, health only)", "outcome", "failed / requests", "rollback")
    ]
    previous = BLUE_GREEN_IMAGES[0]
    for run in runs.values():
        seconds = run["rollback_seconds"]
        rows.append(
            (
                f"  {previous} -> {run['image']}",
                run["outcome"],
                f"{run['failed_requests']} / {run['requests']}",
                "-" if seconds is None else f"{seconds} s",
            )
        )
        if run["outcome"] == "promoted":
            previous = run["image"]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _shop_traffic(frontend: str, requests: int, say: Say) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    chain: list[dict[str, str]] = []
    with httpx.Client(base_url=frontend, timeout=5.0) as http:
        for number in range(requests):
            response = http.get("/buy", params={"user": f"user-{number}"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.is_success and not chain:
                chain = response.json().get("chain", [])
    path = " -> ".join(f"{hop['role']} {hop['version']} ({hop['pod']})" for hop in chain)
    say(f"   {requests} purchases: {statuses}; one went {path}")
    return {"shop_requests": requests, "shop_statuses": statuses}


def _rates(prometheus: str, say: Say, wait_seconds: float = 20.0) -> dict[str, float]:
    query = "sum by (role) (rate(shop_requests_total[15s]))"
    deadline = time.monotonic() + wait_seconds
    rates: dict[str, float] = {}
    with httpx.Client(base_url=prometheus, timeout=5.0) as http:
        while time.monotonic() < deadline and len(rates) < 3:
            result = http.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
            rates = {r["metric"].get("role", "?"): round(float(r["value"][1]), 2) for r in result}
            rates = {role: rate for role, rate in rates.items() if rate > 0}
            time.sleep(0.5)
    say(f"   requests/s by role (Prometheus, 15 s window): {rates or 'no data yet'}")
    return rates
