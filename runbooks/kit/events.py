"""Prefect events for every change a runbook makes to the world (DESIGN principle 6).

Names are ``runbooks.<runbook>.<what>`` (``runbooks.blue-green.traffic-switched``) and the
resource is the target (``runbooks.target.<target>``), so an automation or a person can follow
one service across runbooks: filter on the resource for "everything done to shop/checkout", or on
the name prefix for "everything blue-green did". Inside a run Prefect's events worker adds the
flow run, flow, deployment and tags as related resources, linking the event to its run in the UI.

Delivery is asynchronous: :func:`emit` queues the event to Prefect's events worker and returns;
the server stores it a few seconds later (its event persister flushes every
``PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL`` seconds, 5 by default).

Outside a run, the event is sent only when ``PREFECT_API_URL`` is set: with no API configured
Prefect would start an ephemeral server subprocess just to receive it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from runbooks.kit import _run
from runbooks.kit._secrets import refuse_secrets

if TYPE_CHECKING:
    from datetime import datetime

    from prefect.events import Event

_RUNBOOK = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_WHAT = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
_LOGGER = __name__


def event_name(runbook: str, what: str) -> str:
    """``runbooks.<runbook>.<what>``, after checking both names.

    ``runbook`` is kebab-case (``blue-green``); ``what`` is kebab-case words that may be joined by
    dots (``rollout.started``, ``traffic-switched``). Raises ``ValueError`` naming the argument.
    """
    if not isinstance(runbook, str) or not _RUNBOOK.match(runbook):
        raise ValueError(
            f"runbook must be a kebab-case name like 'blue-green' (lowercase letters, digits, "
            f"single dashes), got {runbook!r}"
        )
    if not isinstance(what, str) or not _WHAT.match(what):
        raise ValueError(
            f"what must be kebab-case words joined by dots, like 'traffic-switched' or "
            f"'rollout.started' (lowercase letters, digits, single dashes or dots), got {what!r}"
        )
    return f"runbooks.{runbook}.{what}"


def emit(
    runbook: str,
    what: str,
    target: str,
    *,
    payload: Mapping[str, Any] | None = None,
    related: Sequence[Mapping[str, str]] | None = None,
) -> Event | None:
    """Emit ``runbooks.<runbook>.<what>`` about ``target``; the Event, or None if not sent.

    ``payload`` is converted to JSON up front (a ``TypeError`` names what cannot be) and must hold
    no secrets (``TypeError``). ``related`` are extra related resources, each with at least
    ``prefect.resource.id`` and ``prefect.resource.role`` (else ``ValueError``). Returns None
    when Prefect does not send events (no events client, or Prefect failed to queue it, which it
    logs), or, outside a run, when no ``PREFECT_API_URL`` is set. Raises Prefect's
    ``EventTooLarge`` when the event exceeds the server's size limit.
    """
    name = event_name(runbook, what)
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a non-empty string, got {target!r}")
    refuse_secrets(payload, "payload")
    refuse_secrets(related, "related")
    try:
        body = to_jsonable_python(dict(payload or {}))
    except ValueError as exc:  # PydanticSerializationError is a ValueError
        raise TypeError(f"payload of event {name} is not JSON-serialisable: {exc}") from exc

    # Validated here because Prefect's emit_event logs and swallows an invalid related resource.
    from prefect.events import RelatedResource

    related_resources = [RelatedResource.model_validate(dict(r)) for r in related or ()]

    if not _run.in_run() and not _run.api_configured():
        _run.logger(_LOGGER).debug(
            "not in a run and no PREFECT_API_URL: event %s about %s not sent", name, target
        )
        return None

    from prefect.events import emit_event

    return emit_event(
        event=name,
        resource={
            "prefect.resource.id": f"runbooks.target.{target}",
            "prefect.resource.name": target,
            "runbooks.runbook": runbook,
        },
        payload=body,
        related=related_resources or None,
    )


def read_event_names(
    runbook: str,
    target: str,
    *,
    until: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    seconds: float = 10.0,
) -> list[str]:
    """The names of ``runbook``'s events about ``target`` (as :func:`emit` sent them), newest
    first, from the configured Prefect API; only those that occurred after ``since`` when given
    (else Prefect's default: the last day).

    Polled, bounded by ``seconds``: the server stores events asynchronously, so an earlier event
    can be readable before a later one. Without ``until`` it returns as soon as any is stored;
    with it, once that event name is among them (or what there is at the deadline).
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    event_name(runbook, "any")  # the same check of the runbook's name as emit's
    wanted = EventFilter(
        event=EventNameFilter(prefix=[f"runbooks.{runbook}."]),
        resource=EventResourceFilter(id=[f"runbooks.target.{target}"]),
        **({} if since is None else {"occurred": EventOccurredFilter(since=since)}),
    )
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while True:
            found = [e.event for e in client.read_events(filter=wanted, limit=limit).events]
            if (found and until is None) or (until is not None and until in found):
                return found
            if time.monotonic() > deadline:
                return found
            time.sleep(0.2)
