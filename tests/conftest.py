"""Test harness shared by every test.

Rules:
- one Prefect test server per session (`prefect_server`), started only when an integration
  test asks for it, with analytics off and SQLite lock retries kept out of the logs;
- the resilience layer never sleeps in tests (`runbooks.resilience.set_testing`);
- every test is marked unit, integration or e2e by the folder it lives in, so each kind runs
  alone: `pytest -m unit`;
- the throwaway PostgreSQL cluster (`postgres`) is a plugin (`tests/postgres_cluster.py`), so the
  integration and end-to-end tests share one per session.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.stack import prefect_settings  # imports no Prefect

# Prefect reads its settings once, at import: these must be set before anything imports it.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="runbooks-tests-prefect-"))
os.environ.update(
    prefect_settings(_PREFECT_HOME)
    | {
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
        # events are stored every 5 s by default; tests that read them back would wait for it
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    }
)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_KEY", None)

_KINDS = ("unit", "integration", "e2e")

pytest_plugins = ("postgres_cluster", "tracing_globals")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in _KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One Prefect API server (SQLite in a temporary folder) per session; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@dataclass(frozen=True)
class Sandbox:
    """The sandbox of the session: endpoints (``kube_api``, ``kubeconfig``, ``moto``,
    ``prometheus`` when installed) and the running cluster (controller, pods, proxy)."""

    endpoints: dict[str, str]
    cluster: Any
    state: Path


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The whole sandbox but Prefect (tests have ``prefect_server``), once per session."""
    from sandbox.supervisor import build_stack

    state = tmp_path_factory.mktemp("sandbox")
    stack = build_stack(state, prefect=False)
    endpoints = stack.start()
    try:
        cluster = next(c for c in stack.components if c.name == "cluster").cluster
        yield Sandbox(endpoints, cluster, state)
    finally:
        stack.stop()


@pytest.fixture
def k8s(sandbox: Sandbox) -> Any:
    """A ``KubernetesTarget`` block on the session sandbox's cluster, namespace ``default``."""
    from blocks import KubernetesTarget

    return KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace="default"
    )


@pytest.fixture
def kube_faults(sandbox: Sandbox) -> Iterator[Any]:
    """An httpx client on the API emulator's fault admin endpoint; every fault cleared after."""
    import httpx

    with httpx.Client(base_url=sandbox.endpoints["kube_api"], timeout=5) as client:
        yield client
        client.delete("/_sandbox/faults").raise_for_status()


@pytest.fixture(autouse=True)
def _no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Backoff never sleeps in tests: our layer's waits are recorded, not slept (stamina's
    testing mode), and botocore's standard-mode backoff waits nothing (its retries still
    happen, so a test still sees each attempt)."""
    from botocore.retries.standard import ExponentialBackoff

    from runbooks import resilience

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    with resilience.testing():
        yield
