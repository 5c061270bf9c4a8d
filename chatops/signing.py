"""Who may call the chat-ops endpoint: Slack's request signature and a bearer token (pure).

Slack signs every request it sends (https://api.slack.com/authentication/verifying-requests-from-slack):
``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}")>`` with
the timestamp in ``X-Slack-Request-Timestamp``. Why each rule:

- the HMAC is over the *raw* body, exactly the bytes received: parsing the form first and
  re-encoding it would change the bytes (ordering, escaping) and let a tampered body through
  a lenient re-encoding, so the server verifies before it parses anything;
- a timestamp more than 300 s away from now (either way) is refused, so a captured request
  cannot be replayed later; the clock is passed in (``now``), which keeps this module pure and
  the tests free of sleeps;
- every comparison of a secret-derived value is ``hmac.compare_digest`` (constant time), so the
  time a refusal takes says nothing about how much of the signature or token was right;
- refusal messages say what was wrong (missing header, stale timestamp, bad signature) but never
  echo the signature, the token or the secret.

The JSON API for other bots uses ``Authorization: Bearer <token>`` instead: bots that are not
Slack cannot sign like Slack, and a token over TLS is what they all support.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v0"
"""The only signature version Slack has published."""

MAX_SKEW_SECONDS = 300
"""Slack's recommendation: refuse requests whose timestamp is more than 5 minutes off."""


class SignatureError(ValueError):
    """The request is not proven to come from the holder of the secret; nothing may run."""


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` under ``secret``, as Slack sends."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def verify_slack(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    max_skew_seconds: float = MAX_SKEW_SECONDS,
) -> int:
    """Check a Slack request's signature; its timestamp (seconds) when valid, else raise.

    ``timestamp`` and ``signature`` are the ``X-Slack-Request-Timestamp`` and
    ``X-Slack-Signature`` headers (``None`` when absent), ``body`` the raw bytes received and
    ``now`` the current Unix time. Raises :class:`SignatureError`.
    """
    if not secret:
        raise SignatureError("the Slack signing secret is not configured, so no request is trusted")
    if not timestamp:
        raise SignatureError("the X-Slack-Request-Timestamp header is missing")
    if not signature:
        raise SignatureError("the X-Slack-Signature header is missing")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise SignatureError("the X-Slack-Request-Timestamp header is not a Unix time in seconds")
    sent = int(timestamp)
    if abs(now - sent) > max_skew_seconds:
        raise SignatureError(
            f"the request's timestamp is {abs(now - sent):.0f} s away from now (more than "
            f"{max_skew_seconds:.0f} s): a replayed request or a wrong clock"
        )
    expected = slack_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise SignatureError(
            "the X-Slack-Signature does not match the body: wrong signing secret or a changed body"
        )
    return sent


def check_bearer(expected: str, authorization: str | None) -> None:
    """Check an ``Authorization: Bearer <token>`` header against ``expected``; raise when not.

    The scheme is case-insensitive (RFC 9110); the token is compared in constant time. An empty
    ``expected`` (no token configured) refuses every request rather than accepting an empty one.
    """
    if not expected:
        raise SignatureError("the API bearer token is not configured, so no request is trusted")
    if not authorization:
        raise SignatureError("the Authorization header is missing (expected 'Bearer <token>')")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("the Authorization header is not of the form 'Bearer <token>'")
    if not hmac.compare_digest(expected.encode(), token.strip().encode("utf-8", "replace")):
        raise SignatureError("the bearer token is not the one configured for the chat-ops API")
