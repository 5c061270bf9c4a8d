"""Demo shop: the environment contract, config files re-read on change, retry settings to the
resilience policy, and the combined log format."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from decisions.flags import parse_flags
from sandbox.shop.accesslog import combined_line, escape, format_time
from sandbox.shop.config import ConfigError, WatchedJson, settings_from_env
from sandbox.shop.downstream import RetrySettings, retry_defaults_from_env, retry_parser

# nginx's / Apache's combined format, as log parsers read it
COMBINED = re.compile(
    r"^(?P<host>\S+) \S+ \S+ \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)"$'
)


def test_settings_from_env_defaults_and_values() -> None:
    settings = settings_from_env(
        {
            "SHOP_IMAGE": "demo/shop:v1",
            "SHOP_ROLE": "checkout",
            "PORT": "9000",
            "POD_NAME": "checkout-abc",
            "POD_NAMESPACE": "shop",
            "SHOP_DOWNSTREAM_URL": "http://127.0.0.1:9001/",
        }
    )
    assert (settings.role, settings.port, settings.pod, settings.namespace) == (
        "checkout",
        9000,
        "checkout-abc",
        "shop",
    )
    assert settings.downstream_url == "http://127.0.0.1:9001"
    assert settings.dependency == "payments"
    minimal = settings_from_env({"SHOP_IMAGE": "demo/shop:v1"})
    assert (minimal.role, minimal.port, minimal.dependency) == ("frontend", 8080, "checkout")
    assert minimal.access_log is None
    assert minimal.downstream_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SHOP_IMAGE"),
        ({"SHOP_IMAGE": "x:v1", "SHOP_ROLE": "cart"}, "SHOP_ROLE"),
        ({"SHOP_IMAGE": "x:v1", "PORT": "http"}, "PORT"),
        ({"SHOP_IMAGE": "x:v1", "PORT": "70000"}, "PORT"),
        ({"SHOP_IMAGE": "x:v1", "SHOP_DOWNSTREAM_URL": "checkout:80"}, "SHOP_DOWNSTREAM_URL"),
    ],
)
def test_bad_environment_is_refused_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(env)


def _write(path: Path, document: object) -> None:
    """Replace the file atomically, as a ConfigMap volume does (new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def test_watched_file_is_reread_on_change_and_keeps_the_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    events: list[tuple[str, bool]] = []
    watched = WatchedJson(
        str(path),
        parse_flags,
        {},
        name="flags",
        on_reload=lambda name, ok: events.append((name, ok)),
        min_interval=0,
    )
    assert watched.get() == {}  # missing file: the default
    _write(path, {"flags": {"a": {"rollout_percent": 5}}})
    assert watched.get()["a"].rollout_percent == 5
    generation = watched.generation
    assert watched.get()["a"].rollout_percent == 5
    assert watched.generation == generation
    path.write_text("{not json")
    assert watched.get()["a"].rollout_percent == 5  # kept
    assert watched.last_error is not None
    _write(path, {"flags": {"a": {"rollout_percent": 50}}})
    assert watched.get()["a"].rollout_percent == 50
    assert watched.last_error is None
    path.unlink()
    assert watched.get() == {}
    assert ("flags", False) in events
    assert events.count(("flags", True)) >= 2


def test_watched_file_checks_at_most_every_min_interval(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    _write(path, {"flags": {}})
    watched = WatchedJson(str(path), parse_flags, {}, name="flags", min_interval=60)
    watched.get()
    _write(path, {"flags": {"a": {}}})
    assert watched.get() == {}  # not looked at again yet


def test_naive_defaults_disable_budget_and_breaker() -> None:
    settings = RetrySettings()
    policy = settings.policy()
    assert policy.backoff.max_attempts == 5
    assert policy.budget.min_retries_per_window >= 10**9  # no budget
    assert policy.breaker.minimum_calls >= 10**9  # never opens


def test_budgeted_settings_map_onto_the_policy() -> None:
    settings = RetrySettings(
        max_attempts=3, budget_percent=10, budget_min_retries=1, breaker_enabled=True
    )
    policy = settings.policy()
    assert policy.backoff.max_attempts == 3
    assert policy.budget.budget_percent == 10
    assert policy.budget.min_retries_per_window == 1
    assert policy.breaker.minimum_calls == 10
    assert policy.breaker.failure_rate_percent == 50


def test_env_defaults_and_file_override() -> None:
    defaults = retry_defaults_from_env(
        {"SHOP_RETRY_MAX_ATTEMPTS": "4", "SHOP_RETRY_BREAKER_ENABLED": "true", "OTHER": "x"}
    )
    assert defaults.max_attempts == 4
    assert defaults.breaker_enabled
    assert retry_defaults_from_env({"SHOP_RETRY_BUDGET_PERCENT": "none"}).budget_percent is None
    parsed = retry_parser(defaults)({"max_attempts": 2, "budget_percent": 10})
    assert (parsed.max_attempts, parsed.budget_percent, parsed.breaker_enabled) == (2, 10, True)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"max_attempt": 3}, "max_attempt"),  # a typo must not keep a storm going silently
        ({"max_attempts": 0}, "max_attempts"),
        ({"budget_percent": 150}, "budget_percent"),
        ({"base_seconds": 2, "cap_seconds": 1}, "cap_seconds"),
        ([], "JSON object"),
    ],
)
def test_bad_retry_documents_are_refused(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry_parser(RetrySettings())(document)


def test_bad_retry_env_is_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        retry_defaults_from_env({"SHOP_RETRY_MAX_ATTEMPTS": "many"})


def test_combined_line_format() -> None:
    line = combined_line(
        remote="127.0.0.1",
        when=1_796_029_200.0,  # 2026-11-30 09:00:00 UTC
        request_line="GET /buy?user=7 HTTP/1.1",
        status=200,
        size=12,
        referer=None,
        user_agent="ua",
    )
    assert (
        line
        == '127.0.0.1 - - [30/Nov/2026:09:00:00 +0000] "GET /buy?user=7 HTTP/1.1" 200 12 "-" "ua"'
    )
    assert COMBINED.match(line)
    assert format_time(0) == "01/Jan/1970:00:00:00 +0000"


def test_hostile_fields_cannot_forge_a_field() -> None:
    line = combined_line(
        remote="10.0.0.1",
        when=0,
        request_line='GET /"x" HTTP/1.1',
        status=404,
        size=0,
        referer="http://a/\\",
        user_agent='evil" 200 1 "x\nnext',
    )
    match = COMBINED.match(line)
    assert match is not None
    assert match["size"] == "-"
    assert "\n" not in line
    assert match["ua"] == "evil\\x22 200 1 \\x22x\\x0Anext"
    assert escape("caf\u00e9") == "caf\\xE9"  # the byte received (ISO-8859-1 as http.server reads)
