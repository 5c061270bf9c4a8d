"""The shared resilience layer: every outgoing call of the project goes through it.

- decisions (pure, in :mod:`decisions`): full-jitter :class:`~decisions.backoff.Backoff`,
  sliding-window :class:`~decisions.budget.RetryBudget`, :class:`~decisions.breaker.CircuitBreaker`;
- the loop that applies them (:class:`Resilience`), its Prometheus counters, correlation headers;
- adapters: :class:`ResilientTransport` for httpx, :func:`call_kubernetes` and
  :func:`no_urllib3_retries` for the kubernetes client, :func:`botocore_config` for boto3.

Rules: retries live here and only here for a given call; every wait goes through
:func:`sleep`, which :func:`testing` turns off; importing this package imports neither Prefect
nor kubernetes nor boto3 (the sandbox's pods use it and must start fast).
"""

from decisions.backoff import Backoff
from decisions.breaker import BreakerSettings, BreakerState
from decisions.budget import RetryBudgetSettings
from runbooks.resilience.aws import botocore_config
from runbooks.resilience.engine import (
    SUCCESS,
    Resilience,
    Verdict,
    default_resilience,
    sleep,
    testing,
)
from runbooks.resilience.headers import REQUEST_ID, TRACEPARENT, correlation_headers
from runbooks.resilience.kube import call_kubernetes, no_urllib3_retries
from runbooks.resilience.policy import ResiliencePolicy
from runbooks.resilience.transport import (
    NO_RETRY_EXTENSION,
    NO_TRACE_CONTEXT_EXTENSION,
    OPT_IN_EXTENSION,
    ResilientTransport,
)

__all__ = [
    "NO_RETRY_EXTENSION",
    "NO_TRACE_CONTEXT_EXTENSION",
    "OPT_IN_EXTENSION",
    "REQUEST_ID",
    "SUCCESS",
    "TRACEPARENT",
    "Backoff",
    "BreakerSettings",
    "BreakerState",
    "Resilience",
    "ResiliencePolicy",
    "ResilientTransport",
    "RetryBudgetSettings",
    "Verdict",
    "botocore_config",
    "call_kubernetes",
    "correlation_headers",
    "default_resilience",
    "no_urllib3_retries",
    "sleep",
    "testing",
]
