"""Demo shop: image tags to behaviours, faults, and the exact spreading of failures."""

from __future__ import annotations

import random

import pytest

from sandbox.shop.behaviour import (
    NO_FAULT,
    Decider,
    ErrorSpreader,
    Fault,
    Kind,
    UnknownImageTag,
    behaviour_for_image,
    image_tag,
    parse_fault,
)


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("demo/shop:v1", "v1"),
        ("registry.local:5000/demo/shop:v3-broken", "v3-broken"),
        ("demo/shop", "latest"),
        ("localhost:5000/shop", "latest"),
        ("demo/shop@sha256:abc", "sha256:abc"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("demo/shop:v1", Kind.HEALTHY),
        ("demo/shop:v2", Kind.HEALTHY),
        ("demo/shop:v10.2.1", Kind.HEALTHY),
        ("demo/shop:v3-broken", Kind.BROKEN),
        ("demo/shop:v4-slow", Kind.SLOW),
        ("demo/shop:v5-crashloop", Kind.CRASHLOOP),
    ],
)
def test_tags_pick_the_behaviour(image: str, kind: Kind) -> None:
    assert behaviour_for_image(image).kind is kind


@pytest.mark.parametrize(
    "image", ["demo/shop", "demo/shop:latest", "demo/shop:v1-flaky", "demo/shop:1.0", "x@sha256:a"]
)
def test_unknown_tags_are_refused(image: str) -> None:
    with pytest.raises(UnknownImageTag, match="unknown image tag"):
        behaviour_for_image(image)


def test_broken_and_slow_parameters() -> None:
    broken = behaviour_for_image("demo/shop:v3-broken")
    assert broken.error_rate == 0.3
    assert broken.degraded_check == "database"
    slow = behaviour_for_image("demo/shop:v4-slow")
    assert slow.latency_range_seconds == (0.8, 1.5)
    assert slow.error_rate == 0
    healthy = behaviour_for_image("demo/shop:v1")
    assert healthy.error_rate == 0
    assert healthy.latency_range_seconds == (0, 0)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_error_spreader_fails_exactly_the_share_in_every_prefix(rate: float) -> None:
    spreader = ErrorSpreader()
    failed = 0
    for n in range(1, 201):
        failed += spreader.should_fail(rate)
        assert abs(failed - n * rate) < 1.0


def test_decider_fault_first_then_version() -> None:
    decider = Decider(behaviour_for_image("demo/shop:v3-broken"), random.Random(1))
    statuses = [decider.decide(NO_FAULT).fail_status for _ in range(10)]
    assert statuses.count(500) == 3
    outage = Fault(error_rate=1.0, status=503)
    assert {decider.decide(outage).fail_status for _ in range(10)} == {503}


def test_decider_latency_adds_the_fault() -> None:
    decider = Decider(behaviour_for_image("demo/shop:v4-slow"), random.Random(1))
    delays = [decider.decide(Fault(latency_ms=100)).delay_seconds for _ in range(50)]
    assert all(0.9 <= d <= 1.6 for d in delays)
    assert Decider(behaviour_for_image("demo/shop:v1")).decide(NO_FAULT).delay_seconds == 0


def test_parse_fault() -> None:
    fault = parse_fault({"error_rate": 1.0, "status": 503, "latency_ms": 0})
    assert fault == Fault(1.0, 503, 0.0, False)
    assert fault.active
    assert parse_fault({}) == NO_FAULT
    assert not NO_FAULT.active


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"error_rate": "1"}, "error_rate"),
        ({"status": 200}, "status"),
        ({"status": True}, "status"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"degrade_health": 1}, "degrade_health"),
        ({"rate": 1}, "unknown field"),
        ([1], "JSON object"),
    ],
)
def test_bad_faults_are_refused_naming_the_field(document: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_fault(document)
