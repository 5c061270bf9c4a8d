"""The ``runbooks`` command line.

Commands appear as what they serve exists: ``demo`` today; ``run``, ``serve``, ``sandbox`` and
``chatops`` join as their runbooks and components land (DESIGN.md lists them). Heavy imports
(Prefect, the sandbox) happen inside commands, so ``runbooks --help`` stays instant.
"""

from __future__ import annotations

import json
import logging

import typer

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


@app.command()
def demo(
    clients: int = typer.Option(16, min=1, max=64, help="Client threads in the drill."),
    outage_seconds: float = typer.Option(
        300.0, min=1, help="Modelled length of the outage (wall time is x time-scale)."
    ),
    time_scale: float = typer.Option(0.02, min=0.001, max=1.0, help="Wall s per modelled s."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Run the demo end to end on loopback.

    Today: the retry-storm drill of the shared resilience layer. A loopback backend fails every
    request for an outage, then heals, while a fleet of clients calls it, first with the recipe
    card's retry loop, then with ours (full jitter, 10 % retry budget, circuit breaker); the
    table shows what each did to the backend and how fast everyone recovered.
    """
    from pydantic import ValidationError

    from sandbox.storm import DrillSettings, format_table, run_drill

    try:
        settings = DrillSettings(
            clients=clients, outage_seconds=outage_seconds, time_scale=time_scale
        )
    except ValidationError as exc:
        raise typer.BadParameter(_first_error(exc)) from exc
    if not as_json:
        typer.echo(
            f"retry-storm drill: {clients} clients, outage of {outage_seconds:g} modelled s "
            f"(about {settings.wall(outage_seconds) * 2:.0f} s of wall time for both loops)...",
            err=True,
        )
    report = run_drill(settings)
    if as_json:
        typer.echo(json.dumps(report.figures(), sort_keys=True))
    else:
        typer.echo(format_table(report))


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", lambda: [])()
    if errors:
        first = errors[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "settings"
        return f"{where}: {first.get('msg', str(exc))}"
    return str(exc)


if __name__ == "__main__":
    app()
