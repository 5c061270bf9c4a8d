"""The README's main command, as a user runs it: ``runbooks demo --keep``, then its UI in a browser.

One demo run serves the module: its figures (stdout, ``--json``) and tables (stderr) are
checked, then, while ``--keep`` leaves everything up, headless Chromium (Debian's ``chromium``)
opens the Prefect UI: the deployments page lists every runbook's deployment, and the page of the
blue-green run that rolled v3-broken back shows its artifacts. Screenshots are saved under
``RUNBOOKS_SCREENSHOTS`` (default ``.artifacts/screenshots`` in the checkout). Last, SIGTERM
stops the demo (checked as the module's fixture ends) and the UI it served is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import Browser, chromium_binary

from deployments.definitions import SPECS

RUNBOOKS = Path(sys.executable).with_name("runbooks")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("RUNBOOKS_SCREENSHOTS", ROOT / ".artifacts" / "screenshots"))
DEMO_ARGS = ("--clients", "8", "--outage-seconds", "150")  # a shorter drill
DEMO_SECONDS = 480  # the demo's target is 5 min on 2 cores; CI runs tests beside it

# the module's fixture runs the demo: whichever test comes first waits for it
pytestmark = pytest.mark.timeout(DEMO_SECONDS + 180)


@dataclass
class Demo:
    figures: dict[str, Any]
    stderr: Path
    process: subprocess.Popen

    @property
    def log(self) -> str:
        return self.stderr.read_text()


def _kill_session(session: int) -> None:
    """SIGKILL every process of the session (the demo's children and ``runbooks serve``'s
    process group included: a process group alone would miss that one)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session:  # after ")": state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    stderr = tmp_path_factory.mktemp("demo") / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [str(RUNBOOKS), "demo", "--json", "--keep", *DEMO_ARGS],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            start_new_session=True,  # so a demo that will not stop can be killed with its children
        )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(DEMO_SECONDS)
    figures: dict[str, Any] = {}
    try:
        printed = line[0].strip() if line else ""
        assert printed, f"no figures within {DEMO_SECONDS} s:\n{stderr.read_text()}"
        figures = json.loads(printed)
        yield Demo(figures, stderr, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            _kill_session(process.pid)
            process.wait()
            pytest.fail(f"the demo did not stop within 90 s of SIGTERM:\n{stderr.read_text()}")
        finally:
            process.stdout.close()
    assert process.returncode == 0, stderr.read_text()
    if figures.get("prefect_ui"):  # stopped means stopped: the UI it served is gone
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{figures['prefect_ui']}/api/health", timeout=5)


def test_every_runbook_runs_through_its_deployment_and_the_summary_links_them(demo: Demo) -> None:
    figures = demo.figures
    assert figures["shop_statuses"] == {"200": figures["shop_requests"]}
    runs = {run["runbook"]: run for run in figures["runs"]}
    assert set(runs) == {spec.runbook for spec in SPECS}, runs
    ui = figures["prefect_ui"]
    for run in figures["runs"]:
        assert run["ui_url"].startswith(f"{ui}/runs/flow-run/"), run
        assert not run["outcome"].startswith("error"), run
    assert figures["total_seconds"] < DEMO_SECONDS
    log = demo.log
    assert f"summary: {len(figures['runs'])} runs of the served deployments" in log
    assert f"{len(SPECS)} deployments served" in log
    assert "demo total:" in log
    assert "--keep: the sandbox, the Prefect UI" in log


def test_regions_are_selected_routed_and_probed(demo: Demo) -> None:
    figures = demo.figures["regions"]
    chosen = figures["select_regions"]
    assert chosen["outcome"] == "succeeded", chosen
    assert chosen["requests"] == figures["log_lines"] == 2000
    assert len(chosen["regions"]) == chosen["recommended_k"]
    assert chosen["routed_p95_ms"] <= chosen["target_p95_ms"]
    assert set(chosen["routing_map"]) == set(figures["demand"])  # every country routed
    assert set(chosen["routing_map"].values()) <= set(chosen["regions"])
    routing = figures["geo_routing"]
    assert routing["outcome"] == "succeeded", routing
    assert routing["records"] == len(chosen["routing_map"]) + 1  # and the default (*) record
    assert sorted(routing["endpoints"]) == sorted(chosen["regions"])
    health = figures["regional_health"]
    assert health["regions"] == dict.fromkeys(chosen["regions"], "healthy"), health
    assert set(figures["ui_urls"]) == {"select-regions", "geo-routing", "regional-health"}


def test_blue_green_promotes_v2_and_rolls_v3_broken_back_without_a_failed_request(
    demo: Demo,
) -> None:
    promote, rollback = (
        demo.figures["blue_green"]["promote"],
        demo.figures["blue_green"]["rollback"],
    )
    assert (promote["image"], promote["outcome"]) == ("demo/shop:v2", "promoted")
    assert promote["rollback_seconds"] is None
    assert (rollback["image"], rollback["outcome"]) == ("demo/shop:v3-broken", "rolled_back")
    assert 0 < rollback["rollback_seconds"] < 15
    for run in (promote, rollback):  # the active Service never served a failed request
        assert run["failed_requests"] == 0, run
        assert run["requests"] > 0, run
    log = demo.log
    assert "blue-green (analysis 0.5 s x 3, health only)" in log
    assert "demo/shop:v1 -> demo/shop:v2" in log
    assert "demo/shop:v2 -> demo/shop:v3-broken" in log


def test_load_forecast_plans_and_apply_scaling_sets_the_autoscalers(demo: Demo) -> None:
    forecast = demo.figures["load_forecast"]
    assert forecast["outcome"] == "succeeded"
    assert forecast["apply_outcome"] in ("succeeded", "no_change")
    services = forecast["services"]
    assert sorted(services) == ["checkout", "frontend", "payments"]
    assert services["checkout"]["source"] == "cloudwatch"
    assert services["frontend"]["applied"].startswith("ASG shop-frontend: ")
    assert services["payments"]["applied"].startswith("HPA minReplicas 2 -> ")
    assert services["payments"]["hours_doubled_by_rule"] > 0  # queue depth > 100 -> x2
    assert "load-forecast + apply-scaling" in demo.log


def test_tracing_rollout_traces_the_shop_and_one_trace_shows_the_chain(demo: Demo) -> None:
    tracing = demo.figures["tracing"]
    assert tracing["outcome"] == "succeeded"
    assert tracing["services"] == {"checkout": "traced", "frontend": "traced", "payments": "traced"}
    assert tracing["purchase_chain"] == ["frontend", "checkout", "payments"]
    assert "one purchase's trace: frontend -> checkout -> payments" in demo.log


def test_retry_storm_is_contained_and_the_settings_restored(demo: Demo) -> None:
    storm = demo.figures["retry_storm"]
    assert storm["stage"] == "restored", storm
    assert storm["contained_after_seconds"] <= 30, storm
    assert storm["payments_load_reduction_percent"] >= 70, storm
    assert storm["documents_after"] == {"frontend": "{}", "checkout": "{}"}, storm
    assert storm["after_error_share"] <= 0.05, storm
    assert {"detected", "contained", "recovered", "restored"} <= set(storm["events"]), storm
    assert "retry-storm (payments fails" in demo.log
    bridge = demo.figures["alert_bridge"]
    assert bridge["outcome"] in ("succeeded", "no_change"), bridge


def test_the_drill_compares_the_recipe_loop_with_ours(demo: Demo) -> None:
    drill = demo.figures["drill"]
    assert drill["amplification_naive"] > 3
    assert drill["amplification_ours"] <= 1.2
    assert drill["load_reduction_percent"] >= 70
    assert "backend load reduction vs naive" in demo.log


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium (bin/runbooks installs it)")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    with Browser(binary) as opened:
        yield opened


def _not_blank(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None, png
    assert len(colours) > 50, f"{png} looks blank"


def _shows_all(texts: list[str]) -> str:
    """A JavaScript test: the page's visible text holds every one of ``texts``."""
    return f"{json.dumps(texts)}.every(t => document.body.innerText.includes(t))"


def test_the_ui_lists_every_deployment(demo: Demo, browser: Browser) -> None:
    ui = demo.figures["prefect_ui"]
    browser.goto(f"{ui}/deployments")
    browser.wait_for(_shows_all([spec.name for spec in SPECS]), timeout_seconds=60)
    browser.wait_for(_shows_all(["Every minute", "runbooks", "mutating", "read-only"]))
    _not_blank(browser.screenshot(SCREENSHOTS / "deployments.png"))


def test_the_rolled_back_blue_green_run_page_shows_its_artifacts(
    demo: Demo, browser: Browser
) -> None:
    ui, run = demo.figures["prefect_ui"], demo.figures["blue_green"]["rollback"]["ui_url"]
    keys = _artifact_keys(ui, run.rsplit("/", 1)[1])
    assert keys, "the blue-green run has no artifacts"
    browser.goto(run)
    browser.wait_for("!!document.getElementById('artifacts')", timeout_seconds=60)
    browser.evaluate("document.getElementById('artifacts').click()")  # the Artifacts tab
    browser.wait_for(_shows_all(["blue-green", *keys]), timeout_seconds=60)
    _not_blank(browser.screenshot(SCREENSHOTS / "blue-green-run-artifacts.png"))


def _artifact_keys(ui: str, flow_run_id: str) -> list[str]:
    response = httpx.post(
        f"{ui}/api/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
        timeout=10,
    )
    response.raise_for_status()
    return sorted(a["key"] for a in response.json() if a.get("key"))


def test_runbooks_serve_registered_every_deployment_with_its_schedule(demo: Demo) -> None:
    """Read back through the demo's Prefect API what `runbooks serve` registered: every runbook's
    deployment with its tags and cron schedule; during the demo only alert-bridge's is active
    (the others are paused so no scheduled run acts on the sandbox mid-demo)."""
    ui = demo.figures["prefect_ui"]
    response = httpx.post(f"{ui}/api/deployments/filter", json={}, timeout=10)
    response.raise_for_status()
    served = {d["name"]: d for d in response.json()}
    assert set(served) == {spec.name for spec in SPECS}
    for spec in SPECS:
        deployment = served[spec.name]
        assert set(deployment["tags"]) == set(spec.tags), spec.name
        schedules = [
            (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
            for s in deployment["schedules"]
        ]
        if spec.schedule is None:
            assert schedules == [], spec.name
        else:
            active = spec.runbook == "alert-bridge"
            assert schedules == [(spec.schedule.cron, spec.schedule.timezone, active)], spec.name
