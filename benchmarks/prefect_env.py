"""A quiet, private Prefect for benchmarks that run flows: its own home, no UI, no telemetry.

Prefect reads its settings once, at import, so :func:`quiet_prefect_environment` must run
before anything imports it; the benchmark then starts its test server with
``prefect_test_harness``.
"""

from __future__ import annotations

import os
from pathlib import Path


def quiet_prefect_environment(home: Path) -> None:
    """Point Prefect at ``home`` (SQLite, settings of the sandbox) and keep it quiet."""
    from sandbox.stack import prefect_settings

    os.environ.update(
        prefect_settings(home)
        | {
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_API_KEY", None)
