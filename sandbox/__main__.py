"""``python -m sandbox up --state-dir DIR [--no-prefect]``: the supervisor process itself.

Users run ``runbooks sandbox up``; this entry point exists so a detached supervisor is a plain
Python process that imports neither Typer nor Prefect.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sandbox.supervisor import run_foreground


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--no-prefect", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_foreground(args.state_dir.resolve(), prefect=not args.no_prefect)


if __name__ == "__main__":
    main()
