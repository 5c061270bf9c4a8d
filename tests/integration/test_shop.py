"""The demo shop as the pod runner starts it: real processes on loopback, one per pod.

Every process is started with ``python -m sandbox.shop`` and the environment a Pod would get,
and terminated in the fixture's teardown (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from postgres_cluster import free_port, new_database
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url

from decisions.flags import normalized_value
from sandbox.outage import OutageServer
from sandbox.shop.orders import V1_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0
COMBINED = re.compile(
    r"^(?P<host>\S+) \S+ \S+ \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "[^"]*"$'
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Pod:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    started: float
    stderr_path: Path
    access_log: Path
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Pod:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}: {self.stderr()}"
                )
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    self.ready_seconds = time.perf_counter() - self.started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise AssertionError(f"{self.name} not ready within {timeout} s: {self.stderr()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def counter(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == name and labels.items() <= dict(sample_labels).items()
        )


class Fleet:
    """Starts pods; stops every one of them at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.pods: list[Pod] = []
        self._files: list[object] = []

    def start(self, role: str, image: str, **env: str) -> Pod:
        port = _free_port()
        name = f"{role}-{len(self.pods)}"
        stderr_path = self.tmp_path / f"{name}.stderr"
        access_log = self.tmp_path / f"{name}.access.log"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "OTEL_"))},
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SHOP_ROLE": role,
            "SHOP_IMAGE": image,
            "PORT": str(port),
            "POD_NAME": name,
            "POD_NAMESPACE": "shop",
            "SHOP_ACCESS_LOG": str(access_log),
            **env,
        }
        stderr = stderr_path.open("wb")
        self._files.append(stderr)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.shop"],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=self.tmp_path,
        )
        pod = Pod(name, process, port, started, stderr_path, access_log)
        self.pods.append(pod)
        return pod

    def chain(self, frontend: str = "v1", checkout: str = "v1", payments: str = "v1", **env: str):
        pay = self.start("payments", f"demo/shop:{payments}", **env)
        co = self.start("checkout", f"demo/shop:{checkout}", SHOP_DOWNSTREAM_URL=pay.url, **env)
        fe = self.start("frontend", f"demo/shop:{frontend}", SHOP_DOWNSTREAM_URL=co.url, **env)
        return fe.wait_ready(), co.wait_ready(), pay.wait_ready()

    def stop(self) -> None:
        for pod in self.pods:
            if pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
        for pod in self.pods:
            try:
                pod.process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait(timeout=5)
        for handle in self._files:
            handle.close()  # type: ignore[attr-defined]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    pods = Fleet(tmp_path)
    try:
        yield pods
    finally:
        pods.stop()


def _write_json(path: Path, document: object) -> None:
    """Replace atomically, as a ConfigMap volume update does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def _eventually(check, timeout: float = 5.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- the chain and the tags --------------------------------------------------------------------


def test_healthy_chain_answers_with_every_version(fleet: Fleet) -> None:
    fe, co, pay = fleet.chain(frontend="v1", checkout="v2", payments="v1")
    response = httpx.get(f"{fe.url}/buy", params={"user": "u1"}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert [(hop["role"], hop["version"]) for hop in body["chain"]] == [
        ("frontend", "v1"),
        ("checkout", "v2"),
        ("payments", "v1"),
    ]
    assert body["pod"] == fe.name
    assert body["user"] == "u1"
    for pod in (fe, co, pay):
        health = httpx.get(f"{pod.url}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
    assert httpx.get(f"{fe.url}/health").json()["checks"]["dependencies"] == {"checkout": "unknown"}
    assert httpx.get(f"{pay.url}/health").json()["checks"]["dependencies"] == {}
    assert httpx.get(f"{fe.url}/nope").status_code == 404
    assert httpx.delete(f"{fe.url}/buy").status_code == 405
    assert httpx.get(f"{co.url}/buy").status_code == 404  # a route of another role


def test_broken_version_is_ready_fails_a_share_and_reports_degraded_health(fleet: Fleet) -> None:
    pay = fleet.start("payments", "demo/shop:v3-broken")
    fe = fleet.start("frontend", "demo/shop:v1", SHOP_DOWNSTREAM_URL="")
    co = fleet.start("checkout", "demo/shop:v3-broken", SHOP_DOWNSTREAM_URL=pay.url)
    fe2 = fleet.start("frontend", "demo/shop:v1", SHOP_DOWNSTREAM_URL=co.url)
    for pod in (pay, fe, co, fe2):
        pod.wait_ready()
    with httpx.Client(base_url=pay.url, timeout=5) as client:
        statuses = [client.post("/pay", json={"user": "u"}).status_code for _ in range(20)]
        assert statuses.count(500) == 6
        assert statuses.count(200) == 14
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["checks"]["database"] == "failing"
        assert health.json()["version"] == "v3-broken"
        assert client.get("/ready").status_code == 200
    # a caller of a broken service sees it in its dependency check (recent calls, no probe)
    with httpx.Client(base_url=fe2.url, timeout=5) as client:
        results = [client.get("/buy", params={"user": f"u{i}"}).status_code for i in range(10)]
        assert 500 in results
        health = client.get("/health").json()
        assert health["checks"]["dependencies"] == {"checkout": "failing"}
        assert health["status"] == "degraded"
    # no downstream configured: the calling route says so, the pod itself is fine
    unwired = httpx.get(f"{fe.url}/buy", timeout=5)
    assert unwired.status_code == 503
    assert "SHOP_DOWNSTREAM_URL" in unwired.json()["error"]
    assert httpx.get(f"{fe.url}/health").json()["checks"]["dependencies"] == {
        "checkout": "unconfigured"
    }


def test_slow_version_is_slow_on_business_routes_only(fleet: Fleet) -> None:
    pay = fleet.start("payments", "demo/shop:v4-slow").wait_ready()
    durations: list[float] = []

    def call() -> None:
        started = time.perf_counter()
        assert httpx.get(f"{pay.url}/pay", timeout=5).status_code == 200
        durations.append(time.perf_counter() - started)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(durations) == 3
    assert all(0.8 <= d < 2.5 for d in durations), durations
    started = time.perf_counter()
    assert httpx.get(f"{pay.url}/health", timeout=5).status_code == 200
    assert time.perf_counter() - started < 0.3


def test_crashloop_exits_1_fast_and_unknown_tag_exits_2(fleet: Fleet) -> None:
    crash = fleet.start("payments", "demo/shop:v5-crashloop")
    unknown = fleet.start("payments", "demo/shop:v9-flaky")
    no_env = fleet.start("payments", "demo/shop:v1", SHOP_ROLE="cart")
    assert crash.process.wait(timeout=5) == 1
    crash_seconds = time.perf_counter() - crash.started
    assert "fatal" in crash.stderr()
    assert unknown.process.wait(timeout=5) == 2
    assert "unknown image tag" in unknown.stderr()
    assert no_env.process.wait(timeout=5) == 2
    assert "SHOP_ROLE" in no_env.stderr()
    print(f"crashloop exit after {crash_seconds * 1000:.0f} ms (process start included)")
    assert crash_seconds < 2.0


def test_start_up_time_and_no_heavy_imports(fleet: Fleet) -> None:
    pods = [fleet.start("payments", "demo/shop:v1") for _ in range(3)]
    times = sorted(pod.wait_ready().ready_seconds or 0 for pod in pods)
    print(f"process start to /ready 200: {', '.join(f'{t:.3f}' for t in times)} s")
    assert times[-1] < 3.0
    code = (
        "import sys; import sandbox.shop.app, sandbox.shop.server, sandbox.shop.downstream;"
        "print(sorted(m for m in ('prefect', 'pandas', 'prophet', 'opentelemetry.sdk', "
        "'sqlalchemy', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]"


# -- metrics and logs --------------------------------------------------------------------------


def test_metrics_parse_and_count_requests(fleet: Fleet) -> None:
    fe, co, pay = fleet.chain()
    with httpx.Client(base_url=fe.url, timeout=5) as client:
        for i in range(7):
            assert client.get("/buy", params={"user": str(i)}).status_code == 200
    assert fe.counter("shop_requests_total", route="/buy", status="200") == 7
    assert co.counter("shop_requests_total", route="/checkout", status="200") == 7
    assert pay.counter("shop_requests_total", route="/pay", status="200") == 7
    assert co.counter("shop_request_duration_seconds_count", route="/checkout") == 7
    assert co.counter("shop_downstream_requests_total", dependency="payments", outcome="ok") == 7
    assert co.counter("shop_downstream_attempts_total", dependency="payments") == 7
    assert co.counter("runbooks_client_requests_total", target="payments") == 7  # the layer's
    assert co.counter("shop_build_info", version="v1", role="checkout") == 1
    assert co.counter("shop_retry_max_attempts", dependency="payments") == 5
    families = {f.name for f in text_string_to_metric_families(httpx.get(f"{co.url}/metrics").text)}
    assert {"shop_request_duration_seconds", "runbooks_client_retries", "process_cpu_seconds"} <= (
        families
    )
    assert not any(name.endswith("_created") for name in families)


def test_access_log_lines_are_combined_format(fleet: Fleet) -> None:
    pay = fleet.start("payments", "demo/shop:v1").wait_ready()
    with httpx.Client(base_url=pay.url, timeout=5, headers={"User-Agent": 'load "gen"'}) as client:
        client.get("/pay", params={"user": "a b"})
        client.post("/pay", json={"user": "x"}, headers={"X-Forwarded-For": "203.0.113.9"})
        client.get("/missing")
    lines = _eventually(
        lambda: (
            [line for line in pay.access_log.read_text().splitlines() if "/ready" not in line]
            if len(pay.access_log.read_text().splitlines()) >= 4
            else None
        )
    )
    assert lines
    assert len(lines) == 3
    matches = [COMBINED.match(line) for line in lines]
    assert all(matches), lines
    assert [m["request"] for m in matches if m] == [
        "GET /pay?user=a+b HTTP/1.1",
        "POST /pay HTTP/1.1",
        "GET /missing HTTP/1.1",
    ]
    assert [m["status"] for m in matches if m] == ["200", "200", "404"]
    assert matches[1]
    assert matches[1]["host"] == "203.0.113.9"
    assert '"load \\x22gen\\x22"' in lines[0]


# -- flags, retry config and faults, changed at run time ----------------------------------------


def test_flag_file_changes_are_picked_up(fleet: Fleet, tmp_path: Path) -> None:
    flags = tmp_path / "flags.json"
    _write_json(
        flags, {"flags": {"new-checkout": {"enabled": True, "rollout_percent": 0, "allow": ["b"]}}}
    )
    fe, _, _ = fleet.chain(SHOP_FLAGS_FILE=str(flags))

    def decision(user: str) -> bool:
        return httpx.get(f"{fe.url}/buy", params={"user": user}, timeout=5).json()["flags"][
            "new-checkout"
        ]

    assert decision("b") is True
    assert decision("someone") is False
    users = [f"user-{i}" for i in range(20)]
    _write_json(flags, {"flags": {"new-checkout": {"enabled": True, "rollout_percent": 50}}})
    expected = {u: normalized_value(u, "new-checkout") <= 50 for u in users}
    assert _eventually(
        lambda: (
            decision("someone") == (normalized_value("someone", "new-checkout") <= 50)
            and all(decision(u) == on for u, on in expected.items())
        )
    )
    _write_json(flags, {"flags": {"new-checkout": {"enabled": False, "rollout_percent": 100}}})
    assert _eventually(lambda: not any(decision(u) for u in users[:5]))
    flags.write_text("{broken")  # a bad edit keeps the last good flags
    assert _eventually(lambda: httpx.get(f"{fe.url}/_sandbox/config").json()["errors"])
    assert fe.counter("shop_config_reloads_total", file="flags", result="error") >= 1


NAIVE = {
    "max_attempts": 5,
    "base_seconds": 0.001,
    "cap_seconds": 0.005,
    "budget_percent": None,
    "breaker_enabled": False,
}
BUDGETED = {
    "max_attempts": 3,
    "base_seconds": 0.001,
    "cap_seconds": 0.005,
    "budget_percent": 10,
    "budget_min_retries": 1,
    "breaker_enabled": True,
    "breaker_minimum_calls": 5,
}


def test_retry_config_drives_amplification_and_a_rewrite_contains_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    fault, retry = tmp_path / "fault.json", tmp_path / "retry.json"
    _write_json(fault, {"error_rate": 1.0, "status": 503})
    _write_json(retry, NAIVE)
    pay = fleet.start("payments", "demo/shop:v1", SHOP_FAULT_FILE=str(fault))
    co = fleet.start(
        "checkout", "demo/shop:v1", SHOP_DOWNSTREAM_URL=pay.url, SHOP_RETRY_CONFIG=str(retry)
    )
    pay.wait_ready(), co.wait_ready()
    requests = 10
    with httpx.Client(base_url=co.url, timeout=10) as client:
        for _ in range(requests):
            answer = client.post("/checkout", json={"user": "u"})
            assert answer.status_code == 503
            assert answer.json()["attempts"] == 5
    storm = pay.counter("shop_requests_total", route="/pay")
    assert storm == requests * 5  # every logical call spent its 5 attempts
    assert co.counter("shop_downstream_retries_total", dependency="payments") == requests * 4
    assert co.counter("runbooks_client_retries_total", target="payments") == requests * 4

    _write_json(retry, BUDGETED)  # the runbook's containment: rewrite the ConfigMap
    assert _eventually(lambda: co.counter("shop_retry_max_attempts", dependency="payments") == 3)
    with httpx.Client(base_url=co.url, timeout=10) as client:
        for _ in range(requests * 2):
            assert client.post("/checkout", json={"user": "u"}).status_code == 503
    contained = pay.counter("shop_requests_total", route="/pay") - storm
    amplification = contained / (requests * 2)
    print(f"amplification: naive {storm / requests:.2f}, budgeted {amplification:.2f}")
    assert amplification <= 1.2
    assert co.counter("shop_downstream_requests_total", outcome="circuit_open") > 0
    assert co.counter("shop_retry_budget_percent", dependency="payments") == 10
    assert httpx.get(f"{co.url}/health").json()["checks"]["dependencies"] == {"payments": "failing"}

    _write_json(fault, {})  # payments heals
    assert _eventually(lambda: httpx.post(f"{pay.url}/pay", json={}, timeout=5).status_code == 200)


def test_fault_admin_endpoint(fleet: Fleet) -> None:
    pay = fleet.start("payments", "demo/shop:v1").wait_ready()
    with httpx.Client(base_url=pay.url, timeout=5) as client:
        set_fault = client.post("/_sandbox/fault", json={"error_rate": 1.0, "status": 502})
        assert set_fault.status_code == 200
        assert set_fault.json()["status"] == 502
        assert client.get("/pay").status_code == 502
        assert client.get("/health").status_code == 200  # business routes only
        assert client.post("/_sandbox/fault", json={"degrade_health": True}).status_code == 200
        assert client.get("/health").json()["checks"]["fault"] == "failing"
        bad = client.post("/_sandbox/fault", json={"error_rate": 3})
        assert bad.status_code == 400
        assert "error_rate" in bad.json()["error"]
        assert client.delete("/_sandbox/fault").status_code == 200
        assert client.get("/pay").status_code == 200
        assert client.get("/health").status_code == 200


def test_trace_context_is_propagated_without_the_sdk(fleet: Fleet) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with OutageServer() as checkout:
        fe = fleet.start("frontend", "demo/shop:v1", SHOP_DOWNSTREAM_URL=checkout.url)
        fe.wait_ready()
        response = httpx.get(
            f"{fe.url}/buy",
            params={"user": "u"},
            headers={
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                "tracestate": "vendor=1",
                "X-Request-ID": "req-42",
            },
            timeout=5,
        )
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "req-42"
        seen = checkout.seen[-1]
    assert seen.path == "/checkout"
    assert json.loads(seen.body) == {"user": "u"}
    version, sent_trace, parent, flags = seen.headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    assert parent != "00f067aa0ba902b7"
    assert len(parent) == 16
    assert seen.headers["tracestate"] == "vendor=1"
    assert seen.headers["x-request-id"] == "req-42"
    assert seen.headers["idempotency-key"]


# -- orders: the write route ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_orders_are_written_answered_with_their_id_and_counted(
    fleet: Fleet, request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    url = new_database(request, backend, tmp_path)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(V1_SCHEMA[backend])
        pay = fleet.start("payments", "demo/shop:v1", SHOP_DATABASE_URL=url).wait_ready()
        with httpx.Client(base_url=pay.url, timeout=5) as client:
            answers = [
                client.post("/orders", json={"customer": f"c{i}", "amount_cents": i * 100})
                for i in range(1, 6)
            ]
            assert [a.status_code for a in answers] == [200] * 5, answers[-1].text
            ids = [a.json()["id"] for a in answers]
            assert client.post("/orders", json={"customer": "c6"}).status_code == 400
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP TABLE orders")
            failed = client.post("/orders", json={"customer": "c7", "amount_cents": 1})
        assert failed.status_code == 500
        assert "orders" in failed.json()["error"]
    finally:
        engine.dispose()
    assert ids == sorted(set(ids))
    assert pay.counter("shop_requests_total", route="/orders", status="200") == 5
    assert pay.counter("shop_requests_total", route="/orders", status="400") == 1
    assert pay.counter("shop_requests_total", route="/orders", status="500") == 1
    assert "order not written" in pay.stderr()
    password = make_url(url).password
    assert password is None or password not in pay.stderr()


def test_orders_answer_503_while_the_database_is_unreachable(fleet: Fleet) -> None:
    closed = f"postgresql+psycopg://shop:secret@127.0.0.1:{free_port()}/shop"
    pay = fleet.start("payments", "demo/shop:v1", SHOP_DATABASE_URL=closed).wait_ready()
    order = {"customer": "ada", "amount_cents": 1}
    answer = httpx.post(f"{pay.url}/orders", json=order, timeout=10)
    assert answer.status_code == 503
    assert "database error" in answer.json()["error"]
    assert httpx.get(f"{pay.url}/ready", timeout=5).status_code == 200  # the pod keeps serving
    unset = fleet.start("payments", "demo/shop:v1").wait_ready()
    answer = httpx.post(f"{unset.url}/orders", json=order, timeout=5)
    assert answer.status_code == 503
    assert "SHOP_DATABASE_URL is not set" in answer.json()["error"]


def test_a_bad_database_url_exits_2_without_repeating_it(fleet: Fleet) -> None:
    bad = fleet.start("payments", "demo/shop:v1", SHOP_DATABASE_URL="mysql://root:s3cret@db/shop")
    worse = fleet.start("payments", "demo/shop:v1", SHOP_DATABASE_URL="postgresql://u:s3cret@h:x/d")
    assert bad.process.wait(timeout=10) == 2
    assert worse.process.wait(timeout=10) == 2
    for pod in (bad, worse):
        assert "SHOP_DATABASE_URL" in pod.stderr()
        assert "s3cret" not in pod.stderr()


# -- termination -------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_request_finish(fleet: Fleet) -> None:
    pay = fleet.start("payments", "demo/shop:v4-slow").wait_ready()
    result: dict[str, object] = {}

    def slow_call() -> None:
        try:
            result["status"] = httpx.get(f"{pay.url}/pay", timeout=5).status_code
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_call)
    thread.start()
    assert _eventually(lambda: pay.counter("shop_requests_in_flight") >= 2, timeout=2)
    pay.process.send_signal(signal.SIGTERM)
    thread.join(timeout=5)
    assert result == {"status": 200}
    assert pay.process.wait(timeout=5) == 0
    assert "terminated" in pay.stderr()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{pay.url}/ready", timeout=1)


# -- traces (only where the OpenTelemetry SDK and exporter are installed) -----------------------


class _OtlpReceiver:
    """Collects OTLP/HTTP trace exports (protobuf bodies), answering 200."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/traces":
                    bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, object]]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found = []
        for body in list(self.bodies):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    found.extend((attributes["service.name"], span) for span in scope.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _sdk_installed() -> bool:
    from sandbox.shop.tracing import sdk_available

    try:
        import opentelemetry.proto  # noqa: F401
    except ImportError:
        return False
    return sdk_available()


@pytest.mark.skipif(not _sdk_installed(), reason="opentelemetry-sdk / OTLP exporter not installed")
def test_one_request_yields_one_trace_across_the_three_services(fleet: Fleet) -> None:
    receiver = _OtlpReceiver()
    try:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=sandbox",
        }
        pay = fleet.start("payments", "demo/shop:v1", OTEL_SERVICE_NAME="payments", **otel)
        co = fleet.start(
            "checkout",
            "demo/shop:v1",
            SHOP_DOWNSTREAM_URL=pay.url,
            OTEL_SERVICE_NAME="checkout",
            **otel,
        )
        fe = fleet.start("frontend", "demo/shop:v1", SHOP_DOWNSTREAM_URL=co.url, **otel)
        for pod in (pay, co, fe):
            pod.wait_ready()
        assert "tracing: exporting" in fe.stderr()
        assert httpx.get(f"{fe.url}/buy", params={"user": "u"}, timeout=5).status_code == 200
        spans = _eventually(
            lambda: (found := receiver.spans()) and len(found) >= 5 and found, timeout=10
        )
        assert spans, "no spans exported"
        by_name = {(service, span.name): span for service, span in spans}
        assert set(by_name) >= {
            ("frontend", "GET /buy"),
            ("frontend", "POST"),
            ("checkout", "POST /checkout"),
            ("checkout", "POST"),
            ("payments", "POST /pay"),
        }
        assert len({span.trace_id for _, span in spans}) == 1
        fe_server, fe_client = by_name[("frontend", "GET /buy")], by_name[("frontend", "POST")]
        assert fe_client.parent_span_id == fe_server.span_id
        assert by_name[("checkout", "POST /checkout")].parent_span_id == fe_client.span_id
        assert (
            by_name[("payments", "POST /pay")].parent_span_id
            == by_name[("checkout", "POST")].span_id
        )
    finally:
        receiver.close()
