"""Feature flags evaluated the way Unleash does: stable bucketing by murmur3. Pure, plain Python.

Plain Python on purpose: the shop's pods import this module at start-up (payments avoids
pydantic for start-up time), so it imports nothing beyond the standard library; the
``decisions`` package's ``__init__`` imports nothing either.

Bucketing (Unleash's ``flexibleRollout`` / ``gradualRollout*`` strategies, identical in its Node,
Java, Go, Python, Ruby and PHP clients)::

    bucket(group, user) = murmur3_x86_32("{group}:{user}", seed=0) % 100 + 1      # 1..100
    on  <=>  percent > 0 and bucket(group, user) <= percent

``group`` is the strategy's ``groupId``, which defaults to the flag's name. A user keeps their
decision across processes, restarts and SDKs, and raising the percentage only ever adds users.
Never Python's ``hash()``: it is salted per process (``PYTHONHASHSEED``), so users would flip
between buckets (DESIGN.md, "Known flaws"). Variants use the same formula with seed
:data:`VARIANT_SEED` (Unleash client specification v5), so variant and rollout buckets are
independent.

murmur3 is written here rather than taken from ``mmh3`` (a C extension the project does not
otherwise need, in every pod): the algorithm is 30 lines and published vectors pin it down.
Strings are hashed as UTF-8, as Unleash's Python, Java and Go clients do (the JavaScript
client's ``murmurhash3js`` masks UTF-16 code units to bytes: it differs for non-ASCII ids only).

The flags document the shop reads from its mounted ConfigMap (``SHOP_FLAGS_FILE``) and the
blue-green runbook writes::

    {"flags": {"new-checkout": {"enabled": true, "rollout_percent": 10, "allow": ["beta-user"]}}}

A flag is on for a user when it is ``enabled`` and the user is in ``allow``, or the user's
bucket is within ``rollout_percent``. A request without a user id is on only at 100 % (Unleash
would pick a random bucket per call; an anonymous flip-flop helps nobody in a demo).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import pairwise

STRATEGY_SEED = 0
"""Seed of Unleash's rollout strategies."""

VARIANT_SEED = 86028157
"""Seed of Unleash's variant allocation (client specification v5.0.2 and later)."""

NORMALIZER = 100

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data`` (``str`` as UTF-8) as an unsigned 32-bit integer."""
    key = data.encode("utf-8") if isinstance(data, str) else data
    h = seed & _MASK
    length = len(key)
    whole = length - length % 4
    for offset in range(0, whole, 4):
        k = int.from_bytes(key[offset : offset + 4], "little")
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = key[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    return _fmix(h ^ length)


def normalized_value(
    user: str, group: str, normalizer: int = NORMALIZER, seed: int = STRATEGY_SEED
) -> int:
    """Unleash's ``normalizedValue(id, groupId, normalizer, seed)``: 1..``normalizer``."""
    if normalizer < 1:
        raise ValueError(f"normalizer must be >= 1, got {normalizer}")
    return murmur3_32(f"{group}:{user}", seed) % normalizer + 1


def bucket(group: str, user: str) -> int:
    """The rollout bucket of ``user`` in ``group`` (the flag's name by default): 1..100."""
    return normalized_value(user, group)


def in_rollout(group: str, user: str, percent: float) -> bool:
    """Unleash's rollout decision: ``percent > 0 and bucket(group, user) <= percent``."""
    return percent > 0 and bucket(group, user) <= percent


def validate_flag_steps(steps: Iterable[object]) -> tuple[int, ...]:
    """The percentages of a staged flag rollout, checked: whole numbers in 1..100, strictly
    increasing, at least one. ``ValueError`` (naming ``steps``) otherwise.

    Whole numbers because Unleash's ``rollout`` parameter is one; strictly increasing because a
    step that lowers the percentage turns users off again (the kill switch is for that).
    """
    values = tuple(steps)
    if not values:
        raise ValueError("steps must list at least one percentage, e.g. (10, 50, 100)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"steps must be whole percentages, got {value!r}")
        if not 1 <= value <= 100:
            raise ValueError(f"steps must be within 1..100, got {value}")
    for before, after in pairwise(values):
        if after <= before:
            raise ValueError(f"steps must be strictly increasing, got {before} then {after}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag of the flags document."""

    name: str
    enabled: bool = True
    rollout_percent: float = 100.0
    allow: frozenset[str] = frozenset()
    group: str | None = None

    def to_document(self) -> dict[str, object]:
        """This flag's entry in the flags document (what :func:`parse_flags` reads back)."""
        entry: dict[str, object] = {
            "enabled": self.enabled,
            "rollout_percent": self.rollout_percent,
            "allow": sorted(self.allow),
        }
        if self.group is not None:
            entry["group"] = self.group
        return entry


def is_enabled(flag: Flag, user: str | None) -> bool:
    """The flag's decision for ``user`` (``None``: an anonymous request)."""
    if not flag.enabled:
        return False
    if user is not None and user in flag.allow:
        return True
    if flag.rollout_percent >= 100:
        return True
    if user is None:
        return False
    return in_rollout(flag.group or flag.name, user, flag.rollout_percent)


def evaluate(flags: Mapping[str, Flag], user: str | None) -> dict[str, bool]:
    """Every flag's decision for ``user``, by name."""
    return {name: is_enabled(flag, user) for name, flag in sorted(flags.items())}


def flags_document(flags: Iterable[Flag]) -> dict[str, object]:
    """The flags document for ``flags`` (JSON-ready), the inverse of :func:`parse_flags`."""
    return {"flags": {flag.name: flag.to_document() for flag in sorted(flags, key=_name)}}


def with_rollout(flags: Mapping[str, Flag], name: str, percent: float) -> dict[str, Flag]:
    """``flags`` with ``name`` enabled for ``percent`` % of users (its allow list and group kept;
    created when missing). Other flags are left exactly as they are."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within [0, 100], got {percent}")
    current = flags.get(name) or Flag(name)
    return dict(flags) | {name: replace(current, enabled=True, rollout_percent=float(percent))}


def killed(flags: Mapping[str, Flag], name: str) -> dict[str, Flag]:
    """The kill switch: ``name`` off for everyone (allow list kept, so re-enabling restores it)."""
    current = flags.get(name) or Flag(name)
    return dict(flags) | {name: replace(current, enabled=False, rollout_percent=0.0)}


def _name(flag: Flag) -> str:
    return flag.name


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
