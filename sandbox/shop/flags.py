"""Feature flags as a mounted ConfigMap provides them, evaluated the way Unleash does. Pure.

The file (``SHOP_FLAGS_FILE``) holds::

    {"flags": {"new-checkout": {"enabled": true, "rollout_percent": 10, "allow": ["beta-user"]}}}

A flag is on for a user when it is ``enabled`` and the user is in ``allow``, or the user's
bucket is within ``rollout_percent``. The bucket is Unleash's ``flexibleRollout`` normalised
value: ``murmur3_x86_32("{group}:{user}", seed 0) % 100 + 1`` (``group`` defaults to the flag's
name), on when ``<= rollout_percent``, so a user keeps their decision across processes, restarts
and SDKs, and raising the percentage only ever adds users. Never Python's ``hash()``: it is
salted per process, so users would flip between buckets (DESIGN.md, "Known flaws").

A request without a user id is on only at 100 % (Unleash would pick a random bucket per call;
an anonymous flip-flop helps nobody in a demo).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sandbox.shop.murmur3 import murmur3_32

STRATEGY_SEED = 0


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    enabled: bool = True
    rollout_percent: float = 100.0
    allow: frozenset[str] = frozenset()
    group: str | None = None


def normalized_value(user: str, group: str, normalizer: int = 100) -> int:
    """Unleash's bucket of ``user`` in ``group``: 1..``normalizer``."""
    return murmur3_32(f"{group}:{user}", STRATEGY_SEED) % normalizer + 1


def is_enabled(flag: Flag, user: str | None) -> bool:
    if not flag.enabled:
        return False
    if user is not None and user in flag.allow:
        return True
    if flag.rollout_percent >= 100:
        return True
    if user is None or flag.rollout_percent <= 0:
        return False
    return normalized_value(user, flag.group or flag.name) <= flag.rollout_percent


def evaluate(flags: Mapping[str, Flag], user: str | None) -> dict[str, bool]:
    """Every flag's decision for ``user``, by name."""
    return {name: is_enabled(flag, user) for name, flag in sorted(flags.items())}


_FIELDS = {"enabled", "rollout_percent", "allow", "group"}


def parse_flags(document: object) -> dict[str, Flag]:
    """Flags from the file's JSON document; ``ValueError`` naming the field when wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("flags", {}), dict):
        raise ValueError('flags file must be a JSON object {"flags": {name: {...}}}')
    flags: dict[str, Flag] = {}
    for name, spec in document.get("flags", {}).items():
        where = f"flags.{name}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be an object")
        unknown = sorted(set(spec) - _FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}")
        enabled = spec.get("enabled", True)
        if type(enabled) is not bool:
            raise ValueError(f"{where}.enabled must be true or false, got {enabled!r}")
        percent = spec.get("rollout_percent", 100)
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise ValueError(f"{where}.rollout_percent must be a number, got {percent!r}")
        if not 0 <= percent <= 100:
            raise ValueError(f"{where}.rollout_percent must be within [0, 100], got {percent}")
        allow = spec.get("allow", [])
        if not isinstance(allow, list) or not all(isinstance(u, str) for u in allow):
            raise ValueError(f"{where}.allow must be a list of user ids")
        group = spec.get("group")
        if group is not None and not isinstance(group, str):
            raise ValueError(f"{where}.group must be a string, got {group!r}")
        flags[name] = Flag(name, enabled, float(percent), frozenset(allow), group)
    return flags
