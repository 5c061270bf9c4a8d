"""Notifications without a server: the Slack message of each outcome, the same layout rendered
by Prefect's own template environment (what its server does for an automation), the webhook
URL's checks and the secrecy of the URL, and Slack's error codes as sentences."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from blocks.slack import SlackIncomingWebhook, check_webhook_url, refusal
from deployments.automations import (
    ROLLBACK_EVENTS,
    failure_notification_automation,
    rollback_notification_automation,
)
from runbooks.errors import AuthError, InvalidRequestError, NotFoundError, UnavailableError
from runbooks.kit import Outcome, RunbookResult
from runbooks.notify import (
    EMOJI,
    NO_LINK,
    NO_REASON,
    SECTION_LIMIT,
    message_template,
    outcome_message,
    result_message,
)

SECRET = "T0000/B0000/XXXXsecretXXXX"
SLACK_URL = f"https://hooks.slack.com/services/{SECRET}"
UI = "http://127.0.0.1:4200/runs/flow-run/8d6f"


def _result(outcome: Outcome, reason: str = "verified", dry_run: bool = False) -> RunbookResult:
    now = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    return RunbookResult(
        runbook="blue-green",
        target="shop/checkout",
        outcome=outcome,
        reason=reason,
        started_at=now,
        finished_at=now + timedelta(seconds=42),
        dry_run=dry_run,
    )


# --------------------------------------------------------------------------- the message


@pytest.mark.parametrize(
    ("outcome", "emoji", "label"),
    [
        (Outcome.SUCCEEDED, ":white_check_mark:", "succeeded"),
        (Outcome.NO_CHANGE, ":heavy_minus_sign:", "no change needed"),
        (Outcome.DRY_RUN, ":memo:", "dry run, nothing changed"),
        (Outcome.ROLLED_BACK, ":rewind:", "rolled back"),
        (Outcome.FAILED, ":x:", "failed"),
    ],
)
def test_message_per_outcome(outcome: Outcome, emoji: str, label: str) -> None:
    result = _result(outcome, "p95 latency 2.3 s > 1 s", dry_run=outcome is Outcome.DRY_RUN)
    message = result_message(result, UI)
    assert message == {
        "text": f"{emoji} blue-green on shop/checkout: {label}",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{emoji} *blue-green* on `shop/checkout`: *{label}*",
                },
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": "p95 latency 2.3 s &gt; 1 s"}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{UI}|Open the flow run in Prefect>"}],
            },
        ],
    }
    assert EMOJI[outcome] == emoji


def test_message_escapes_slack_markup_and_bounds_the_reason() -> None:
    message = outcome_message(
        "blue-green", "shop/`x`", Outcome.FAILED, "<!here> a & b <http://evil|click>"
    )
    headline, reason = (block["text"]["text"] for block in message["blocks"])
    assert headline == ":x: *blue-green* on `shop/'x'`: *failed*"
    assert reason == "&lt;!here&gt; a &amp; b &lt;http://evil|click&gt;"
    assert len(message["blocks"]) == 2  # no UI link known: no link line

    assert outcome_message("r", "t", Outcome.FAILED, "  ")["blocks"][1]["text"]["text"] == NO_REASON
    long = outcome_message("r", "t", Outcome.FAILED, "x" * 10_000)["blocks"][1]["text"]["text"]
    assert len(long) < SECTION_LIMIT
    assert long.endswith("…")


# --------------------------------------------------------------------------- server-side templates


def _render(template: str, context: dict[str, Any]) -> dict[str, Any]:
    """``template`` rendered as Prefect's server renders an action's payload, parsed."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import (
        register_user_template_filters,
        render_user_template,
        validate_user_template,
    )

    register_user_template_filters(all_filters)
    validate_user_template(template)
    return json.loads(asyncio.run(render_user_template(template, context)))


TRICKY = 'quote " backslash \\ newline \n tab \t <!channel> & `tick` é'


def test_template_renders_the_same_message_as_the_flow_side() -> None:
    template = message_template(
        emoji="':rewind:'",
        runbook="values.runbook",
        target="values.target",
        outcome="'rolled back'",
        reason="values.reason",
        link="'<" + UI + "|Open the flow run in Prefect>'",
    )
    values = {"runbook": "blue-green", "target": "shop/`checkout`", "reason": TRICKY}
    rendered = _render(template, {"values": values})
    assert rendered == outcome_message(
        "blue-green", "shop/`checkout`", Outcome.ROLLED_BACK, TRICKY, UI
    )


def _event(name: str, payload: dict[str, Any], related: list[dict[str, str]] | None = None) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(
        occurred=datetime.now(UTC),
        event=name,
        resource={
            "prefect.resource.id": "runbooks.target.shop/checkout",
            "prefect.resource.name": "shop/checkout",
            "runbooks.runbook": name.split(".")[1],
        },
        related=related or [],
        payload=payload,
        id=uuid4(),
    )


@pytest.mark.parametrize(
    ("event", "payload", "headline", "reason"),
    [
        (
            "runbooks.blue-green.rolled-back",
            {"reason": "error rate 12% > 1%", "rollback_seconds": 3.2},
            ":rewind: *blue-green* on `shop/checkout`: *rolled back*",
            "error rate 12% &gt; 1%",
        ),
        (
            "runbooks.geo-routing.rollback-failed",
            {"reason": TRICKY},
            ":x: *geo-routing* on `shop/checkout`: *rollback failed*",
            TRICKY.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
        ),
        (
            "runbooks.tracing-rollout.reverted",
            {"service": "checkout", "why": "no spans within 30 s"},
            ":rewind: *tracing-rollout* on `shop/checkout`: *reverted*",
            "no spans within 30 s",
        ),
        (
            "runbooks.retry-storm.relapsed",
            {"step": "budget", "callers": ["checkout"]},
            ":warning: *retry-storm* on `shop/checkout`: *relapsed*",
            "relapse after budget; that step was re-applied",
        ),
        ("runbooks.geo-routing.rolled-back", {}, None, NO_REASON),
    ],
)
def test_rollback_automation_renders_each_rollback_event(
    event: str, payload: dict[str, Any], headline: str | None, reason: str
) -> None:
    automation = rollback_notification_automation(uuid4())
    assert automation.trigger.expect == set(ROLLBACK_EVENTS)
    assert event in ROLLBACK_EVENTS
    message = _render(automation.actions[0].payload, {"event": _event(event, payload)})
    blocks = message["blocks"]
    if headline is not None:
        assert blocks[0]["text"]["text"] == headline
    assert blocks[1]["text"]["text"] == reason
    assert blocks[2]["elements"][0]["text"] == NO_LINK  # no flow run in the event


class FlowRun:  # named like Prefect's model: ``ui_url`` maps the class name to the page
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def test_failure_automation_renders_a_failed_run() -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    automation = failure_notification_automation(uuid4())
    spec = automation.trigger.match_related.model_dump()
    assert spec == {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.runbooks"}
    run_id = uuid4()
    flow_run = FlowRun(
        id=run_id,
        name="clever-fox",
        parameters={"params": {"service": "checkout"}},
        state=FlowRun(message="Flow run encountered an exception: ValueError: disk <full>"),
    )
    context = {
        "event": _event("prefect.flow-run.Crashed", {}),
        "flow": FlowRun(name="blue-green"),
        "flow_run": flow_run,
    }
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        message = _render(automation.actions[0].payload, context)
    assert message["text"] == ":x: blue-green on checkout: crashed"
    assert message["blocks"][1]["text"]["text"] == (
        "Flow run encountered an exception: ValueError: disk &lt;full&gt;"
    )
    link = f"<http://127.0.0.1:4200/runs/flow-run/{run_id}|Open the flow run in Prefect>"
    assert message["blocks"][2]["elements"][0]["text"] == link

    # no parameters to name a target: the run's name
    flow_run.parameters = {}
    assert _render(automation.actions[0].payload, context)["text"] == (
        ":x: blue-green on run clever-fox: crashed"
    )


# --------------------------------------------------------------------------- the webhook URL


@pytest.mark.parametrize(
    "url",
    [
        SLACK_URL,
        "https://hooks.slack-gov.com/services/T/B/X",
        "  https://hooks.slack.com/workflows/T/A/1/2  ",
        "http://127.0.0.1:8080/services/T/B/X",
        "http://localhost:9/hook",
        "https://[::1]:8443/hook",
    ],
)
def test_webhook_url_accepts_slack_and_loopback(url: str) -> None:
    assert check_webhook_url(url) == url.strip()
    block = SlackIncomingWebhook(url=url)
    assert block.url.get_secret_value() == url.strip()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"http://hooks.slack.com/services/{SECRET}", "must use https:// for hooks.slack.com"),
        ("https://hooks.slack.com/", "no path after hooks.slack.com"),
        (
            f"https://hooks.slack.com.evil.example/services/{SECRET}",
            "got host 'hooks.slack.com.evil",
        ),
        (f"http://10.0.0.7/services/{SECRET}", "got host '10.0.0.7'"),
        (f"https://example.com/services/{SECRET}", "a loopback URL"),
        (f"ftp://hooks.slack.com/services/{SECRET}", "absolute https:// URL"),
        (f"https://user:pw@hooks.slack.com/services/{SECRET}", "must not embed credentials"),
        (f"http://127.0.0.1:0/{SECRET}", "port 0"),
        (f"http://127.0.0.1:99999/{SECRET}", "not a valid URL"),
    ],
)
def test_webhook_url_refuses_other_hosts_without_echoing_the_secret(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="url") as refused:
        check_webhook_url(url)
    assert says in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        SlackIncomingWebhook(url=url)
    assert says in str(invalid.value)
    for text in (str(refused.value), str(invalid.value), repr(invalid.value)):
        assert "secret" not in text
        assert "user:pw" not in text


def test_block_never_shows_its_url(caplog: pytest.LogCaptureFixture) -> None:
    block = SlackIncomingWebhook(url=SLACK_URL, timeout_seconds=3)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("block %s %r %s", block, block, block.model_dump())
    shown = [repr(block), str(block), json.dumps(block.model_dump(mode="json")), caplog.text]
    for text in shown:
        assert "secret" not in text, text
    assert block.target == "hooks.slack.com:443"
    assert block.get_timeout().read == 3


def test_post_refuses_an_empty_message_before_any_call() -> None:
    block = SlackIncomingWebhook(url="http://127.0.0.1:9/never-called")
    with pytest.raises(InvalidRequestError, match="needs a non-empty 'text' or 'blocks'"):
        block.post({"username": "runbooks"})


# --------------------------------------------------------------------------- Slack's answers


@pytest.mark.parametrize(
    ("status", "body", "kind", "sentence"),
    [
        (
            400,
            "invalid_payload",
            InvalidRequestError,
            "Slack refused the notification (HTTP 400 invalid_payload): the body is not a "
            "message Slack accepts (JSON with 'text' or 'blocks'); fix the message builder",
        ),
        (400, "invalid_blocks", InvalidRequestError, "(HTTP 400 invalid_blocks): a Block Kit"),
        (404, "no_service", NotFoundError, "removed or revoked in Slack; create a new incoming"),
        (410, "channel_is_archived", NotFoundError, "channel is archived; unarchive it"),
        (403, "action_prohibited", AuthError, "a Slack admin restricted posting"),
        (403, "invalid_token", NotFoundError, "removed or revoked"),
        (500, "rollup_error", UnavailableError, "(HTTP 500 rollup_error); Slack had an internal"),
        (502, "<html>bad gateway</html>", UnavailableError, "(HTTP 502); Slack is unavailable"),
        (418, "I'm a teapot", InvalidRequestError, "(HTTP 418): check the webhook URL saved"),
    ],
)
def test_slack_errors_become_one_sentence(
    status: int, body: str, kind: type[Exception], sentence: str
) -> None:
    error = refusal(status, body, target="hooks.slack.com:443")
    assert type(error) is kind
    assert sentence in str(error)
    assert str(error).count(". ") == 0  # one sentence


def test_rate_limit_keeps_retry_after() -> None:
    error = refusal(429, "rate_limited", retry_after_seconds=30)
    assert isinstance(error, UnavailableError)
    assert error.retry_after_seconds == 30
    assert "rate-limited the notification (HTTP 429 rate_limited for 30s)" in str(error)
