"""What an image tag makes the shop do, and the runtime fault that can override it. Pure: no I/O.

The sandbox's pods all run this one program; the container image's *tag* is the only thing a
rollout changes, so it picks the behaviour, the way a new build of a real service would:

========================  ==================================================================
tag                       behaviour
========================  ==================================================================
``vN`` (``v2``, ``v1.4``)  healthy and fast
``vN-broken``             ready, but a share (30 %) of business requests answer 500 and
                          ``/health`` reports a failing ``database`` check (503)
``vN-slow``               healthy, but every business request takes 0.8-1.5 s (``/health``,
                          ``/ready`` and ``/metrics`` stay fast, as a slow query would leave them)
``vN-crashloop``          prints an error and exits 1 at start (~immediately)
anything else             prints ``unknown image tag`` and exits 2 (no tag means ``latest``,
                          which is unknown too: a demo must say which build it runs)
========================  ==================================================================

Failures are spread *evenly*, not drawn at random: :class:`ErrorSpreader` fails exactly
``round(n x rate)`` of the first ``n`` requests. A blue-green analysis then sees the same error
rate at every interval, so the test of "is the broken version detected" never flakes.
"""

from __future__ import annotations

import enum
import random
import re
import threading
from dataclasses import dataclass

BROKEN_ERROR_RATE = 0.3
SLOW_SECONDS = (0.8, 1.5)

_TAG = re.compile(r"^v\d+(?:\.\d+){0,2}(?:-(?P<kind>broken|slow|crashloop))?$")


class Kind(enum.StrEnum):
    HEALTHY = "healthy"
    BROKEN = "broken"
    SLOW = "slow"
    CRASHLOOP = "crashloop"


class UnknownImageTag(ValueError):
    """The image's tag names no behaviour; the process exits 2 with this message."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The behaviour an image tag selects."""

    tag: str
    kind: Kind

    @property
    def error_rate(self) -> float:
        """Share of business requests answered 500."""
        return BROKEN_ERROR_RATE if self.kind is Kind.BROKEN else 0.0

    @property
    def latency_range_seconds(self) -> tuple[float, float]:
        """Added latency of a business request, drawn uniformly from this range."""
        return SLOW_SECONDS if self.kind is Kind.SLOW else (0.0, 0.0)

    @property
    def degraded_check(self) -> str | None:
        """The name of the ``/health`` check this version reports failing, if any."""
        return "database" if self.kind is Kind.BROKEN else None


def image_tag(image: str) -> str:
    """The tag of an image reference (``registry:5000/demo/shop:v1`` -> ``v1``); ``latest`` when
    it has none, as Kubernetes reads it. A digest (``@sha256:...``) is returned as is."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def behaviour_for_image(image: str) -> Behaviour:
    """The behaviour of ``image``, or :class:`UnknownImageTag`."""
    tag = image_tag(image)
    match = _TAG.match(tag)
    if match is None:
        raise UnknownImageTag(
            f"unknown image tag {tag!r} in image {image!r}: expected vN, vN-broken, vN-slow or "
            "vN-crashloop"
        )
    return Behaviour(tag=tag, kind=Kind(match.group("kind") or "healthy"))


@dataclass(frozen=True, slots=True)
class Fault:
    """A runtime override ("slow or break a service" without a redeploy).

    ``error_rate`` of business requests answer ``status``; every business request waits
    ``latency_ms`` more; ``degrade_health`` also makes ``/health`` report a failing ``fault``
    check. The empty fault (the default) changes nothing.
    """

    error_rate: float = 0.0
    status: int = 503
    latency_ms: float = 0.0
    degrade_health: bool = False

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0 or self.degrade_health


NO_FAULT = Fault()


def parse_fault(document: object) -> Fault:
    """A :class:`Fault` from its JSON document; ``ValueError`` naming the field when wrong."""
    if not isinstance(document, dict):
        raise ValueError("fault must be a JSON object")
    unknown = sorted(set(document) - {"error_rate", "status", "latency_ms", "degrade_health"})
    if unknown:
        raise ValueError(f"fault: unknown field(s) {unknown}")
    error_rate = _number(document, "error_rate", 0.0)
    latency_ms = _number(document, "latency_ms", 0.0)
    status = document.get("status", 503)
    degrade = document.get("degrade_health", False)
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"fault.error_rate must be within [0, 1], got {error_rate}")
    if latency_ms < 0 or latency_ms > 600_000:
        raise ValueError(f"fault.latency_ms must be within [0, 600000], got {latency_ms}")
    if type(status) is not int or not 400 <= status <= 599:
        raise ValueError(f"fault.status must be an HTTP error status (400-599), got {status!r}")
    if type(degrade) is not bool:
        raise ValueError(f"fault.degrade_health must be true or false, got {degrade!r}")
    return Fault(error_rate, status, latency_ms, degrade)


def fault_document(fault: Fault) -> dict[str, object]:
    return {
        "error_rate": fault.error_rate,
        "status": fault.status,
        "latency_ms": fault.latency_ms,
        "degrade_health": fault.degrade_health,
    }


def _number(document: dict[str, object], name: str, default: float) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault.{name} must be a number, got {value!r}")
    return float(value)


class ErrorSpreader:
    """Decides which requests fail so that exactly ``round(n x rate)`` of ``n`` do, evenly.

    Error diffusion: an accumulator gains ``rate`` per request and a request fails when it
    reaches 1. Thread-safe. A changed rate keeps the accumulator, so a switch is smooth.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._debt = 0.0

    def should_fail(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            self._debt += rate
            if self._debt >= 1.0 - 1e-9:
                self._debt -= 1.0
                return True
            return False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one business request before serving it."""

    delay_seconds: float
    fail_status: int | None
    reason: str = ""  # why it fails: the injected fault or this build's bug


class Decider:
    """Combines the image's behaviour and the current fault into a :class:`Decision`.

    The fault is checked first (an injected outage answers its status whatever the version);
    delays add up. Separate spreaders keep each error rate exact on its own.
    """

    def __init__(self, behaviour: Behaviour, rng: random.Random | None = None):
        self.behaviour = behaviour
        self._rng = rng or random.Random()
        self._fault_errors = ErrorSpreader()
        self._version_errors = ErrorSpreader()

    def decide(self, fault: Fault) -> Decision:
        low, high = self.behaviour.latency_range_seconds
        delay = self._rng.uniform(low, high) if high > 0 else 0.0
        delay += fault.latency_ms / 1000.0
        if self._fault_errors.should_fail(fault.error_rate):
            return Decision(delay, fault.status, "injected fault")
        if self._version_errors.should_fail(self.behaviour.error_rate):
            return Decision(delay, 500, f"{self.behaviour.tag} is broken: database query failed")
        return Decision(delay, None)
