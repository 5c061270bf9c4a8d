"""What a chat command says, and whether its sender may say it (pure: no I/O, no Prefect).

``/runbook <text>`` from Slack, or ``{"text": ...}`` from the JSON API, becomes one frozen
command:

    list                              the runbooks that can be run
    run <runbook> key=value...        start the runbook's deployment with these parameters
    status <run id>                   a flow run's state and link
    approve <run id> [reason]         resume a paused run (the blue-green gate) with "approve"
    reject <run id> <reason>          resume it with "reject"; a reason is required

Why it is built this way:

- ``run``'s words are read by :mod:`runbooks.catalogue` (the same ``key=value`` syntax and the
  same one-sentence errors as ``runbooks run --param``), and validated into the runbook's
  parameters model *before* anything is started, so a bad value is answered with its field
  and no run exists. The deployment's own default parameters are merged underneath first
  (:meth:`RunCommand.params`), which is why validation takes them as an argument;
- approve / reject reasons are the rest of the line, not shell words: "don't ship" must not fail
  on an apostrophe;
- authorisation is a frozen :class:`AccessPolicy` (held by the ``chatops-settings`` block):
  rules per command and per runbook, each a list of users and channels. Mutating commands
  (run, approve, reject) are denied unless a rule allows them; a refusal names the rule that is
  missing or the list the caller is not on, so the admin knows what to change.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runbooks import catalogue

CommandName = Literal["list", "run", "status", "approve", "reject"]
MUTATING: frozenset[str] = frozenset({"run", "approve", "reject"})
ANY = "*"
"""In a rule's users or channels: anyone / any channel."""

USAGE = (
    "usage: list | run <runbook> key=value... | status <run id> | approve <run id> [reason] | "
    "reject <run id> <reason>"
)
_MAX_REASON = 1500  # ApprovalInput.reason allows 2000; the "via" note takes the rest


class CommandError(ValueError):
    """The command text cannot be understood; the message says how to write it."""


class Forbidden(PermissionError):
    """The caller may not do this; the message names the rule or the list that is missing."""


@dataclass(frozen=True)
class Caller:
    """Who sent a command, and from where (Slack ids and names; the JSON API's bot names)."""

    user_id: str
    user_name: str = ""
    channel_id: str = ""
    channel_name: str = ""
    source: str = "slack"

    @property
    def who(self) -> str:
        """The name recorded as approver: the user name when known, else the id."""
        return self.user_name or self.user_id

    def describe_user(self) -> str:
        both = self.user_name and self.user_name != self.user_id
        return f"{self.user_name} ({self.user_id})" if both else self.user_id

    def describe_channel(self) -> str:
        name = f"#{self.channel_name}" if self.channel_name else ""
        if name and self.channel_id and self.channel_name != self.channel_id:
            return f"{name} ({self.channel_id})"
        return name or self.channel_id or "no channel"


@dataclass(frozen=True)
class ListCommand:
    name: Literal["list"] = "list"


@dataclass(frozen=True)
class RunCommand:
    """``run <runbook> key=value...``: the runbook and the values typed (not yet validated)."""

    runbook: str
    values: Mapping[str, Any] = field(default_factory=dict)
    name: Literal["run"] = "run"

    def params(self, defaults: Mapping[str, Any] | None = None) -> BaseModel:
        """The runbook's parameters model: ``defaults`` (the deployment's), then the values.

        Raises :class:`runbooks.catalogue.ParamError` naming the field when invalid.
        """
        entry = catalogue.runbook(self.runbook)
        merged = catalogue.merge(dict(defaults or {}), self.values)
        return catalogue.build_params(entry, overrides=merged)


@dataclass(frozen=True)
class StatusCommand:
    run_id: UUID
    name: Literal["status"] = "status"


@dataclass(frozen=True)
class ApproveCommand:
    run_id: UUID
    reason: str = ""
    name: Literal["approve"] = "approve"

    def run_input(self, caller: Caller) -> dict[str, str]:
        """The blue-green gate's ``ApprovalInput`` fields, naming ``caller`` as the approver."""
        return _answer("approve", caller, self.reason)


@dataclass(frozen=True)
class RejectCommand:
    run_id: UUID
    reason: str
    name: Literal["reject"] = "reject"

    def run_input(self, caller: Caller) -> dict[str, str]:
        return _answer("reject", caller, self.reason)


Command = ListCommand | RunCommand | StatusCommand | ApproveCommand | RejectCommand


def _answer(decision: str, caller: Caller, reason: str) -> dict[str, str]:
    """``decision``/``approver``/``reason`` as ``ApprovalInput`` takes them; the reason keeps
    where the answer came from (user id and channel), since the approver is a display name."""
    via = f"via chat-ops: {caller.source} user {caller.user_id} in {caller.describe_channel()}"
    reason = reason[:_MAX_REASON]
    return {
        "decision": decision,
        "approver": caller.who[:200],
        "reason": f"{reason} ({via})" if reason else f"({via})",
    }


def parse_command(text: str) -> Command:
    """The command ``text`` says; :class:`CommandError` (or a catalogue error for ``run``'s
    runbook and ``key=value`` words) when it cannot be read."""
    words = text.strip().split(maxsplit=1)
    if not words:
        raise CommandError(f"no command given; {USAGE}")
    verb, rest = words[0].lower(), (words[1] if len(words) > 1 else "").strip()
    if verb == "list":
        if rest:
            raise CommandError(f"list takes no arguments, got {rest!r}")
        return ListCommand()
    if verb == "run":
        return _parse_run(rest)
    if verb in ("status", "approve", "reject"):
        run_word, _, reason = rest.partition(" ")
        run_id = _run_id(verb, run_word)
        reason = reason.strip()
        if verb == "status":
            if reason:
                raise CommandError(f"status takes only a run id, got extra words {reason!r}")
            return StatusCommand(run_id)
        if verb == "approve":
            return ApproveCommand(run_id, reason)
        if not reason:
            raise CommandError("reject needs a reason: reject <run id> <reason>")
        return RejectCommand(run_id, reason)
    raise CommandError(f"unknown command {verb!r}; {USAGE}")


def _parse_run(rest: str) -> RunCommand:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise CommandError(f"cannot split the run command: {exc}") from None
    if not words:
        known = ", ".join(sorted(catalogue.CATALOGUE))
        raise CommandError(f"run needs a runbook: run <runbook> key=value... (known: {known})")
    entry = catalogue.runbook(words[0])
    return RunCommand(entry.name, catalogue.parse_pairs(words[1:]))


def _run_id(verb: str, word: str) -> UUID:
    if not word:
        raise CommandError(f"{verb} needs a flow run id: {verb} <run id>")
    try:
        return UUID(word.strip("<>"))
    except ValueError:
        raise CommandError(f"{verb}: {word!r} is not a flow run id (a UUID)") from None


# --- authorisation ---


class AccessRule(BaseModel):
    """Who may use a command (or a runbook): users and channels, by Slack id or name.

    Ids (``U0123``, ``C0456``) are the safe choice: names can be changed by their owners. ``*``
    allows anyone (users) or any channel (channels). No users means nobody.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[str, ...] = Field(
        default=(), description="Slack user ids or names allowed; '*' for anyone."
    )
    channels: tuple[str, ...] = Field(
        default=(ANY,), description="Slack channel ids or names allowed; '*' for any channel."
    )

    @field_validator("users", "channels")
    @classmethod
    def _no_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(item.strip().removeprefix("#") for item in value)
        if any(not item for item in cleaned):
            raise ValueError("must not contain empty names")
        return cleaned

    def allows_user(self, caller: Caller) -> bool:
        return _listed(self.users, caller.user_id, caller.user_name)

    def allows_channel(self, caller: Caller) -> bool:
        return _listed(self.channels, caller.channel_id, caller.channel_name)


def _listed(allowed: tuple[str, ...], *names: str) -> bool:
    return ANY in allowed or any(name and name in allowed for name in names)


class AccessPolicy(BaseModel):
    """Rules per command and per runbook. A command needs its command rule (mutating commands
    have none by default, so nobody may use them); run / approve / reject of a runbook with a
    runbook rule need that rule too. ``list`` and ``status`` are open unless given a rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commands: dict[CommandName, AccessRule] = Field(
        default_factory=dict,
        description="Rule per command (list, run, status, approve, reject).",
    )
    runbooks: dict[str, AccessRule] = Field(
        default_factory=dict,
        description="Extra rule per runbook for run, approve and reject (e.g. blue-green).",
    )

    @field_validator("runbooks")
    @classmethod
    def _known_runbooks(cls, value: dict[str, AccessRule]) -> dict[str, AccessRule]:
        unknown = sorted(set(value) - set(catalogue.CATALOGUE))
        if unknown:
            known = ", ".join(sorted(catalogue.CATALOGUE))
            raise ValueError(f"unknown runbook {unknown[0]!r} (known: {known})")
        return value

    def check(self, command: CommandName, caller: Caller, runbook: str | None = None) -> None:
        """Raise :class:`Forbidden` unless ``caller`` may use ``command`` (on ``runbook``)."""
        rule = self.commands.get(command)
        if rule is None and command in MUTATING:
            raise Forbidden(
                f"{command} is denied by default: no rule access.commands.{command} allows it "
                "(add one to the chatops-settings block)"
            )
        if rule is not None:
            _require(rule, caller, f"access.commands.{command}", command)
        if runbook is not None and command in MUTATING and runbook in self.runbooks:
            _require(
                self.runbooks[runbook], caller, f"access.runbooks.{runbook}", f"{command} {runbook}"
            )


def _require(rule: AccessRule, caller: Caller, where: str, what: str) -> None:
    if not rule.allows_user(caller):
        raise Forbidden(f"user {caller.describe_user()} may not use `{what}`: not in {where}.users")
    if not rule.allows_channel(caller):
        raise Forbidden(
            f"`{what}` is not allowed in {caller.describe_channel()}: not in {where}.channels"
        )


def run_link(ui_url: str | None, run_id: UUID | str) -> str | None:
    """The Prefect UI page of a flow run under ``ui_url`` (None when no UI is known)."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}"


def list_text(policy: AccessPolicy, caller: Caller) -> str:
    """``list``'s answer: every runbook, marked when the caller may not run it."""
    lines = ["runbooks (run <name> key=value...):"]
    for entry in catalogue.CATALOGUE.values():
        try:
            policy.check("run", caller, entry.name)
            mark = ""
        except Forbidden:
            mark = " (not allowed for you)"
        lines.append(f"• {entry.name}{mark}: {entry.description}")
    return "\n".join(lines)
