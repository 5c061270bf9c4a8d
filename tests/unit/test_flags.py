"""Flag bucketing (``decisions.flags``): murmur3 x86_32 and Unleash's normalised value on known
vectors, stable across processes, monotonic in the rollout percentage; staged-rollout steps; the
flags document the shop reads and the blue-green runbook writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from decisions.flags import (
    VARIANT_SEED,
    Flag,
    bucket,
    evaluate,
    flags_document,
    in_rollout,
    is_enabled,
    killed,
    murmur3_32,
    normalized_value,
    parse_flags,
    validate_flag_steps,
    with_rollout,
)

# Published vectors (SMHasher's MurmurHash3_x86_32 as collected for implementers; mmh3's
# unsigned results for the plain strings).
MURMUR3_VECTORS = [
    (b"", 0, 0),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\0\0\0\0", 0, 0x2362F9DE),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"aaa", 0x9747B28C, 0x283E0130),
    (b"aa", 0x9747B28C, 0x5D211726),
    (b"a", 0x9747B28C, 0x7FA09EA6),
    (b"abcd", 0x9747B28C, 0xF0478627),
    (b"abc", 0x9747B28C, 0xC84A62DD),
    (b"ab", 0x9747B28C, 0x74875592),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    ("ππππππππ".encode(), 0x9747B28C, 0xD58063C1),
    (b"abc", 0, 0xB3DD93FA),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    (b"a" * 256, 0x9747B28C, 0x37405BDC),
    (b"Hello world", 0, 2911983372),
    (b"hello, world", 0, 345750399),
    (b"Turn me into a hash", 1234, 4138100590),
]


@pytest.mark.parametrize(("data", "seed", "expected"), MURMUR3_VECTORS)
def test_murmur3_matches_published_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_32(data, seed) == expected


def test_strings_are_hashed_as_utf8() -> None:
    assert murmur3_32("ππππππππ", 0x9747B28C) == 0xD58063C1


@pytest.mark.parametrize(
    ("user", "group", "expected"),
    # Unleash's cross-client test (unleash-client-java StrategyUtilsTest, node, go)
    [("123", "gr1", 73), ("999", "groupX", 25)],
)
def test_normalized_value_matches_unleash_clients(user: str, group: str, expected: int) -> None:
    assert normalized_value(user, group) == expected


def test_buckets_spread_over_1_to_100() -> None:
    buckets = [normalized_value(f"user-{i}", "new-checkout") for i in range(10_000)]
    assert min(buckets) == 1
    assert max(buckets) == 100
    share_10 = sum(b <= 10 for b in buckets) / len(buckets)
    assert 0.09 <= share_10 <= 0.11


def test_rollout_only_adds_users_as_the_percentage_grows() -> None:
    users = [f"u{i}" for i in range(2_000)]
    previous: set[str] = set()
    for percent in (0, 1, 10, 25, 50, 99, 100):
        flag = Flag("new-checkout", rollout_percent=percent)
        on = {u for u in users if is_enabled(flag, u)}
        assert previous <= on
        previous = on
    assert previous == set(users)


def test_decisions_are_the_same_in_another_process_with_another_hash_seed() -> None:
    """What ``hash()`` would break: a fresh interpreter with a different PYTHONHASHSEED."""
    users = [f"user-{i}" for i in range(50)]
    here = [normalized_value(u, "new-checkout") for u in users]
    code = (
        "from decisions.flags import normalized_value;"
        f"print([normalized_value(u, 'new-checkout') for u in {users!r}])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(here)


def test_enabled_allow_list_kill_switch_and_anonymous() -> None:
    flag = Flag("new-checkout", enabled=True, rollout_percent=0, allow=frozenset({"beta-user"}))
    assert is_enabled(flag, "beta-user")
    assert not is_enabled(flag, "someone")
    killed = Flag(
        "new-checkout", enabled=False, rollout_percent=100, allow=frozenset({"beta-user"})
    )
    assert not is_enabled(killed, "beta-user")
    assert not is_enabled(Flag("f", rollout_percent=99), None)
    assert is_enabled(Flag("f", rollout_percent=100), None)


def test_group_overrides_the_flag_name_as_bucketing_key() -> None:
    flag = Flag("other-name", rollout_percent=73, group="gr1")
    assert is_enabled(flag, "123")  # bucket 73
    assert not is_enabled(Flag("other-name", rollout_percent=72, group="gr1"), "123")


def test_parse_and_evaluate_a_flags_document() -> None:
    flags = parse_flags(
        {"flags": {"new-checkout": {"enabled": True, "rollout_percent": 10, "allow": ["b"]}}}
    )
    assert evaluate(flags, "b") == {"new-checkout": True}
    assert parse_flags({}) == {}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"flags": {"x": {"rollout_percent": 101}}}, "flags.x.rollout_percent"),
        ({"flags": {"x": {"rollout_percent": "10"}}}, "flags.x.rollout_percent"),
        ({"flags": {"x": {"enabled": "yes"}}}, "flags.x.enabled"),
        ({"flags": {"x": {"allow": "bob"}}}, "flags.x.allow"),
        ({"flags": {"x": {"percent": 5}}}, "unknown field"),
    ],
)
def test_bad_flag_documents_are_refused_naming_the_field(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_flags(document)


@pytest.mark.parametrize(
    ("group", "user", "expected"),
    # the same vectors through the brief's argument order: bucket(group, user)
    [("gr1", "123", 73), ("groupX", "999", 25)],
)
def test_bucket_is_normalized_value_with_group_first(group: str, user: str, expected: int) -> None:
    assert bucket(group, user) == expected
    assert bucket(group, user) == murmur3_32(f"{group}:{user}") % 100 + 1


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(0, False), (72, False), (73, True), (100, True)],
)
def test_in_rollout_is_on_when_bucket_within_percent(percent: int, expected: bool) -> None:
    assert in_rollout("gr1", "123", percent) is expected  # bucket 73


def test_percent_zero_is_off_even_for_bucket_one() -> None:
    user = next(f"u{i}" for i in range(10_000) if bucket("g", f"u{i}") == 1)
    assert not in_rollout("g", user, 0)
    assert in_rollout("g", user, 1)


def test_variant_seed_gives_an_independent_bucket() -> None:
    assert VARIANT_SEED == 86028157
    users = [f"user-{i}" for i in range(200)]
    rollout = [normalized_value(u, "f") for u in users]
    variant = [normalized_value(u, "f", seed=VARIANT_SEED) for u in users]
    assert rollout != variant
    assert all(1 <= v <= 100 for v in variant)


@pytest.mark.parametrize("normalizer", [0, -1])
def test_normalizer_must_be_positive(normalizer: int) -> None:
    with pytest.raises(ValueError, match="normalizer"):
        normalized_value("u", "g", normalizer)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [((10, 50, 100), (10, 50, 100)), ([100], (100,)), ((1, 2), (1, 2))],
)
def test_valid_flag_steps(steps: object, expected: tuple[int, ...]) -> None:
    assert validate_flag_steps(steps) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "at least one"),
        ((0, 50), "within 1..100"),
        ((10, 101), "within 1..100"),
        ((-5,), "within 1..100"),
        ((50, 50), "strictly increasing"),
        ((50, 10), "strictly increasing"),
        ((10.5, 50), "whole percentages"),
        ((True, 50), "whole percentages"),
        (("10",), "whole percentages"),
    ],
)
def test_bad_flag_steps_are_refused_naming_steps(steps: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=f"steps.*{message}"):
        validate_flag_steps(steps)


def test_flags_document_round_trips_through_parse_flags() -> None:
    flags = [
        Flag("new-checkout", rollout_percent=10, allow=frozenset({"b", "a"})),
        Flag("dark-mode", enabled=False, rollout_percent=0, group="ui"),
    ]
    document = flags_document(flags)
    assert list(document["flags"]) == ["dark-mode", "new-checkout"]  # type: ignore[call-overload]
    assert document["flags"]["new-checkout"]["allow"] == ["a", "b"]  # type: ignore[index]
    assert parse_flags(document) == {f.name: f for f in flags}


def test_importing_decisions_flags_does_not_import_pydantic() -> None:
    """The shop's pods import it at start-up; pydantic would cost them start-up time."""
    code = "import sys, decisions.flags; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rollout_steps_and_kill_switch_keep_the_rest_of_the_document() -> None:
    other = Flag("dark-mode", rollout_percent=30.0)
    beta = Flag("new-checkout", enabled=False, rollout_percent=0.0, allow=frozenset({"beta"}))
    flags = {"dark-mode": other, "new-checkout": beta}
    at_50 = with_rollout(flags, "new-checkout", 50)
    assert at_50["dark-mode"] == other
    assert at_50["new-checkout"] == Flag("new-checkout", True, 50.0, frozenset({"beta"}))
    off = killed(at_50, "new-checkout")
    assert off["new-checkout"] == Flag("new-checkout", False, 0.0, frozenset({"beta"}))
    assert evaluate(off, "beta") == {"dark-mode": is_enabled(other, "beta"), "new-checkout": False}
    assert with_rollout({}, "fresh", 10)["fresh"] == Flag("fresh", True, 10.0)
    assert flags == {"dark-mode": other, "new-checkout": beta}  # inputs untouched
    with pytest.raises(ValueError, match="percent"):
        with_rollout(flags, "new-checkout", 101)
