"""One mutating run per target (DESIGN principle 7), on Prefect global concurrency limits.

Each target gets its own limit, ``runbooks-target:<target>``, with one slot; :func:`target_lock`
creates it on first use and holds its slot for the duration of the ``with`` block. Why Prefect's
limits rather than a file or a database lock: every worker, ``serve`` process and local run that
talks to the same Prefect API sees the same limit, the UI shows it (Concurrency > Global), and
the slot is a *lease*: Prefect renews it in a background thread while the block runs, and when a
run's process dies the lease expires after ``lease_seconds`` and the target is free again.

Behaviours of Prefect 3.9 this module relies on or works around:

- limit names may not contain ``/ % & > <`` (``prefect.types.names.BANNED_CHARACTERS``), yet
  targets are often ``namespace/service``; and the client puts the name into the URL path
  unquoted, so ``#``, ``?`` or spaces would address the wrong URL. :func:`lock_name` keeps
  letters, digits and ``. _ : -``, replaces anything else with ``_`` and then appends ``~`` and a
  short hash of the original target, so distinct targets never share a lock;
- a missing limit makes ``concurrency()`` skip the lock with a warning; we create the limit first
  and acquire with ``strict=True``, so a lock is always taken or an error raised;
- a limit with ``limit`` other than 1, or disabled, would let runs interleave or never acquire:
  refused with the command that fixes it;
- the server accepts leases of 60 s to 24 h only;
- waiting is polling: the server answers 423 with a ``Retry-After`` derived from how long slots
  are usually held (capped by ``PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS``,
  30 s by default), so a waiter may notice a release up to that long after it happens;
- within one process, acquisitions of the same limit are queued one after another by Prefect's
  acquisition service, and ``timeout_seconds`` starts when a request leaves that queue;
- when a wait times out, Prefect's acquisition service also logs an ERROR ("Service
  'ConcurrencySlotAcquisitionWithLeaseService' failed to process item") although the caller gets
  the ``TimeoutError``; :class:`_QuietAcquisitionTimeouts` drops exactly that record, because the
  ``TargetBusyError`` we raise is the actionable message;
- slots are counted in the server's database but leases live in the server's memory (the
  default ``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``), so when the process that granted a lease
  goes away before it expires, nothing reclaims that slot; reset it with
  ``prefect gcl update <name> --active-slots 0``. Without ``PREFECT_API_URL`` every process
  runs its own ephemeral server and goes away at exit, so a warning asks for a shared server.

When the run holding a lock is killed (SIGKILL, OOM, a lost worker), its lease is no longer
renewed, but the server frees the slot only once the lease has expired: up to ``lease_seconds``
after the last renewal (renewals come every three quarters of it), plus the server's lease
sweep (``PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS``, 15 s). Until then a re-run of the
same target waits ``timeout_seconds`` and fails with ``TargetBusyError``. Nothing in Prefect
OSS lists a limit's leases, so :func:`target_lock` records the one it holds in a Prefect
Variable (``runbooks-lock-<hash>``, see :func:`lease_record_name`: lease id, holder, time,
lease length) for as long as it holds it, and :func:`release_target` revokes the recorded lease
(the server's own release, so the slot count stays right and the dead lease cannot free a later
run's slot when it would have expired). ``release_target`` is an operator's action, for a holder
known to be dead: releasing a live run's lock lets two runs change the target at once. The
``TargetBusyError`` message names it. The killed run's flow run stays ``Running`` in the UI
(nothing reports a SIGKILL), so that is not a sign that the holder is alive.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from runbooks.errors import (
    InvalidRequestError,
    TargetBusyError,
    UnavailableError,
    from_httpx,
)
from runbooks.kit import _run

LOCK_PREFIX = "runbooks-target:"
# Valid in a Prefect name and in a URL path segment; "~" is left out so only hashed names hold it.
_NAME_SAFE = re.compile(r"[A-Za-z0-9._:-]+")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_MIN_LEASE_SECONDS = 60.0
_MAX_LEASE_SECONDS = 86_400.0
_LOGGER = __name__
_RECORD_PREFIX = "runbooks-lock-"


class LeaseRecord(BaseModel):
    """The lease a :func:`target_lock` holds, as recorded for :func:`release_target`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    target: str
    lock: str = Field(description="The global concurrency limit's name.")
    lease_id: UUID
    holder_type: str | None = Field(None, description="flow_run or task_run, when in a run.")
    holder_id: UUID | None = Field(None, description="The flow (or task) run that took it.")
    acquired_at: datetime
    lease_seconds: float


def lock_name(target: str) -> str:
    """The name of the global concurrency limit that locks ``target``."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a non-empty string, got {target!r}")
    if _NAME_SAFE.fullmatch(target):
        return f"{LOCK_PREFIX}{target}"
    safe = _NAME_UNSAFE.sub("_", target)
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"{LOCK_PREFIX}{safe}~{digest}"


@contextmanager
def target_lock(
    target: str, *, timeout_seconds: float = 30, lease_seconds: float = 300
) -> Iterator[str]:
    """Hold the lock on ``target`` for the ``with`` block; yields the lock's name.

    Waits up to ``timeout_seconds`` for another run to release it, then raises
    :class:`~runbooks.errors.TargetBusyError`. ``lease_seconds`` (60 to 86400) is how long the
    target stays locked if this process dies without releasing it; while the block runs, Prefect
    renews the lease. Errors from the Prefect API are translated into the project's tree
    (``UnavailableError`` and friends).
    """
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.context import ConcurrencyContext
    from prefect.concurrency.sync import concurrency

    name = lock_name(target)
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}")
    if not _MIN_LEASE_SECONDS <= lease_seconds <= _MAX_LEASE_SECONDS:
        raise ValueError(
            f"lease_seconds must be between {_MIN_LEASE_SECONDS:g} and {_MAX_LEASE_SECONDS:g} "
            f"(the Prefect server's range), got {lease_seconds!r}"
        )
    log = _run.logger(_LOGGER)
    if not _run.api_configured():
        log.warning(
            "no PREFECT_API_URL is set: lock %r lives on this process's ephemeral Prefect "
            "server, which cannot reclaim it if this process dies; point PREFECT_API_URL at a "
            "shared Prefect server",
            name,
        )
    limit_id = _ensure_limit(name, target)
    _QuietAcquisitionTimeouts.install()

    with ExitStack() as stack:
        # Prefect records a granted lease id on the innermost ConcurrencyContext (to release it
        # if the caller is cancelled): our own context is where we read which lease we hold.
        leases = stack.enter_context(ConcurrencyContext())
        holder = _holder()
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=timeout_seconds,
                    lease_duration=lease_seconds,
                    strict=True,
                    holder=holder,
                    # A failed renewal means the API is unreachable, so no other run can take the
                    # lock either; stopping a change half-way would be worse than finishing it.
                    raise_on_lease_renewal_failure=False,
                )
            )
        except TimeoutError as exc:
            raise TargetBusyError(
                f"target {target!r} is busy: another run held its lock {name!r} for the whole "
                f"{timeout_seconds:g}s this run waited{_holder_hint(limit_id)}; find the holder "
                f"in the Prefect UI (Events, resource prefect.concurrency-limit.{limit_id}) and "
                "retry when it has finished. If that run is gone (its process was killed), its "
                f"lease frees the target within {_lease_hint(target)}, or free it now with "
                f"runbooks.kit.locking.release_target({target!r})",
                target=target,
            ) from exc
        except (ConcurrencySlotAcquisitionError, httpx.HTTPError) as exc:
            # Prefect wraps every API failure of the acquisition in ConcurrencySlotAcquisitionError.
            raise UnavailableError(
                f"could not take the lock {name!r} on target {target!r}: {exc}; "
                "check that the Prefect API is reachable, then retry",
                target=target,
            ) from exc
        log.info("locked target %r (%s)", target, name)
        record = None
        if leases.cleanup_lease_ids:
            record = LeaseRecord(
                target=target,
                lock=name,
                lease_id=leases.cleanup_lease_ids[-1],
                holder_type=holder.type if holder is not None else None,
                holder_id=holder.id if holder is not None else None,
                acquired_at=datetime.now(UTC),
                lease_seconds=lease_seconds,
            )
            _write_record(record)
        try:
            yield name
        finally:
            stack.close()  # releases the slot and stops the lease renewal thread
            if record is not None:
                _forget_record(record)
            log.info("released target %r (%s)", target, name)


def lease_record_name(target: str) -> str:
    """The Prefect Variable holding the lease record of ``target``'s lock (a valid name)."""
    digest = hashlib.sha256(lock_name(target).encode()).hexdigest()[:16]
    return f"{_RECORD_PREFIX}{digest}"


def read_lease_record(target: str) -> LeaseRecord | None:
    """The recorded lease of ``target``'s lock: the holder's, or a dead holder's (stale)."""
    import httpx
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            variable = client.read_variable_by_name(lease_record_name(target))
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"read the lease record of {target!r}", target=target) from exc
    if variable is None or not isinstance(variable.value, dict):
        return None
    return LeaseRecord.model_validate(variable.value)


def release_target(target: str) -> LeaseRecord | None:
    """Free ``target``'s lock held by a run that died; returns the lease revoked, or ``None``.

    For an operator (or a test) once the holder is known to be dead (its process was killed,
    its worker lost): its lease would block every re-run until it expires (see the module
    docstring). Never call it while the holder may be alive: two runs would then change the
    target at once. Revokes the lease recorded by :func:`target_lock` through the server's own
    release, so the slot count stays right. ``None`` when the lock is free (a stale record is
    dropped). Raises ``InvalidRequestError`` when the lock is held but no lease was recorded
    (taken by an older version of this module): wait for its lease to expire.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = lock_name(target)
    record = read_lease_record(target)
    log = _run.logger(_LOGGER)
    try:
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                return None
            if limit.active_slots == 0:
                if record is not None:
                    _forget_record(record)
                return None
            if record is None:
                raise InvalidRequestError(
                    f"lock {name!r} of target {target!r} is held but no lease was recorded for "
                    "it, so it cannot be revoked safely; wait for its lease to expire (at most "
                    "the holder's lease_seconds, 300 s by default)",
                    target=target,
                )
            client.release_concurrency_slots_with_lease(record.lease_id)
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"release the lock {name!r}", target=target) from exc
    _forget_record(record)
    log.warning(
        "released the lock %r of target %r: lease %s taken at %s by %s %s",
        name,
        target,
        record.lease_id,
        record.acquired_at.isoformat(),
        record.holder_type or "a process outside a run",
        record.holder_id or "",
    )
    return record


def _write_record(record: LeaseRecord) -> None:
    """Record the lease held (best effort: a lock must not fail for want of its record)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    name = lease_record_name(record.target)
    value = record.model_dump(mode="json")
    try:
        with get_client(sync_client=True) as client:
            try:
                client.create_variable(VariableCreate(name=name, value=value, tags=["runbooks"]))
            except ObjectAlreadyExists:  # a dead holder's record, or one left by a failed forget
                client.update_variable(VariableUpdate(name=name, value=value))
    except Exception:
        _run.logger(_LOGGER).warning(
            "could not record lease %s of lock %r: release_target cannot free it if this run dies",
            record.lease_id,
            record.lock,
            exc_info=True,
        )


def _forget_record(record: LeaseRecord) -> None:
    """Delete the record if it is still ``record``'s (a later holder's record is left alone)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = lease_record_name(record.target)
    try:
        with get_client(sync_client=True) as client:
            variable = client.read_variable_by_name(name)
            if variable is None or not isinstance(variable.value, dict):
                return
            if variable.value.get("lease_id") != str(record.lease_id):
                return
            try:
                client.delete_variable_by_name(name)
            except ObjectNotFound:
                return
    except Exception:
        _run.logger(_LOGGER).warning(
            "could not delete the lease record %r of lock %r", name, record.lock, exc_info=True
        )


def _lease_hint(target: str) -> str:
    """How long a dead holder's lease may still block, from its record (best effort)."""
    try:
        record = read_lease_record(target)
    except Exception:
        _run.logger(_LOGGER).debug("could not read the lease record of %r", target, exc_info=True)
        record = None
    if record is None:
        return "its lease_seconds (300 s by default) of its last renewal"
    return f"{record.lease_seconds:g}s of its last renewal"


def _ensure_limit(name: str, target: str) -> Any:
    """Create the one-slot limit if missing; refuse a misconfigured one. Returns its id."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    action = f"prepare lock {name!r}"
    try:
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    limit_id = client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
                except ObjectAlreadyExists:
                    # Another run created it between our read and our create (HTTP 409).
                    limit = client.read_global_concurrency_limit_by_name(name)
                else:
                    _run.logger(_LOGGER).info("created lock %r for target %r", name, target)
                    return limit_id
    except httpx.HTTPError as exc:
        raise from_httpx(exc, action, target=target) from exc

    if limit.limit != 1 or not limit.active:
        state = "active" if limit.active else "disabled"
        raise InvalidRequestError(
            f"lock {name!r} for target {target!r} has limit {limit.limit} and is {state}, but "
            f"one run per target needs limit 1 and active: run `prefect gcl update {name} "
            "--limit 1 --enable`",
            target=target,
        )
    return limit.id


def _holder() -> Any:
    """The flow run (or task run) taking the lock, recorded on the lease by the server."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext, TaskRunContext

    flow_run_context = FlowRunContext.get()
    if flow_run_context is not None and flow_run_context.flow_run is not None:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow_run_context.flow_run.id)
    task_run_context = TaskRunContext.get()
    if task_run_context is not None:
        return ConcurrencyLeaseHolder(type="task_run", id=task_run_context.task_run.id)
    return None


def _holder_hint(limit_id: Any) -> str:
    """', last taken by flow run "x" (id)' from the latest acquisition event, or ''.

    Prefect OSS has no API to read a lease's holder, but the acquisition event carries the
    acquiring run as a related resource. Best effort: the lookup must never hide the busy error.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    try:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]),
                    resource=EventResourceFilter(id=[f"prefect.concurrency-limit.{limit_id}"]),
                ),
                limit=1,
            )
    except Exception:
        _run.logger(_LOGGER).debug("could not read who holds lock %s", limit_id, exc_info=True)
        return ""
    for event in page.events:
        for resource in event.related:
            if resource.get("prefect.resource.role") == "flow-run":
                run_id = resource.id.removeprefix("prefect.flow-run.")
                return f" (last taken by flow run {resource.name!r}, id {run_id})"
    return ""


class _QuietAcquisitionTimeouts(logging.Filter):
    """Drops Prefect's ERROR record for an acquisition that timed out, and nothing else.

    The record is logged by ``prefect._internal.concurrency.services`` with the queued item as its
    last argument; the item ends with the caller's future, which holds the ``TimeoutError`` that
    :func:`target_lock` turns into ``TargetBusyError``. Any other failure is still logged.
    """

    _LOGGER_NAME = "prefect._internal.concurrency"
    _installed = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            logging.getLogger(cls._LOGGER_NAME).addFilter(cls())
            cls._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed to process item" not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        item = args[-1] if args else None
        future = item[-1] if isinstance(item, tuple) and item else None
        done = getattr(future, "done", None)
        if callable(done) and done() and not future.cancelled():  # type: ignore[union-attr]
            return not isinstance(future.exception(), TimeoutError)  # type: ignore[union-attr]
        return True
