"""Notifications over real HTTP: a loopback receiver stands in for Slack's incoming webhook.

- :func:`runbooks.notify.notify_outcome` posts the formatted message through the block and the
  resilience layer: a 500 is retried within the layer's bounds, a 429's ``Retry-After`` is the
  wait, a 400 ``invalid_payload`` is one sentence and ``False`` (never an exception), and the
  webhook URL (the secret) appears in no log record;
- on the session's Prefect test server (its ephemeral mode runs the triggers and actions
  services), the automations applied by :func:`deployments.automations.apply_automations`
  post to the receiver when a flow run tagged ``runbooks`` fails and when a runbook emits a
  rollback event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from polling import wait_for
from prefect import flow, tags

from blocks.slack import SlackIncomingWebhook
from deployments.automations import (
    FAILURE_NOTIFICATION_AUTOMATION,
    RETRY_STORM_AUTOMATION,
    ROLLBACK_NOTIFICATION_AUTOMATION,
    WEBHOOK_BLOCK_SUFFIX,
    AppliedAutomation,
    apply_automations,
)
from runbooks import resilience
from runbooks.errors import InvalidRequestError, UnavailableError
from runbooks.kit import Outcome, RunbookResult, emit
from runbooks.notify import notify_outcome, result_message

SECRET_PATH = "/services/T0000/B0000/XXXXsecretXXXX"
UI = "http://127.0.0.1:4200/runs/flow-run/8d6f"


# --------------------------------------------------------------------------- the receiver


@dataclass
class Receiver:
    """A loopback stand-in for Slack: records every POST, answers from ``answers`` (then 200
    ``ok``, as Slack does)."""

    url: str = ""
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, _, body in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.posts.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, text, headers = state.answers.pop(0) if state.answers else (200, "ok", {})
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html")  # what Slack answers
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _result(outcome: Outcome = Outcome.ROLLED_BACK) -> RunbookResult:
    now = datetime.now(UTC)
    return RunbookResult(
        runbook="blue-green",
        target="shop/checkout",
        outcome=outcome,
        reason="error rate 12 % > 1 % in the pre-promotion analysis; blue kept",
        started_at=now - timedelta(seconds=40),
        finished_at=now,
        dry_run=False,
    )


# --------------------------------------------------------------------------- notify_outcome


def test_notify_outcome_posts_the_formatted_message(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = _result()
    assert notify_outcome(result, SlackIncomingWebhook(url=receiver.url), ui_url=UI) is True
    [(path, headers, body)] = receiver.posts
    assert path == SECRET_PATH
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert "traceparent" not in headers  # no trace context (a span would hold the secret URL)
    assert json.loads(body) == result_message(result, UI)
    assert "secret" not in caplog.text


def test_a_500_is_retried_within_bounds(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    block = SlackIncomingWebhook(url=receiver.url)
    receiver.answers = [(500, "rollup_error", {}), (500, "rollup_error", {})]
    with resilience.testing() as slept:
        assert notify_outcome(_result(), block) is True
    assert len(receiver.posts) == 3
    assert len(slept) == 2
    assert len({body for _, _, body in receiver.posts}) == 1  # the same message each time

    # failing for good: the layer's attempts, then the sentence, and False
    receiver.posts.clear()
    attempts = resilience.ResiliencePolicy().backoff.max_attempts
    receiver.answers = [(500, "rollup_error", {})] * 10
    with resilience.testing() as slept:
        assert notify_outcome(_result(), block) is False
    assert len(slept) == attempts - 1
    refused = pytest.raises(UnavailableError, match=r"HTTP 500 rollup_error\); Slack had an")
    with resilience.testing(), refused:  # a fresh retry budget: 3 retries per 10 s when quiet
        block.post({"text": "again"})
    assert len(receiver.posts) == 2 * attempts
    assert "could not notify Slack that blue-green on shop/checkout ended rolled_back" in (
        caplog.text
    )
    assert "secret" not in caplog.text


def test_a_429_waits_as_slack_asks(receiver: Receiver) -> None:
    receiver.answers = [(429, "rate_limited", {"Retry-After": "2"})]
    with resilience.testing() as slept:
        SlackIncomingWebhook(url=receiver.url).post({"text": "hello"})
    assert slept == [2.0]
    assert len(receiver.posts) == 2


def test_invalid_payload_is_a_sentence_and_false(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    block = SlackIncomingWebhook(url=receiver.url)
    receiver.answers = [(400, "invalid_payload", {})]
    assert notify_outcome(_result(Outcome.FAILED), block) is False
    assert len(receiver.posts) == 1  # a refusal is not retried
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        "could not notify Slack that blue-green on shop/checkout ended failed: Slack refused the "
        "notification (HTTP 400 invalid_payload): the body is not a message Slack accepts (JSON "
        "with 'text' or 'blocks'); fix the message builder"
    )
    receiver.answers = [(400, "invalid_payload", {})]
    with pytest.raises(InvalidRequestError) as refused:
        block.post({"text": "x"})
    assert refused.value.status == 400
    assert "secret" not in caplog.text


def test_unreachable_webhook_is_false_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    block = SlackIncomingWebhook(url=f"http://127.0.0.1:{port}{SECRET_PATH}", timeout_seconds=1)
    with resilience.testing():
        assert notify_outcome(_result(), block) is False
        with pytest.raises(UnavailableError, match=f"Slack incoming webhook on 127.0.0.1:{port}"):
            block.post({"text": "x"})
    assert "secret" not in caplog.text


def test_notify_outcome_by_block_name(receiver: Receiver, prefect_server: str) -> None:
    SlackIncomingWebhook(url=receiver.url).save("notify-by-name", overwrite=True)
    try:
        assert notify_outcome(_result(), "notify-by-name") is True
        assert len(receiver.posts) == 1
    finally:
        SlackIncomingWebhook.delete("notify-by-name")


def test_a_missing_block_is_false(prefect_server: str, caplog: pytest.LogCaptureFixture) -> None:
    assert notify_outcome(_result(), "never-saved") is False
    assert "no slack-incoming-webhook block named 'never-saved' is saved" in caplog.text


# --------------------------------------------------------------------------- the automations

SLACK_BLOCK = "notify-automations-test"


@flow(name="notify-test-failing", log_prints=False)
def _failing() -> None:
    raise ValueError("disk <full> & the runbook stopped")


@pytest.fixture
def automations_setup(receiver: Receiver, prefect_server: str) -> Iterator[UUID]:
    """A stand-in ``retry-storm/retry-storm`` deployment (the retry-storm automation needs
    one), our Slack block on the receiver; everything the test applied removed after."""
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    names = (RETRY_STORM_AUTOMATION, ROLLBACK_NOTIFICATION_AUTOMATION)
    names += (FAILURE_NOTIFICATION_AUTOMATION,)

    def clean() -> None:
        with get_client(sync_client=True) as client:
            for name in names:
                for automation in client.read_automations_by_name(name):
                    client.delete_automation(automation.id)
        for cls, name in (
            (SlackIncomingWebhook, SLACK_BLOCK),
            (Webhook, SLACK_BLOCK + WEBHOOK_BLOCK_SUFFIX),
        ):
            with contextlib.suppress(ValueError, ObjectNotFound):
                cls.delete(name)

    clean()
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("retry-storm")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name="retry-storm", enforce_parameter_schema=False
        )
    SlackIncomingWebhook(url=receiver.url).save(SLACK_BLOCK, overwrite=True)
    try:
        yield deployment_id
    finally:
        clean()
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


def test_automations_are_skipped_without_a_slack_block(
    automations_setup: UUID, caplog: pytest.LogCaptureFixture
) -> None:
    applied = apply_automations(slack_block="no-such-block")
    assert [a.name for a in applied] == [RETRY_STORM_AUTOMATION]
    assert "notification automations skipped: no slack-incoming-webhook block named " in (
        caplog.text
    )
    assert "'no-such-block' is saved" in caplog.text


def test_automations_post_failed_runs_and_rollbacks_to_slack(
    automations_setup: UUID, receiver: Receiver
) -> None:
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client

    applied = apply_automations(slack_block=SLACK_BLOCK)
    assert [(a.name, a.action) for a in applied] == [
        (RETRY_STORM_AUTOMATION, "created"),
        (ROLLBACK_NOTIFICATION_AUTOMATION, "created"),
        (FAILURE_NOTIFICATION_AUTOMATION, "created"),
    ]
    assert apply_automations(slack_block=SLACK_BLOCK) == tuple(
        AppliedAutomation(a.name, a.id, "unchanged") for a in applied
    )
    mirror = Webhook.load(SLACK_BLOCK + WEBHOOK_BLOCK_SUFFIX)
    assert mirror.url.get_secret_value() == receiver.url
    assert mirror.allow_private_urls  # loopback: the only private URL it may call

    # a failing flow run without the tag: nothing; with it: one message
    _failing(return_state=True)
    with tags("runbooks"):
        state = _failing(return_state=True)
    assert state.is_failed()
    [message] = wait_for("the failure notification", receiver.messages, 30)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert message["text"] == f":x: notify-test-failing on run {run.name}: failed"
    assert "disk &lt;full&gt; &amp; the runbook stopped" in message["blocks"][1]["text"]["text"]

    # a rollback event (as blue-green emits it): one message
    emit("blue-green", "rolled-back", "shop/checkout", payload={"reason": "error rate 12 % > 1 %"})
    messages = wait_for(
        "the rollback notification", lambda: receiver.messages()[1:] and receiver.messages(), 30
    )
    assert messages[1]["text"] == ":rewind: blue-green on shop/checkout: rolled back"
    assert messages[1]["blocks"][1]["text"]["text"] == "error rate 12 % &gt; 1 %"
    time.sleep(1)  # nothing else arrives (the untagged run stayed quiet)
    assert len(receiver.posts) == 2
