"""What every block of the package shares: its UI metadata, its pydantic settings, URL checks.

Kept apart from the block modules so the rules are stated once:
- validation errors never echo the input (``hide_input_in_errors``): a mistyped secret, or a URL
  with a password in it, must not end up in a log line or an exception message; our own
  messages name the field and quote the value only when it cannot be a secret;
- URLs are checked by hand rather than with pydantic's ``HttpUrl`` so the stored value stays the
  string the user typed (``HttpUrl`` would normalise it, e.g. add a trailing slash).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ConfigDict, HttpUrl

from blocks._logo import LOGO_URL

DOCUMENTATION_URL = HttpUrl("https://github.com/runbooks-as-code/runbooks#blocks")
"""The README section that documents the blocks (anchors per block would drift)."""

LOGO = HttpUrl(LOGO_URL)
"""The logo of every block type, as the ``HttpUrl`` Prefect expects in ``_logo_url``."""

BLOCK_CONFIG = ConfigDict(hide_input_in_errors=True)
"""Merged into each block's ``model_config``: refusals never repeat what was typed."""


def check_http_url(value: str, field: str) -> str:
    """``value`` stripped, if it is an absolute http(s) URL with a host and no credentials.

    Raises ``ValueError`` with a message that names ``field``; the value is quoted only once we
    know it carries no user-info (``user:password@``).
    """
    value = value.strip()
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"{field} is not a valid URL ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{field} must not embed credentials (user:password@); "
            "put them in the block's secret fields instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{field} must be an absolute http:// or https:// URL with a host, got {value!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{field} must not have a query string or fragment, got {value!r}")
    if port == 0:
        raise ValueError(f"{field} has port 0, which cannot be connected to, got {value!r}")
    return value


def host_port(url: str) -> str:
    """``host:port`` of an http(s) URL, with the scheme's default port when none is written."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal: keep it unambiguous
        host = f"[{host}]"
    return f"{host}:{port}"
