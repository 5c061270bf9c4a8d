"""Slack's v0 request signature and the JSON API's bearer token (pure: the clock is passed in)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from chatops.signing import SignatureError, check_bearer, slack_signature, verify_slack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b"token=x&team_id=T1&user_id=U1&command=%2Frunbook&text=list"
NOW = 1_800_000_000


def _verify(
    *,
    secret: str = SECRET,
    timestamp: str | None = str(NOW),
    signature: str | None = None,
    body: bytes = BODY,
    now: float = NOW,
) -> int:
    if signature is None:
        signature = slack_signature(secret, str(timestamp), body)
    return verify_slack(secret, timestamp=timestamp, signature=signature, body=body, now=now)


def test_signature_is_slacks_documented_v0_hmac() -> None:
    # Slack's own example (api.slack.com/authentication/verifying-requests-from-slack)
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    timestamp = "1531420618"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
        b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
        b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d1"
        b"0d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert slack_signature(secret, timestamp, body) == expected
    assert verify_slack(
        secret, timestamp=timestamp, signature=expected, body=body, now=1531420618 + 10
    ) == int(timestamp)


def test_a_valid_request_returns_its_timestamp() -> None:
    assert _verify() == NOW
    manual = hmac.new(SECRET.encode(), f"v0:{NOW}:".encode() + BODY, hashlib.sha256).hexdigest()
    assert slack_signature(SECRET, str(NOW), BODY) == f"v0={manual}"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_within_five_minutes_either_way_pass(skew: int) -> None:
    assert _verify(now=NOW + skew) == NOW


@pytest.mark.parametrize("skew", [-301, 301, 86_400])
def test_old_or_future_timestamps_are_refused(skew: int) -> None:
    with pytest.raises(SignatureError, match="more than 300 s"):
        _verify(now=NOW + skew)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"body": BODY + b"&x=1", "signature": slack_signature(SECRET, str(NOW), BODY)},
            "does not match the body",
        ),
        ({"signature": "v0=" + "0" * 64}, "does not match"),
        ({"signature": "v1=abc"}, "does not match"),
        ({"signature": "v0=ünïcode"}, "does not match"),
        ({"secret": "another-secret"}, "does not match"),
        ({"timestamp": None}, "X-Slack-Request-Timestamp header is missing"),
        ({"timestamp": "", "signature": "v0=x"}, "X-Slack-Request-Timestamp header is missing"),
        ({"signature": ""}, "X-Slack-Signature header is missing"),
        ({"timestamp": "12.5", "signature": "v0=x"}, "not a Unix time"),
        ({"timestamp": "-5", "signature": "v0=x"}, "not a Unix time"),
    ],
    ids=[
        "tampered-body",
        "wrong-digest",
        "wrong-version",
        "non-ascii",
        "wrong-secret",
        "no-timestamp",
        "empty-timestamp",
        "no-signature",
        "fractional-timestamp",
        "negative-timestamp",
    ],
)
def test_bad_signatures_are_refused(change: dict, message: str) -> None:
    if "secret" in change:  # signed with another secret, verified with ours
        signature = slack_signature(change["secret"], str(NOW), BODY)
        with pytest.raises(SignatureError, match=message):
            _verify(signature=signature)
        return
    with pytest.raises(SignatureError, match=message):
        _verify(**change)


def test_a_signature_for_another_timestamp_is_refused() -> None:
    signature = slack_signature(SECRET, str(NOW - 1), BODY)
    with pytest.raises(SignatureError, match="does not match"):
        _verify(signature=signature)


def test_no_secret_configured_trusts_nothing() -> None:
    with pytest.raises(SignatureError, match="not configured"):
        verify_slack("", timestamp=str(NOW), signature="v0=", body=BODY, now=NOW)


def test_messages_never_echo_the_signature_or_secret() -> None:
    signature = "v0=" + "f" * 64
    with pytest.raises(SignatureError) as caught:
        _verify(signature=signature)
    assert "f" * 64 not in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "])
def test_bearer_token_accepted(header: str) -> None:
    check_bearer("s3cret", header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("s3cret", "not of the form"),
        ("Basic s3cret", "not of the form"),
        ("Bearer ", "not of the form"),
        ("Bearer s3cre", "not the one configured"),
        ("Bearer s3cret-and-more", "not the one configured"),
        ("Bearer ünïcode", "not the one configured"),
    ],
)
def test_bearer_token_refused(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        check_bearer("s3cret", header)
    assert "s3cret" not in str(caught.value)


def test_no_token_configured_refuses_even_an_empty_one() -> None:
    with pytest.raises(SignatureError, match="not configured"):
        check_bearer("", "Bearer ")
