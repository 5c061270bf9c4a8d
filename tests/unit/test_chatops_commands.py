"""Chat command text -> frozen commands, runbook parameters, and who may send them (pure)."""

from __future__ import annotations

import dataclasses
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from chatops.commands import (
    AccessPolicy,
    AccessRule,
    ApproveCommand,
    Caller,
    CommandError,
    Forbidden,
    ListCommand,
    RejectCommand,
    RunCommand,
    StatusCommand,
    list_text,
    parse_command,
    run_link,
)
from decisions.bluegreen import BlueGreenParams
from runbooks.catalogue import ParamError, UnknownRunbook

RUN_ID = UUID("0b6f1c1e-5a43-4a49-9bb0-1f0d7d0c6a11")
ALICE = Caller(user_id="U1", user_name="alice", channel_id="C1", channel_name="ops")
MALLORY = Caller(user_id="U9", user_name="mallory", channel_id="C1", channel_name="ops")


# -- parsing --


def test_list() -> None:
    assert parse_command("list") == ListCommand()
    assert parse_command("  LIST ") == ListCommand()


def test_run_reads_key_value_words_with_the_catalogue() -> None:
    command = parse_command(
        "run blue-green service=shop image=demo/shop:v2 replicas=3 "
        "'approval.allowed_approvers=[\"alice\"]'"
    )
    assert command == RunCommand(
        "blue-green",
        {
            "service": "shop",
            "image": "demo/shop:v2",
            "replicas": 3,
            "approval": {"allowed_approvers": ["alice"]},
        },
    )
    assert isinstance(command, RunCommand)
    params = command.params()
    assert isinstance(params, BlueGreenParams)
    assert (params.service, params.image, params.replicas) == ("shop", "demo/shop:v2", 3)
    assert params.approval.allowed_approvers == ("alice",)


def test_run_params_merge_over_the_deployments_defaults() -> None:
    command = parse_command("run blue-green image=demo/shop:v3")
    assert isinstance(command, RunCommand)
    params = command.params({"service": "shop", "image": "demo/shop:v1", "replicas": 4})
    assert (params.service, params.image, params.replicas) == ("shop", "demo/shop:v3", 4)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("run blue-green service=shop image=demo/shop:v2 replicas=0", "replicas", ""),
        ("run blue-green service=shop image=demo/shop", "image", ""),
        ("run blue-green image=demo/shop:v2", "service", "required, but not given"),
        ("run blue-green service=shop image=demo/shop:v2 colour=red", "colour", "unknown"),
        (
            "run blue-green service=shop image=demo/shop:v2 pre_promotion.failure_limit=-1",
            "pre_promotion.failure_limit",
            "",
        ),
    ],
)
def test_invalid_run_params_name_the_field(text: str, field: str, message: str) -> None:
    command = parse_command(text)
    assert isinstance(command, RunCommand)
    with pytest.raises(ParamError, match=message or None) as caught:
        command.params()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_malformed_pair_and_unknown_runbook_are_refused_at_parse() -> None:
    with pytest.raises(ParamError, match="expected key=value"):
        parse_command("run blue-green service")
    with pytest.raises(UnknownRunbook, match=r"unknown runbook 'blue-gren'; known: .*blue-green"):
        parse_command("run blue-gren service=shop")
    with pytest.raises(CommandError, match="run needs a runbook"):
        parse_command("run")
    with pytest.raises(CommandError, match="cannot split"):
        parse_command("run blue-green 'service=shop")


def test_status_approve_reject() -> None:
    assert parse_command(f"status {RUN_ID}") == StatusCommand(RUN_ID)
    assert parse_command(f"approve {RUN_ID}") == ApproveCommand(RUN_ID, "")
    assert parse_command(f"approve <{RUN_ID}> CAB-42 don't wait") == ApproveCommand(
        RUN_ID, "CAB-42 don't wait"
    )
    assert parse_command(f"reject {RUN_ID} freeze: it's Friday") == RejectCommand(
        RUN_ID, "freeze: it's Friday"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no command given"),
        ("deploy shop", "unknown command 'deploy'"),
        ("list everything", "list takes no arguments"),
        ("status", "status needs a flow run id"),
        ("status not-a-uuid", "'not-a-uuid' is not a flow run id"),
        (f"status {RUN_ID} extra", "status takes only a run id"),
        (f"reject {RUN_ID}", "reject needs a reason"),
        (f"reject {RUN_ID}    ", "reject needs a reason"),
        ("approve 1234", "'1234' is not a flow run id"),
    ],
)
def test_bad_commands_say_how_to_write_them(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(text)


def test_commands_are_frozen() -> None:
    command = parse_command(f"approve {RUN_ID} ok")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.reason = "changed"  # type: ignore[misc]


def test_answers_are_the_blue_green_gates_input_naming_the_caller() -> None:
    # the fields of flows.blue_green.approval.ApprovalInput (the integration test resumes a
    # real gate with them; importing it here would import Prefect)
    approve = ApproveCommand(RUN_ID, "CAB-42").run_input(ALICE)
    assert approve["decision"] == "approve"
    assert approve["approver"] == "alice"
    assert approve["reason"].startswith("CAB-42 (via chat-ops: slack user U1 in #ops (C1))")
    reject = RejectCommand(RUN_ID, "x" * 5000).run_input(Caller(user_id="U7", source="api"))
    assert reject["approver"] == "U7"  # no name: the id
    assert len(reject["reason"]) <= 2000  # ApprovalInput.reason's limit
    bare = ApproveCommand(RUN_ID).run_input(ALICE)
    assert bare["reason"] == "(via chat-ops: slack user U1 in #ops (C1))"


# -- authorisation --

POLICY = AccessPolicy(
    commands={
        "run": AccessRule(users=("alice", "U2"), channels=("ops",)),
        "approve": AccessRule(users=("*",)),
        "status": AccessRule(users=("U1",)),
    },
    runbooks={"blue-green": AccessRule(users=("U1",), channels=("C1",))},
)


def test_mutating_commands_are_denied_without_a_rule() -> None:
    policy = AccessPolicy()
    policy.check("list", MALLORY)
    policy.check("status", MALLORY)
    for command in ("run", "approve", "reject"):
        with pytest.raises(Forbidden, match=f"{command} is denied by default.*commands.{command}"):
            policy.check(command, ALICE, "blue-green")  # type: ignore[arg-type]


def test_rules_allow_by_id_or_name_in_allowed_channels() -> None:
    POLICY.check("run", ALICE, "blue-green")
    POLICY.check("run", Caller("U2", "bob", "C5", "ops"), "retry-storm")  # no runbook rule
    POLICY.check("approve", ALICE, "blue-green")
    POLICY.check("status", ALICE)


@pytest.mark.parametrize(
    ("command", "caller", "runbook", "message"),
    [
        ("run", MALLORY, "retry-storm", r"user mallory \(U9\) may not use `run`: not in "
         r"access\.commands\.run\.users"),
        ("run", Caller("U1", "alice", "C2", "random"), "retry-storm",
         r"`run` is not allowed in #random \(C2\): not in access\.commands\.run\.channels"),
        ("run", Caller("U2", "bob", "C1", "ops"), "blue-green",
         r"user bob \(U2\) may not use `run blue-green`: not in "
         r"access\.runbooks\.blue-green\.users"),
        ("approve", MALLORY, "blue-green",
         r"may not use `approve blue-green`: not in access\.runbooks\.blue-green\.users"),
        ("reject", ALICE, "blue-green", r"reject is denied by default"),
        ("status", MALLORY, None, r"may not use `status`: not in access\.commands\.status\.users"),
    ],
)  # fmt: skip
def test_refusals_name_what_is_missing(
    command: str, caller: Caller, runbook: str | None, message: str
) -> None:
    with pytest.raises(Forbidden, match=message):
        POLICY.check(command, caller, runbook)  # type: ignore[arg-type]


def test_rules_are_validated() -> None:
    with pytest.raises(ValidationError, match="unknown runbook 'blue-gren'"):
        AccessPolicy(runbooks={"blue-gren": AccessRule(users=("*",))})
    with pytest.raises(ValidationError, match="commands"):
        AccessPolicy(commands={"deploy": AccessRule(users=("*",))})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="empty names"):
        AccessRule(users=("alice", " "))
    assert AccessRule(channels=("#ops",)).channels == ("ops",)
    with pytest.raises(ValidationError):
        POLICY.commands = {}  # type: ignore[misc]


def test_a_policy_round_trips_as_json() -> None:
    assert AccessPolicy.model_validate_json(POLICY.model_dump_json()) == POLICY


def test_list_marks_runbooks_the_caller_may_not_run() -> None:
    text = list_text(POLICY, Caller("U2", "bob", "C1", "ops"))
    assert "• blue-green (not allowed for you): Health-gated" in text
    assert "• retry-storm: Detect" in text


def test_run_link() -> None:
    run_id = uuid4()
    assert run_link("http://127.0.0.1:4200/", run_id) == (
        f"http://127.0.0.1:4200/runs/flow-run/{run_id}"
    )
    assert run_link(None, run_id) is None
