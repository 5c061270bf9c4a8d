"""Retry-storm incident benchmark: the ``retry-storm`` runbook against a real storm of the shop.

Starts the sandbox in-process and a temporary Prefect test server, deploys the demo shop
(frontend -> checkout -> payments, ``--replicas`` pods each) in a namespace of its own, and runs
:func:`runbooks.demo_storm.storm_incident` ``--runs`` times: steady load on the frontend,
payments made to fail (503) through its fault ConfigMap while the callers retry naively (5
attempts, no budget, no breaker), the runbook started once Prometheus shows both callers
storming, payments healed ``--heal-after`` seconds into the run.

Figures, all from Prometheus (the runbook's own measurements, in its result):

- **contained after**: from the run's start to the verdict "no caller retries more than 20 %
  of its requests" over the time since the pods took the change (the recipe: within 30 s);
- **payments' load**: attempts per second it receives during the storm (the baseline: what it
  keeps receiving with no runbook until it heals, since nothing else changes the callers'
  settings), once contained, and after the settings are restored; the **ratio** contained /
  storm and the reduction (the recipe: 70-90 %);
- **recovered after** (3 healthy intervals in a row) and whether the callers' documents are
  back to exactly what they were (``{}``, no annotation).

    .venv/bin/python benchmarks/retry_storm_drill.py [--json] [--runs N] [--rps R]
                                                     [--heal-after S] [--replicas N]

Loopback only; about 80 s per run. A benchmark reports, it does not judge: the acceptance
targets are asserted by ``tests/e2e/test_retry_storm.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from benchmarks.prefect_env import quiet_prefect_environment


def run(runs: int, rps: float, heal_after: float, replicas: int) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from blocks import HttpService, KubernetesTarget
    from runbooks.demo_storm import storm_incident
    from sandbox.showcase import deploy_shop
    from sandbox.supervisor import build_stack

    per_run: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runbooks-bench-storm-") as folder:
        stack = build_stack(Path(folder), prefect=False)
        endpoints = stack.start()
        try:
            if not endpoints.get("prometheus"):
                raise SystemExit("Prometheus is not installed (apt-get install prometheus)")
            namespace = f"bench-{uuid.uuid4().hex[:6]}"
            k8s = KubernetesTarget(
                kubeconfig_path=endpoints["kubeconfig"], context="sandbox", namespace=namespace
            )
            prometheus = HttpService(base_url=endpoints["prometheus"], read_timeout_seconds=5)
            with k8s.get_api_client() as api:
                k8s.core_v1(api).create_namespace({"metadata": {"name": namespace}})
                shop = deploy_shop(
                    k8s.apps_v1(api), k8s.core_v1(api), namespace=namespace, replicas=replicas
                )
            with prefect_test_harness(server_startup_timeout=60):
                for n in range(runs):
                    report = storm_incident(
                        k8s,
                        prometheus,
                        shop,
                        namespace=namespace,
                        rps=rps,
                        heal_after_seconds=heal_after,
                        say=lambda line: print(line, file=sys.stderr),
                    )
                    figures = report.figures() | {
                        "restored_exactly": set(report.restored_documents.values()) == {"{}"}
                    }
                    print(f"run {n + 1}: {figures}", file=sys.stderr)
                    per_run.append(figures)
        finally:
            stack.stop()
    return summarise(per_run, rps=rps, heal_after=heal_after, replicas=replicas)


def summarise(per_run: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    """Medians over the runs (and the worst containment time), plus every run's figures."""

    def median(key: str) -> float | None:
        values = [r[key] for r in per_run if r.get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    storm = median("payments_load_storm_per_second")
    contained = median("payments_load_contained_per_second")
    contained_after = [
        r["contained_after_seconds"] for r in per_run if r["contained_after_seconds"] is not None
    ]
    return {
        **settings,
        "runs": len(per_run),
        "stages": [r["stage"] for r in per_run],
        "contained_after_seconds_median": median("contained_after_seconds"),
        "contained_after_seconds_worst": max(contained_after) if contained_after else None,
        "recovered_after_seconds_median": median("recovered_after_seconds"),
        "storm_visible_after_seconds_median": median("storm_visible_after_seconds"),
        "payments_load_storm_per_second_median": storm,
        "payments_load_contained_per_second_median": contained,
        "payments_load_restored_per_second_median": median("payments_load_restored_per_second"),
        "payments_load_ratio_contained_to_storm": (
            round(contained / storm, 3) if storm and contained is not None else None
        ),
        "payments_load_reduction_percent_median": median("payments_load_reduction_percent"),
        "restored_exactly_every_run": all(r["restored_exactly"] for r in per_run),
        "per_run": per_run,
    }


def format_table(f: dict[str, Any]) -> str:
    rows = [
        ("runs (stage)", f"{f['runs']} ({', '.join(f['stages'])})"),
        ("load on the frontend", f"{f['rps']:g} purchases/s, payments heals after "
         f"{f['heal_after']:g} s"),
        ("storm visible in Prometheus", f"{f['storm_visible_after_seconds_median']} s after "
         "the fault (median)"),
        ("contained after", f"{f['contained_after_seconds_median']} s median, "
         f"{f['contained_after_seconds_worst']} s worst (goal <= 30 s)"),
        ("payments load, storm (no runbook)", f"{f['payments_load_storm_per_second_median']}/s"),
        ("payments load, contained", f"{f['payments_load_contained_per_second_median']}/s = "
         f"{f['payments_load_ratio_contained_to_storm']}x the storm "
         f"(-{f['payments_load_reduction_percent_median']} %, goal >= 70 %)"),
        ("payments load, restored", f"{f['payments_load_restored_per_second_median']}/s"),
        ("recovered after", f"{f['recovered_after_seconds_median']} s (median)"),
        ("settings restored exactly", str(f["restored_exactly_every_run"])),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--runs", type=int, default=3, help="incidents (default %(default)s)")
    parser.add_argument("--rps", type=float, default=4.0, help="frontend purchases/s")
    parser.add_argument("--heal-after", type=float, default=30.0, help="seconds into the run")
    parser.add_argument("--replicas", type=int, default=2, help="pods per role")
    args = parser.parse_args(argv)
    if not (1 <= args.runs <= 10 and 0.5 <= args.rps <= 20 and 1 <= args.replicas <= 4):
        parser.error("--runs 1-10, --rps 0.5-20, --replicas 1-4")
    if not 10 <= args.heal_after <= 120:
        parser.error("--heal-after must be within 10-120 s")
    home = Path(tempfile.mkdtemp(prefix="runbooks-bench-prefect-"))
    quiet_prefect_environment(home)
    try:
        figures = run(args.runs, args.rps, args.heal_after, args.replicas)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True) if args.json else format_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
