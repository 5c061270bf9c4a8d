"""``query_prometheus`` / ``query_range`` against the sandbox's real Prometheus, scraping a pod.

Called with ``.fn()``: no Prefect engine or server is needed. Skipped, with the reason, when
Prometheus is not installed (the sandbox then has no ``prometheus`` endpoint).
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from blocks import HttpService, KubernetesTarget
from runbooks.errors import InvalidRequestError, UnavailableError
from sandbox.showcase import deployment_manifest
from tasks.kubernetes import apply_deployment, wait_for_rollout
from tasks.prometheus import query_prometheus, query_range

NAMESPACE = "default"


@pytest.fixture(scope="module")
def prometheus(sandbox) -> HttpService:
    url = sandbox.endpoints.get("prometheus")
    if not url:
        pytest.skip("prometheus is not installed, so the sandbox has no Prometheus to query")
    return HttpService(base_url=url)


@pytest.fixture(scope="module")
def scraped_app(sandbox, prometheus: HttpService) -> Iterator[str]:
    """The ``app`` label of one shop pod that Prometheus has scraped at least once."""
    k8s = KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace=NAMESPACE
    )
    name = f"prom-{uuid.uuid4().hex[:6]}"
    try:
        apply_deployment.fn(k8s, deployment_manifest(name, "payments", "demo/shop:v1", 1, {}))
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
        deadline = time.monotonic() + 20  # file_sd refresh (5 s) + one scrape (2 s), bounded
        while query_prometheus.fn(prometheus, f'sum(up{{app="{name}"}})') != 1.0:
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not scrape {name} within 20s")
            time.sleep(0.25)
        yield name
    finally:
        with k8s.get_api_client() as api, contextlib.suppress(Exception):  # never created
            k8s.apps_v1(api).delete_namespaced_deployment(name, NAMESPACE)


def test_a_metric_that_exists_is_a_float(prometheus, scraped_app) -> None:
    value = query_prometheus.fn(prometheus, f'sum(up{{app="{scraped_app}"}})')
    assert value == 1.0
    assert isinstance(value, float)
    at = query_prometheus.fn(prometheus, f'sum(up{{app="{scraped_app}"}})', at=datetime.now(UTC))
    assert at == 1.0


def test_no_data_is_none_and_zero_is_zero(prometheus, scraped_app) -> None:
    assert query_prometheus.fn(prometheus, 'up{app="no-such-app"}') is None
    assert query_prometheus.fn(prometheus, f'sum(up{{app="{scraped_app}"}}) * 0') == 0.0
    assert query_prometheus.fn(prometheus, "vector(0) / 0") is None  # NaN: no data
    assert query_prometheus.fn(prometheus, "scalar(vector(2))") == 2.0


def test_bad_promql_is_an_invalid_request_with_prometheus_message(prometheus) -> None:
    with pytest.raises(InvalidRequestError, match=r"bad_data: .*parse error") as caught:
        query_prometheus.fn(prometheus, "sum(rate(")
    assert caught.value.status == 400


def test_several_series_are_refused(prometheus, scraped_app) -> None:
    up = f'up{{app="{scraped_app}"}}'
    query = f'label_replace({up}, "copy", "b", "", "") or {up}'
    with pytest.raises(InvalidRequestError, match="aggregate it to one"):
        query_prometheus.fn(prometheus, query)


def test_a_naive_time_is_refused(prometheus) -> None:
    with pytest.raises(InvalidRequestError, match="at must be timezone-aware"):
        query_prometheus.fn(prometheus, "vector(1)", at=datetime(2026, 1, 1))


def test_range_query(prometheus, scraped_app) -> None:
    end = datetime.now(UTC)
    series = query_range.fn(
        prometheus,
        f'up{{app="{scraped_app}"}}',
        start=end - timedelta(seconds=30),
        end=end,
        step_seconds=2,
    )
    assert len(series) == 1
    assert series[0].labels["app"] == scraped_app
    assert series[0].points
    assert all(value == 1.0 for _, value in series[0].points)
    assert query_range.fn(prometheus, 'up{app="none"}', start=end, end=end, step_seconds=1) == ()


def test_an_unreachable_prometheus_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UnavailableError, match="ConnectError"):
        query_prometheus.fn(HttpService(base_url=f"http://127.0.0.1:{port}"), "up")
