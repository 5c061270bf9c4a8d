"""Sandbox benchmark: how long until a newcomer can work, and what the service proxy costs.

Measures, in one run:

1. the time to bring the sandbox up (Kubernetes API emulator, controller + pod runner + proxy,
   moto, Prometheus when installed), then separately the Prefect server (``--no-prefect``
   skips it: it dominates and is not ours);
2. the time from creating a 3-replica Deployment of ``demo/shop:v1`` (+ its Service) with the
   official client to the Deployment reporting 3 available replicas;
3. the proxy's added latency: the same GET to a pod directly and through the Service's
   nodePort, interleaved on one keep-alive connection each (the baseline is the direct call,
   measured in the same run), as p50/p95 and as a ratio.

    .venv/bin/python benchmarks/sandbox_startup.py [--json] [--no-prefect] [--requests N]

(Not ``benchmarks/sandbox.py``: run as a script, that name would shadow the ``sandbox`` package.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

from runbooks.resilience import no_urllib3_retries
from sandbox.showcase import deployment_manifest, service_manifest
from sandbox.stack import Stack
from sandbox.supervisor import build_stack

NAMESPACE = "default"
NAME = "bench"


def _deploy_and_wait(kube_url: str, timeout_seconds: float = 60) -> float:
    configuration = kubernetes.client.Configuration(host=kube_url)
    no_urllib3_retries(configuration)
    deployment = deployment_manifest(NAME, "payments", "demo/shop:v1", 3, {})
    service = service_manifest(NAME, {"app": NAME, "role": "payments"})
    with kubernetes.client.ApiClient(configuration) as client:
        apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
        began = time.monotonic()
        apps.create_namespaced_deployment(NAMESPACE, deployment)
        core.create_namespaced_service(NAMESPACE, service)
        deadline = began + timeout_seconds
        while time.monotonic() < deadline:
            status = apps.read_namespaced_deployment_status(NAME, NAMESPACE).status
            if (status.available_replicas or 0) >= 3:
                return time.monotonic() - began
            time.sleep(0.05)
    raise TimeoutError(f"the Deployment was not available within {timeout_seconds:g}s")


def _component(stack: Stack, name: str):
    return next(c for c in stack.components if c.name == name)


def run(prefect: bool, requests: int) -> dict[str, float | int | bool]:
    figures: dict[str, float | int | bool] = {}
    with tempfile.TemporaryDirectory(prefix="runbooks-bench-") as folder:
        state = Path(folder)
        core = build_stack(state, prefect=False)
        began = time.monotonic()
        endpoints = core.start()
        figures["sandbox_up_seconds"] = round(time.monotonic() - began, 3)
        figures["prometheus_included"] = bool(endpoints.get("prometheus"))
        try:
            if prefect:
                from sandbox.stack import PrefectComponent

                server = PrefectComponent(state)
                began = time.monotonic()
                server.start()
                figures["prefect_server_up_seconds"] = round(time.monotonic() - began, 3)
                server.stop()
            figures["deployment_3_ready_seconds"] = round(
                _deploy_and_wait(endpoints["kube_api"]), 3
            )
            cluster = _component(core, "cluster").cluster
            latency = cluster.measure_proxy_latency(NAMESPACE, NAME, requests=requests)
            figures |= {
                "proxy_requests": latency.requests,
                "direct_p50_ms": round(latency.direct_p50_ms, 3),
                "direct_p95_ms": round(latency.direct_p95_ms, 3),
                "proxied_p50_ms": round(latency.proxied_p50_ms, 3),
                "proxied_p95_ms": round(latency.proxied_p95_ms, 3),
                "proxy_added_p50_ms": round(latency.added_p50_ms, 3),
                "proxy_added_p95_ms": round(latency.added_p95_ms, 3),
                "proxy_p50_ratio": round(latency.proxied_p50_ms / latency.direct_p50_ms, 2),
            }
        finally:
            core.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect server")
    parser.add_argument("--requests", type=int, default=500, help="proxy latency samples")
    args = parser.parse_args(argv)
    figures = run(prefect=not args.no_prefect, requests=args.requests)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    rows = [
        ("sandbox up (kube API, cluster, moto, prometheus)", f"{figures['sandbox_up_seconds']} s"),
    ]
    if "prefect_server_up_seconds" in figures:
        rows.append(("Prefect server up (separately)", f"{figures['prefect_server_up_seconds']} s"))
    rows += [
        (
            "3-replica Deployment created -> 3 available",
            f"{figures['deployment_3_ready_seconds']} s",
        ),
        (
            "GET /ready direct to a pod, p50 / p95",
            f"{figures['direct_p50_ms']} / {figures['direct_p95_ms']} ms",
        ),
        (
            "GET /ready through the Service, p50 / p95",
            f"{figures['proxied_p50_ms']} / {figures['proxied_p95_ms']} ms",
        ),
        (
            "proxy adds, p50 / p95",
            f"{figures['proxy_added_p50_ms']} / {figures['proxy_added_p95_ms']} ms",
        ),
        ("proxied / direct, p50", f"{figures['proxy_p50_ratio']}x"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    if not figures["prometheus_included"]:
        print("(prometheus is not installed: apt-get install prometheus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
