"""The ``geo-routing`` flow on the sandbox's moto server (Route 53 over its real wire protocol).

Each test makes its own hosted zone. Faults are injected on the wire, not in our code: the
flow's ``AwsTarget`` points at a small loopback proxy in front of moto (:class:`FaultProxy`),
which forwards every request and, when told, answers one kind of request with a Route 53 error
(a change batch rejected for a conflicting record) or lets a change batch through and then
plays a concurrent writer that edits one of the records (so the read-back finds a mismatch).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from loopback_proxy import LoopbackProxy
from prefect_reads import artifact_data, event_names
from pydantic import ValidationError

from blocks.aws import AwsTarget
from decisions.georouting import CALLER_REFERENCE_PREFIX, TAG_TARGET, GeoRoutingParams
from flows.geo_routing import GeoRoutingResult, geo_routing
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome

CHANGE_BATCH = re.compile(r"^POST /2013-04-01/hostedzone/[^/]+/rrset/?$")
GET_CHANGE = re.compile(r"^GET /2013-04-01/change/[^/]+$")
ROUTING_MAP = {"DE": "eu-central-1", "FR": "eu-central-1", "US": "us-east-1", "JP": "us-east-1"}
ENDPOINTS = {"us-east-1": "192.0.2.10", "eu-central-1": "192.0.2.20", "eu-west-1": "192.0.2.30"}


@dataclass
class Fault:
    """For the next ``times`` requests matching ``pattern`` (``METHOD /path``): answer with
    ``status`` and an AWS error body, or forward, then call ``after`` and apply ``replace`` to
    the answer's body."""

    pattern: re.Pattern[str]
    status: int | None = None
    code: str = ""
    message: str = ""
    after: Callable[[], None] | None = None
    replace: tuple[bytes, bytes] | None = None
    times: int = 1


class FaultProxy(LoopbackProxy):
    """Answers or bends the requests ``faults`` match; forwards the others."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.faults: list[Fault] = []

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        line = f"{request.command} {request.path.split('?')[0]}"
        fault = next((f for f in self.faults if f.pattern.match(line)), None)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            if fault.status is not None:
                return self.reply(request, fault.status, _aws_error(fault.code, fault.message))
        status, content, headers = self.forward(request, body)
        if fault is not None and fault.after is not None:
            fault.after()
        if fault is not None and fault.replace is not None:
            content = content.replace(*fault.replace)
        return self.reply(request, status, content, headers)


def _aws_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fault-proxy</RequestId></ErrorResponse>"
    ).encode()


def _aws(endpoint: str) -> AwsTarget:
    return AwsTarget(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=endpoint,
        max_attempts=1,  # a fault answers once; botocore retries would sleep for real
    )


@dataclass
class Zone:
    id: str
    name: str
    client: Any  # a boto3 route53 client straight to moto, for setup and checks
    aws: AwsTarget  # through the fault proxy
    proxy: FaultProxy

    def params(self, **update: Any) -> GeoRoutingParams:
        values: dict[str, Any] = {
            "hosted_zone": self.name,
            "record_name": f"api.{self.name}",
            "endpoints": dict(ENDPOINTS),
            "countries": dict(ROUTING_MAP),
            "continents": {"EU": "eu-central-1"},
            "default_region": "us-east-1",
            "health_check": {"request_interval": 10, "failure_threshold": 2},
            "ttl_seconds": 30,
            "insync_timeout_seconds": 5,
        }
        return GeoRoutingParams.model_validate(values | update)

    def records(self) -> dict[str, dict[str, Any]]:
        """The zone's records at api.<zone> by set identifier (API shape)."""
        pages = self.client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.id
        )
        return {
            r["SetIdentifier"]: r
            for page in pages
            for r in page["ResourceRecordSets"]
            if "SetIdentifier" in r
        }

    def health_checks(self) -> dict[str, dict[str, Any]]:
        """This zone's runbook health checks by id (tagged with the zone's target)."""
        mine = {}
        for hc in self.client.list_health_checks()["HealthChecks"]:
            if not hc["CallerReference"].startswith(CALLER_REFERENCE_PREFIX):
                continue
            tags = self.client.list_tags_for_resource(
                ResourceType="healthcheck", ResourceId=hc["Id"]
            )
            values = {t["Key"]: t["Value"] for t in tags["ResourceTagSet"]["Tags"]}
            if values.get(TAG_TARGET, "").startswith(f"{self.id}/"):
                mine[hc["Id"]] = hc | {"Tags": values}
        return mine


@pytest.fixture
def zone(sandbox, prefect_server) -> Iterator[Zone]:
    import boto3

    moto = sandbox.endpoints["moto"]
    client = boto3.client(
        "route53",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=moto,
    )
    name = f"geo-{uuid.uuid4().hex[:8]}.example"
    created = client.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]
    proxy = FaultProxy(moto)
    try:
        yield Zone(created["Id"].removeprefix("/hostedzone/"), name, client, _aws(proxy.url), proxy)
    finally:
        proxy.close()


def _run(zone: Zone, params: GeoRoutingParams) -> GeoRoutingResult:
    return geo_routing(params=params, aws=zone.aws)


def test_records_and_health_checks_are_created_as_planned_then_a_rerun_changes_nothing(
    zone: Zone,
) -> None:
    result = _run(zone, zone.params())
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert (result.creates, result.updates, result.deletes) == (6, 0, 0)
    assert result.detection_seconds == 10 * 2 + 30
    assert result.plan is not None
    assert "10s interval x 2 failures + 30s TTL = 50s" in result.plan.detection

    records = zone.records()
    assert set(records) == {
        "continent-EU",
        "country-DE",
        "country-FR",
        "country-JP",
        "country-US",
        "default",
    }
    checks = zone.health_checks()
    assert set(checks) == set(result.health_checks.values())
    assert set(result.health_checks) == {"eu-central-1", "us-east-1"}
    by_region = {hc["Tags"]["runbooks:region"]: hc for hc in checks.values()}
    for region, hc in by_region.items():
        config = hc["HealthCheckConfig"]
        assert config["IPAddress"] == ENDPOINTS[region]
        assert (config["RequestInterval"], config["FailureThreshold"]) == (10, 2)
        assert (config["Type"], config["Port"], config["ResourcePath"]) == ("HTTPS", 443, "/health")
    de = records["country-DE"]
    assert de["GeoLocation"] == {"CountryCode": "DE"}
    assert de["ResourceRecords"] == [{"Value": "192.0.2.20"}]
    assert de["TTL"] == 30
    assert de["HealthCheckId"] == by_region["eu-central-1"]["Id"]
    assert records["default"]["GeoLocation"] == {"CountryCode": "*"}
    assert records["default"]["HealthCheckId"] == by_region["us-east-1"]["Id"]

    assert event_names("geo-routing", result.target) == ["runbooks.geo-routing.applied"]
    plan = artifact_data("geo-routing", "plan", result.target)
    assert "detection" in plan
    assert "create: UPSERT api." in plan

    again = _run(zone, zone.params())
    assert again.outcome is Outcome.NO_CHANGE, again.reason
    assert (again.creates, again.updates, again.deletes, again.unchanged) == (0, 0, 0, 6)
    assert again.health_checks_created == ()
    assert zone.health_checks().keys() == checks.keys()
    assert zone.records() == records


def test_dry_run_publishes_the_plan_and_changes_nothing(zone: Zone) -> None:
    result = _run(zone, zone.params(dry_run=True))
    assert result.outcome is Outcome.DRY_RUN
    assert result.creates == 6
    assert zone.records() == {}
    assert zone.health_checks() == {}


def test_a_changed_map_and_settings_update_in_one_batch_and_drop_stale_checks(zone: Zone) -> None:
    first = _run(zone, zone.params())
    assert first.outcome is Outcome.SUCCEEDED, first.reason
    moved = {"DE": "eu-west-1", "US": "us-east-1"}  # FR and JP gone, DE moved
    second = _run(zone, zone.params(hosted_zone=zone.id, countries=moved, ttl_seconds=60))
    assert second.outcome is Outcome.SUCCEEDED, second.reason
    assert (second.creates, second.updates, second.deletes) == (0, 4, 2)
    assert len(second.health_checks_created) == 1  # eu-west-1's; the others are reused
    records = zone.records()
    assert set(records) == {"continent-EU", "country-DE", "country-US", "default"}
    assert records["country-DE"]["ResourceRecords"] == [{"Value": "192.0.2.30"}]
    assert all(r["TTL"] == 60 for r in records.values())

    third = _run(zone, zone.params(countries=moved, ttl_seconds=60, health_check={"path": "/hz"}))
    assert third.outcome is Outcome.SUCCEEDED, third.reason
    assert len(third.health_checks_created) == 3
    assert set(third.health_checks_deleted) == set(second.health_checks.values())
    assert set(zone.health_checks()) == set(third.health_checks_created)


def test_failover_pairs_are_created_behind_the_geolocation_records(zone: Zone) -> None:
    result = _run(zone, zone.params(failover={"eu-central-1": "eu-west-1"}))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    records = zone.records()
    pair = f"failover-eu-central-1.api.{zone.name}."
    assert records["country-DE"]["AliasTarget"]["DNSName"] == pair
    assert records["eu-central-1-primary"]["Failover"] == "PRIMARY"
    assert records["eu-central-1-secondary"]["ResourceRecords"] == [{"Value": "192.0.2.30"}]
    assert records["eu-central-1-secondary"]["HealthCheckId"] == result.health_checks["eu-west-1"]
    assert _run(zone, zone.params(failover={"eu-central-1": "eu-west-1"})).outcome is (
        Outcome.NO_CHANGE
    )


def test_a_read_back_mismatch_restores_the_previous_records(zone: Zone) -> None:
    first = _run(zone, zone.params())
    assert first.outcome is Outcome.SUCCEEDED, first.reason
    before, checks_before = zone.records(), zone.health_checks()

    def concurrent_writer() -> None:  # someone edits a record right after our batch
        record = zone.records()["country-US"]
        record["ResourceRecords"] = [{"Value": "198.51.100.66"}]
        zone.client.change_resource_record_sets(
            HostedZoneId=zone.id,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]},
        )

    zone.proxy.faults.append(Fault(CHANGE_BATCH, after=concurrent_writer))
    changed = zone.params(
        countries={"DE": "us-east-1", "US": "us-east-1", "BR": "eu-west-1"},
        health_check={"request_interval": 30},
    )
    started = time.monotonic()
    result = _run(zone, changed)
    assert result.outcome is Outcome.ROLLED_BACK, result.reason
    assert "VerificationFailed" in result.reason
    assert "198.51.100.66" in result.reason
    assert result.restored
    assert len(result.health_checks_deleted) == 3  # the new interval made new checks
    assert zone.records() == before
    assert zone.health_checks().keys() == checks_before.keys()
    assert time.monotonic() - started < 30
    rolled_back = "runbooks.geo-routing.rolled-back"
    assert event_names("geo-routing", result.target, until=rolled_back)[0] == rolled_back
    steps = [entry.step for entry in result.timeline]
    assert steps.index("change") < steps.index("verify") < steps.index("restore")


def test_a_rejected_change_batch_deletes_the_new_health_checks(zone: Zone) -> None:
    conflict = (
        f"RRSet of type A with DNS name api.{zone.name}. is not permitted because a conflicting "
        "RRSet of type CNAME with the same DNS name already exists"
    )
    zone.proxy.faults.append(
        Fault(CHANGE_BATCH, status=400, code="InvalidChangeBatch", message=conflict)
    )
    result = _run(zone, zone.params())
    assert result.outcome is Outcome.ROLLED_BACK
    assert "conflicting RRSet of type CNAME" in result.reason
    assert not result.restored  # nothing was written
    assert len(result.health_checks_deleted) == 2
    assert zone.records() == {}
    assert zone.health_checks() == {}


def test_a_change_never_in_sync_is_rolled_back(zone: Zone) -> None:
    first = _run(zone, zone.params())
    assert first.outcome is Outcome.SUCCEEDED, first.reason
    before = zone.records()
    # the next two GetChange answers say PENDING: the whole (0.5 s) wait of the apply
    zone.proxy.faults.append(Fault(GET_CHANGE, replace=(b"INSYNC", b"PENDING"), times=2))
    result = _run(zone, zone.params(countries={"DE": "us-east-1"}, insync_timeout_seconds=0.5))
    assert result.outcome is Outcome.ROLLED_BACK
    assert "ChangeNotInSync" in result.reason
    assert "still PENDING after 0.5s" in result.reason
    assert result.restored
    assert result.health_checks_deleted == ()  # the checks were reused, none created
    assert zone.records() == before


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"health_check": {"request_interval": 15}}, "request_interval must be 10 or 30"),
        ({"health_check": {"failure_threshold": 11}}, "failure_threshold must be within 1..10"),
        ({"continents": {"EU": "eu-central-1", "XY": "us-east-1"}}, "'XY' is not a Route 53"),
        ({"countries": {"DE": "eu-central-1", "de": "us-east-1"}}, "location DE is listed twice"),
    ],
)
def test_invalid_parameters_are_refused_before_any_call(
    zone: Zone, update: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        zone.params(**update)
    values = zone.params().model_dump(mode="json") | update
    with pytest.raises(Exception, match=re.escape(named)):  # through Prefect's validation
        geo_routing(params=values, aws=zone.aws)
    assert zone.records() == {}
    assert zone.health_checks() == {}


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"countries": {"ZZ": "us-east-1"}}, "countries: ZZ is not an ISO"),
        (
            {"endpoints": ENDPOINTS | {"eu-moon-1": "192.0.2.40"}},
            "endpoints: eu-moon-1 is not a known AWS region code",
        ),
        ({"hosted_zone": "nope.example"}, "hosted_zone: no hosted zone named"),
        ({"hosted_zone": "ZNOSUCHZONE1"}, "hosted_zone: no hosted zone with id"),
        ({"record_name": "api.other.example"}, "record_name: api.other"),
    ],
)
def test_unknown_codes_and_zones_are_refused_naming_the_input(
    zone: Zone, update: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(named)):
        _run(zone, zone.params(**update))
    assert zone.records() == {}
    assert zone.health_checks() == {}
