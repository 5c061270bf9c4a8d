"""The service proxy's cost, measured: the same GET to a pod directly and through its Service.

For ``benchmarks/sandbox.py`` and anyone asking "what does the proxy add?". Requests alternate
between the two paths so both see the same machine load; each path uses one keep-alive
connection, as a real client would.
"""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sandbox.cluster.objects import LOOPBACK


@dataclass(frozen=True)
class ProxyLatency:
    """Round trips on one keep-alive connection each, interleaved, in milliseconds."""

    requests: int
    direct_p50_ms: float
    direct_p95_ms: float
    proxied_p50_ms: float
    proxied_p95_ms: float

    @property
    def added_p50_ms(self) -> float:
        return self.proxied_p50_ms - self.direct_p50_ms

    @property
    def added_p95_ms(self) -> float:
        return self.proxied_p95_ms - self.direct_p95_ms


def measure_proxy_latency(
    service_url: str, pod_url: str, *, requests: int = 300, path: str = "/ready", warmup: int = 20
) -> ProxyLatency:
    """The proxy's added latency: the same GET to a pod directly and through its Service.

    Requests alternate between the two paths so both see the same machine load; each path
    uses one keep-alive connection, as a real client would.
    """
    direct, proxied = _Timer(pod_url, path), _Timer(service_url, path)
    try:
        for _ in range(warmup):
            direct.once()
            proxied.once()
        direct.samples.clear()
        proxied.samples.clear()
        for _ in range(requests):
            direct.once()
            proxied.once()
    finally:
        direct.close()
        proxied.close()

    def pct(samples: list[float], q: float) -> float:
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    return ProxyLatency(
        requests=requests,
        direct_p50_ms=statistics.median(direct.samples) * 1000.0,
        direct_p95_ms=pct(direct.samples, 0.95),
        proxied_p50_ms=statistics.median(proxied.samples) * 1000.0,
        proxied_p95_ms=pct(proxied.samples, 0.95),
    )


class _Timer:
    def __init__(self, url: str, path: str):
        parts = urlsplit(url)
        self._connection = http.client.HTTPConnection(
            parts.hostname or LOOPBACK, parts.port or 80, timeout=10
        )
        self._path = path
        self.samples: list[float] = []

    def once(self) -> None:
        began = time.perf_counter()
        self._connection.request("GET", self._path)
        response = self._connection.getresponse()
        response.read()
        self.samples.append(time.perf_counter() - began)
        if response.status >= 500:
            raise RuntimeError(f"{self._path} answered {response.status} during the measurement")

    def close(self) -> None:
        self._connection.close()
