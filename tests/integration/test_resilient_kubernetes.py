"""The kubernetes client through the layer: urllib3 retries off, ours on, errors translated."""

from __future__ import annotations

import json
from collections.abc import Iterator

import kubernetes.client
import pytest

from decisions.budget import RetryBudgetSettings
from runbooks.errors import NotFoundError, UnavailableError
from runbooks.resilience import (
    Resilience,
    ResiliencePolicy,
    call_kubernetes,
    no_urllib3_retries,
)
from sandbox.outage import OutageServer

VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@pytest.fixture
def apiserver() -> Iterator[OutageServer]:
    with OutageServer(healthy_body=json.dumps(VERSION).encode()) as server:
        yield server


@pytest.fixture
def version_api(apiserver: OutageServer) -> kubernetes.client.VersionApi:
    configuration = kubernetes.client.Configuration(host=apiserver.url)
    no_urllib3_retries(configuration)
    return kubernetes.client.VersionApi(kubernetes.client.ApiClient(configuration))


LAYER = ResiliencePolicy(budget=RetryBudgetSettings(min_retries_per_window=100))


def test_reads_are_retried_by_us_once_each(apiserver, version_api) -> None:
    apiserver.script(503, 503)
    info = call_kubernetes(
        "read the API version", version_api.get_code, resilience=Resilience(LAYER)
    )
    assert info.git_version == "v1.34.0"
    assert apiserver.requests == 3  # urllib3 added none of its own
    assert all("x-request-id" in seen.headers for seen in apiserver.seen)


def test_unavailable_after_the_attempts_is_one_sentence(apiserver, version_api) -> None:
    apiserver.fail(503)
    with pytest.raises(UnavailableError, match="read the API version failed with HTTP 503"):
        call_kubernetes("read the API version", version_api.get_code, resilience=Resilience(LAYER))
    assert apiserver.requests == 3


def test_not_found_is_permanent_and_not_retried(apiserver, version_api) -> None:
    apiserver.fail(404)
    with pytest.raises(NotFoundError, match="check the name and namespace"):
        call_kubernetes("read the API version", version_api.get_code, resilience=Resilience(LAYER))
    assert apiserver.requests == 1


def test_writes_are_not_retried_unless_declared_idempotent(apiserver, version_api) -> None:
    apiserver.fail(503)
    layer = Resilience(LAYER)
    with pytest.raises(UnavailableError):
        call_kubernetes("write", version_api.get_code, idempotent=False, resilience=layer)
    assert apiserver.requests == 1


def test_connection_refused_is_unavailable() -> None:
    configuration = kubernetes.client.Configuration(host="http://127.0.0.1:9")
    no_urllib3_retries(configuration)
    api = kubernetes.client.VersionApi(kubernetes.client.ApiClient(configuration))
    with pytest.raises(UnavailableError, match="read the API version failed"):
        call_kubernetes("read the API version", api.get_code, resilience=Resilience(LAYER))
