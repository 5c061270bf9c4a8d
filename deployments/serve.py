"""``runbooks serve``: every runbook's deployment registered and served from this process.

Two ways to use :mod:`deployments.definitions`:

- :func:`serve_all` registers every deployment and runs them here (``prefect.serve``): scheduled
  runs, runs started from the UI, chat-ops and automations execute as subprocesses of this
  process. It blocks until interrupted (Ctrl-C); on the way out Prefect pauses the schedules it
  served, so no runs pile up for a runner that is gone.
- :func:`register_all` only registers them (create or update by name, idempotent: the same ids,
  the schedules replaced rather than added), for tests and for ``runbooks demo``, which runs
  the flows itself.

Both talk to the configured Prefect API (``PREFECT_API_URL``) with a bounded per-call timeout,
and refuse missing blocks before registering anything (:func:`runner_deployments`). Run them from
the repository root: Prefect records each flow's file relative to the working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import httpx

from deployments.definitions import runner_deployments
from runbooks.errors import InvalidRequestError, from_httpx

API_TIMEOUT_SECONDS = 30.0
"""Timeout of each Prefect API call made while registering (Prefect's default is 60 s)."""


def serve_all(
    limit: int | None = None,
    *,
    block_overrides: Mapping[str, str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Register every deployment and serve them here until interrupted (Ctrl-C).

    ``limit``: flow runs executing at once in this process (``None``: no limit beyond the
    deployments' own). ``block_overrides`` and ``params`` as in :func:`runner_deployments`.
    """
    from prefect import serve

    deployments = _build(block_overrides, params)
    serve(*deployments, limit=limit)


def register_all(
    *,
    block_overrides: Mapping[str, str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[UUID]:
    """Create or update every deployment on the Prefect API without serving; their ids, in the
    order of :data:`deployments.definitions.SPECS`."""
    from prefect.deployments.runner import DeploymentApplyError
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, temporary_settings

    ids = []
    with temporary_settings({PREFECT_API_REQUEST_TIMEOUT: API_TIMEOUT_SECONDS}):
        for deployment in _build(block_overrides, params):
            action = f"register deployment {deployment.full_name}"
            try:
                ids.append(deployment.apply())
            except DeploymentApplyError as exc:
                raise InvalidRequestError(
                    f"{action} was refused by the Prefect API: {exc}", target=deployment.full_name
                ) from exc
            except httpx.HTTPError as exc:
                raise from_httpx(exc, action, target="Prefect API") from exc
    return ids


def _build(
    block_overrides: Mapping[str, str] | None, params: Mapping[str, Mapping[str, Any]] | None
) -> list[Any]:
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, temporary_settings

    with temporary_settings({PREFECT_API_REQUEST_TIMEOUT: API_TIMEOUT_SECONDS}):
        return runner_deployments(block_overrides, params=params)
