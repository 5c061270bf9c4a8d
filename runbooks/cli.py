"""The ``runbooks`` command line.

Commands appear as what they serve exists: ``demo``, ``run``, ``list`` and ``sandbox`` today;
``serve`` and ``chatops`` join as their components land (DESIGN.md lists them). Heavy imports
(Prefect, the sandbox) happen inside commands, so ``runbooks --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import typer

T = TypeVar("T")

app = typer.Typer(
    name="runbooks",
    help="Operations runbooks as code: Prefect flows for SRE and platform teams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the layer does."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # breaker transitions are the drill's point; its table counts them
        logging.getLogger("runbooks.resilience").setLevel(logging.ERROR)


@app.command()
def demo(
    ctx: typer.Context,
    clients: int = typer.Option(16, min=1, max=64, help="Client threads in the drill."),
    outage_seconds: float = typer.Option(
        300.0, min=1, help="Modelled length of the drill's outage (wall time is x time-scale)."
    ),
    time_scale: float = typer.Option(0.02, min=0.001, max=1.0, help="Wall s per modelled s."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the figures as one JSON object (the tables go to stderr)."
    ),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="After the summary, leave the sandbox, the Prefect UI and the served deployments "
        "running until Ctrl-C.",
    ),
) -> None:
    """Run every runbook end to end on a sandbox of its own, then tear it down.

    The sandbox and a Prefect server with its UI come up, the demo shop is deployed through the
    Kubernetes API and serves real purchases, every runbook's deployment is served, and each
    runbook runs through its deployment: select-regions on generated access logs, geo-routing
    of its choice and regional-health; blue-green promotes v2 and rolls back v3-broken under
    load; load-forecast plans three services from four weeks of history and apply-scaling sets
    their autoscalers; tracing-rollout traces the shop service by service; retry-storm
    contains a real storm of the shop's callers and restores their settings; alert-bridge
    reads Prometheus' alerts. Then the retry-storm drill compares the recipe card's retry loop
    with our resilience layer, and a summary lists every run with its page in the UI.
    """
    from pydantic import ValidationError

    from runbooks.demo import run_demo
    from sandbox.storm import DrillSettings

    _trace_command(ctx)

    try:
        settings = DrillSettings(
            clients=clients, outage_seconds=outage_seconds, time_scale=time_scale
        )
    except ValidationError as exc:
        raise typer.BadParameter(_first_error(exc)) from exc

    def show(figures: dict, report: object) -> None:
        # The summary is for people: with --json it goes to stderr, next to the progress
        # lines, so `runbooks demo --json > figures.json` still shows it.
        for table in _demo_tables(figures, report):
            typer.echo("", err=as_json)
            typer.echo(table, err=as_json)
        if as_json:
            typer.echo(json.dumps(figures, sort_keys=True))
            sys.stdout.flush()

    def say(line: str) -> None:
        typer.echo(line, err=as_json)

    _or_exit(lambda: run_demo(say, drill_settings=settings, keep=keep, show=show))


def _demo_tables(figures: dict, report: object) -> list[str]:
    from runbooks.demo import format_blue_green, format_summary
    from runbooks.demo_forecast import format_forecast
    from runbooks.demo_regions import format_regions
    from runbooks.demo_storm import format_storm
    from runbooks.demo_tracing import format_tracing
    from sandbox.storm import format_table

    return [
        format_regions(figures["regions"]),
        format_blue_green(figures["blue_green"]),
        format_forecast(figures["load_forecast"]),
        format_tracing(figures["tracing"]),
        format_storm(figures["retry_storm"]),
        format_table(report),
        format_summary(figures),
    ]


sandbox_app = typer.Typer(
    help="The local sandbox: Kubernetes API, demo shop, moto, Prometheus, Prefect server.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")

_STATE_DIR = typer.Option(
    None, "--state-dir", help="Where the sandbox keeps its state (default .sandbox/)."
)


@sandbox_app.command("up")
def sandbox_up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="Start a Prefect server."),
    state: Path | None = _STATE_DIR,
) -> None:
    """Start the sandbox; print its endpoints (also in .sandbox/endpoints.json)."""
    from sandbox import supervisor

    folder = supervisor.state_dir(state)
    if not detach:
        typer.echo(f"starting the sandbox in the foreground (state in {folder}); Ctrl-C stops it")
        _or_exit(lambda: supervisor.run_foreground(folder, prefect=prefect))
        return
    endpoints = _or_exit(lambda: supervisor.up_detached(folder, prefect=prefect))
    typer.echo(json.dumps(endpoints, indent=2, sort_keys=True))


@sandbox_app.command("status")
def sandbox_status(state: Path | None = _STATE_DIR) -> None:
    """Print the running sandbox's endpoints; exit 1 when none is running."""
    from sandbox import supervisor

    folder = supervisor.state_dir(state)
    endpoints = supervisor.read_endpoints(folder)
    if endpoints is None or not supervisor.is_running(folder):
        typer.echo(f"no sandbox is running from {folder}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(endpoints, indent=2, sort_keys=True))


@sandbox_app.command("down")
def sandbox_down(state: Path | None = _STATE_DIR) -> None:
    """Stop the sandbox and everything it started."""
    from sandbox import supervisor

    folder = supervisor.state_dir(state)
    stopped = _or_exit(lambda: supervisor.down(folder))
    typer.echo("sandbox stopped" if stopped else f"no sandbox was running from {folder}")


@sandbox_app.command("url")
def sandbox_url(
    service: str = typer.Argument(..., help="namespace/service, e.g. default/frontend."),
    state: Path | None = _STATE_DIR,
) -> None:
    """Print the loopback URL of a Service (its nodePort on 127.0.0.1)."""
    from sandbox import supervisor

    folder = supervisor.state_dir(state)
    typer.echo(_or_exit(lambda: supervisor.service_url(folder, service)))


@app.command("list")
def list_runbooks() -> None:
    """List the runbooks that `runbooks run` knows, one per line."""
    from runbooks.catalogue import CATALOGUE

    width = max(len(name) for name in CATALOGUE)
    for entry in CATALOGUE.values():
        typer.echo(f"{entry.name.ljust(width)}  {entry.description}")


_PARAM = typer.Option(
    None,
    "--param",
    "-p",
    metavar="KEY=VALUE",
    help="A parameter; dotted keys for nested fields (pre_promotion.count=3); a value is JSON "
    'when it parses (3, null, ["alice"]), else text.',
)
_BLOCK = typer.Option(
    None,
    "--block",
    "-b",
    metavar="NAME=SAVED",
    help="Saved block for a block parameter, e.g. kubernetes=prod (default: the sandbox's); "
    "prometheus=none runs without the optional one.",
)
_PARAMS_FILE = typer.Option(
    None, "--params-file", help="JSON or YAML file of parameters; --param wins over it."
)
_SERVE_PARAMS_FILE = typer.Option(
    None,
    "--params-file",
    help="JSON/YAML mapping runbook -> its params default, e.g. regional-health: {...}; a "
    "paused schedule (load-forecast, select-regions, regional-health) starts with it.",
)


@app.command()
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="RUNBOOK", help="Runbook name (`runbooks list`)."),
    param: list[str] | None = _PARAM,
    params_file: Path | None = _PARAMS_FILE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Publish the plan, change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result model as JSON."),
    block: list[str] | None = _BLOCK,
    state: Path | None = _STATE_DIR,
) -> None:
    """Run one runbook here, against the Prefect API, and print how it ended.

    The API is PREFECT_API_URL when set, else the running sandbox's Prefect server; a run on a
    throwaway server would lose its audit trail, so there is no other fallback. Exit status: 0
    promoted / no change / dry run; 1 rolled back, rejected, aborted or failed; 2 nothing
    started: bad input (runbook, parameter, block, a plan refused) or no Prefect API.
    """
    from runbooks import catalogue

    _trace_command(ctx)
    try:
        entry = catalogue.runbook(name)
        overrides = {"dry_run": True} if dry_run else {}
        params = catalogue.build_params(entry, param or (), params_file, overrides)
        choices = catalogue.parse_block_choices(entry, block or ())
    except catalogue.CatalogueError as exc:
        _fail(str(exc), 2)
    with _prefect_api(state):
        import httpx
        from prefect.settings import PREFECT_API_URL

        try:
            blocks = catalogue.load_blocks(entry, choices)
        except catalogue.CatalogueError as exc:
            _fail(str(exc), 2)
        except httpx.HTTPError as exc:  # the first call to the API: nothing started yet
            _fail(f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: {exc}", 2)
        launched = catalogue.run_in_process(entry, params, blocks)
    if launched.error is not None:
        _fail(_refusal(launched.error, launched.ui_url), 2 if _refused(launched.error) else 1)
    result = launched.result
    if as_json:
        typer.echo(result.model_dump_json())
    else:
        typer.echo("\n".join(catalogue.summary_lines(result, launched.ui_url)))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def serve(
    limit: int | None = typer.Option(
        None, min=1, help="Flow runs executing at once in this process (default: no limit)."
    ),
    block: list[str] | None = _BLOCK,
    params_file: Path | None = _SERVE_PARAMS_FILE,
    state: Path | None = _STATE_DIR,
) -> None:
    """Register every runbook's deployment (schedules, tags, concurrency) and serve them here:
    scheduled runs, and runs from the UI, chat-ops and automations, execute in this process
    until Ctrl-C."""
    from deployments.serve import serve_all
    from runbooks import catalogue
    from runbooks.errors import RunbookError

    try:
        overrides = dict(_pair(choice) for choice in block or ())
        params = catalogue.read_params_file(params_file) if params_file else None
    except (catalogue.CatalogueError, ValueError) as exc:
        _fail(str(exc), 2)
    root = Path(__file__).resolve().parent.parent
    os.chdir(root)  # Prefect records each flow's file relative to the working directory
    with _prefect_api(state):
        try:
            serve_all(limit, block_overrides=overrides, params=params)
        except (catalogue.CatalogueError, RunbookError) as exc:
            _fail(str(exc), 2)


def _pair(choice: str) -> tuple[str, str]:
    name, sep, value = choice.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"--block takes PARAM=SAVED (e.g. kubernetes=prod), got {choice!r}")
    return name, value


@app.command()
def chatops(
    host: str = typer.Option(
        "127.0.0.1",
        help="Interface to listen on (loopback by default; put a TLS proxy in front before "
        "exposing it to Slack).",
    ),
    port: int = typer.Option(8787, min=1, max=65535, help="Port to listen on."),
    block: str = typer.Option("default", "--block", help="Saved chatops-settings block to use."),
    state: Path | None = _STATE_DIR,
) -> None:
    """Serve the chat-ops endpoint: Slack slash commands (POST /slack/commands) and a JSON API
    (POST /api/commands, bearer token) that start runbook deployments and answer approvals."""
    with _prefect_api(state):
        import httpx
        from prefect.settings import PREFECT_API_URL

        from chatops.config import ChatOpsSettings
        from chatops.server import serve

        try:
            settings = ChatOpsSettings.load(block)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: {exc}", 2)
        except ValueError as exc:
            _fail(
                f"cannot load the chatops-settings block {block!r} ({exc}); save one with "
                f"ChatOpsSettings(...).save({block!r}) or the Prefect UI's Blocks page",
                2,
            )
        typer.echo(
            f"chat-ops on http://{host}:{port} (POST /slack/commands, POST /api/commands)",
            err=True,
        )
        serve(host, port, settings)


def _trace_command(ctx: typer.Context) -> None:
    """Export the command's spans when the ``OTEL_*`` environment asks for it; flushed (bounded)
    when the command ends, however it ends (see :mod:`runbooks.telemetry`)."""
    from runbooks.telemetry import configure_tracing, shutdown_tracing

    if configure_tracing() is not None:
        ctx.call_on_close(shutdown_tracing)


def _prefect_api(state: Path | None) -> contextlib.AbstractContextManager[object]:
    """Settings pointing Prefect at PREFECT_API_URL, else at the running sandbox's server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from sandbox import supervisor

    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    folder = supervisor.state_dir(state)
    endpoints = supervisor.read_endpoints(folder) if supervisor.is_running(folder) else None
    if not endpoints or not endpoints.get("prefect_api"):
        running = " (the one running has none: it was started with --no-prefect)"
        _fail(
            "no Prefect API to run on: start the sandbox (`runbooks sandbox up --detach`)"
            f"{running if endpoints else ''} or set PREFECT_API_URL (a throwaway server would "
            "lose the run's audit trail)",
            2,
        )
    updates = {PREFECT_API_URL: endpoints["prefect_api"]}
    if endpoints.get("prefect_ui"):
        updates[PREFECT_UI_URL] = endpoints["prefect_ui"]
    return temporary_settings(updates=updates)


def _refused(error: BaseException) -> bool:
    """Refused before anything changed: the plan (a ValueError) or the request was invalid."""
    from runbooks.errors import InvalidRequestError

    return isinstance(error, InvalidRequestError | ValueError)


def _refusal(error: BaseException, ui_url: str | None) -> str:
    where = f" (flow run: {ui_url})" if ui_url else ""
    kind = "refused" if _refused(error) else f"failed ({type(error).__name__})"
    return f"{kind}: {error}{where}"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _or_exit(action: Callable[[], T]) -> T:
    """Run ``action``; a RunbookError or SandboxError becomes its one sentence and exit 1."""
    from runbooks.errors import RunbookError
    from sandbox.supervisor import SandboxError

    try:
        return action()
    except (RunbookError, SandboxError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", lambda: [])()
    if errors:
        first = errors[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "settings"
        return f"{where}: {first.get('msg', str(exc))}"
    return str(exc)


if __name__ == "__main__":
    app()
