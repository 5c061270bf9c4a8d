"""Geo-routing parameters, plan and diff: refusals naming the input (what Route 53 validates and
moto does not), records per location with their region's health check, failover pairs, the
detection time, idempotent re-plans and the reverse diff that restores a snapshot."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from decisions.georouting import (
    TAG_TARGET,
    ChangeKind,
    GeoRoutingParams,
    LiveHealthCheck,
    Location,
    ObservedZone,
    PlanRefused,
    RecordSet,
    caller_reference,
    check_codes,
    diff_records,
    fill_check_id,
    managed,
    mismatches,
    plan_geo_routing,
)

ZONE = ObservedZone(zone_id="ZONE1", zone_name="example.com.")
BASE: dict[str, object] = {
    "hosted_zone": "example.com",
    "record_name": "api.example.com",
    "endpoints": {"us-east-1": "192.0.2.10", "eu-central-1": "192.0.2.20"},
    "countries": {"DE": "eu-central-1", "US": "us-east-1"},
    "continents": {"EU": "eu-central-1"},
    "default_region": "us-east-1",
}
COUNTRIES = {"DE", "US", "FR", "NA"}
REGIONS = {"us-east-1", "eu-central-1", "eu-west-1"}


def params(**update: object) -> GeoRoutingParams:
    return GeoRoutingParams.model_validate({**BASE, **update})


def applied(plan_params: GeoRoutingParams) -> ObservedZone:
    """Live state after a successful apply of ``plan_params``: records and checks exist."""
    plan = plan_geo_routing(plan_params, ZONE)
    checks = tuple(
        LiveHealthCheck(
            id=f"hc-{c.region}",
            caller_reference=f"{c.caller_reference}-0a1b2c3d",  # as create_health_check sends it
            tags={TAG_TARGET: plan.target},
        )
        for c in plan.health_checks
    )
    ids = {c.region: f"hc-{c.region}" for c in plan.health_checks}
    records = tuple(fill_check_id(r, ids).comparable() for r in plan.records)
    return ZONE.model_copy(update={"records": records, "health_checks": checks})


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"health_check": {"request_interval": 15}}, "request_interval must be 10 or 30"),
        ({"health_check": {"failure_threshold": 0}}, "failure_threshold must be within 1..10"),
        ({"health_check": {"failure_threshold": 11}}, "failure_threshold must be within 1..10"),
        ({"continents": {"XX": "us-east-1"}}, "'XX' is not a Route 53 continent code"),
        ({"countries": {"D1": "us-east-1"}}, "'D1' is not a two-letter ISO 3166-1"),
        ({"countries": {"de": "eu-central-1", "DE ": "us-east-1"}}, "location DE is listed twice"),
        ({"continents": {"eu": "eu-central-1", "EU": "us-east-1"}}, "location EU is listed twice"),
        ({"countries": {"FR": "eu-west-1"}}, "countries: FR is routed to eu-west-1, which has no"),
        ({"default_region": "eu-west-1"}, "default_region: * is routed to eu-west-1"),
        ({"countries": {"FR": "Frankfurt"}}, "countries.FR: 'Frankfurt' is not an AWS region"),
        ({"ttl_seconds": 86401}, "ttl_seconds"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"failover": {"us-east-1": "us-east-1"}}, "cannot be its own backup"),
        ({"failover": {"us-east-1": "eu-west-1"}}, "eu-west-1, which has no entry in endpoints"),
        ({"endpoints": {"us-east-1": "192.0.2.1", "eu-central-1": "2001:db8::1"}}, "mix IPv4"),
        ({"endpoints": {"us-east-1": "not-an-ip", "eu-central-1": "192.0.2.20"}}, "ip"),
        ({"record_name": "api example.com"}, "record_name must be a DNS name"),
        ({"hosted_zone": ""}, "hosted_zone"),
    ],
)
def test_bad_input_is_refused_naming_the_input(update: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace(".", r"\.").replace("*", r"\*")):
        params(**update)


def test_the_default_region_defaults_to_the_busiest_region_of_the_map() -> None:
    values = {k: v for k, v in BASE.items() if k != "default_region"}
    countries = {"DE": "eu-central-1", "FR": "eu-central-1", "US": "us-east-1"}
    assert GeoRoutingParams.model_validate(values | {"countries": countries}).default_region == (
        "eu-central-1"
    )
    with pytest.raises(ValidationError, match="default_region"):
        GeoRoutingParams.model_validate(values | {"countries": {}})


def test_codes_route53_knows_are_checked_against_the_known_sets() -> None:
    with pytest.raises(PlanRefused, match="countries: ZZ is not an ISO 3166-1"):
        check_codes(params(countries={"ZZ": "us-east-1"}), countries=COUNTRIES, regions=REGIONS)
    moon = params(endpoints={**BASE["endpoints"], "eu-moon-1": "192.0.2.2"})  # type: ignore[dict-item]
    with pytest.raises(PlanRefused, match="endpoints: eu-moon-1 is not a known AWS region"):
        check_codes(moon, countries=COUNTRIES, regions=REGIONS)
    check_codes(params(), countries=COUNTRIES, regions=REGIONS)  # fine


def test_first_plan_creates_a_check_per_region_and_a_record_per_location() -> None:
    plan = plan_geo_routing(params(), ZONE)
    assert plan.target == "ZONE1/api.example.com"
    assert [c.region for c in plan.health_checks] == ["eu-central-1", "us-east-1"]
    assert all(c.existing_id is None for c in plan.health_checks)
    assert (plan.creates, plan.updates, plan.deletes, plan.unchanged) == (4, 0, 0, 0)
    by_id = {r.set_identifier: r for r in plan.records}
    assert set(by_id) == {"continent-EU", "country-DE", "country-US", "default"}
    assert by_id["country-DE"].values == ("192.0.2.20",)
    assert by_id["country-DE"].health_check_region == "eu-central-1"
    assert by_id["default"].location == Location(country="*")
    assert by_id["default"].to_api()["GeoLocation"] == {"CountryCode": "*"}
    assert by_id["continent-EU"].to_api()["GeoLocation"] == {"ContinentCode": "EU"}
    assert all(r.ttl == 60 and r.type == "A" for r in plan.records)
    assert all(change.kind is ChangeKind.CREATE for change in plan.changes)
    assert all(change.to_api()["Action"] == "UPSERT" for change in plan.changes)
    assert plan.detection_seconds == 30 * 3 + 60
    assert "= 150s" in plan.detection


def test_health_check_settings_reach_route53_as_configured() -> None:
    plan = plan_geo_routing(
        params(
            health_check={"protocol": "HTTP", "path": "/healthz", "request_interval": 10},
            ttl_seconds=30,
        ),
        ZONE,
    )
    config = plan.health_checks[0].to_api()
    assert config == {
        "Type": "HTTP",
        "FullyQualifiedDomainName": "api.example.com",
        "Port": 80,
        "ResourcePath": "/healthz",
        "RequestInterval": 10,
        "FailureThreshold": 3,
        "IPAddress": "192.0.2.20",
    }
    assert plan.detection_seconds == 10 * 3 + 30


def test_a_second_plan_after_apply_changes_nothing() -> None:
    plan = plan_geo_routing(params(), applied(params()))
    assert plan.noop
    assert not plan.changes
    assert plan.unchanged == 4
    assert all(c.existing_id == f"hc-{c.region}" for c in plan.health_checks)


def test_map_changes_become_updates_and_deletes_with_live_values() -> None:
    live = applied(params())
    moved = params(countries={"DE": "us-east-1"})  # US gone, DE moved
    plan = plan_geo_routing(moved, live)
    kinds = {(c.kind, c.record.set_identifier) for c in plan.changes}
    assert kinds == {(ChangeKind.DELETE, "country-US"), (ChangeKind.UPDATE, "country-DE")}
    assert plan.changes[0].kind is ChangeKind.DELETE  # deletes first
    delete = plan.changes[0].to_api()
    assert delete["Action"] == "DELETE"
    assert delete["ResourceRecordSet"]["HealthCheckId"] == "hc-us-east-1"  # exactly as live
    update = plan.changes[1]
    assert update.action == "UPSERT"
    assert update.previous is not None
    assert update.previous.values == ("192.0.2.20",)
    assert update.record.health_check_id == "hc-us-east-1"


def test_new_settings_make_new_checks_and_the_old_ones_stale() -> None:
    live = applied(params())
    plan = plan_geo_routing(params(health_check={"request_interval": 10}), live)
    assert all(c.existing_id is None for c in plan.health_checks)
    assert set(plan.stale_health_checks) == {"hc-eu-central-1", "hc-us-east-1"}
    assert plan.updates == 4  # every record carries a new check
    assert not plan.noop


def test_caller_reference_is_stable_short_and_follows_the_settings() -> None:
    config = {"Type": "HTTPS", "RequestInterval": 30}
    one = caller_reference("Z1", "api.example.com", "us-east-1", config)
    assert one == caller_reference("Z1", "API.example.com.", "us-east-1", config)
    assert len(one) + len("-0a1b2c3d") <= 64  # the per-creation suffix still fits Route 53's 64
    assert one != caller_reference("Z1", "api.example.com", "us-east-1", {**config, "Port": 1})
    assert one != caller_reference("Z2", "api.example.com", "us-east-1", config)


def test_failover_pairs_sit_behind_the_geolocation_alias() -> None:
    p = params(
        endpoints={**BASE["endpoints"], "eu-west-1": "192.0.2.30"},  # type: ignore[dict-item]
        failover={"eu-central-1": "eu-west-1"},
    )
    plan = plan_geo_routing(p, ZONE)
    assert [c.region for c in plan.health_checks] == ["eu-central-1", "eu-west-1", "us-east-1"]
    by_id = {r.set_identifier: r for r in plan.records}
    geo = by_id["country-DE"]
    assert geo.alias_dns_name == "failover-eu-central-1.api.example.com."
    assert (geo.alias_zone_id, geo.alias_evaluate) == ("ZONE1", True)
    assert (geo.ttl, geo.health_check_region) == (None, None)
    primary, secondary = by_id["eu-central-1-primary"], by_id["eu-central-1-secondary"]
    assert (primary.failover, primary.values) == ("PRIMARY", ("192.0.2.20",))
    assert (secondary.failover, secondary.values) == ("SECONDARY", ("192.0.2.30",))
    assert primary.health_check_region == "eu-central-1"
    assert secondary.health_check_region == "eu-west-1"
    assert by_id["country-US"].values == ("192.0.2.10",)  # no pair: direct answer
    assert "PRIMARY/SECONDARY" in plan.failover_approach


def test_alias_endpoints_are_checked_by_name() -> None:
    alias = {"alias": {"dns_name": "lb-1.eu-central-1.elb.amazonaws.com", "hosted_zone_id": "Z2"}}
    p = params(endpoints={"us-east-1": "192.0.2.10", "eu-central-1": alias})
    plan = plan_geo_routing(p, ZONE)
    check = next(c for c in plan.health_checks if c.region == "eu-central-1")
    assert (check.ip, check.host) == (None, "lb-1.eu-central-1.elb.amazonaws.com")
    de = next(r for r in plan.records if r.set_identifier == "country-DE")
    assert de.to_api()["AliasTarget"]["DNSName"] == "lb-1.eu-central-1.elb.amazonaws.com."
    assert "TTL" not in de.to_api()


def test_conflicting_records_and_names_outside_the_zone_are_refused() -> None:
    simple = RecordSet(name="api.example.com.", type="A", ttl=300, values=("192.0.2.99",))
    refused = r"record_name: api\.example\.com\. has a record of type A without geolocation"
    with pytest.raises(PlanRefused, match=refused):
        plan_geo_routing(params(), ZONE.model_copy(update={"records": (simple,)}))
    cname = RecordSet(name="api.example.com.", type="CNAME", ttl=300, values=("x.example.net",))
    with pytest.raises(PlanRefused, match="has a record of type CNAME"):
        plan_geo_routing(params(), ZONE.model_copy(update={"records": (cname,)}))
    with pytest.raises(PlanRefused, match=r"record_name: api\.example\.org is not in hosted zone"):
        plan_geo_routing(params(record_name="api.example.org"), ZONE)


def test_restoring_a_snapshot_is_the_reverse_diff() -> None:
    before = applied(params()).records
    after = applied(params(countries={"DE": "us-east-1", "FR": "eu-central-1"})).records
    restore = diff_records(before, after)
    assert {(c.kind, c.record.set_identifier) for c in restore.changes} == {
        (ChangeKind.DELETE, "country-FR"),
        (ChangeKind.CREATE, "country-US"),
        (ChangeKind.UPDATE, "country-DE"),
    }
    assert mismatches(before, after)
    assert not mismatches(before, before)


def test_records_round_trip_through_the_api_shape() -> None:
    for record in applied(params()).records:
        assert RecordSet.from_api(record.to_api()) == record
    assert managed(
        RecordSet(name="failover-us-east-1.api.example.com.", type="A"), "api.example.com"
    )
    assert not managed(RecordSet(name="other.example.com.", type="A"), "api.example.com")
    assert not managed(RecordSet(name="api.example.com.", type="TXT"), "api.example.com")
