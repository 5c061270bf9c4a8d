"""The geo-routing runbook's parameters, plan and record diff. Pure: live state in, frozen plan out.

What the runbook builds for one record name (``api.example.com``) in one hosted zone:

- one Route 53 health check per region in use, identified by a key derived from zone, record,
  region and check settings (:func:`caller_reference`), sent as the ``CallerReference`` with a
  short random suffix per creation. Why the suffix: Route 53 answers a reused reference of a
  *deleted* check with ``HealthCheckAlreadyExists`` forever, so a fixed reference would make a
  re-run after a rollback (which deletes the checks it created) fail; botocore's retries of one
  create resend the same suffix, so a retried create still never makes a second check, and a
  re-run finds its checks by the key (:func:`reference_key`). Settings changes make a new key,
  hence a new check (Route 53 cannot change ``RequestInterval`` in place); the old one is
  *stale* and is deleted once the new records are verified;
- one geolocation record per country and continent of the routing map plus the default
  (``CountryCode: *``) record, ``SetIdentifier`` ``country-DE`` / ``continent-EU`` /
  ``default``, each pointing at its region's endpoint and carrying that region's health check;
- with a failover pair (region -> backup), the locations of that region get an alias record to
  ``failover-<region>.<record>``, a PRIMARY/SECONDARY failover pair whose members carry the
  health checks of the region and of its backup. Why this shape: a geolocation record can hold
  only one answer; nesting failover under an alias with ``EvaluateTargetHealth`` is how Route 53
  documents combining routing policies, and it keeps one place (the pair) to fail over.

The record name belongs to this runbook: every geolocation record at it and every failover
record at ``failover-*.<record>`` is *managed* (compared, updated, deleted). A record there that
the runbook would never write (a simple A record, a CNAME, a weighted set) conflicts with
geolocation routing, so the plan refuses (:class:`PlanRefused`) instead of deleting it.

Deletes send the live values, so Route 53 refuses the batch when someone changed a record since
we read it (optimistic concurrency). New and changed records are ``UPSERT``s: ``CREATE`` would
add the same guard for new names, but moto (the sandbox) refuses to CREATE any record that an
earlier CREATE in its journal made, even after it was deleted, so a map that drops then re-adds
a country would fail there; the flow's re-read of the records under the lock covers concurrent
edits instead. Restoring after a failure is the same diff in reverse: :func:`diff_records` from
the live records back to the pre-apply snapshot.

Failover detection time (DESIGN.md): Route 53 needs ``FailureThreshold`` failed checks
``RequestInterval`` seconds apart before it stops answering with a region, and resolvers keep
the old answer for up to ``TTL``: about ``interval x threshold + TTL`` seconds.

What Route 53 validates and moto does not is validated here, before any AWS call: interval in
{10, 30}, threshold 1..10, continent codes, country codes and AWS region codes
(:func:`check_codes`, given the known sets), duplicate locations, endpoints for every region.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RUNBOOK = "geo-routing"
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "OC", "NA", "SA"})
"""Route 53's continent codes (GeoLocation.ContinentCode)."""
DEFAULT_LOCATION = "*"
CALLER_REFERENCE_PREFIX = "runbooks-geo-"
TAG_TARGET = "runbooks:target"
TAG_REGION = "runbooks:region"
TAG_RUNBOOK = "runbooks:runbook"

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_ZONE_ID = re.compile(r"^(?:/hostedzone/)?[A-Z0-9]{1,32}$")


class PlanRefused(ValueError):
    """Input or live state the runbook must not act on; the message says what to fix."""


class Protocol(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"


class HealthCheckSettings(BaseModel):
    """How Route 53 checks each region's endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = Field(Protocol.HTTPS, description="HTTP or HTTPS.")
    port: int | None = Field(None, ge=1, le=65535, description="Empty: 80 for HTTP, 443 HTTPS.")
    path: str = Field("/health", description="Path (and query) Route 53 requests.")
    request_interval: int = Field(
        30, description="Seconds between checks: 10 (fast, costs more) or 30."
    )
    failure_threshold: int = Field(3, description="Consecutive failures before unhealthy: 1..10.")

    @field_validator("request_interval")
    @classmethod
    def _interval(cls, value: int) -> int:
        if value not in (10, 30):
            raise ValueError(
                f"request_interval must be 10 or 30 seconds (the only values Route 53 accepts), "
                f"got {value}"
            )
        return value

    @field_validator("failure_threshold")
    @classmethod
    def _threshold(cls, value: int) -> int:
        if not 1 <= value <= 10:
            raise ValueError(f"failure_threshold must be within 1..10 (Route 53), got {value}")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or len(value) > 255 or any(c.isspace() for c in value):
            raise ValueError(
                f"path must start with '/', hold no spaces and be at most 255 characters, "
                f"got {value!r}"
            )
        return value

    @property
    def effective_port(self) -> int:
        return self.port or (443 if self.protocol is Protocol.HTTPS else 80)


class AliasEndpoint(BaseModel):
    """An alias target: a load balancer, CloudFront distribution or other Route 53 name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dns_name: str = Field(description="The target's DNS name, e.g. my-lb-1.eu-west-1.elb...")
    hosted_zone_id: str = Field(description="The target's hosted zone id (not ours).")
    evaluate_target_health: bool = True

    @field_validator("dns_name")
    @classmethod
    def _dns(cls, value: str) -> str:
        return check_dns_name(value, "dns_name")

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if not _ZONE_ID.match(value):
            raise ValueError(f"hosted_zone_id must look like Z2FDTNDATAQYW2, got {value!r}")
        return value.removeprefix("/hostedzone/")


class Endpoint(BaseModel):
    """Where a region answers: an IP address (A or AAAA record) or an alias target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    alias: AliasEndpoint | None = None
    health_check_host: str | None = Field(
        None,
        description="Host name Route 53 sends (Host header, TLS SNI); empty: the record name "
        "for an IP, the alias's DNS name for an alias.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_ip(cls, value: Any) -> Any:
        if isinstance(value, str):  # endpoints.eu-west-1=192.0.2.10
            return {"ip": value}
        return value

    @field_validator("health_check_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else check_dns_name(value, "health_check_host")

    @model_validator(mode="after")
    def _exactly_one(self) -> Endpoint:
        if (self.ip is None) == (self.alias is None):
            raise ValueError("an endpoint needs exactly one of ip or alias")
        return self

    @property
    def record_type(self) -> str:
        return "AAAA" if isinstance(self.ip, ipaddress.IPv6Address) else "A"


class GeoRoutingParams(BaseModel):
    """Parameters of the ``geo-routing`` runbook (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hosted_zone: str = Field(description="Hosted zone id (Z0123...) or name (example.com).")
    record_name: str = Field(description="The name to route, in the zone: api.example.com.")
    endpoints: dict[str, Endpoint] = Field(
        description="AWS region -> its endpoint: an IP address, or an alias target."
    )
    countries: dict[str, str] = Field(
        default_factory=dict,
        description="ISO 3166-1 alpha-2 country code -> region (select-regions' routing map).",
    )
    continents: dict[str, str] = Field(
        default_factory=dict,
        description="Continent code (AF AN AS EU OC NA SA) -> region, for unlisted countries.",
    )
    default_region: str = Field(
        description="Region of the default (*) record, for everyone else; empty: the region "
        "most countries are routed to."
    )
    health_check: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    ttl_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description="TTL of the records; part of the failover time, so keep it short.",
    )
    failover: dict[str, str] = Field(
        default_factory=dict,
        description="Region -> backup region: its locations fail over to the backup.",
    )
    insync_timeout_seconds: float = Field(
        300, gt=0, le=3600, description="How long to wait for Route 53 to report INSYNC."
    )
    dry_run: bool = Field(False, description="Plan and publish the plan only.")

    @model_validator(mode="before")
    @classmethod
    def _default_region_from_map(cls, data: Any) -> Any:
        """Chaining select-regions: its routing map has no default; take its busiest region."""
        if isinstance(data, Mapping) and not data.get("default_region"):
            countries = data.get("countries")
            if isinstance(countries, Mapping) and countries:
                counts = Counter(str(region).strip() for region in countries.values())
                busiest = min(counts, key=lambda region: (-counts[region], region))
                return {**data, "default_region": busiest}
        return data

    @field_validator("record_name")
    @classmethod
    def _record(cls, value: str) -> str:
        return check_dns_name(value, "record_name")

    @field_validator("hosted_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("hosted_zone must be a zone id or a zone name")
        return value if _ZONE_ID.match(value) else check_dns_name(value, "hosted_zone")

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, Endpoint]) -> dict[str, Endpoint]:
        if not value:
            raise ValueError("endpoints needs at least one region -> endpoint")
        for region in value:
            check_region_shape(region, "endpoints")
        types = {endpoint.record_type for endpoint in value.values()}
        if len(types) > 1:
            raise ValueError(
                "endpoints mix IPv4 and IPv6 addresses; a geolocation record set has one type, "
                "so give every region the same kind (IPv4 or alias, or IPv6 for all)"
            )
        return value

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: dict[str, str]) -> dict[str, str]:
        return _location_map(
            value,
            "countries",
            lambda code: bool(_COUNTRY.match(code)),
            "a two-letter ISO 3166-1 country code",
        )

    @field_validator("continents")
    @classmethod
    def _continents(cls, value: dict[str, str]) -> dict[str, str]:
        return _location_map(
            value,
            "continents",
            CONTINENTS.__contains__,
            f"a Route 53 continent code (one of {', '.join(sorted(CONTINENTS))})",
        )

    @field_validator("default_region")
    @classmethod
    def _default(cls, value: str) -> str:
        return check_region_shape(value, "default_region")

    @field_validator("failover")
    @classmethod
    def _failover(cls, value: dict[str, str]) -> dict[str, str]:
        return {
            check_region_shape(region, "failover"): check_region_shape(backup, f"failover.{region}")
            for region, backup in value.items()
        }

    @model_validator(mode="after")
    def _regions_have_endpoints(self) -> GeoRoutingParams:
        for field, location, region in self.region_uses():
            if region not in self.endpoints:
                raise ValueError(
                    f"{field}: {location} is routed to {region}, which has no entry in endpoints"
                )
        for region, backup in self.failover.items():
            if region == backup:
                raise ValueError(f"failover.{region}: a region cannot be its own backup")
            if region not in self.used_regions_without_backups():
                raise ValueError(f"failover.{region}: no location is routed to {region}")
        return self

    def region_uses(self) -> list[tuple[str, str, str]]:
        """Every (field, location or key, region) naming a region, for error messages."""
        uses = [("countries", code, region) for code, region in self.countries.items()]
        uses += [("continents", code, region) for code, region in self.continents.items()]
        uses.append(("default_region", DEFAULT_LOCATION, self.default_region))
        for region, backup in self.failover.items():
            uses += [("failover", region, region), ("failover", f"{region} (backup)", backup)]
        return uses

    def used_regions_without_backups(self) -> set[str]:
        return {*self.countries.values(), *self.continents.values(), self.default_region}

    def locations(self) -> list[tuple[Location, str]]:
        """(location, region) for every record, default last."""
        found = [(Location(continent=c), r) for c, r in sorted(self.continents.items())]
        found += [(Location(country=c), r) for c, r in sorted(self.countries.items())]
        found.append((Location(country=DEFAULT_LOCATION), self.default_region))
        return found


def _location_map(
    value: Mapping[str, str], field: str, valid: Callable[[str], bool], what: str
) -> dict[str, str]:
    """Location codes upper-cased and checked, each once (``de`` and ``DE`` are one location,
    and Route 53 refuses a location twice); regions checked for shape."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, region in value.items():
        code = key.strip().upper()
        if not valid(code):
            raise ValueError(f"{key!r} is not {what}")
        if code in seen:
            raise ValueError(f"location {code} is listed twice ({seen[code]!r} and {key!r})")
        seen[code] = key
        out[code] = check_region_shape(region, f"{field}.{key}")
    return out


def check_dns_name(value: str, field: str) -> str:
    """``value`` lowercased without its trailing dot, if it is a DNS name; else ValueError."""
    name = value.strip().lower().removesuffix(".")
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise ValueError(f"{field} must be a DNS name like api.example.com, got {value!r}")
    return name


def check_region_shape(value: str, field: str) -> str:
    region = value.strip()
    if not _REGION.match(region):
        raise ValueError(f"{field}: {value!r} is not an AWS region code like eu-west-1")
    return region


def check_codes(
    params: GeoRoutingParams, *, countries: Collection[str], regions: Collection[str]
) -> None:
    """Refuse country codes Route 53 does not know and unknown AWS regions, naming the input.

    ``countries`` and ``regions`` are the known sets (ISO 3166-1 country codes, AWS region
    codes); the flow loads them, so this stays pure.
    """
    for code in params.countries:
        if code not in countries:
            raise PlanRefused(f"countries: {code} is not an ISO 3166-1 alpha-2 country code")
    known = set(regions)
    for region in params.endpoints:
        if region not in known:
            raise PlanRefused(f"endpoints: {region} is not a known AWS region code")
    for field, location, region in params.region_uses():
        if region not in known:
            raise PlanRefused(f"{field}: {location} -> {region} is not a known AWS region code")


# -- records ------------------------------------------------------------------------------------


class Location(BaseModel):
    """A Route 53 geolocation: a continent, a country (``*`` = default), or a subdivision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    continent: str | None = None
    country: str | None = None
    subdivision: str | None = None

    @property
    def set_identifier(self) -> str:
        if self.continent:
            return f"continent-{self.continent}"
        if self.country == DEFAULT_LOCATION:
            return "default"
        suffix = f"-{self.subdivision}" if self.subdivision else ""
        return f"country-{self.country}{suffix}"

    def to_api(self) -> dict[str, str]:
        out = {"ContinentCode": self.continent, "CountryCode": self.country}
        out["SubdivisionCode"] = self.subdivision
        return {k: v for k, v in out.items() if v is not None}

    def __str__(self) -> str:
        if self.continent:
            return f"continent {self.continent}"
        if self.country == DEFAULT_LOCATION:
            return "default (*)"
        return f"country {self.country}" + (f"-{self.subdivision}" if self.subdivision else "")


class RecordSet(BaseModel):
    """One resource record set as the runbook compares it: names with a trailing dot,
    lowercase; values sorted. ``health_check_region`` says whose check a planned record
    carries when the check does not exist yet (its id comes at apply)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    set_identifier: str | None = None
    location: Location | None = None
    failover: Literal["PRIMARY", "SECONDARY"] | None = None
    ttl: int | None = None
    values: tuple[str, ...] = ()
    alias_dns_name: str | None = None
    alias_zone_id: str | None = None
    alias_evaluate: bool | None = None
    health_check_id: str | None = None
    health_check_region: str | None = Field(None, exclude=True)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.name, self.type, self.set_identifier)

    def comparable(self) -> RecordSet:
        return self.model_copy(update={"health_check_region": None})

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Name": self.name, "Type": self.type}
        if self.set_identifier is not None:
            out["SetIdentifier"] = self.set_identifier
        if self.location is not None:
            out["GeoLocation"] = self.location.to_api()
        if self.failover is not None:
            out["Failover"] = self.failover
        if self.alias_dns_name is not None:
            out["AliasTarget"] = {
                "HostedZoneId": self.alias_zone_id,
                "DNSName": self.alias_dns_name,
                "EvaluateTargetHealth": bool(self.alias_evaluate),
            }
        else:
            out["TTL"] = self.ttl
            out["ResourceRecords"] = [{"Value": value} for value in self.values]
        if self.health_check_id is not None:
            out["HealthCheckId"] = self.health_check_id
        return out

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RecordSet:
        geo = data.get("GeoLocation")
        alias = data.get("AliasTarget")
        return cls(
            name=_fqdn(data["Name"]),
            type=data["Type"],
            set_identifier=data.get("SetIdentifier"),
            location=Location(
                continent=geo.get("ContinentCode"),
                country=geo.get("CountryCode"),
                subdivision=geo.get("SubdivisionCode"),
            )
            if geo
            else None,
            failover=data.get("Failover"),
            ttl=int(data["TTL"]) if data.get("TTL") is not None else None,
            values=tuple(sorted(str(r["Value"]) for r in data.get("ResourceRecords") or ())),
            alias_dns_name=_fqdn(alias["DNSName"]) if alias else None,
            alias_zone_id=alias.get("HostedZoneId") if alias else None,
            alias_evaluate=bool(alias.get("EvaluateTargetHealth")) if alias else None,
            health_check_id=data.get("HealthCheckId"),
        )

    def __str__(self) -> str:
        where = f" [{self.set_identifier}]" if self.set_identifier else ""
        policy = f" {self.location}" if self.location else ""
        policy += f" {self.failover}" if self.failover else ""
        if self.alias_dns_name:
            answer = f"alias {self.alias_dns_name}"
        else:
            answer = f"{', '.join(self.values)} ttl {self.ttl}"
        check = ""
        if self.health_check_id:
            check = f", health check {self.health_check_id}"
        elif self.health_check_region:
            check = f", health check of {self.health_check_region} (new)"
        return f"{self.name} {self.type}{where}{policy} -> {answer}{check}"


def _fqdn(name: str) -> str:
    return name.strip().lower().removesuffix(".") + "."


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class RecordChange(BaseModel):
    """One entry of the change batch, with the live record it replaces (for the audit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ChangeKind
    record: RecordSet
    previous: RecordSet | None = None

    @property
    def action(self) -> str:
        return "DELETE" if self.kind is ChangeKind.DELETE else "UPSERT"  # see the module doc

    def to_api(self) -> dict[str, Any]:
        return {"Action": self.action, "ResourceRecordSet": self.record.to_api()}

    def __str__(self) -> str:
        was = f" (was: {self.previous})" if self.previous is not None else ""
        return f"{self.kind.value}: {self.action} {self.record}{was}"


class RecordDiff(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    changes: tuple[RecordChange, ...] = ()
    unchanged: int = 0

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for change in self.changes if change.kind is kind)


def diff_records(desired: Iterable[RecordSet], live: Iterable[RecordSet]) -> RecordDiff:
    """The changes that turn ``live`` into ``desired``: deletes first, then creates, updates.

    A planned record whose health check does not exist yet (``health_check_region`` set, no
    id) always differs from live: it will carry a new check. Deletes come first because a batch
    is applied in order by some implementations, and a record changing type (A -> AAAA) keeps
    its set identifier.
    """
    live_by_key = {record.key: record for record in live}
    want = {record.key: record for record in desired}
    deletes = [
        RecordChange(kind=ChangeKind.DELETE, record=record)
        for key, record in sorted(live_by_key.items(), key=_sort_key)
        if key not in want
    ]
    creates: list[RecordChange] = []
    updates: list[RecordChange] = []
    unchanged = 0
    for key, record in sorted(want.items(), key=_sort_key):
        current = live_by_key.get(key)
        if current is None:
            creates.append(RecordChange(kind=ChangeKind.CREATE, record=record))
        elif current.comparable() != record.comparable() or (
            record.health_check_region and record.health_check_id is None
        ):
            updates.append(RecordChange(kind=ChangeKind.UPDATE, record=record, previous=current))
        else:
            unchanged += 1
    return RecordDiff(changes=(*deletes, *creates, *updates), unchanged=unchanged)


def _sort_key(item: tuple[tuple[str, str, str | None], RecordSet]) -> tuple[str, str, str]:
    name, type_, ident = item[0]
    return (name, type_, ident or "")


def managed(record: RecordSet, record_name: str) -> bool:
    """Whether a live record is at a name this runbook manages (the record or its pairs)."""
    fqdn = _fqdn(record_name)
    at_pair = record.name.startswith("failover-") and record.name.endswith("." + fqdn)
    return (record.name == fqdn or at_pair) and record.type in ("A", "AAAA", "CNAME")


def mismatches(expected: Iterable[RecordSet], live: Iterable[RecordSet]) -> list[str]:
    """Sentences naming every difference between the records we wrote and what reads back."""
    diff = diff_records(expected, live)
    found = []
    for change in diff.changes:
        if change.kind is ChangeKind.DELETE:
            found.append(f"unexpected {change.record}")
        elif change.kind is ChangeKind.CREATE:
            found.append(f"missing {change.record}")
        else:
            found.append(f"{change.previous} instead of {change.record}")
    return found


# -- health checks ------------------------------------------------------------------------------


class LiveHealthCheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    caller_reference: str
    tags: dict[str, str] = Field(default_factory=dict)


class HealthCheckPlan(BaseModel):
    """One region's health check: its settings, reference, and whether it exists already."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str
    caller_reference: str
    protocol: Protocol
    ip: str | None
    host: str
    port: int
    path: str
    request_interval: int
    failure_threshold: int
    existing_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Type": self.protocol.value,
            "FullyQualifiedDomainName": self.host,
            "Port": self.port,
            "ResourcePath": self.path,
            "RequestInterval": self.request_interval,
            "FailureThreshold": self.failure_threshold,
        }
        if self.ip is not None:
            config["IPAddress"] = self.ip
        if self.protocol is Protocol.HTTPS:
            config["EnableSNI"] = True
        return config

    def tags(self, target: str, record_name: str) -> dict[str, str]:
        return {
            "Name": f"{record_name} {self.region}",
            TAG_RUNBOOK: RUNBOOK,
            TAG_TARGET: target,
            TAG_REGION: self.region,
        }

    def __str__(self) -> str:
        what = f"reuse {self.existing_id}" if self.existing_id else "create"
        where = f"{self.ip} ({self.host})" if self.ip else self.host
        return (
            f"{self.region}: {what}: {self.protocol.value} {where}:{self.port}{self.path} every "
            f"{self.request_interval}s, unhealthy after {self.failure_threshold} failures"
        )


def caller_reference(zone_id: str, record_name: str, region: str, config: Mapping[str, Any]) -> str:
    """The idempotency key of a region's health check (at most 64 characters, as Route 53 asks)."""
    material = json.dumps(
        {"zone": zone_id, "record": _fqdn(record_name), "region": region, "config": config},
        sort_keys=True,
    )
    return CALLER_REFERENCE_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:40]


def reference_key(reference: str) -> str:
    """The key part of a live ``CallerReference`` (the per-creation suffix dropped)."""
    return reference[: len(CALLER_REFERENCE_PREFIX) + 40]


# -- the plan -----------------------------------------------------------------------------------


class ObservedZone(BaseModel):
    """Live state the plan is built from: the zone, its managed records, our health checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    zone_id: str
    zone_name: str
    records: tuple[RecordSet, ...] = ()
    health_checks: tuple[LiveHealthCheck, ...] = ()


class GeoRoutingPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field(description="<zone id>/<record name>: the lock and artifact key.")
    zone_id: str
    zone_name: str
    record_name: str
    record_type: str
    detection_seconds: int = Field(description="interval x threshold + TTL.")
    detection: str
    failover_approach: str
    creates: int
    updates: int
    deletes: int
    unchanged: int
    health_checks: tuple[HealthCheckPlan, ...]
    stale_health_checks: tuple[str, ...] = Field(
        (), description="Our checks for this record no plan uses: deleted after verifying."
    )
    changes: tuple[RecordChange, ...]
    records: tuple[RecordSet, ...] = Field(description="Every managed record after the run.")

    @property
    def noop(self) -> bool:
        new_checks = any(check.existing_id is None for check in self.health_checks)
        return not self.changes and not new_checks and not self.stale_health_checks


def target_of(zone_id: str, record_name: str) -> str:
    return f"{zone_id}/{record_name.removesuffix('.')}"


def plan_geo_routing(params: GeoRoutingParams, observed: ObservedZone) -> GeoRoutingPlan:
    """The health checks, records and change batch that route ``params`` from ``observed``."""
    p = params
    zone_name = _fqdn(observed.zone_name)
    record = _fqdn(p.record_name)
    if record != zone_name and not record.endswith("." + zone_name):
        raise PlanRefused(
            f"record_name: {p.record_name} is not in hosted zone {zone_name.removesuffix('.')}"
        )
    target = target_of(observed.zone_id, p.record_name)
    _refuse_conflicts(observed.records, record)

    regions = sorted(p.used_regions_without_backups() | set(p.failover.values()))
    existing: dict[str, list[LiveHealthCheck]] = {}
    for live in observed.health_checks:
        existing.setdefault(reference_key(live.caller_reference), []).append(live)
    checks: list[HealthCheckPlan] = []
    used_ids: set[str] = set()
    for region in regions:
        check = _health_check(p, observed.zone_id, region)
        found = sorted(existing.get(check.caller_reference, []), key=lambda c: c.id)
        if found:
            check = check.model_copy(update={"existing_id": found[0].id})
            used_ids.add(found[0].id)
        checks.append(check)
    stale = tuple(
        sorted(
            live.id
            for live in observed.health_checks
            if live.tags.get(TAG_TARGET) == target and live.id not in used_ids
        )
    )
    ids = {check.region: check.existing_id for check in checks}
    desired = desired_records(p, observed.zone_id, ids)
    diff = diff_records(desired, observed.records)
    hc = p.health_check
    detection = hc.request_interval * hc.failure_threshold + p.ttl_seconds
    record_type = next(iter(p.endpoints.values())).record_type
    return GeoRoutingPlan(
        target=target,
        zone_id=observed.zone_id,
        zone_name=zone_name,
        record_name=record,
        record_type=record_type,
        detection_seconds=detection,
        detection=(
            f"{hc.request_interval}s interval x {hc.failure_threshold} failures + "
            f"{p.ttl_seconds}s TTL = {detection}s before resolvers stop getting a failed region"
        ),
        failover_approach=_approach(p, record),
        creates=diff.count(ChangeKind.CREATE),
        updates=diff.count(ChangeKind.UPDATE),
        deletes=diff.count(ChangeKind.DELETE),
        unchanged=diff.unchanged,
        health_checks=tuple(checks),
        stale_health_checks=stale,
        changes=diff.changes,
        records=tuple(desired),
    )


def desired_records(
    p: GeoRoutingParams, zone_id: str, check_ids: Mapping[str, str | None]
) -> list[RecordSet]:
    """Every managed record ``p`` asks for, carrying the health check ids known so far."""
    record = _fqdn(p.record_name)
    out: list[RecordSet] = []
    for location, region in p.locations():
        if region in p.failover:
            out.append(
                RecordSet(
                    name=record,
                    type=p.endpoints[region].record_type,
                    set_identifier=location.set_identifier,
                    location=location,
                    alias_dns_name=pair_name(region, record),
                    alias_zone_id=zone_id.removeprefix("/hostedzone/"),
                    alias_evaluate=True,
                )
            )
        else:
            out.append(
                _answer(
                    p, region, record, check_ids, set_identifier=location.set_identifier
                ).model_copy(update={"location": location})
            )
    for region, backup in sorted(p.failover.items()):
        name = pair_name(region, record)
        for role, which in (("PRIMARY", region), ("SECONDARY", backup)):
            answer = _answer(p, which, name, check_ids, set_identifier=f"{region}-{role.lower()}")
            out.append(answer.model_copy(update={"failover": role}))
    return out


def with_check_ids(
    changes: Sequence[RecordChange], check_ids: Mapping[str, str]
) -> list[RecordChange]:
    """The plan's changes with the ids of the health checks created at apply filled in."""
    return [
        change.model_copy(update={"record": fill_check_id(change.record, check_ids)})
        for change in changes
    ]


def fill_check_id(record: RecordSet, check_ids: Mapping[str, str]) -> RecordSet:
    """``record`` carrying its region's health check id, once that id is known."""
    region = record.health_check_region
    if region is None or record.health_check_id is not None:
        return record
    return record.model_copy(update={"health_check_id": check_ids[region]})


def pair_name(region: str, record_fqdn: str) -> str:
    return f"failover-{region}.{_fqdn(record_fqdn)}"


def _answer(
    p: GeoRoutingParams,
    region: str,
    name: str,
    check_ids: Mapping[str, str | None],
    *,
    set_identifier: str,
) -> RecordSet:
    endpoint = p.endpoints[region]
    common: dict[str, Any] = {
        "name": name,
        "type": endpoint.record_type,
        "set_identifier": set_identifier,
        "health_check_id": check_ids.get(region),
        "health_check_region": region,
    }
    if endpoint.alias is not None:
        return RecordSet(
            **common,
            alias_dns_name=_fqdn(endpoint.alias.dns_name),
            alias_zone_id=endpoint.alias.hosted_zone_id,
            alias_evaluate=endpoint.alias.evaluate_target_health,
        )
    return RecordSet(**common, ttl=p.ttl_seconds, values=(str(endpoint.ip),))


def _health_check(p: GeoRoutingParams, zone_id: str, region: str) -> HealthCheckPlan:
    endpoint = p.endpoints[region]
    hc = p.health_check
    host = endpoint.health_check_host or (
        endpoint.alias.dns_name if endpoint.alias is not None else p.record_name
    )
    fields: dict[str, Any] = {
        "region": region,
        "protocol": hc.protocol,
        "ip": str(endpoint.ip) if endpoint.ip is not None else None,
        "host": host,
        "port": hc.effective_port,
        "path": hc.path,
        "request_interval": hc.request_interval,
        "failure_threshold": hc.failure_threshold,
    }
    draft = HealthCheckPlan(caller_reference="-", **fields)
    reference = caller_reference(zone_id, p.record_name, region, draft.to_api())
    return draft.model_copy(update={"caller_reference": reference})


def _refuse_conflicts(records: Iterable[RecordSet], record: str) -> None:
    for live in records:
        at_record = live.name == record
        ours = live.location is not None if at_record else live.failover is not None
        if live.type == "CNAME" or not ours:
            policy = "geolocation" if at_record else "failover"
            raise PlanRefused(
                f"record_name: {live.name} has a record of type {live.type} without {policy} "
                f"routing ({live}), which conflicts with the {policy} records this runbook "
                "manages; delete it or pick another name"
            )


def _approach(p: GeoRoutingParams, record: str) -> str:
    if not p.failover:
        return (
            "none: each location answers with its region while the region's health check "
            "passes; when it fails Route 53 answers with the default (*) record"
        )
    pairs = ", ".join(
        f"{region} -> {backup} at {pair_name(region, record)}"
        for region, backup in sorted(p.failover.items())
    )
    return (
        f"geolocation records alias a PRIMARY/SECONDARY failover pair per region ({pairs}), "
        "evaluating the pair's health"
    )
