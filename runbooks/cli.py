"""The ``runbooks`` command line.

Commands appear as what they serve exists: ``demo`` and ``sandbox`` today; ``run``, ``serve``
and ``chatops`` join as their runbooks and components land (DESIGN.md lists them). Heavy imports
(Prefect, the sandbox) happen inside commands, so ``runbooks --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
    clients: int = typer.Option(16, min=1, max=64, help="Client threads in the drill."),
    outage_seconds: float = typer.Option(
        300.0, min=1, help="Modelled length of the drill's outage (wall time is x time-scale)."
    ),
    time_scale: float = typer.Option(0.02, min=0.001, max=1.0, help="Wall s per modelled s."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Run the demo end to end on a sandbox of its own, then tear it down.

    The sandbox comes up, the demo shop is deployed through the Kubernetes API and serves real
    purchases, Prometheus reports its request rates, and the retry-storm drill compares the
    recipe card's retry loop with our resilience layer (full jitter, 10 % retry budget,
    circuit breaker) on a loopback backend that fails, then heals.
    """
    from pydantic import ValidationError

    from runbooks.demo import run_demo
    from sandbox.storm import DrillSettings, format_table

    try:
        settings = DrillSettings(
            clients=clients, outage_seconds=outage_seconds, time_scale=time_scale
        )
    except ValidationError as exc:
        raise typer.BadParameter(_first_error(exc)) from exc
    figures, report = _or_exit(
        lambda: run_demo(lambda line: typer.echo(line, err=as_json), drill_settings=settings)
    )
    if as_json:
        typer.echo(json.dumps(figures, sort_keys=True))
    else:
        typer.echo("")
        typer.echo(format_table(report))


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
