"""The progress reporter inside a flow run: one progress artifact, updated, ending at 100 %."""

from __future__ import annotations

import io
import uuid

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from runbooks.kit.progress import Progress


def test_a_progress_artifact_is_created_once_and_updated(prefect_server: str) -> None:
    key = f"progress-{uuid.uuid4().hex[:8]}"

    @flow
    def work() -> None:
        progress = Progress(key, "working", step_percent=25, stream=io.StringIO())
        for done in range(0, 101, 10):
            progress(done, 100)
        progress.finish()

    work()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert len(found) == 1
    assert found[0].type == "progress"
    assert float(found[0].data) == 100.0
