"""The retry-storm alerts shipped with the project, and the one PromQL of "the storm signal".

The Prometheus rules live in ``deployments/alerts/retry-storm.rules.yml`` (loaded by a
Prometheus through ``rule_files``; unit-tested by ``retry-storm.tests.yml`` with
``promtool test rules``). This module names them for Python: the alert names an automation
matches, the rules file's path, and the queries, so the ``retry-storm`` runbook measures exactly
what the alert fires on. ``tests/integration/test_alert_rules.py`` checks that the shipped
rules' expressions are these strings, so the YAML and the runbook cannot drift apart.

Pure: no I/O, only strings and paths.

Which metrics, and why:

- **retries / logical requests**, not attempts / requests nor retries / attempts. The recipe's
  "retry rate" is the share of extra calls the callers add on top of their own traffic, which
  is how retry budgets are stated (Envoy 20 %, Finagle 20 %, Google SRE 10 %: retries as a
  percentage of requests), so the 20 % threshold compares directly with a budget in force.
  ``attempts / requests - 1`` would mean the same only when every logical call reaches the
  wire, but a call refused by an open breaker counts as a request with no attempt, so it would
  read low exactly while the breaker is containing a storm; ``retries / attempts`` is bounded
  by ``1 - 1 / max_attempts`` (0.8 with 5 attempts) and hides how hard the callers amplify
  (naive 5 attempts against a dead dependency: retries / requests = 4, i.e. 400 %).
- **the demo services' counters** ``shop_downstream_requests_total{dependency,outcome}`` and
  ``shop_downstream_retries_total{dependency}`` (``sandbox/shop/metrics.py``), not the
  resilience layer's ``runbooks_client_requests_total`` / ``runbooks_client_retries_total``
  ``{target}``: same meaning, but the shop's counters are monotonic across a retry-config
  reload, while the layer's registry is rebuilt on each reload (the runbook's containment *is*
  a reload), so a storm and its containment read as one series.
- **the breaker's gauge** ``runbooks_client_breaker_state{target,state}`` (the resilience layer,
  ``runbooks/resilience/metrics.py``) for ``circuit_breaker_open``: the only export of a
  breaker's state. ``half_open`` counts as not closed: a breaker in front of a dead dependency
  cycles open -> half_open (one probe fails) -> open, and a scrape that lands on the probe must
  not reset the alert's ``for:`` clock. ``target`` is renamed ``dependency`` (the shop's
  layer names its target after the dependency), so both alerts carry the same labels.
- **per caller and dependency**: the caller is ``namespace`` + ``role``, the labels the
  sandbox's ``file_sd`` puts on every pod's series (``sandbox/cluster/filesd.py``); pods of one
  role are summed, as the runbook acts on a role's settings, not on one pod.
- **a traffic floor** of 0.1 logical calls/s (30 in the 5 m window) in the denominator: it turns
  "no traffic" (0 / 0) into no series instead of NaN, and keeps one retried call of an idle
  caller (100 % of 1) from paging anyone; a storm is an amplification of *load*. A caller with
  traffic and no retry yet (its retries counter does not exist until the first retry) reads 0,
  not "no data".
"""

from __future__ import annotations

import re
from pathlib import Path

RUNBOOK = "retry-storm"
"""The runbook both alerts point at (their ``runbook`` label)."""

RETRY_STORM_ALERT = "retry_storm_detected"
BREAKER_OPEN_ALERT = "circuit_breaker_open"
ALERT_NAMES = (RETRY_STORM_ALERT, BREAKER_OPEN_ALERT)

RULES_DIR = Path(__file__).resolve().parent.parent / "deployments" / "alerts"
"""Beside ``runbooks/`` in a checkout and in an installed wheel (``deployments`` is packaged)."""
RETRY_STORM_RULES = RULES_DIR / "retry-storm.rules.yml"
RULE_FILES = (RETRY_STORM_RULES,)
"""Every rules file the project ships, for a Prometheus config's ``rule_files``."""

REQUESTS_METRIC = "shop_downstream_requests_total"
RETRIES_METRIC = "shop_downstream_retries_total"
ATTEMPTS_METRIC = "shop_downstream_attempts_total"
RETRY_SETTING_GAUGES = {
    "max_attempts": "shop_retry_max_attempts",
    "budget_percent": "shop_retry_budget_percent",
    "breaker_enabled": "shop_retry_breaker_enabled",
}
"""Retry-settings fields -> the gauge each pod exports with the value in force (budget -1: none;
breaker 1/0): how the runbook checks that a ConfigMap change was taken by every pod."""
RELOADS_METRIC = "shop_config_reloads_total"
RETRY_CONFIG_FILE = "retry config"
"""The ``file`` label of a pod's retry-config reloads: a change is taken once it counts one."""
BREAKER_STATE_METRIC = "runbooks_client_breaker_state"
CALLER_LABELS = ("namespace", "role")
DEPENDENCY_LABEL = "dependency"
GROUP_LABELS = (*CALLER_LABELS, DEPENDENCY_LABEL)
"""The labels of every series the queries return and of every alert they raise."""

RATE_WINDOW = "5m"
RETRY_RATIO_THRESHOLD = 0.20
"""Retries per logical request above which callers are storming (the recipe's 20 %)."""
MIN_REQUEST_RATE = 0.1
"""Logical calls per second under which a caller is too idle for its ratio to mean a storm."""

_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def _by() -> str:
    return ", ".join(GROUP_LABELS)


def _check(window: str, *positive: float) -> None:
    if not _DURATION.fullmatch(window):
        raise ValueError(f"window {window!r} is not a PromQL duration such as '5m' or '90s'")
    if any(not value > 0 for value in positive):
        raise ValueError(f"thresholds must be positive, got {positive}")


def request_rate_query(window: str = RATE_WINDOW) -> str:
    """Logical calls per second, per caller and dependency (every outcome, breaker-refused too)."""
    _check(window)
    return f"sum by ({_by()}) (rate({REQUESTS_METRIC}[{window}]))"


def retry_rate_query(window: str = RATE_WINDOW) -> str:
    """Retries sent per second, per caller and dependency."""
    _check(window)
    return f"sum by ({_by()}) (rate({RETRIES_METRIC}[{window}]))"


def retry_ratio_query(window: str = RATE_WINDOW, min_request_rate: float = MIN_REQUEST_RATE) -> str:
    """The storm signal: retries per logical request, per caller and dependency, over ``window``.

    0 for a caller with traffic and no retries; no series for a caller under
    ``min_request_rate`` calls/s (no traffic included), never NaN.
    """
    _check(window, min_request_rate)
    requests, retries = request_rate_query(window), retry_rate_query(window)
    return f"({retries} or 0 * {requests}) / ({requests} >= {min_request_rate:g})"


def retry_storm_query(
    window: str = RATE_WINDOW,
    threshold: float = RETRY_RATIO_THRESHOLD,
    min_request_rate: float = MIN_REQUEST_RATE,
) -> str:
    """The ``retry_storm_detected`` expression: the storm signal over ``threshold``."""
    _check(window, threshold, min_request_rate)
    return f"({retry_ratio_query(window, min_request_rate)}) > {threshold:g}"


def error_share_query(window: str = RATE_WINDOW) -> str:
    """Share of logical calls that did not succeed (failed, or refused by an open breaker), per
    caller and dependency; 0 with traffic and no failure, no series without traffic."""
    _check(window)
    requests = request_rate_query(window)
    failed = f'sum by ({_by()}) (rate({REQUESTS_METRIC}{{outcome!="ok"}}[{window}]))'
    return f"({failed} or 0 * {requests}) / ({requests} > 0)"


def backend_load_query(window: str = RATE_WINDOW) -> str:
    """Attempts per second each dependency receives from its callers (first attempts and
    retries): the load a storm multiplies, per caller and dependency (sum them per dependency)."""
    _check(window)
    return f"sum by ({_by()}) (rate({ATTEMPTS_METRIC}[{window}]))"


def retry_setting_query(field: str) -> str:
    """Every pod's value in force of one retry-settings ``field`` (see RETRY_SETTING_GAUGES)."""
    try:
        return RETRY_SETTING_GAUGES[field]
    except KeyError:
        known = ", ".join(RETRY_SETTING_GAUGES)
        raise ValueError(f"no gauge exports {field!r}; gauged fields: {known}") from None


def retry_reloads_query(namespace: str, role: str) -> str:
    """Each pod's count of retry-config files it took (``result="ok"``), for one caller."""
    return (
        f'{RELOADS_METRIC}{{namespace="{namespace}",role="{role}",'
        f'file="{RETRY_CONFIG_FILE}",result="ok"}}'
    )


def breaker_open_query() -> str:
    """The ``circuit_breaker_open`` expression: pods per caller and dependency whose breaker is
    not closed (open, or half-open probing), when there is at least one."""
    relabelled = (
        f'label_replace({BREAKER_STATE_METRIC}{{state=~"open|half_open"}}, '
        f'"{DEPENDENCY_LABEL}", "$1", "target", "(.+)")'
    )
    return f"sum by ({_by()}) ({relabelled}) > 0"


RETRY_RATIO_QUERY = retry_ratio_query()
RETRY_STORM_QUERY = retry_storm_query()
BREAKER_OPEN_QUERY = breaker_open_query()
