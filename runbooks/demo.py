"""``runbooks demo``: everything that exists, end to end, on a sandbox of its own.

It grows as runbooks land. Today, in order:

1. the sandbox comes up (Kubernetes API emulator, cluster, moto, Prometheus when installed);
2. the demo shop is deployed through the ``KubernetesTarget`` block and the official client,
   and real requests go through its Services (frontend -> checkout -> payments);
3. Prometheus, scraping the pods, reports the request rate per role;
4. the retry-storm drill compares the recipe card's retry loop with our resilience layer.

Everything it started is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

Say = Callable[[str], None]


def run_demo(
    say: Say, *, drill_settings: Any | None = None, requests: int = 30
) -> tuple[dict[str, Any], Any]:
    """Run the demo; report progress through ``say``; return its figures and the drill report."""
    from blocks import KubernetesTarget
    from sandbox.showcase import deploy_shop
    from sandbox.storm import run_drill
    from sandbox.supervisor import build_stack

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="runbooks-demo-") as folder:
        say("1. starting the sandbox (Kubernetes API, cluster, moto, Prometheus)...")
        stack = build_stack(Path(folder), prefect=False)
        began = time.monotonic()
        endpoints = stack.start()
        try:
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
            say(f"   all available in {figures['shop_ready_seconds']} s; frontend at {frontend}")
            figures |= _shop_traffic(frontend, requests, say)

            if endpoints.get("prometheus"):
                say("3. asking Prometheus for the request rate per role...")
                figures["prometheus_rates_per_second"] = _rates(endpoints["prometheus"], say)
            else:
                say("3. Prometheus is not installed (apt-get install prometheus): skipped")
        finally:
            stack.stop()
    say("4. the retry-storm drill: the recipe card's retry loop vs our resilience layer...")
    report = run_drill(drill_settings)
    figures["drill"] = report.figures()
    return figures, report


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
