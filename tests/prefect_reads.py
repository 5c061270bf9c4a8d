"""Reading back what a flow run left on the Prefect test server: its events and artifacts.

Shared by the runbooks' integration tests (geo-routing, regional-health, load-forecast,
apply-scaling), which check what an operator would see, not only the returned result.
"""

from __future__ import annotations

import time

from runbooks.kit import artifact_key


def event_names(runbook: str, target: str, *, until: str | None = None) -> list[str]:
    """The names of ``runbook``'s events about ``target``, newest first (polled: the server
    stores events asynchronously, so an earlier event can be readable before a later one;
    ``until`` polls until that event is among them, bounded like the rest)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(prefix=[f"runbooks.{runbook}."]),
        resource=EventResourceFilter(id=[f"runbooks.target.{target}"]),
    )
    give_up = time.monotonic() + 10
    with get_client(sync_client=True) as client:
        while True:
            found = [e.event for e in client.read_events(filter=wanted, limit=10).events]
            if (found and until is None) or (until is not None and until in found):
                return found
            if time.monotonic() > give_up:
                return found
            time.sleep(0.2)


def artifact_data(*key_parts: str) -> str:
    """The data of the newest artifact keyed ``artifact_key(*key_parts)``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = artifact_key(*key_parts)
    wanted = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
    with get_client(sync_client=True) as client:
        newest = client.read_artifacts(artifact_filter=wanted, limit=1)
    assert newest, f"no artifact {key}"
    return str(newest[0].data)
