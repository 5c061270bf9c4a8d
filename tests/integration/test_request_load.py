"""The request load beside analyses (``tasks.load``) against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from tasks.load import USER_AGENT, RequestLoad


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    agents: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.agents.append(self.headers.get("User-Agent", ""))
        status = 200 if self.path == "/ok" else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    found = _Server(("127.0.0.1", 0), _Handler)
    found.agents = []
    thread = threading.Thread(target=found.serve_forever, daemon=True)
    thread.start()
    yield found
    found.shutdown()
    found.server_close()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_rate_is_paced_and_requests_are_marked(server: _Server) -> None:
    with RequestLoad(_url(server), path="/ok", rps=20, concurrency=2) as load:
        time.sleep(1.0)
    # 20/s for about a second: paced, not back to back (which would be thousands on loopback)
    assert 5 <= load.total <= 40, load.total
    assert load.failed == 0
    assert set(server.agents) == {USER_AGENT}


def test_every_non_200_and_transport_error_is_a_failure(server: _Server) -> None:
    with RequestLoad(_url(server), path="/broken", concurrency=2) as load:
        time.sleep(0.3)
    assert load.total > 0
    assert load.failed == load.total
    assert load.failures[0] == "HTTP 503"
    with RequestLoad("http://127.0.0.1:9", timeout_seconds=0.5, max_seconds=0.5) as down:
        time.sleep(0.2)
    assert down.failed == down.total > 0
    assert "ConnectError" in down.failures[0]


def test_load_stops_at_max_seconds_without_the_caller(server: _Server) -> None:
    load = RequestLoad(_url(server), path="/ok", rps=50, max_seconds=0.3).__enter__()
    time.sleep(0.8)
    stopped_at = load.total
    time.sleep(0.3)
    assert load.total == stopped_at
    load.__exit__(None, None, None)


def test_concurrency_below_one_is_refused() -> None:
    with (
        pytest.raises(ValueError, match="concurrency"),
        RequestLoad("http://127.0.0.1:9", concurrency=0),
    ):
        pass
