"""Reading back what a flow run left on the Prefect test server: its events and artifacts.

Shared by the runbooks' integration tests (geo-routing, regional-health, load-forecast,
apply-scaling), which check what an operator would see, not only the returned result.
"""

from __future__ import annotations

from datetime import datetime

from runbooks.kit import artifact_key
from runbooks.kit.events import read_event_names


def event_names(
    runbook: str, target: str, *, until: str | None = None, since: datetime | None = None
) -> list[str]:
    """The names of ``runbook``'s events about ``target``, newest first (polled; see
    :func:`runbooks.kit.events.read_event_names`); ``since``: only those after it (the session's
    Prefect server holds every earlier test's events, other tests may name the same target)."""
    return read_event_names(runbook, target, until=until, since=since, limit=10)


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
