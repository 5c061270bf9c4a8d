"""The README's main command, as a user runs it: the installed ``runbooks`` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNBOOKS = Path(sys.executable).with_name("runbooks")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run(
        [str(RUNBOOKS), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_demo_runs_every_step_and_prints_its_figures_and_tables() -> None:
    """One demo run (it takes over a minute): the JSON figures on stdout, the tables people
    read on stderr (as in table mode, where they go to stdout)."""
    done = _run("demo", "--json", "--clients", "8", "--outage-seconds", "150")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["shop_statuses"] == {"200": figures["shop_requests"]}
    promote, rollback = figures["blue_green"]["promote"], figures["blue_green"]["rollback"]
    assert promote["image"] == "demo/shop:v2"
    assert promote["outcome"] == "promoted"
    assert promote["rollback_seconds"] is None
    assert rollback["image"] == "demo/shop:v3-broken"
    assert rollback["outcome"] == "rolled_back"
    assert 0 < rollback["rollback_seconds"] < 15
    for run in (promote, rollback):  # the active Service never served a failed request
        assert run["failed_requests"] == 0, run
        assert run["requests"] > 0, run
    forecast = figures["load_forecast"]
    assert forecast["outcome"] == "succeeded"
    assert forecast["apply_outcome"] in ("succeeded", "no_change")
    services = forecast["services"]
    assert sorted(services) == ["checkout", "frontend", "payments"]
    assert services["checkout"]["source"] == "cloudwatch"
    assert services["frontend"]["applied"].startswith("ASG shop-frontend: ")
    assert services["payments"]["applied"].startswith("HPA minReplicas 2 -> ")
    assert services["payments"]["hours_doubled_by_rule"] > 0  # queue depth > 100 -> x2
    tracing = figures["tracing"]
    assert tracing["outcome"] == "succeeded"
    assert tracing["services"] == {"checkout": "traced", "frontend": "traced", "payments": "traced"}
    assert tracing["purchase_chain"] == ["frontend", "checkout", "payments"]
    storm = figures["retry_storm"]
    assert storm["stage"] == "restored", storm
    assert storm["contained_after_seconds"] <= 30, storm
    assert storm["payments_load_reduction_percent"] >= 70, storm
    assert storm["documents_after"] == {"frontend": "{}", "checkout": "{}"}, storm
    assert storm["after_error_share"] <= 0.05, storm
    assert {"detected", "contained", "recovered", "restored"} <= set(storm["events"]), storm
    assert "retry-storm (payments fails" in done.stderr
    drill = figures["drill"]
    assert drill["amplification_naive"] > 3
    assert drill["amplification_ours"] <= 1.2
    assert drill["load_reduction_percent"] >= 70
    assert "blue-green (analysis 0.5 s x 3, health only)" in done.stderr
    assert "demo/shop:v1 -> demo/shop:v2" in done.stderr
    assert "demo/shop:v2 -> demo/shop:v3-broken" in done.stderr
    assert "rolled_back" in done.stderr
    assert "load-forecast + apply-scaling" in done.stderr
    assert "HPA minReplicas" in done.stderr
    assert "one purchase's trace: frontend -> checkout -> payments" in done.stderr
    assert "backend load reduction vs naive" in done.stderr
    assert "naive" in done.stderr
    assert "ours" in done.stderr


def test_bad_input_is_refused_naming_the_option() -> None:
    done = _run("demo", "--time-scale", "5")
    assert done.returncode == 2
    assert "--time-scale" in done.stderr
    done = _run("demo", "--outage-seconds", "100000")
    assert done.returncode == 2
    assert "max_wall_seconds" in done.stderr
