"""The runbook catalogue's pure half: ``key=value`` parsing, params files, validation errors.

These are what ``runbooks run`` and the chat-ops endpoint share, so their error messages must
name the field to fix; nothing here talks to Prefect.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from decisions.bluegreen import BlueGreenParams
from runbooks import catalogue
from runbooks.catalogue import BlockError, ParamError, UnknownRunbook

BLUE_GREEN = catalogue.runbook("blue-green")


def test_every_entry_resolves_to_its_model_and_names_its_blocks() -> None:
    for entry in catalogue.CATALOGUE.values():
        assert entry.description
        assert issubclass(entry.params_class(), catalogue.BaseModel)
        for block in entry.blocks:
            assert block.default is None or block.default.startswith(f"{block.type_slug}/")
    assert BLUE_GREEN.params_class() is BlueGreenParams
    assert [b.name for b in BLUE_GREEN.blocks if b.required] == ["kubernetes"]


def test_unknown_runbook_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownRunbook,
        match="unknown runbook 'green-blue'; known: alert-bridge, apply-scaling, blue-green",
    ):
        catalogue.runbook("green-blue")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("null", None),
        ("true", True),
        ('["alice"]', ["alice"]),
        ('{"count": 3}', {"count": 3}),
        ("demo/shop:v2", "demo/shop:v2"),
        ("shop", "shop"),
        ("", ""),
        ('"3"', "3"),
    ],
)
def test_a_value_is_json_when_it_parses_else_text(text: str, value: object) -> None:
    assert catalogue.parse_value(text) == value


def test_dotted_keys_nest_and_later_pairs_win() -> None:
    values = catalogue.parse_pairs(
        [
            "service=shop",
            "pre_promotion.count=3",
            "pre_promotion.interval_seconds=0.5",
            'approval.allowed_approvers=["alice"]',
            "service=cart",
            "image=demo/shop:v2",
        ]
    )
    assert values == {
        "service": "cart",
        "image": "demo/shop:v2",
        "pre_promotion": {"count": 3, "interval_seconds": 0.5},
        "approval": {"allowed_approvers": ["alice"]},
    }


def test_a_json_object_and_dotted_keys_merge() -> None:
    values = catalogue.parse_pairs(['pre_promotion={"count": 3}', "pre_promotion.window=1m"])
    assert values == {"pre_promotion": {"count": 3, "window": "1m"}}


@pytest.mark.parametrize("pair", ["service", "=shop", "pre_promotion..count=3", "a.=1"])
def test_a_malformed_pair_is_refused(pair: str) -> None:
    with pytest.raises(ParamError, match="expected key=value"):
        catalogue.parse_pairs([pair])


def test_a_scalar_cannot_also_take_nested_keys() -> None:
    with pytest.raises(ParamError, match=r"^pre_promotion: is 3, so it cannot"):
        catalogue.parse_pairs(["pre_promotion=3", "pre_promotion.count=3"])


def test_build_params_merges_file_pairs_and_overrides(tmp_path: Path) -> None:
    file = tmp_path / "params.json"
    file.write_text(
        json.dumps(
            {
                "service": "shop",
                "image": "demo/shop:v1",
                "pre_promotion": {"count": 5, "interval_seconds": 2},
            }
        )
    )
    params = catalogue.build_params(
        BLUE_GREEN,
        ["image=demo/shop:v2", "pre_promotion.count=3"],
        file,
        overrides={"dry_run": True},
    )
    assert isinstance(params, BlueGreenParams)
    assert params.image == "demo/shop:v2"
    assert params.pre_promotion.count == 3
    assert params.pre_promotion.interval_seconds == 2  # kept from the file
    assert params.dry_run is True


def test_a_yaml_params_file_is_read(tmp_path: Path) -> None:
    file = tmp_path / "params.yaml"
    file.write_text(
        "service: shop\nimage: demo/shop:v2\napproval:\n  mode: required\n"
        "  allowed_approvers: [alice, bob]\n"
    )
    params = catalogue.build_params(BLUE_GREEN, (), file)
    assert params.approval.allowed_approvers == ("alice", "bob")


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("{not json", ".json", "is not valid JSON"),
        ("a: [", ".yml", "is not valid YAML"),
        ("[1, 2]", ".json", "must hold a mapping"),
    ],
)
def test_a_bad_params_file_is_refused(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    file = tmp_path / f"params{suffix}"
    file.write_text(content)
    with pytest.raises(ParamError, match=message):
        catalogue.build_params(BLUE_GREEN, (), file)


def test_a_missing_params_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="cannot read the params file"):
        catalogue.build_params(BLUE_GREEN, (), tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("pairs", "field", "message"),
    [
        (["replicas=0"], "replicas", "greater than or equal to 1"),
        (["image=demo/shop"], "image", "explicit tag or digest"),
        (["image=demo/shop:latest"], "image", "'latest' is mutable"),
        (["colour=green"], "colour", "unknown parameter (known: service, namespace, image"),
        (["pre_promotion.countt=3"], "pre_promotion.countt", "unknown parameter (known: health"),
        (["pre_promotion.count=many"], "pre_promotion.count", "valid integer"),
        (["approval.allowed_approvers=alice"], "approval.allowed_approvers", "valid tuple"),
        (["replicas=2", "preview_replicas=3"], "", "preview_replicas (3) must be <= replicas"),
    ],
)
def test_an_invalid_value_names_its_field(pairs: list[str], field: str, message: str) -> None:
    base = ["service=shop", "image=demo/shop:v2"]
    with pytest.raises(ParamError) as raised:
        catalogue.build_params(BLUE_GREEN, [*base, *pairs])
    assert raised.value.field == field
    assert message in str(raised.value)
    if field:  # a model-level error has no field to name
        assert str(raised.value).startswith(f"{field}: ")


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(ParamError, match=r"^image: required, but not given$"):
        catalogue.build_params(BLUE_GREEN, ["service=shop"])


def test_block_choices_take_a_name_or_a_slug_and_none_skips_an_optional_one() -> None:
    choices = catalogue.parse_block_choices(
        BLUE_GREEN, ["kubernetes=prod", "prometheus=http-service/prom", "database=none"]
    )
    assert choices == {
        "kubernetes": "kubernetes-target/prod",
        "prometheus": "http-service/prom",
        "database": None,
    }


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("kubernetes", "expected --block name=saved-block"),
        ("cluster=prod", "has no block parameter 'cluster' (known: kubernetes, prometheus"),
        ("kubernetes=none", "block kubernetes is required"),
        ("kubernetes=http-service/prod", "must be a kubernetes-target block"),
    ],
)
def test_a_bad_block_choice_is_refused(pair: str, message: str) -> None:
    with pytest.raises(BlockError, match=re.escape(message)):
        catalogue.parse_block_choices(BLUE_GREEN, [pair])


def test_a_chat_command_is_parsed_like_the_command_line() -> None:
    entry, values = catalogue.parse_invocation(
        "blue-green service=shop 'image=demo/shop:v2' approval.allowed_approvers='[\"alice\"]'"
    )
    assert entry is BLUE_GREEN
    assert values == {
        "service": "shop",
        "image": "demo/shop:v2",
        "approval": {"allowed_approvers": ["alice"]},
    }
    with pytest.raises(UnknownRunbook, match="name a runbook"):
        catalogue.parse_invocation("  ")


def test_summary_lines_tell_outcome_reason_rollback_and_timeline() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    result = SimpleNamespace(
        runbook="blue-green",
        target="default/shop",
        outcome=SimpleNamespace(value="rolled_back"),
        rollout=SimpleNamespace(value="rolled_back"),
        reason="pre_analysis failed",
        rollback_seconds=0.1,
        undone=("undo_deploy_idle",),
        plan=None,
        dry_run=False,
        timeline=(
            SimpleNamespace(at=at, step="observe", detail="active colour blue", ok=True),
            SimpleNamespace(at=at, step="pre_analysis", detail="health 503", ok=False),
        ),
    )
    lines = catalogue.summary_lines(result, "http://ui/runs/flow-run/1")
    assert lines == [
        "blue-green default/shop: rolled_back",
        "  reason: pre_analysis failed",
        "  rolled back in 0.1 s (undone: undo_deploy_idle)",
        "  timeline:",
        "    03:04:05.678    observe: active colour blue",
        "    03:04:05.678 !! pre_analysis: health 503",
        "  flow run: http://ui/runs/flow-run/1",
    ]
