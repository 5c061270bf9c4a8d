"""The shipped retry-storm alerting rules: checked and unit-tested by ``promtool``, and loaded
into a real Prometheus on loopback that scrapes the shop's real metrics at a storm's ratio.

Skipped, with the reason, only when Debian's ``prometheus`` / ``promtool`` are not installed
(CI installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from decisions.breaker import BreakerState
from runbooks import alerts
from runbooks.resilience.metrics import ClientMetrics
from sandbox.shop.metrics import ShopMetrics
from sandbox.stack import start_prometheus, stop_process

RULES = alerts.RETRY_STORM_RULES
RULE_TESTS = RULES.with_name("retry-storm.tests.yml")
SHORT_FOR = "3s"
CALLER = {"namespace": "shop", "role": "checkout"}


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


def _rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def _words(text: str) -> str:
    return " ".join(text.split())


def test_rules_file_is_shipped_with_the_alert_names_and_queries_of_runbooks_alerts() -> None:
    """One source of truth: the YAML's expressions are the runbook's queries, word for word."""
    assert alerts.RULE_FILES == (RULES,)
    rules = _rules()
    assert sorted(rules) == sorted(alerts.ALERT_NAMES)
    assert _words(rules[alerts.RETRY_STORM_ALERT]["expr"]) == alerts.RETRY_STORM_QUERY
    assert _words(rules[alerts.BREAKER_OPEN_ALERT]["expr"]) == alerts.BREAKER_OPEN_QUERY
    for rule in rules.values():
        assert rule["labels"]["runbook"] == alerts.RUNBOOK
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "description", "runbook_command"} <= set(rule["annotations"])
        assert alerts.RUNBOOK in rule["annotations"]["runbook_command"]


def test_queries_refuse_bad_windows_and_thresholds() -> None:
    assert "[90s]" in alerts.retry_ratio_query("90s")
    with pytest.raises(ValueError, match="not a PromQL duration"):
        alerts.retry_ratio_query("5 minutes")
    with pytest.raises(ValueError, match="must be positive"):
        alerts.retry_storm_query(threshold=0)


def test_promtool_check_rules_passes() -> None:
    promtool = _binary("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    """Fires above 20 % after for:, not at 15 % or 20 %, not on no or too little traffic,
    resolves once contained; breaker open (half-open probes included) fires after for:."""
    promtool = _binary("promtool")
    done = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


# --------------------------------------------------------------------------- real Prometheus


class _StormingPod:
    """A checkout pod's ``/metrics`` (the shop's and the resilience layer's real registries).

    Every scrape adds one scrape's worth of traffic, so the ratios are exact whatever the
    timing: payments storms (4 retries per call, naive 5 attempts against a dead dependency,
    breaker open), inventory retries 15 % (no storm), ledger has no traffic at all, and
    catalog has traffic but has never retried (its retries counter does not exist).
    """

    def __init__(self) -> None:
        self.shop = ShopMetrics(role="checkout", version="v1", pod="checkout-a")
        self.client = ClientMetrics()
        self.client.set_breaker_state("payments", BreakerState.OPEN)
        self.client.set_breaker_state("inventory", BreakerState.CLOSED)
        self.shop.downstream_requests.labels("ledger", "ok").inc(0)
        self.shop.downstream_retries.labels("ledger").inc(0)
        self._lock = threading.Lock()

    def scrape(self) -> bytes:
        with self._lock:
            self.shop.downstream_requests.labels("payments", "failed").inc(20)
            self.shop.downstream_retries.labels("payments").inc(80)
            self.shop.downstream_requests.labels("inventory", "ok").inc(20)
            self.shop.downstream_retries.labels("inventory").inc(3)
            self.shop.downstream_requests.labels("catalog", "ok").inc(20)
            return self.shop.render(self.client.render())


@pytest.fixture
def pod_metrics() -> Iterator[str]:
    """``host:port`` of a loopback HTTP server answering every GET with the pod's metrics."""
    pod = _StormingPod()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pod.scrape()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="pod-metrics", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _short_for_copy(folder: Path) -> Path:
    """The shipped rules with every ``for:`` shortened; expressions, labels and annotations
    untouched, so what is evaluated is the shipped expression."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            assert "for" in rule, rule["alert"]
            rule["for"] = SHORT_FOR
    copy = folder / RULES.name
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


@pytest.fixture
def prometheus(tmp_path: Path, pod_metrics: str) -> Iterator[str]:
    """A Prometheus evaluating the rules every second, scraping the pod every second."""
    binary = _binary("prometheus")
    rules = _short_for_copy(tmp_path)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "sandbox-pods",
                        "static_configs": [{"targets": [pod_metrics], "labels": CALLER}],
                    }
                ],
            }
        )
    )
    process, url = start_prometheus(
        binary,
        config,
        tmp_path / "tsdb",
        tmp_path / "prometheus.log",
    )
    try:
        yield url
    finally:
        stop_process(process)


def _get(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}{path}", params=params, timeout=5.0)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _firing(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (alert["labels"]["alertname"], alert["labels"]["dependency"]): alert
        for alert in _get(url, "/api/v1/alerts")["alerts"]
        if alert["state"] == "firing"
    }


def test_real_prometheus_fires_both_alerts_on_a_storming_pod(prometheus: str) -> None:
    wanted = {(alerts.RETRY_STORM_ALERT, "payments"), (alerts.BREAKER_OPEN_ALERT, "payments")}
    deadline = time.monotonic() + 60
    firing = _firing(prometheus)
    while not wanted <= set(firing) and time.monotonic() < deadline:
        time.sleep(0.5)
        firing = _firing(prometheus)
    assert set(firing) == wanted, f"firing after 60 s: {sorted(firing)}"

    storm = firing[(alerts.RETRY_STORM_ALERT, "payments")]
    assert storm["labels"] == {
        "alertname": alerts.RETRY_STORM_ALERT,
        "severity": "critical",
        "runbook": alerts.RUNBOOK,
        **CALLER,
        "dependency": "payments",
    }
    assert float(storm["value"]) == pytest.approx(4.0)
    assert storm["annotations"]["summary"] == (
        "Retry storm: shop/checkout retries payments at 400% of its requests"
    )
    breaker = firing[(alerts.BREAKER_OPEN_ALERT, "payments")]
    assert breaker["labels"]["severity"] == "warning"
    assert breaker["labels"]["role"] == "checkout"
    assert breaker["annotations"]["runbook_command"] == "runbooks run retry-storm"

    # both rules evaluate without error (promtool cannot see e.g. many-to-many matching errors)
    groups = _get(prometheus, "/api/v1/rules")["groups"]
    health = {
        rule["name"]: (rule["health"], rule.get("lastError", ""))
        for group in groups
        for rule in group["rules"]
    }
    assert health == {name: ("ok", "") for name in alerts.ALERT_NAMES}

    # the runbook's measurement, from the same Prometheus: inventory reads 15 %, catalog (no
    # retry yet) 0 and not "no data", ledger (no traffic) no series at all
    result = _get(prometheus, "/api/v1/query", query=alerts.RETRY_RATIO_QUERY)["result"]
    ratios = {series["metric"]["dependency"]: float(series["value"][1]) for series in result}
    assert ratios == pytest.approx({"payments": 4.0, "inventory": 0.15, "catalog": 0.0})
    for series in result:
        assert series["metric"] == {**CALLER, "dependency": series["metric"]["dependency"]}
