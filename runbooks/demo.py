"""``runbooks demo``: everything that exists, end to end, on a sandbox of its own.

In order, each step printed as it starts with the time since the demo began:

1. the sandbox comes up (Kubernetes API emulator, cluster, moto, Prometheus when installed),
   and a Prefect server with its UI boots in the background meanwhile (the longest part);
2. the demo shop is deployed through the ``KubernetesTarget`` block and the official client,
   and real requests go through its Services (frontend -> checkout -> payments);
3. Prometheus, scraping the pods, reports the request rate per role;
4. the sandbox's blocks are saved on the Prefect server and every runbook's deployment is
   registered and served (``runbooks serve``, a child process): from here on each runbook runs
   the way a person starts it from the UI, as a run of its deployment executed by the served
   runner (:func:`deployments.serve.run_and_wait`), and its page in the UI shows its
   artifacts; the schedules are live (``alert-bridge`` looks at Prometheus every minute);
5. ``select-regions`` on generated access logs in S3 (moto), ``geo-routing`` of its choice in
   Route 53 (moto) and ``regional-health`` probing each chosen region
   (:mod:`runbooks.demo_regions`);
6. ``blue-green``: a blue v1 behind its active Service is rolled out to ``demo/shop:v2``
   (promoted), then to ``demo/shop:v3-broken`` (rolled back), each under a load generator
   counting failed requests through the active Service. Analyses are short and health only
   (0.5 s x 3, no Prometheus thresholds) so the demo stays fast;
7. ``load-forecast`` and ``apply-scaling`` (:mod:`runbooks.demo_forecast`): four weeks of load
   written where the runbook's sources read (CloudWatch on moto, CSV files), three services
   backtested, forecast and planned for 48 h; an Auto Scaling group's scheduled actions written
   on moto, two HPAs' ``minReplicas`` set to this hour's plan;
8. ``tracing-rollout`` (:mod:`runbooks.demo_tracing`) traces the shop through its Deployments'
   env, checkout first as the canary, each service verified in the sandbox's trace store; one
   purchase's trace then shows frontend -> checkout -> payments;
9. ``retry-storm`` (:mod:`runbooks.demo_storm`): payments fails while the callers retry
   naively; once Prometheus shows the storm the runbook contains it in the callers' retry
   ConfigMaps, waits for payments to heal and restores the settings;
10. ``alert-bridge``, every minute on its schedule since step 4, forwards Prometheus' firing
    alerts as Prefect events: its latest scheduled run is shown;
11. the retry-storm drill compares the recipe card's retry loop with our resilience layer; it
    runs after the sandbox has stopped, so its timings see a quiet machine.

Then a summary: every run's outcome, time and page in the UI, and the demo's total time. With
``keep`` the sandbox, the UI and the served deployments stay up after the summary (the drill
then runs beside them) until Ctrl-C or SIGTERM. Everything it started is stopped at the end,
also on Ctrl-C or failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

Say = Callable[[str], None]
Show = Callable[[dict[str, Any], Any], None]


BLUE_GREEN_SERVICE = "bg-payments"
BLUE_GREEN_IMAGES = ("demo/shop:v1", "demo/shop:v2", "demo/shop:v3-broken")
_FAST_ANALYSIS = {
    "interval_seconds": 0.5,
    "count": 3,
    "success_rate_min": None,
    "p95_latency_max_ms": None,
}


def run_demo(
    say: Say,
    *,
    drill_settings: Any | None = None,
    requests: int = 30,
    keep: bool = False,
    show: Show = lambda figures, report: None,
) -> tuple[dict[str, Any], Any]:
    """Run the demo; report progress through ``say`` and the outcome through ``show``; return
    its figures and the drill report. ``keep``: after ``show``, wait for Ctrl-C or SIGTERM
    before stopping anything."""
    with _sigterm_interrupts():
        return _run_demo(say, drill_settings, requests, keep, show)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the demo as Ctrl-C does (``KeyboardInterrupt``), so every ``finally`` runs
    and nothing it started is left behind (the default action would kill this process alone)."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals to whoever runs it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(
    say: Say, drill_settings: Any, requests: int, keep: bool, show: Show
) -> tuple[dict[str, Any], Any]:
    began = time.monotonic()

    def progress(line: str) -> None:
        say(f"[{time.monotonic() - began:5.0f} s] {line}" if line[:1].isdigit() else line)

    figures: dict[str, Any] = {}
    report: Any = None
    with tempfile.TemporaryDirectory(prefix="runbooks-demo-") as folder:
        state = Path(folder)
        _private_prefect(state)
        from sandbox.storm import run_drill

        with _sandbox(state, progress, figures) as (endpoints, prefect_up):
            shop = _shop(endpoints, requests, progress, figures)
            with _prefect_ready(endpoints, prefect_up, progress) as prefect:
                figures["prefect_ui"] = prefect["prefect_ui"]
                with _served(state, prefect, progress) as launch:
                    _runbooks(endpoints, shop, launch, progress, figures)
                    figures["runs"] = launch.runs
                    if keep:
                        report = _drill(run_drill, drill_settings, progress, figures)
                        figures["total_seconds"] = round(time.monotonic() - began, 1)
                        show(figures, report)
                        _wait_for_interrupt(prefect["prefect_ui"], say)
        if not keep:
            report = _drill(run_drill, drill_settings, progress, figures)
    if not keep:
        figures["total_seconds"] = round(time.monotonic() - began, 1)
        show(figures, report)
    return figures, report


def _runbooks(
    endpoints: dict[str, str], shop: dict[str, Any], launch: RunLog, say: Say, figures: dict
) -> None:
    """Steps 5 to 10: every runbook, each run through ``launch``."""
    from runbooks.demo_forecast import forecast_step
    from runbooks.demo_regions import regions_step
    from runbooks.demo_storm import storm_step
    from runbooks.demo_tracing import tracing_step

    say("5. select-regions on generated access logs, geo-routing its choice, regional-health...")
    figures["regions"] = regions_step(endpoints, shop, say, launch=launch)
    say("6. blue-green: v1 -> v2 (promoted), then v2 -> v3-broken (rolled back)...")
    figures["blue_green"] = _blue_green(launch, say)
    say("7. load-forecast (28 days of history, 48 h plan), then apply-scaling...")
    target, client = _target(endpoints)
    figures["load_forecast"] = forecast_step(target, client, endpoints, say, launch)
    say("8. tracing-rollout: checkout as canary, then frontend and payments...")
    figures["tracing"] = tracing_step(shop, endpoints, say, launch)
    say("9. retry-storm: payments fails, the callers storm, the runbook acts...")
    figures["retry_storm"] = storm_step(shop, endpoints, say, launch)
    say("10. alert-bridge: Prometheus' firing alerts as Prefect events, run by its schedule...")
    figures["alert_bridge"] = _alert_bridge(endpoints, launch, say)


@contextlib.contextmanager
def _sandbox(
    state: Path, say: Say, figures: dict[str, Any]
) -> Iterator[tuple[dict[str, str], Future]]:
    """The sandbox up, and the Prefect server starting in the background; both stopped on
    leaving."""
    from sandbox.stack import PrefectComponent
    from sandbox.supervisor import build_stack

    say("1. starting the sandbox (Kubernetes API, cluster, moto, Prometheus) and Prefect...")
    prefect = PrefectComponent(state)
    with ThreadPoolExecutor(1, thread_name_prefix="prefect-server") as pool:
        prefect_up = pool.submit(prefect.start)
        stack = build_stack(state, prefect=False)
        try:
            began = time.monotonic()
            endpoints = stack.start()
            figures["sandbox_up_seconds"] = round(time.monotonic() - began, 2)
            up, api = figures["sandbox_up_seconds"], endpoints["kube_api"]
            say(f"   up in {up} s: Kubernetes API {api}")
            yield endpoints, prefect_up
        finally:
            try:
                stack.stop()
            finally:
                with contextlib.suppress(Exception):  # its failure is reported above
                    prefect_up.result()
                prefect.stop()


def _target(endpoints: dict[str, str]) -> tuple[Any, Any]:
    from blocks import KubernetesTarget

    target = KubernetesTarget(
        kubeconfig_path=endpoints["kubeconfig"], context="sandbox", namespace="default"
    )
    return target, target.get_api_client()


def _shop(endpoints: dict[str, str], requests: int, say: Say, figures: dict) -> dict[str, Any]:
    """Steps 2 and 3: the demo shop deployed and serving, its rates in Prometheus."""
    from sandbox.showcase import deploy_shop

    say("2. deploying the demo shop v1 (3 Deployments x 2 pods, 3 Services)...")
    target, client = _target(endpoints)
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
    return shop


def _drill(run_drill: Any, settings: Any, say: Say, figures: dict[str, Any]) -> Any:
    say("11. the retry-storm drill: the recipe card's retry loop vs our resilience layer...")
    report = run_drill(settings)
    figures["drill"] = report.figures()
    return report


def _private_prefect(state: Path) -> None:
    """The demo's Prefect client: its own home, quiet, never the user's server or profile; it
    reads the results of the served runs where the runner stores them.

    Prefect reads these once, at import, so this runs before anything imports it; the API URL
    is set later, with ``temporary_settings``, once the demo's own server answers.
    """
    from sandbox.stack import prefect_settings, results_settings

    for name in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[name]
    os.environ.update(
        prefect_settings(state / "prefect-client")
        | results_settings(state)
        | {"PREFECT_LOGGING_LEVEL": "ERROR"}
    )


@contextlib.contextmanager
def _prefect_ready(
    endpoints: dict[str, str], prefect_up: Future, say: Say
) -> Iterator[dict[str, str]]:
    """Wait for the demo's Prefect server, point the client at it, save the sandbox's blocks;
    drain the logs and events before leaving, so nothing is lost when the server stops."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from sandbox.blocks_registration import main as save_sandbox_blocks

    say("4. Prefect: the sandbox's blocks saved, every runbook's deployment served...")
    began = time.monotonic()
    prefect = prefect_up.result()
    waited = round(time.monotonic() - began, 1)
    say(f"   Prefect server and UI at {prefect['prefect_ui']} (waited {waited} s more for it)")
    settings = {PREFECT_API_URL: prefect["prefect_api"], PREFECT_UI_URL: prefect["prefect_ui"]}
    with temporary_settings(updates=settings):
        try:
            saved = save_sandbox_blocks(endpoints)
            say(f"   blocks saved: {', '.join(saved)}")
            yield prefect
        finally:
            _drain_prefect()


class RunLog:
    """A launcher that runs each runbook through its served deployment and keeps, for the
    summary, every run's outcome, time and page in the UI."""

    def __init__(self, alive: Callable[[], bool]) -> None:
        self.runs: list[dict[str, Any]] = []
        self._alive = alive

    def __call__(self, entry: Any, params: Any, blocks: Mapping[str, Any]) -> Any:
        from deployments.serve import run_and_wait

        began = time.monotonic()
        launched = run_and_wait(entry, params, blocks, alive=self._alive)
        return self.record(entry.name, launched, time.monotonic() - began)

    def record(self, runbook: str, launched: Any, seconds: float, started_by: str = "demo") -> Any:
        """Keep one run for the summary; ``launched`` unchanged."""
        result = launched.result
        outcome = getattr(result, "rollout", None) or getattr(result, "outcome", None)
        self.runs.append(
            {
                "runbook": runbook,
                "outcome": (
                    f"error: {type(launched.error).__name__}"
                    if launched.error is not None
                    else getattr(outcome, "value", str(outcome))
                ),
                "seconds": round(seconds, 1),
                "started_by": started_by,
                "ui_url": launched.ui_url,
            }
        )
        return launched


@contextlib.contextmanager
def _served(state: Path, prefect: dict[str, str], say: Say) -> Iterator[RunLog]:
    """Every runbook's deployment registered and served by ``runbooks serve`` (a child
    process) until leaving; a launcher running the runbooks through them.

    Every schedule but alert-bridge's is paused while the demo runs: apply-scaling's hourly run
    (or a nightly one) firing mid-demo would act on the sandbox between two of the demo's own
    runs. With ``--keep`` a person resumes them in the UI."""
    from deployments.definitions import SPECS
    from sandbox.stack import ServeComponent

    began = time.monotonic()
    serve = ServeComponent(
        state, prefect["prefect_api"], prefect["prefect_ui"], expected=len(SPECS)
    )
    try:
        serve.start()
        paused = _pause_schedules(keep={"alert-bridge"})
        seconds = round(time.monotonic() - began, 1)
        say(
            f"   {len(SPECS)} deployments served in {seconds} s: "
            f"{prefect['prefect_ui']}/deployments (schedules paused for the demo: "
            f"{', '.join(paused) or 'none'}; alert-bridge's runs every minute)"
        )
        yield RunLog(serve.alive)
    finally:
        serve.stop()


def _pause_schedules(keep: set[str]) -> list[str]:
    """Pause the active schedules of our deployments but those of ``keep``; their names."""
    from prefect.client.orchestration import get_client

    from deployments.definitions import SPECS

    paused = []
    with get_client(sync_client=True) as client:
        for spec in SPECS:
            if spec.runbook in keep:
                continue
            deployment = client.read_deployment_by_name(f"{spec.runbook}/{spec.name}")
            for schedule in deployment.schedules:
                if schedule.active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)
                    paused.append(spec.runbook)
    return paused


def _blue_green(launch: Any, say: Say) -> dict[str, Any]:
    """Deploy blue v1, run the two rollouts; their figures."""
    from runbooks import catalogue
    from sandbox.showcase import deploy_blue_green

    entry = catalogue.runbook("blue-green")
    blocks = catalogue.load_blocks(entry, {"prometheus": None})
    target = blocks["kubernetes"]
    with target.get_api_client() as client:
        url = deploy_blue_green(
            target.apps_v1(client),
            target.core_v1(client),
            BLUE_GREEN_SERVICE,
            image=BLUE_GREEN_IMAGES[0],
        )
    blue = f"{BLUE_GREEN_SERVICE}-blue runs {BLUE_GREEN_IMAGES[0]}"
    say(f"   {blue} behind the active Service at {url}")
    return {
        name: _rollout(launch, entry, blocks, image, url, say)
        for name, image in zip(("promote", "rollback"), BLUE_GREEN_IMAGES[1:], strict=True)
    }


def _rollout(
    launch: Any, entry: Any, blocks: dict[str, Any], image: str, url: str, say: Say
) -> dict[str, Any]:
    from runbooks import catalogue
    from sandbox.load import Load

    params = catalogue.build_params(
        entry,
        overrides={
            "service": BLUE_GREEN_SERVICE,
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
        launched = launch(entry, params, blocks)
        seconds = round(time.monotonic() - began, 2)
    result = launched.unwrap()
    run = {
        "image": image,
        "outcome": result.rollout.value,
        "requests": load.total,
        "failed_requests": len(load.failures),
        "rollback_seconds": result.rollback_seconds,
        "run_seconds": seconds,
        "ui_url": launched.ui_url,
    }
    rollback = f", restored in {result.rollback_seconds} s" if result.rollback_seconds else ""
    say(
        f"   -> {image}: {run['outcome']} in {seconds} s{rollback}; "
        f"{run['failed_requests']} of {run['requests']} requests failed"
    )
    return run


def _alert_bridge(endpoints: dict[str, str], runs: RunLog, say: Say) -> dict[str, Any]:
    """``alert-bridge``'s latest run started by its schedule (every minute since step 4): a
    run started beside it would be cancelled, as its deployment takes one run at a time."""
    from deployments.serve import latest_scheduled_run

    if not endpoints.get("prometheus"):
        say("   Prometheus is not installed (apt-get install prometheus): skipped")
        return {"outcome": "skipped"}
    launched = latest_scheduled_run("alert-bridge")
    runs.record("alert-bridge", launched, _run_seconds(launched), started_by="schedule")
    result = launched.unwrap()
    say(f"   alert-bridge (its schedule's latest run): {result.outcome.value}: {result.reason}")
    return {
        "outcome": result.outcome.value,
        "alerts_seen": result.alerts_seen,
        "events_emitted": result.events_emitted,
        "ui_url": launched.ui_url,
    }


def _run_seconds(launched: Any) -> float:
    """How long a run took, from the API (``total_run_time``); 0 when unknown."""
    from prefect.client.orchestration import get_client

    if launched.flow_run_id is None:
        return 0.0
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(launched.flow_run_id)
    return run.total_run_time.total_seconds()


def _wait_for_interrupt(ui: str, say: Say) -> None:
    """Block until Ctrl-C or SIGTERM (both a ``KeyboardInterrupt`` here, see
    :func:`_sigterm_interrupts`); the caller's ``with`` blocks then stop everything."""
    try:
        say(f"\n--keep: the sandbox, the Prefect UI ({ui}) and the deployments keep running; "
            "Ctrl-C stops them.")  # fmt: skip
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("stopping the sandbox, the deployments and the Prefect server...")


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


def format_summary(figures: dict[str, Any]) -> str:
    """Every run of the demo: runbook, outcome, seconds, its page in the Prefect UI."""
    runs = figures.get("runs", [])
    rows = [("runbook", "started by", "outcome", "seconds", "Prefect UI")]
    rows += [
        (r["runbook"], r["started_by"], r["outcome"], f"{r['seconds']:g}", r["ui_url"] or "-")
        for r in runs
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    ui = figures.get("prefect_ui", "-")
    return "\n".join(
        [
            f"summary: {len(runs)} runs of the served deployments ({ui}/deployments)",
            *lines,
            f"demo total: {figures.get('total_seconds', '-')} s",
        ]
    )
