"""``runbooks serve``: every runbook's deployment registered and served from this process.

Two ways to use :mod:`deployments.definitions`:

- :func:`serve_all` registers every deployment and runs them here (``prefect.serve``): scheduled
  runs, runs started from the UI, chat-ops and automations execute as subprocesses of this
  process. It blocks until interrupted (Ctrl-C); on the way out Prefect pauses the schedules it
  served, so no runs pile up for a runner that is gone.
- :func:`register_all` only registers them (create or update by name, idempotent: the same ids,
  the schedules replaced rather than added), for tests and for tools that run the flows
  elsewhere.

:func:`run_and_wait` starts one run of a runbook's deployment and waits for its end, the way a
person clicking "Run" in the UI would, and gives what the run returned (``runbooks demo`` runs
every runbook so, through the deployments it serves). The result is read from the run's
persisted result, so the serving process must persist results where this one reads them
(``PREFECT_RESULTS_PERSIST_BY_DEFAULT`` and ``PREFECT_LOCAL_STORAGE_PATH``).

Both talk to the configured Prefect API (``PREFECT_API_URL``) with a bounded per-call timeout,
and refuse missing blocks before registering anything (:func:`runner_deployments`). Run them from
the repository root: Prefect records each flow's file relative to the working directory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from deployments.definitions import runner_deployments
from runbooks.errors import InvalidRequestError, NotFoundError, UnavailableError, from_httpx

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runbooks.catalogue import Launched, Runbook

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


def run_and_wait(
    entry: Runbook,
    params: BaseModel,
    blocks: Mapping[str, Any],
    *,
    timeout_seconds: float = 900.0,
    poll_seconds: float = 1.0,
    alive: Callable[[], bool] | None = None,
) -> Launched:
    """Run ``entry``'s deployment (``<runbook>/<runbook>``) with these parameters, wait for the
    run to end; what it returned, or the error that ended it. Never raises the flow's error.

    ``blocks`` are *saved* blocks (as :func:`runbooks.catalogue.load_blocks` gives them), sent as
    references, so no setting or secret is copied into the run's parameters; ``None`` sends an
    explicit null (e.g. no Prometheus analysis). ``alive``, when given, says whether whatever
    serves the deployment still runs: once it says no, waiting is pointless. A run not finished
    after ``timeout_seconds``, or whose runner is gone, is an :class:`UnavailableError` naming
    the run (it is not cancelled: a runner may still take it).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, temporary_settings
    from prefect.utilities.urls import url_for

    from runbooks.catalogue import Launched

    parameters = {"params": params.model_dump(mode="json")}
    parameters |= {name: _reference(name, block) for name, block in blocks.items()}
    name = f"{entry.name}/{entry.name}"
    deadline = time.monotonic() + timeout_seconds
    with (
        temporary_settings({PREFECT_API_REQUEST_TIMEOUT: API_TIMEOUT_SECONDS}),
        _deployment_errors(name, "run"),
    ):
        run = run_deployment(
            name, parameters=parameters, timeout=0, tags=["runbooks"], as_subflow=False
        )
        ui_url = url_for("flow-run", obj_id=run.id)
        with get_client(sync_client=True) as client:
            while run.state is None or not run.state.is_final():
                if alive is not None and not alive():
                    why = "the process serving it stopped"
                elif time.monotonic() > deadline:
                    why = f"it did not finish within {timeout_seconds:g} s"
                else:
                    time.sleep(poll_seconds)
                    run = client.read_flow_run(run.id)
                    continue
                raise UnavailableError(
                    f"the run of deployment {name}: {why} (is `runbooks serve` running?); "
                    f"the run: {ui_url}",
                    target=name,
                )
    try:  # a failed, crashed or cancelled run's error is raised here
        return Launched(run.state.result(), None, str(run.id), ui_url)
    except Exception as exc:
        return Launched(None, exc, str(run.id), ui_url)


def latest_scheduled_run(runbook: str, *, wait_seconds: float = 75.0) -> Launched:
    """The newest finished run of ``runbook``'s deployment that its schedule started, waiting up
    to ``wait_seconds`` for one (a minute-level schedule has one within a minute of serving).

    Why not start one: a minute-level deployment takes one run at a time and cancels the
    newcomer (``CANCEL_NEW``), so a run started beside the scheduled one would be cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.utilities.urls import url_for

    from runbooks.catalogue import Launched

    name = f"{runbook}/{runbook}"
    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
    deadline = time.monotonic() + wait_seconds
    with get_client(sync_client=True) as client, _deployment_errors(name, "read the runs of"):
        deployment = client.read_deployment_by_name(name)
        runs_filter = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished)),
        )
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=runs_filter, sort=FlowRunSort.START_TIME_DESC, limit=20
            )
            runs = [run for run in runs if run.auto_scheduled]
            if runs or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    if not runs:
        raise UnavailableError(
            f"no scheduled run of deployment {name} finished within {wait_seconds:g} s "
            "(is its schedule active and `runbooks serve` running?)",
            target=name,
        )
    run, ui_url = runs[0], url_for("flow-run", obj_id=runs[0].id)
    try:
        return Launched(run.state.result(), None, str(run.id), ui_url)
    except Exception as exc:
        return Launched(None, exc, str(run.id), ui_url)


@contextlib.contextmanager
def _deployment_errors(name: str, action: str) -> Iterator[None]:
    """A missing deployment or an API failure as one of our errors, naming the deployment."""
    from prefect.exceptions import ObjectNotFound

    try:
        yield
    except ObjectNotFound as exc:
        raise NotFoundError(
            f"no deployment {name} on the Prefect API: register it (`runbooks serve`)",
            target=name,
        ) from exc
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"{action} deployment {name}", target=name) from exc


def _reference(name: str, block: Any) -> dict[str, Any] | None:
    """A saved block as a block-document reference (what the UI's block picker sends)."""
    if block is None:
        return None
    document = getattr(block, "_block_document_id", None)
    if document is None:
        raise InvalidRequestError(
            f"block {name} is not saved: a deployment run takes saved blocks by reference; "
            "save it first (Block.save) or load it by name"
        )
    return {"$ref": {"block_document_id": str(document)}}
