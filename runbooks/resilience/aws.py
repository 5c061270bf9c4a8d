"""The resilience layer for boto3: botocore's ``standard`` retry mode, configured explicitly.

botocore already implements what we would write (full-jitter exponential backoff, a token
bucket retry quota that is a retry budget, transient and throttling error classes), so we
configure it rather than wrap it: the default ``legacy`` mode retries 5 times with no quota,
and implicit defaults drift between releases. Timeouts are always set by the caller.
"""

from __future__ import annotations

from typing import Any


def botocore_config(
    *, connect_timeout: float, read_timeout: float, max_attempts: int = 3, **extra: Any
) -> Any:
    """A ``botocore.config.Config`` with standard retries and explicit timeouts."""
    from botocore.config import Config

    if connect_timeout <= 0 or read_timeout <= 0:
        raise ValueError("connect_timeout and read_timeout must be > 0 seconds")
    if not 1 <= max_attempts <= 10:
        raise ValueError(f"max_attempts must be within 1..10, got {max_attempts}")
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        **extra,
    )
