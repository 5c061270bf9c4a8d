"""Where am I running? The two facts every kit helper needs before touching Prefect.

Kept private and tiny so each public helper states its own in-run / out-of-run behaviour.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.loggers import LoggingAdapter


def in_run() -> bool:
    """True inside a Prefect flow run or task run (what Prefect attaches artifacts and logs to)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def api_configured() -> bool:
    """True when ``PREFECT_API_URL`` points at a server (read per call, never cached)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def logger(fallback: str) -> logging.Logger | LoggingAdapter:
    """The run logger inside a run (its records reach the Prefect UI), else ``fallback``'s."""
    if in_run():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger(fallback)
