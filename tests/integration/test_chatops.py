"""The chat-ops endpoint over real HTTP on loopback, against the session's Prefect test server.

The server is uvicorn in a thread (``chatops.server.RunningServer``, port 0); requests are real
HTTP, signed the way Slack signs them. The deployment ``blue-green/blue-green`` is a stand-in
made through the Prefect client (no worker: a run it starts stays Scheduled), unless one already
exists on the server, which is then used as it is. Each test asks for a service name of its
own, so runs are counted per test. Outcomes are posted to a loopback receiver standing in for
Slack's ``response_url``. Every wait is bounded.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run
from prefect.states import Completed
from pydantic import ValidationError

from chatops.commands import AccessPolicy, AccessRule
from chatops.config import ChatOpsSettings
from chatops.server import RunningServer
from chatops.signing import slack_signature
from flows.blue_green.approval import ApprovalInput

pytestmark = pytest.mark.usefixtures("prefect_server")

SECRET = "test-signing-secret"
TOKEN = "test-api-token"
RUNBOOK = "blue-green"
UI = "http://127.0.0.1:4200"
POLICY = AccessPolicy(
    commands={
        "run": AccessRule(users=("U1", "bot"), channels=("ops", "api")),
        "approve": AccessRule(users=("U1", "bot")),
        "reject": AccessRule(users=("U1", "bot")),
    },
    runbooks={"blue-green": AccessRule(users=("alice", "bot"))},
)


# -- fixtures --


class Receiver:
    """A loopback stand-in for Slack's response_url: records the JSON posted to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._changed:
                    receiver.posts.append(body)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def wait_for(self, count: int, seconds: float = 20.0) -> list[dict[str, Any]]:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.posts) >= count, timeout=seconds)
        assert ok, f"{len(self.posts)} posts within {seconds} s, expected {count}: {self.posts}"
        return list(self.posts)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def deployment_id(prefect_server: str) -> UUID:
    """``blue-green/blue-green``: the one on the server, else a stand-in with no worker."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"{RUNBOOK}/{RUNBOOK}").id
        except ObjectNotFound:
            flow_id = client.create_flow_from_name(RUNBOOK)
            return client.create_deployment(
                flow_id=flow_id,
                name=RUNBOOK,
                parameters={"params": {"namespace": "default"}},
                description="chat-ops test stand-in (no worker)",
            )


def _settings(receiver_url: str = "http://127.0.0.1:1/", **changes: Any) -> ChatOpsSettings:
    values: dict[str, Any] = {
        "signing_secret": SECRET,
        "api_token": TOKEN,
        "access": POLICY,
        "ui_url": UI,
        "response_url_prefixes": (receiver_url,),
        "poll_seconds": 0.2,
        "watch_seconds": 30,
    }
    return ChatOpsSettings(**(values | changes))


@pytest.fixture
def server(receiver: Receiver, deployment_id: UUID) -> Iterator[RunningServer]:
    with RunningServer(_settings(receiver.url)) as running:
        yield running


@pytest.fixture
def service() -> str:
    return f"shop-{uuid4().hex[:8]}"


def _runs(deployment_id: UUID, service: str) -> list[Any]:
    """Flow runs of the deployment started for ``service`` (each test has its own)."""
    wanted = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=wanted, limit=200)
    return [r for r in runs if (r.parameters.get("params") or {}).get("service") == service]


def _form(text: str, **fields: str) -> dict[str, str]:
    return {
        "token": "deprecated-verification-token",
        "team_id": "T1",
        "team_domain": "acme",
        "channel_id": "C1",
        "channel_name": "ops",
        "user_id": "U1",
        "user_name": "alice",
        "command": "/runbook",
        "text": text,
        "api_app_id": "A1",
        "trigger_id": f"{uuid4().int % 10**12}.1.{uuid4().hex}",
        "response_url": "",
    } | fields


def _slack(
    server: RunningServer,
    body: bytes,
    *,
    timestamp: int | None = None,
    secret: str = SECRET,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` to /slack/commands, signed now (or at ``timestamp``) with ``secret``."""
    sent = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": sent,
        "x-slack-signature": slack_signature(secret, sent, body),
    } | (extra_headers or {})
    return httpx.post(f"{server.url}/slack/commands", content=body, headers=headers, timeout=15)


def _api(
    server: RunningServer, payload: dict, token: str = TOKEN, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/commands",
        json=payload,
        headers={"authorization": f"Bearer {token}"} | headers,
        timeout=15,
    )


# -- run --


def test_signed_run_starts_exactly_one_run_even_when_delivered_twice(
    server: RunningServer, deployment_id: UUID, service: str
) -> None:
    body = urlencode(_form(f"run blue-green service={service} image=demo/shop:v2")).encode()
    first = _slack(server, body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["response_type"] == "in_channel"
    assert f"alice started blue-green (service={service} image=demo/shop:v2)" in answer["text"]
    runs = _runs(deployment_id, service)
    assert len(runs) == 1
    run = runs[0]
    assert f"{UI}/runs/flow-run/{run.id}" in answer["text"]
    assert run.state is not None
    assert run.state.is_scheduled()
    assert run.parameters["params"]["service"] == service
    assert run.parameters["params"]["image"] == "demo/shop:v2"
    assert "chatops" in run.tags

    # Slack re-delivers the same command (re-signed, with a retry header): same run, no second
    retried = _slack(server, body, extra_headers={"x-slack-retry-num": "1"})
    assert retried.status_code == 200, retried.text
    assert f"{UI}/runs/flow-run/{run.id}" in retried.json()["text"]
    assert [r.id for r in _runs(deployment_id, service)] == [run.id]


@pytest.mark.parametrize("case", ["replayed", "tampered", "wrong-secret", "unsigned"])
def test_replayed_or_tampered_requests_get_401_and_run_nothing(
    server: RunningServer, deployment_id: UUID, service: str, case: str
) -> None:
    body = urlencode(_form(f"run blue-green service={service} image=demo/shop:v2")).encode()
    if case == "replayed":  # a valid signature, 301 s old
        response = _slack(server, body, timestamp=int(time.time()) - 301)
        assert "more than 300 s" in response.json()["text"]
    elif case == "tampered":  # signed, then the image changed on the way
        sent = str(int(time.time()))
        headers = {
            "x-slack-request-timestamp": sent,
            "x-slack-signature": slack_signature(SECRET, sent, body),
            "content-type": "application/x-www-form-urlencoded",
        }
        tampered = body.replace(b"v2", b"v3-broken")
        response = httpx.post(
            f"{server.url}/slack/commands", content=tampered, headers=headers, timeout=15
        )
        assert "does not match the body" in response.json()["text"]
    elif case == "wrong-secret":
        response = _slack(server, body, secret="not-the-secret")
    else:
        response = httpx.post(f"{server.url}/slack/commands", content=body, timeout=15)
        assert "header is missing" in response.json()["text"]
    assert response.status_code == 401
    assert response.json()["response_type"] == "ephemeral"
    assert SECRET not in response.text
    assert _runs(deployment_id, service) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user_id": "U9", "user_name": "mallory"}, "may not use `run`: not in access.commands"),
        ({"channel_id": "C2", "channel_name": "random"}, "`run` is not allowed in #random"),
    ],
    ids=["user", "channel"],
)
def test_unauthorised_callers_get_403_and_run_nothing(
    server: RunningServer, deployment_id: UUID, service: str, fields: dict, message: str
) -> None:
    text = f"run blue-green service={service} image=demo/shop:v2"
    response = _slack(server, urlencode(_form(text, **fields)).encode())
    assert response.status_code == 403, response.text
    assert message in response.json()["text"]
    assert _runs(deployment_id, service) == []


def test_a_runbook_rule_refuses_even_when_the_command_rule_allows(
    server: RunningServer, deployment_id: UUID, service: str
) -> None:
    text = f"run blue-green service={service} image=demo/shop:v2"
    response = _slack(server, urlencode(_form(text, user_name="alice2")).encode())
    assert response.status_code == 403
    assert "may not use `run blue-green`: not in access.runbooks.blue-green" in response.text
    assert _runs(deployment_id, service) == []


@pytest.mark.parametrize(
    ("words", "field"),
    [
        ("image=demo/shop:v2 replicas=0", "replicas"),
        ("image=demo/shop", "image"),
        ("image=demo/shop:v2 colour=red", "colour"),
    ],
)
def test_an_invalid_parameter_gets_the_fields_error_and_runs_nothing(
    server: RunningServer, deployment_id: UUID, service: str, words: str, field: str
) -> None:
    text = f"run blue-green service={service} {words}"
    response = _slack(server, urlencode(_form(text)).encode())
    assert response.status_code == 200  # Slack shows the text only on a 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith(f"{field}: ")
    api = _api(server, {"text": text, "user": "bot", "channel": "api"})
    assert api.status_code == 400
    assert api.json()["error"].startswith(f"{field}: ")
    assert _runs(deployment_id, service) == []


def test_the_outcome_is_posted_to_the_response_url(
    server: RunningServer, receiver: Receiver, deployment_id: UUID, service: str
) -> None:
    text = f"run blue-green service={service} image=demo/shop:v2"
    response = _slack(server, urlencode(_form(text, response_url=receiver.url)).encode())
    assert response.status_code == 200, response.text
    (run,) = _runs(deployment_id, service)
    with get_client(sync_client=True) as client:  # as a worker would report it
        client.set_flow_run_state(run.id, Completed(message="promoted"), force=True)
    (post,) = receiver.wait_for(1)
    assert post["response_type"] == "in_channel"
    assert post["text"] == f"blue-green flow run Completed: promoted - {UI}/runs/flow-run/{run.id}"


def test_a_response_url_outside_the_allowed_prefixes_is_refused_before_running(
    server: RunningServer, deployment_id: UUID, service: str
) -> None:
    text = f"run blue-green service={service} image=demo/shop:v2"
    payload = {"text": text, "user": "bot", "response_url": "http://169.254.169.254/latest/"}
    response = _api(server, payload)
    assert response.status_code == 400
    assert "response_url is not under an allowed prefix" in response.json()["error"]
    assert _runs(deployment_id, service) == []


def test_a_run_still_going_is_reported_when_the_watch_ends(
    receiver: Receiver, deployment_id: UUID, service: str
) -> None:
    settings = _settings(receiver.url, watch_seconds=0.5)
    with RunningServer(settings) as server:
        text = f"run blue-green service={service} image=demo/shop:v2"
        response = _slack(server, urlencode(_form(text, response_url=receiver.url)).encode())
        assert response.status_code == 200, response.text
        (post,) = receiver.wait_for(1)
    (run,) = _runs(deployment_id, service)
    assert post["text"] == (
        f"blue-green flow run still Scheduled after 0.5 s; follow it at {UI}/runs/flow-run/{run.id}"
    )


# -- status --


def test_status_shows_the_runs_state_and_link(
    server: RunningServer, deployment_id: UUID, service: str
) -> None:
    text = f"run blue-green service={service} image=demo/shop:v2"
    started = _api(server, {"text": text, "user": "bot"})
    assert started.status_code == 200, started.text
    run_id = started.json()["flow_run_id"]
    response = _slack(server, urlencode(_form(f"status {run_id}")).encode())
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert "blue-green flow run" in answer["text"]
    assert "is Scheduled" in answer["text"]
    assert f"{UI}/runs/flow-run/{run_id}" in answer["text"]
    unknown = uuid4()
    missing = _api(server, {"text": f"status {unknown}", "user": "bot"})
    assert missing.status_code == 404
    assert missing.json()["error"] == f"no flow run {unknown} on the Prefect API"


# -- approve / reject --


class PausedGate:
    """A tiny flow named like the runbook that pauses for the blue-green ``ApprovalInput``, in
    a thread (with this thread's Prefect settings); returns the answer it got."""

    def __init__(self) -> None:
        self.run_id: UUID | None = None
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> PausedGate:
        gate = self

        @flow(name=RUNBOOK, persist_result=False)
        def approval_gate() -> dict[str, Any]:
            context = FlowRunContext.get()
            assert context is not None
            assert context.flow_run is not None
            gate.run_id = context.flow_run.id
            answer = pause_flow_run(
                wait_for_input=ApprovalInput, timeout=60, poll_interval=1, key="approval"
            )
            return answer.model_dump(mode="json")

        def run() -> None:
            try:
                self.result = approval_gate()
            except BaseException as exc:  # reported by join()
                self.error = exc

        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(run,), daemon=True)
        self._thread.start()
        return self

    def paused(self, seconds: float = 30.0) -> UUID:
        deadline = time.monotonic() + seconds
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                assert self._thread is not None
                assert self._thread.is_alive() or self.run_id is None, self.error
                if self.run_id is not None:
                    state = client.read_flow_run(self.run_id).state
                    if state is not None and state.is_paused():
                        return self.run_id
                time.sleep(0.1)
        raise AssertionError(f"the gate did not pause within {seconds} s")

    def join(self, seconds: float = 30.0) -> dict[str, Any]:
        assert self._thread is not None
        self._thread.join(seconds)
        assert not self._thread.is_alive(), "the gate did not finish in time"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def test_approve_resumes_a_paused_run_naming_the_approver(server: RunningServer) -> None:
    gate = PausedGate().start()
    run_id = gate.paused()

    # someone not on the runbook's rule cannot answer it
    refused = _slack(
        server, urlencode(_form(f"approve {run_id} lgtm", user_name="alice2")).encode()
    )
    assert refused.status_code == 403
    assert "access.runbooks.blue-green" in refused.json()["text"]

    response = _slack(server, urlencode(_form(f"approve {run_id} CAB-42 approved")).encode())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response_type"] == "in_channel"
    assert answer["text"].startswith("approved by alice: CAB-42 approved - blue-green flow run")

    result = gate.join()
    assert result["decision"] == "approve"
    assert result["approver"] == "alice"
    assert result["reason"] == "CAB-42 approved (via chat-ops: slack user U1 in #ops (C1))"

    # the run is no longer paused: a second answer is refused with its state
    again = _api(server, {"text": f"reject {run_id} too late", "user": "bot"})
    assert again.status_code == 409
    assert "not paused: nothing to reject" in again.json()["error"]


def test_reject_resumes_with_reject_and_needs_a_reason(server: RunningServer) -> None:
    gate = PausedGate().start()
    run_id = gate.paused()
    no_reason = _slack(server, urlencode(_form(f"reject {run_id}")).encode())
    assert no_reason.json()["text"] == "reject needs a reason: reject <run id> <reason>"
    response = _slack(server, urlencode(_form(f"reject {run_id} change freeze")).encode())
    assert response.status_code == 200, response.text
    result = gate.join()
    assert (result["decision"], result["approver"]) == ("reject", "alice")
    assert result["reason"].startswith("change freeze (via chat-ops")


# -- JSON API --


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong-token", "Basic dGVzdA==", None], ids=["wrong", "basic", "none"]
)
def test_the_json_api_refuses_a_wrong_bearer_token(
    server: RunningServer, deployment_id: UUID, service: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    text = f"run blue-green service={service} image=demo/shop:v2"
    response = httpx.post(
        f"{server.url}/api/commands",
        json={"text": text, "user": "bot"},
        headers=headers,
        timeout=15,
    )
    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert TOKEN not in response.text
    assert _runs(deployment_id, service) == []


def test_the_json_api_runs_once_per_idempotency_key(
    server: RunningServer, deployment_id: UUID, service: str
) -> None:
    payload = {
        "text": f"run blue-green service={service}",
        "user": "bot",
        "params": {"image": "demo/shop:v2", "replicas": 3},
    }
    key = {"idempotency-key": uuid4().hex}
    first = _api(server, payload, **key)
    second = _api(server, payload, **key)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["flow_run_id"] == second.json()["flow_run_id"]
    (run,) = _runs(deployment_id, service)
    assert str(run.id) == first.json()["flow_run_id"]
    assert run.parameters["params"]["replicas"] == 3
    assert first.json()["url"] == f"{UI}/runs/flow-run/{run.id}"
    bad = _api(server, {"text": "list", "user": ""})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("user: ")


# -- the block --


def test_the_settings_block_saves_and_loads_with_its_rules() -> None:
    name = f"chatops-{uuid4().hex[:8]}"
    _settings().save(name)
    loaded = ChatOpsSettings.load(name)
    assert loaded.access == POLICY
    assert loaded.signing_secret is not None
    assert loaded.signing_secret.get_secret_value() == SECRET
    assert SECRET not in repr(loaded)
    assert ChatOpsSettings.get_block_type_slug() == "chatops-settings"


def test_the_settings_block_refuses_bad_settings_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"set signing_secret .* or api_token"):
        ChatOpsSettings()
    with pytest.raises(ValidationError, match="response_url_prefixes must be http"):
        ChatOpsSettings(api_token="t", response_url_prefixes=("https://hooks.slack.com",))
    with pytest.raises(ValidationError, match="ui_url") as caught:
        ChatOpsSettings(api_token="t", ui_url="ftp://user:pw@x")
    assert "pw" not in str(caught.value)
