"""Route 53 tasks: find a hosted zone, read records and health checks, change them, wait.

Each task is one external effect through a client from the ``AwsTarget`` block, whose botocore
*standard* retry mode is the one retry layer for AWS calls (explicit timeouts, full-jitter
backoff, a retry quota), so the tasks have **no Prefect retries** and **no caching**
(``cache_policy=NO_CACHE``: live state is never answered from an earlier run). Vendor errors
are translated where the call is made (:func:`runbooks.errors.from_botocore`), naming the
zone, record or health check.

Writes are safe to retry: a health check is created with a ``CallerReference`` (Route 53 hands
back the existing check for a reference it has seen), a change batch holds ``UPSERT``s and
``DELETE``s of the values read (a replayed delete fails loudly instead of applying twice), and a
health check that is already gone counts as deleted.

``boto3`` comes from the block's factory, imported there: importing this module stays cheap.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.aws import AwsTarget
from decisions.georouting import (
    CALLER_REFERENCE_PREFIX,
    HealthCheckPlan,
    LiveHealthCheck,
    RecordChange,
    RecordSet,
)
from runbooks.errors import (
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    botocore_errors,
)
from runbooks.kit._run import logger as run_logger

TAGS_PER_CALL = 10  # ListTagsForResources takes at most 10 ids


class HostedZone(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str  # bare id, without /hostedzone/
    name: str  # with a trailing dot


@task(name="find-hosted-zone", cache_policy=NO_CACHE)
def find_hosted_zone(aws: AwsTarget, zone: str) -> HostedZone:
    """The hosted zone named by id (``Z0123...``) or by name (``example.com``).

    Raises :class:`NotFoundError` naming ``hosted_zone`` when there is none, and
    :class:`~runbooks.errors.InvalidRequestError` when a name matches several zones (a public
    and a private one): pass the id then.
    """
    client = aws.get_client("route53")
    if "." not in zone:
        zone_id = zone.removeprefix("/hostedzone/")
        try:
            with botocore_errors(f"get hosted zone {zone_id}", zone_id):
                found = client.get_hosted_zone(Id=zone_id)["HostedZone"]
        except NotFoundError as exc:
            raise NotFoundError(
                f"hosted_zone: no hosted zone with id {zone_id} in this account", target=zone_id
            ) from exc
        return HostedZone(id=found["Id"].removeprefix("/hostedzone/"), name=found["Name"])
    name = zone.lower().removesuffix(".") + "."
    with botocore_errors(f"list hosted zones named {name}", name):
        zones = client.list_hosted_zones_by_name(DNSName=name, MaxItems="2")["HostedZones"]
    matching = [z for z in zones if z["Name"].lower() == name]
    if not matching:
        raise NotFoundError(f"hosted_zone: no hosted zone named {name} in this account")
    if len(matching) > 1:
        ids = ", ".join(z["Id"].removeprefix("/hostedzone/") for z in matching)
        raise InvalidRequestError(
            f"hosted_zone: several hosted zones are named {name} ({ids}); pass the id"
        )
    return HostedZone(id=matching[0]["Id"].removeprefix("/hostedzone/"), name=name)


@task(name="list-record-sets", cache_policy=NO_CACHE)
def list_record_sets(aws: AwsTarget, zone_id: str) -> tuple[RecordSet, ...]:
    """Every record set of the zone, normalised for comparison (all pages)."""
    client = aws.get_client("route53")
    records: list[RecordSet] = []
    with botocore_errors(f"list records of hosted zone {zone_id}", zone_id):
        for page in client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=zone_id
        ):
            records += [RecordSet.from_api(data) for data in page["ResourceRecordSets"]]
    return tuple(records)


@task(name="list-health-checks", cache_policy=NO_CACHE)
def list_health_checks(aws: AwsTarget) -> tuple[LiveHealthCheck, ...]:
    """The account's health checks this runbook made (by ``CallerReference``), with tags."""
    client = aws.get_client("route53")
    found: list[dict[str, Any]] = []
    with botocore_errors("list health checks", "route53"):
        for page in client.get_paginator("list_health_checks").paginate():
            found += [
                hc
                for hc in page["HealthChecks"]
                if hc["CallerReference"].startswith(CALLER_REFERENCE_PREFIX)
            ]
        tags: dict[str, dict[str, str]] = {}
        for start in range(0, len(found), TAGS_PER_CALL):
            ids = [hc["Id"] for hc in found[start : start + TAGS_PER_CALL]]
            answer = client.list_tags_for_resources(ResourceType="healthcheck", ResourceIds=ids)
            for tag_set in answer["ResourceTagSets"]:
                tags[tag_set["ResourceId"]] = {t["Key"]: t["Value"] for t in tag_set["Tags"]}
    return tuple(
        LiveHealthCheck(id=hc["Id"], caller_reference=hc["CallerReference"], tags=tags[hc["Id"]])
        for hc in found
    )


@task(name="create-health-check", cache_policy=NO_CACHE)
def create_health_check(aws: AwsTarget, check: HealthCheckPlan, tags: Mapping[str, str]) -> str:
    """Create the region's health check, tag it; its id. One call, retried by botocore with the
    same ``CallerReference``, so a retry after a lost answer returns the check it made."""
    client = aws.get_client("route53")
    where = f"health check for {check.region}"
    with botocore_errors(f"create {where}", check.region):
        created = client.create_health_check(
            # the key plus a suffix of this creation: Route 53 refuses, forever, a reference
            # once used by a check that was deleted since (see decisions.georouting)
            CallerReference=f"{check.caller_reference}-{uuid.uuid4().hex[:8]}",
            HealthCheckConfig=check.to_api(),
        )["HealthCheck"]
    check_id = created["Id"]
    with botocore_errors(f"tag {where} ({check_id})", check_id):
        client.change_tags_for_resource(
            ResourceType="healthcheck",
            ResourceId=check_id,
            AddTags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )
    run_logger(__name__).info("created %s: %s", where, check_id)
    return check_id


@task(name="delete-health-check", cache_policy=NO_CACHE)
def delete_health_check(aws: AwsTarget, check_id: str) -> bool:
    """Delete a health check; False when it was already gone (deleting again is done)."""
    client = aws.get_client("route53")
    try:
        with botocore_errors(f"delete health check {check_id}", check_id):
            client.delete_health_check(HealthCheckId=check_id)
    except NotFoundError:
        return False
    run_logger(__name__).info("deleted health check %s", check_id)
    return True


@task(name="change-record-sets", cache_policy=NO_CACHE)
def change_record_sets(
    aws: AwsTarget, zone_id: str, changes: Sequence[RecordChange], comment: str
) -> str:
    """Submit ``changes`` as ONE batch (Route 53 applies it all or nothing); the change id."""
    client = aws.get_client("route53")
    batch = {"Comment": comment[:256], "Changes": [change.to_api() for change in changes]}
    with botocore_errors(f"change {len(changes)} records in hosted zone {zone_id}", zone_id):
        info = client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch=batch)
    change_id = str(info["ChangeInfo"]["Id"])
    run_logger(__name__).info("submitted %d record changes as %s", len(changes), change_id)
    return change_id


class ChangeNotInSync(UnavailableError):
    """Route 53 did not report the change INSYNC in time: it may still propagate."""


@task(name="wait-for-insync", cache_policy=NO_CACHE)
def wait_for_insync(
    aws: AwsTarget, change_id: str, *, timeout_seconds: float, poll_seconds: float = 2.0
) -> float:
    """Poll GetChange until INSYNC (every name server answers the new records); seconds taken.

    Bounded: raises :class:`ChangeNotInSync` after ``timeout_seconds``. Route 53 usually
    reports INSYNC within 60 s.
    """
    client = aws.get_client("route53")
    started = time.monotonic()
    deadline = started + timeout_seconds
    status = "?"
    while True:
        with botocore_errors(f"get change {change_id}", change_id):
            status = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
        now = time.monotonic()
        if status == "INSYNC":
            return round(now - started, 3)
        if now >= deadline:
            raise ChangeNotInSync(
                f"change {change_id} is still {status} after {timeout_seconds:g}s",
                target=change_id,
            )
        time.sleep(min(poll_seconds, deadline - now))
