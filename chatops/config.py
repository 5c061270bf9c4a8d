"""`ChatOpsSettings`: the chat-ops endpoint's secrets, access rules and links, as a Prefect block.

Why it is built this way (the rules of ``blocks/``, applied to a block that lives with chat-ops
because only the endpoint reads it):

- the Slack signing secret and the API bearer token are ``SecretStr``: they never appear in a
  repr, a log line or a validation error (``hide_input_in_errors``); each one left empty turns
  its endpoint off (every request to it is refused), and at least one must be set;
- the access rules are the pure :class:`chatops.commands.AccessPolicy`, stored in the block so an
  admin edits who may run what in the Prefect UI, not in code;
- every wait is explicit: the Prefect API calls' timeout, the reply post's timeout, and how long
  the outcome of a started run is watched before a "still running" note is posted instead;
- replies go only to ``response_url`` prefixes listed here (Slack's own hooks by default): a
  bot on the JSON API must not make the endpoint post to arbitrary addresses;
- the client factory builds the ``httpx`` client for those posts over the resilience layer
  (one breaker per target, no hidden httpx retries); a POST there is not retried, because Slack
  would show a retried message twice.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO, check_http_url
from chatops.commands import AccessPolicy

RESPONSE_TARGET = "chatops-response-url"
"""Name of the retry budget and breaker of the posts to Slack's response URLs."""


class ChatOpsSettings(Block):
    """Settings of the chat-ops endpoint (`runbooks chatops`): Slack signing secret, bearer token
    for the JSON API, who may run and approve which runbook, and where runs are linked.

    Example:
        Serve the endpoint with saved settings:
        ```python
        from chatops.config import ChatOpsSettings
        from chatops.server import serve

        serve("127.0.0.1", 8787, ChatOpsSettings.load("BLOCK_NAME"))
        ```
    """

    _block_type_name: ClassVar[str] = "ChatOps Settings"
    _block_type_slug: ClassVar[str] = "chatops-settings"
    _description: ClassVar[str] = (
        "The chat-ops endpoint's Slack signing secret, API bearer token, access rules per "
        "command and runbook, and the Prefect UI its replies link to."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    signing_secret: SecretStr | None = Field(
        default=None,
        title="Slack signing secret",
        description="The Slack app's signing secret; empty turns POST /slack/commands off.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        title="API bearer token",
        description="Token other bots send as 'Authorization: Bearer <token>' to "
        "POST /api/commands; empty turns that endpoint off.",
    )
    access: AccessPolicy = Field(
        default_factory=AccessPolicy,
        title="Access rules",
        description="Users and channels allowed per command and per runbook; run, approve and "
        "reject are denied unless a rule allows them.",
    )
    ui_url: str | None = Field(
        default=None,
        title="Prefect UI URL",
        description="Base URL of the Prefect UI that replies link to, e.g. "
        "http://127.0.0.1:4200; empty uses PREFECT_UI_URL.",
    )
    response_url_prefixes: tuple[str, ...] = Field(
        default=("https://hooks.slack.com/",),
        title="Allowed response URL prefixes",
        description="Outcomes are posted only to response_url values starting with one of these.",
    )
    api_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        title="Prefect API timeout (seconds)",
        description="Timeout of each call to the Prefect API (Slack expects a reply in 3 s).",
    )
    post_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        title="Reply post timeout (seconds)",
        description="Timeout of each post of an outcome to a response URL.",
    )
    watch_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        title="Outcome watch (seconds)",
        description="How long a started run is watched for its outcome before a 'still "
        "running' note is posted instead (Slack's response URLs expire after 30 minutes).",
    )
    poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        title="Poll interval (seconds)",
        description="How often a watched run's state is read.",
    )

    @field_validator("ui_url")
    @classmethod
    def _ui_url_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_http_url(value, "ui_url")

    @field_validator("response_url_prefixes")
    @classmethod
    def _prefixes_are_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            parts = urlsplit(prefix)
            # a path is required: "https://hooks.slack.com" would also admit hooks.slack.com.evil
            if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path:
                raise ValueError(
                    "response_url_prefixes must be http(s) URLs with a host and a path, e.g. "
                    f"https://hooks.slack.com/, got {prefix!r}"
                )
        return value

    @model_validator(mode="after")
    def _one_door_open(self) -> ChatOpsSettings:
        if not _is_set(self.signing_secret) and not _is_set(self.api_token):
            raise ValueError(
                "set signing_secret (Slack) or api_token (JSON API): with neither, the "
                "endpoint refuses every request"
            )
        return self

    def allows_response_url(self, url: str) -> bool:
        """True when outcomes may be posted to ``url`` (it starts with an allowed prefix)."""
        return any(url.startswith(prefix) for prefix in self.response_url_prefixes)

    def prefect_httpx_settings(self) -> dict[str, object]:
        """``get_client(httpx_settings=...)`` for the Prefect API with this block's timeout."""
        return {"timeout": httpx.Timeout(self.api_timeout_seconds)}

    def get_response_client(self) -> httpx.Client:
        """A new ``httpx`` client for posting outcomes to response URLs; close it when done."""
        from runbooks.resilience import ResilientTransport

        timeout = httpx.Timeout(self.post_timeout_seconds)
        transport = ResilientTransport(
            target=RESPONSE_TARGET, transport=httpx.HTTPTransport(retries=0)
        )
        return httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)


def _is_set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())
