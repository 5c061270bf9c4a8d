"""Blue-green benchmark: how fast a broken version is caught and undone, and what the flow costs.

Starts the sandbox in-process (no Prefect server of its own) and a temporary Prefect test
server, deploys blue ``demo/shop:v1`` (2 replicas) behind an active Service, then runs the
``blue-green`` flow twice while a load generator sends back-to-back GETs through the active
Service, counting every answer that is not a 200:

1. v1 -> ``demo/shop:v3-broken`` (ready, but ``/health`` answers 503): **time to detect** (the
   preview Service routes to a ready pod -> the pre-promotion analysis has failed, from the
   result's timeline) and **time to restore** (first failing check -> traffic safe again: the
   result's ``rollback_seconds``), plus the wall time of the run;
2. v1 -> ``demo/shop:v2`` promoted: the **orchestration overhead**, the flow's wall time minus
   the sum of its deliberate waits -- the analysis sleeps (``interval x (count - 1)`` per
   analysis: the last measurement decides, no sleep after it), the rest of
   ``scale_down_delay_seconds`` slept after the bake, and the rollout wait (timed from the
   timeline) -- in seconds and as a ratio to those waits.

The baseline is the recipe card's ``deploy.sh`` ("Automated Rollback"): ``kubectl set image`` in
place, ``kubectl rollout status``, then up to 30 ``curl -f`` health checks 10 s apart that exit
early only on success. A broken version is therefore detected only after all 30 checks: 300 s
after its rollout, computed from the script's constants (not run: it would take 5 minutes),
while 30 % of user requests fail, since the broken pods serve live traffic. Its restore
(``kubectl set image`` back + ``kubectl rollout status``) *is* measured in the same run: a
2-replica Deployment rolled back from ``v3-broken`` to ``v1`` on the same sandbox. Argo
Rollouts' defaults (scaleDownDelaySeconds 30, progressDeadlineSeconds 600) are printed as
reference text.

    .venv/bin/python benchmarks/rollout.py [--json] [--interval S] [--count N]
                                           [--scale-down-delay S]

Loopback only; about a minute. A benchmark reports, it does not judge: the acceptance targets
are asserted by ``tests/e2e/test_blue_green.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.prefect_env import quiet_prefect_environment
from sandbox.load import Load

NAMESPACE = "default"
REPLICAS = 2
# The recipe card's deploy.sh: `for i in {1..30}; do curl -f ... && exit 0; sleep 10; done`.
RECIPE_HEALTH_CHECKS = 30
RECIPE_CHECK_SLEEP_SECONDS = 10
RECIPE_DETECT_SECONDS = RECIPE_HEALTH_CHECKS * RECIPE_CHECK_SLEEP_SECONDS
ARGO_SCALE_DOWN_DELAY_SECONDS = 30
ARGO_PROGRESS_DEADLINE_SECONDS = 600


@contextlib.contextmanager
def _shop(k8s: Any, cluster: Any) -> Iterator[tuple[str, str]]:
    """Blue v1 behind the active Service ``bench-<hex>``; yields (service, url); deleted after."""
    from sandbox.showcase import blue_green_manifests, delete_blue_green

    service = f"bench-{uuid.uuid4().hex[:8]}"
    deployment, active = blue_green_manifests(service, "demo/shop:v1", REPLICAS)
    with k8s.get_api_client() as api:
        k8s.core_v1(api).create_namespaced_service(NAMESPACE, active)
        k8s.apps_v1(api).create_namespaced_deployment(NAMESPACE, deployment)
    try:
        url = cluster.wait_for_service(NAMESPACE, service, endpoints=REPLICAS, timeout_seconds=30)
        yield service, url
    finally:
        with k8s.get_api_client() as api:
            delete_blue_green(k8s.apps_v1(api), k8s.core_v1(api), service, namespace=NAMESPACE)


def _rolled_out(apps: Any, name: str, timeout_seconds: float = 60) -> None:
    """``kubectl rollout status``: observed generation, updated == available == replicas."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        found = apps.read_namespaced_deployment(name, NAMESPACE)
        status, want = found.status, found.spec.replicas
        if (
            (status.observed_generation or 0) >= found.metadata.generation
            and (status.updated_replicas or 0) == want
            and (status.available_replicas or 0) == want
            and (status.replicas or 0) == want
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} was not rolled out within {timeout_seconds:g}s")


def _recipe_restore_seconds(k8s: Any) -> float:
    """The recipe's rollback, measured: ``set image`` back to v1 + ``rollout status``."""
    from sandbox.showcase import deployment_manifest

    name = f"recipe-{uuid.uuid4().hex[:8]}"
    with k8s.get_api_client() as api:
        apps = k8s.apps_v1(api)
        apps.create_namespaced_deployment(
            NAMESPACE, deployment_manifest(name, "payments", "demo/shop:v3-broken", REPLICAS, {})
        )
        try:
            _rolled_out(apps, name)
            began = time.monotonic()
            found = apps.read_namespaced_deployment(name, NAMESPACE)
            container = found.spec.template.spec.containers[0].name
            image = {"name": container, "image": "demo/shop:v1"}
            patch = {"spec": {"template": {"spec": {"containers": [image]}}}}
            apps.patch_namespaced_deployment(name, NAMESPACE, patch)
            _rolled_out(apps, name)
            return time.monotonic() - began
        finally:
            with contextlib.suppress(Exception):
                apps.delete_namespaced_deployment(name, NAMESPACE)


def _first(timeline: tuple[Any, ...], step: str, detail: str | None = None) -> datetime | None:
    for entry in timeline:
        if entry.step == step and (detail is None or entry.detail == detail):
            return entry.at
    return None


def _span(timeline: tuple[Any, ...], step: str) -> float:
    """Seconds from a step's first timeline entry to its ``done`` entry (0 when absent)."""
    start, done = _first(timeline, step), _first(timeline, step, "done")
    if start is None or done is None:
        return 0.0
    return (done - start).total_seconds()


def _step_seconds(result: Any) -> dict[str, float]:
    """Each step's span (first timeline entry -> its ``done``), and the time from the run's
    start to the first step (observe, plan, publish, lock), in plan order."""
    assert result.plan is not None
    spans = {"observe_plan_lock": 0.0}
    first = (
        _first(result.timeline, result.plan.steps[1].key) if len(result.plan.steps) > 1 else None
    )
    if first is not None:
        spans["observe_plan_lock"] = round((first - result.started_at).total_seconds(), 3)
    for step in result.plan.steps[1:]:
        spans[step.key] = round(_span(result.timeline, step.key), 3)
    return spans


def _slept_before_scale_down(timeline: tuple[Any, ...]) -> float:
    for entry in timeline:
        if entry.step == "scale_down_old":
            found = re.search(r"([\d.]+)s more", entry.detail)
            if found:
                return float(found.group(1))
    return 0.0


def run(interval: float, count: int, scale_down_delay: int) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from blocks import KubernetesTarget
    from decisions.analysis import AnalysisSpec
    from decisions.bluegreen import BlueGreenParams
    from flows.blue_green import RolloutOutcome, blue_green
    from sandbox.supervisor import build_stack

    spec = AnalysisSpec(
        interval_seconds=interval, count=count, success_rate_min=None, p95_latency_max_ms=None
    )

    def params(service: str, image: str) -> BlueGreenParams:
        return BlueGreenParams(
            service=service,
            namespace=NAMESPACE,
            image=image,
            replicas=REPLICAS,
            pre_promotion=spec,
            post_promotion=spec,
            scale_down_delay_seconds=scale_down_delay,
            progress_deadline_seconds=60,
        )

    figures: dict[str, Any] = {
        "analysis_interval_seconds": interval,
        "analysis_count": count,
        "scale_down_delay_seconds": scale_down_delay,
    }
    with tempfile.TemporaryDirectory(prefix="runbooks-bench-rollout-") as folder:
        stack = build_stack(Path(folder), prefect=False)
        endpoints = stack.start()
        try:
            cluster = next(c for c in stack.components if c.name == "cluster").cluster
            k8s = KubernetesTarget(
                kubeconfig_path=endpoints["kubeconfig"], context="sandbox", namespace=NAMESPACE
            )
            with prefect_test_harness(server_startup_timeout=60):
                # 1. a broken version: detected at the preview, undone before any user sees it
                with _shop(k8s, cluster) as (service, url), Load(url) as load:
                    began = time.monotonic()
                    broken = blue_green(
                        params=params(service, "demo/shop:v3-broken"), kubernetes=k8s
                    )
                    wall = time.monotonic() - began
                if broken.rollout is not RolloutOutcome.ROLLED_BACK:
                    raise RuntimeError(f"v3-broken was not rolled back: {broken.reason}")
                ready = _first(broken.timeline, "point_preview", "done")
                failed = next(
                    e.at for e in broken.timeline if e.step == "pre_analysis" and not e.ok
                )
                assert ready is not None
                assert broken.rollback_seconds is not None
                figures |= {
                    "time_to_detect_seconds": round((failed - ready).total_seconds(), 3),
                    "time_to_restore_seconds": broken.rollback_seconds,
                    "rollback_run_wall_seconds": round(wall, 3),
                    "failed_requests_during_rollback": len(load.failures),
                    "requests_during_rollback": load.total,
                    # a pre-promotion failure is undone before the switch: users never saw it
                    "traffic_switched_before_detect": "undo_switch" in broken.undone,
                }

                # 2. a good version: everything but the deliberate waits is overhead
                with _shop(k8s, cluster) as (service, url), Load(url) as load:
                    began = time.monotonic()
                    promoted = blue_green(params=params(service, "demo/shop:v2"), kubernetes=k8s)
                    wall = time.monotonic() - began
                    time.sleep(0.3)  # requests after the scale-down land on green
                if promoted.rollout is not RolloutOutcome.PROMOTED:
                    raise RuntimeError(f"v2 was not promoted: {promoted.reason}")
                analysis_sleeps = 2 * interval * (count - 1)
                scale_down_sleep = _slept_before_scale_down(promoted.timeline)
                rollout_wait = _span(promoted.timeline, "wait_rollout")
                waits = analysis_sleeps + scale_down_sleep + rollout_wait
                in_flow = (promoted.finished_at - promoted.started_at).total_seconds()
                figures |= {
                    "promote_run_wall_seconds": round(wall, 3),
                    "promote_in_flow_seconds": round(in_flow, 3),
                    "deliberate_waits_seconds": round(waits, 3),
                    "analysis_sleeps_seconds": round(analysis_sleeps, 3),
                    "scale_down_delay_slept_seconds": round(scale_down_sleep, 3),
                    "rollout_wait_seconds": round(rollout_wait, 3),
                    "preview_ready_wait_seconds": round(
                        _span(promoted.timeline, "point_preview"), 3
                    ),
                    "orchestration_overhead_seconds": round(wall - waits, 3),
                    "orchestration_overhead_ratio": round((wall - waits) / waits, 3),
                    "prefect_engine_overhead_seconds": round(wall - in_flow, 3),
                    "step_seconds": _step_seconds(promoted),
                    "before_first_step_seconds": round(
                        (promoted.timeline[0].at - promoted.started_at).total_seconds(), 3
                    ),
                    "failed_requests_during_promote": len(load.failures),
                    "requests_during_promote": load.total,
                }

            # 3. the recipe's baseline: detection from its constants, its restore measured here
            recipe_restore = _recipe_restore_seconds(k8s)
        finally:
            stack.stop()
    figures |= {
        "recipe_time_to_detect_seconds": RECIPE_DETECT_SECONDS,
        "recipe_time_to_restore_seconds": round(recipe_restore, 3),
        "detect_ratio_recipe_vs_ours": round(
            RECIPE_DETECT_SECONDS / max(figures["time_to_detect_seconds"], 1e-3), 1
        ),
        "restore_ratio_recipe_vs_ours": round(
            recipe_restore / max(figures["time_to_restore_seconds"], 1e-3), 2
        ),
        "argo_scale_down_delay_seconds": ARGO_SCALE_DOWN_DELAY_SECONDS,
        "argo_progress_deadline_seconds": ARGO_PROGRESS_DEADLINE_SECONDS,
    }
    return figures


def format_table(f: dict[str, Any]) -> str:
    s = "s"
    rows = [
        ("broken version (v1 -> demo/shop:v3-broken)", ""),
        (
            "  time to detect (preview ready -> analysis failed)",
            f"{f['time_to_detect_seconds']} {s}",
        ),
        (
            "  time to restore (first failing check -> safe again)",
            f"{f['time_to_restore_seconds']} {s}"
            + (
                ""
                if f["traffic_switched_before_detect"]
                else " (green scaled to 0; the active Service never left blue)"
            ),
        ),
        ("  wall time of the run", f"{f['rollback_run_wall_seconds']} {s}"),
        (
            "  failed requests through the active Service",
            f"{f['failed_requests_during_rollback']} of {f['requests_during_rollback']}",
        ),
        ("good version (v1 -> demo/shop:v2, promoted)", ""),
        ("  wall time of the run", f"{f['promote_run_wall_seconds']} {s}"),
        (
            "  deliberate waits (analysis + scale-down delay + rollout)",
            f"{f['deliberate_waits_seconds']} {s} = {f['analysis_sleeps_seconds']} + "
            f"{f['scale_down_delay_slept_seconds']} + {f['rollout_wait_seconds']}",
        ),
        (
            "  orchestration overhead (wall - waits)",
            f"{f['orchestration_overhead_seconds']} {s} "
            f"({f['orchestration_overhead_ratio']}x the waits)",
        ),
        (
            "    of which Prefect engine outside the flow body",
            f"{f['prefect_engine_overhead_seconds']} {s}",
        ),
        ("    of which preview Service ready wait", f"{f['preview_ready_wait_seconds']} {s}"),
        (
            "  failed requests through the active Service",
            f"{f['failed_requests_during_promote']} of {f['requests_during_promote']}",
        ),
        ("recipe card deploy.sh (baseline)", ""),
        (
            "  time to detect (30 checks x 10 s, from its constants)",
            f"{f['recipe_time_to_detect_seconds']} {s} "
            f"({f['detect_ratio_recipe_vs_ours']}x ours); users hit the broken pods meanwhile",
        ),
        (
            "  time to restore (set image back + rollout status, measured)",
            f"{f['recipe_time_to_restore_seconds']} {s} "
            f"({f['restore_ratio_recipe_vs_ours']}x ours)",
        ),
        ("Argo Rollouts defaults (reference)", ""),
        (
            "  scaleDownDelaySeconds / progressDeadlineSeconds",
            f"{f['argo_scale_down_delay_seconds']} / {f['argo_progress_deadline_seconds']} {s} "
            f"(this run: {f['scale_down_delay_seconds']} / 60 s; "
            f"analysis {f['analysis_count']} x {f['analysis_interval_seconds']} s)",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="analysis interval (default %(default)s s)"
    )
    parser.add_argument("--count", type=int, default=3, help="analysis count (default %(default)s)")
    parser.add_argument(
        "--scale-down-delay",
        type=int,
        default=3,
        help="scale_down_delay_seconds (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.count < 1 or args.scale_down_delay < 0:
        parser.error("--interval must be > 0, --count >= 1, --scale-down-delay >= 0")
    home = Path(tempfile.mkdtemp(prefix="runbooks-bench-prefect-"))
    quiet_prefect_environment(home)
    try:
        figures = run(args.interval, args.count, args.scale_down_delay)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print(format_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
