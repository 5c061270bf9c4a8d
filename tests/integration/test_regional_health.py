"""The ``regional-health`` flow against real loopback HTTP servers: one shop process per region
(``python -m sandbox.shop``, the pods' own program: ``demo/shop:v1`` healthy, ``v3-broken``
reporting its database failing), a port nobody listens on (connection refused) and a socket
that accepts and never answers (timeout)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from prefect_reads import artifact_data, event_names
from pydantic import ValidationError

from blocks.http import HttpService
from flows.regional_health import RegionalHealthParams, regional_health
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def shops() -> Iterator[dict[str, str]]:
    """``{"v1": url, "v3-broken": url}``: a shop process of each version on loopback."""
    processes, urls = [], {}
    try:
        for tag in ("v1", "v3-broken"):
            port = _free_port()
            env = os.environ | {"SHOP_IMAGE": f"demo/shop:{tag}", "SHOP_ROLE": "payments"}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sandbox.shop"],
                    env=env | {"PORT": str(port)},
                    stderr=subprocess.DEVNULL,
                )
            )
            urls[tag] = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + 20
        for url in urls.values():
            while True:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(url + "/health", timeout=1)
                    break
                assert time.monotonic() < give_up, f"{url} did not start"
                time.sleep(0.05)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/health"


def test_healthy_degraded_refused_and_silent_regions(
    prefect_server: str, shops: dict[str, str], silent: str
) -> None:
    began = datetime.now(UTC)  # other tests probe regions of the same names on this server
    params = RegionalHealthParams(
        regions={
            "us-east-1": shops["v1"] + "/health",
            "eu-west-1": shops["v3-broken"] + "/health",
            "ap-south-1": f"http://127.0.0.1:{_free_port()}/health",
            "sa-east-1": silent,
        },
        timeout_seconds=0.5,
    )
    result = regional_health(params=params)

    assert result.outcome is Outcome.FAILED
    assert result.healthy == ("us-east-1",)
    assert set(result.unhealthy) == {"eu-west-1", "ap-south-1", "sa-east-1"}
    rows = {row.region: row for row in result.regions}
    assert rows["us-east-1"].status == "200 ok"
    assert rows["eu-west-1"].status == "503 degraded"
    assert rows["eu-west-1"].failing_checks == ("database",)
    assert rows["ap-south-1"].status == "unreachable"
    assert "ConnectError" in (rows["ap-south-1"].error or "")
    assert "Timeout" in (rows["sa-east-1"].error or "")
    assert rows["sa-east-1"].latency_ms < 3000
    assert "eu-west-1 (database)" in result.reason

    assert event_names("regional-health", "us-east-1", since=began) == [
        "runbooks.regional-health.healthy"
    ]
    assert event_names("regional-health", "eu-west-1", since=began) == [
        "runbooks.regional-health.unhealthy"
    ]
    assert event_names("regional-health", "sa-east-1", since=began) == [
        "runbooks.regional-health.unhealthy"
    ]
    table = artifact_data("regional-health", result.target)
    assert "database" in table
    assert "latency_ms" in table


def test_all_healthy_with_a_service_block(prefect_server: str, shops: dict[str, str]) -> None:
    result = regional_health(
        params=RegionalHealthParams(regions={"us-east-1": shops["v1"] + "/health"}),
        services={"eu-central-1": HttpService(base_url=shops["v1"])},
    )
    assert result.outcome is Outcome.NO_CHANGE, result.reason
    assert result.healthy == ("eu-central-1", "us-east-1")
    assert all(row.latency_ms < 5000 for row in result.regions)


def test_bad_input_is_refused_naming_the_region(prefect_server: str) -> None:
    with pytest.raises(ValidationError, match="regions: 'moon' is not an AWS region"):
        RegionalHealthParams(regions={"moon": "http://127.0.0.1:1/health"})
    with pytest.raises(ValidationError, match=r"regions\.eu-west-1 must be an absolute http"):
        RegionalHealthParams(regions={"eu-west-1": "ftp://x/health"})
    with pytest.raises(InvalidRequestError, match="regions: eu-west-1 given both"):
        regional_health(
            params=RegionalHealthParams(regions={"eu-west-1": "http://127.0.0.1:1/health"}),
            services={"eu-west-1": HttpService(base_url="http://127.0.0.1:1")},
        )
