"""Retry-storm benchmark: the recipe card's retry loop vs our resilience layer, same outage.

Runs :func:`sandbox.storm.run_drill` (both configurations, one after the other, each against a
fresh loopback backend that answers 503 to everything during the outage) and prints a table,
or with ``--json`` one JSON object of figures whose names carry their unit. Durations are
*modelled* seconds, compressed by ``--time-scale`` (wall = modelled x scale; see the drill's
docstring for why every time constant of both configurations is scaled by the same factor).

A benchmark reports, it does not judge: the acceptance targets (amplification <= 1.2 for ours,
backend load reduction >= 70 %) are asserted by ``tests/integration/test_storm_drill.py``.

    .venv/bin/python benchmarks/retry_storm.py [--json] [--clients N] [--outage-seconds S]
                                               [--time-scale F] [--seed N] [--verbose]

(the project's environment, where ``sandbox`` and ``runbooks`` are installed in editable mode).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pydantic import ValidationError

from sandbox.storm import DrillSettings, format_table, run_drill


def main(argv: list[str] | None = None) -> int:
    defaults = DrillSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=defaults.outage_seconds,
        help="modelled seconds of outage (default %(default)s)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="wall seconds per modelled second (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--verbose", action="store_true", help="log every breaker transition on stderr"
    )
    args = parser.parse_args(argv)
    # The breaker logs each transition at WARNING; dozens of them would bury the table.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr)
    try:
        settings = DrillSettings(
            clients=args.clients,
            outage_seconds=args.outage_seconds,
            time_scale=args.time_scale,
            seed=args.seed,
        )
    except ValidationError as exc:
        parser.error(str(exc))
    report = run_drill(settings)
    if args.json:
        print(json.dumps(report.figures()))
    else:
        print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
