"""`SlackIncomingWebhook`: a Slack incoming webhook that runbooks post their outcomes to.

Why it is built this way:
- the webhook URL *is* the credential (anyone holding it can post to the channel), so it is a
  ``SecretStr``, it never appears in a ``repr``, a refusal, a log line or a span, and it is
  accepted only for Slack's own hosts (``https://hooks.slack.com/...``, GovSlack's
  ``hooks.slack-gov.com``) or, for tests and the sandbox, a loopback host: a typo'd or
  look-alike host would otherwise receive every notification, and the secret with it;
- :meth:`SlackIncomingWebhook.post` goes through the project's resilience layer
  (``runbooks.resilience``: full-jitter backoff bounded in attempts and time, a retry budget
  and a circuit breaker per host) with httpx's own retries off. A POST is retried on purpose:
  Slack answers 429 (with ``Retry-After``, honoured by the layer) and 5xx when it did not post,
  and a rare duplicate message is better than a lost rollback notice. 500 is retried too
  (Slack's ``rollup_error``), which the layer's default policy does not do;
- the request goes straight to the resilience transport rather than through an
  ``httpx.Client``: the client logs every request's full URL at INFO ("HTTP Request: POST
  https://hooks.slack.com/services/T/B/X"), which would write the secret into the run's logs;
  and it carries no trace context (no span of ours either), since a span's ``url.full`` would
  hold the secret path;
- Slack answers errors as plain-text codes (``invalid_payload``, ``channel_is_archived``,
  ``no_service``...); each becomes one actionable sentence in the project's error tree.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO, host_port
from runbooks.errors import (
    AuthError,
    InvalidRequestError,
    NotFoundError,
    RunbookError,
    UnavailableError,
    from_httpx,
    parse_retry_after,
)

if TYPE_CHECKING:
    from runbooks.resilience import Resilience

SLACK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
"""Hosts of Slack's incoming webhooks (commercial and GovSlack), accepted over https only."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts accepted over http or https for tests and the sandbox's local receiver."""

_CODE = re.compile(r"^[a-z][a-z0-9_]{1,80}$")
_GONE = (
    "the webhook was removed or revoked in Slack; create a new incoming webhook and save its "
    "URL in the block"
)
_HINTS: dict[str, str] = {
    "invalid_payload": (
        "the body is not a message Slack accepts (JSON with 'text' or 'blocks'); "
        "fix the message builder"
    ),
    "invalid_blocks": "a Block Kit block is malformed or too long (section text: 3000 chars)",
    "invalid_blocks_format": "the 'blocks' field is not a list of Block Kit blocks",
    "no_text": "the message has no 'text'; add one",
    "too_many_attachments": "the message has more than 100 attachments",
    "channel_not_found": (
        "the webhook's channel no longer exists; create an incoming webhook for an existing "
        "channel and save its URL in the block"
    ),
    "user_not_found": (
        "the webhook's user no longer exists; create a new incoming webhook and save its URL in "
        "the block"
    ),
    "channel_is_archived": (
        "the webhook's channel is archived; unarchive it or save another webhook URL in the block"
    ),
    "action_prohibited": (
        "a Slack admin restricted posting to this channel; ask them, or use another channel"
    ),
    "posting_to_general_channel_denied": (
        "only admins may post to this workspace's general channel; use another channel's webhook"
    ),
    "no_service": _GONE,
    "no_service_id": _GONE,
    "no_team": _GONE,
    "team_disabled": _GONE,
    "invalid_token": _GONE,
    "rollup_error": "Slack had an internal error; retry later",
}


class SlackIncomingWebhook(Block):
    """A Slack incoming webhook (its URL kept secret) that runbooks post their outcomes to,
    through the runbooks' resilience layer.

    Example:
        Post a message:
        ```python
        from blocks.slack import SlackIncomingWebhook

        webhook = SlackIncomingWebhook.load("BLOCK_NAME")
        webhook.post({"text": "blue-green on shop/checkout: rolled back"})
        ```
    """

    _block_type_name: ClassVar[str] = "Slack Incoming Webhook"
    _block_type_slug: ClassVar[str] = "slack-incoming-webhook"
    _description: ClassVar[str] = (
        "A Slack incoming webhook (URL kept as a secret) that runbooks post outcomes to, with "
        "explicit timeouts and retries, budget and circuit breaker from the resilience layer."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    url: SecretStr = Field(
        default=...,
        title="Webhook URL",
        description=(
            "The incoming webhook's URL from Slack (https://hooks.slack.com/services/...); it is "
            "the credential. Tests and the sandbox may use http://127.0.0.1:PORT/..."
        ),
    )
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        title="Timeout (seconds)",
        description="Time allowed per attempt to connect, send the message and read the answer.",
    )

    @field_validator("url")
    @classmethod
    def _url_is_slack_or_loopback(cls, value: SecretStr) -> SecretStr:
        return SecretStr(check_webhook_url(value.get_secret_value()))

    @property
    def target(self) -> str:
        """Key of the retry budget and circuit breaker: the webhook host's host:port."""
        return host_port(self.url.get_secret_value())

    def get_timeout(self) -> httpx.Timeout:
        """One explicit bound for every phase of an attempt (connect, write, read, pool)."""
        return httpx.Timeout(self.timeout_seconds)

    def post(self, message: Mapping[str, Any]) -> None:
        """Post ``message`` (Slack's JSON: ``text`` and/or ``blocks``) to the webhook.

        Returns once Slack answered 200. Raises ``InvalidRequestError`` (the message, e.g.
        ``invalid_payload``), ``NotFoundError`` / ``AuthError`` (the webhook is gone or not
        allowed to post), ``UnavailableError`` (timeouts, 429 and 5xx once the layer's retries
        are spent) or ``CircuitOpenError``; each message is one sentence naming what to fix,
        without the URL.
        """
        if not isinstance(message, Mapping) or not (message.get("text") or message.get("blocks")):
            raise InvalidRequestError(
                "a Slack message needs a non-empty 'text' or 'blocks'; nothing was posted",
                target=self.target,
            )
        from runbooks.resilience import (
            NO_TRACE_CONTEXT_EXTENSION,
            OPT_IN_EXTENSION,
            ResilientTransport,
        )

        action = f"post to the Slack incoming webhook on {self.target}"
        request = httpx.Request(
            "POST",
            self.url.get_secret_value(),
            content=json.dumps(dict(message), ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            extensions={
                "timeout": self.get_timeout().as_dict(),
                OPT_IN_EXTENSION: True,
                NO_TRACE_CONTEXT_EXTENSION: True,
            },
        )
        transport = ResilientTransport(
            target=self.target,
            resilience=slack_resilience(),
            transport=httpx.HTTPTransport(retries=0),
        )
        try:
            with transport:
                response = transport.handle_request(request)
                try:
                    body = response.read()
                finally:
                    response.close()
        except RunbookError:
            raise
        except httpx.HTTPError as exc:
            raise from_httpx(exc, action, target=self.target) from exc
        if response.status_code != 200:
            raise refusal(
                response.status_code,
                body.decode("utf-8", "replace"),
                target=self.target,
                retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
            )


def check_webhook_url(value: str) -> str:
    """``value`` stripped, if it is a Slack webhook URL (https on Slack's hosts) or a loopback
    http(s) URL; else ``ValueError`` naming the field and, at most, the host (never the URL,
    whose path is the secret)."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("url is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not embed credentials (user:password@)")
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("url must be an absolute https:// URL of a Slack incoming webhook")
    if port == 0:
        raise ValueError("url has port 0, which cannot be connected to")
    if host in SLACK_HOSTS:
        if parts.scheme != "https":
            raise ValueError(f"url must use https:// for {host}: the URL is a credential")
        if len(parts.path.strip("/")) == 0:
            raise ValueError(
                f"url has no path after {host}; copy the whole incoming webhook URL from Slack"
            )
        return value
    if host in LOOPBACK_HOSTS:
        return value
    raise ValueError(
        "url must be a Slack incoming webhook (https://hooks.slack.com/services/...) or, for "
        f"tests and the sandbox, a loopback URL (http://127.0.0.1:PORT/...); got host {host!r}"
    )


def refusal(
    status: int,
    body: str,
    *,
    target: str | None = None,
    retry_after_seconds: float | None = None,
) -> RunbookError:
    """The error for Slack's non-200 answer ``status`` with its plain-text ``body``."""
    text = " ".join(body.split())
    code = text if _CODE.match(text) else ""
    hint = _HINTS.get(code, "")
    said = f"HTTP {status} {code}" if code else f"HTTP {status}"
    if status == 429:
        wait = f" for {retry_after_seconds:g}s" if retry_after_seconds is not None else ""
        return UnavailableError(
            f"Slack rate-limited the notification ({said}{wait}) after the resilience layer's "
            "retries; post less often or retry later",
            status=status,
            target=target,
            retry_after_seconds=retry_after_seconds,
        )
    if status >= 500 or status < 400:
        return UnavailableError(
            f"Slack did not take the notification ({said}); "
            f"{hint or 'Slack is unavailable, retry later'}",
            status=status,
            target=target,
            retry_after_seconds=retry_after_seconds,
        )
    message = (
        f"Slack refused the notification ({said}): "
        f"{hint or 'check the webhook URL saved in the block and the message'}"
    )
    if status in (404, 410) or hint == _GONE:
        return NotFoundError(message, status=status, target=target)
    if status in (401, 403):
        return AuthError(message, status=status, target=target)
    return InvalidRequestError(message, status=status, target=target)


# -- the layer Slack posts go through --------------------------------------------------------------

_layers: weakref.WeakKeyDictionary[Resilience, Resilience] = weakref.WeakKeyDictionary()
_layers_lock = threading.Lock()


def slack_resilience() -> Resilience:
    """The resilience layer for Slack posts: the default policy, with 500 retried too.

    One per process, so every post to a host shares one budget and one breaker; tied to the
    process-wide default instance, so ``runbooks.resilience.testing()`` (which replaces the
    default) also gives Slack a fresh one and no breaker state leaks between tests.
    """
    from runbooks.resilience import Resilience, ResiliencePolicy, default_resilience
    from runbooks.resilience.policy import RETRY_STATUSES

    base = default_resilience()
    with _layers_lock:
        layer = _layers.get(base)
        if layer is None:
            policy = ResiliencePolicy(retry_statuses=RETRY_STATUSES | {500})
            layer = _layers[base] = Resilience(policy)
        return layer
