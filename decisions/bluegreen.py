"""The blue-green runbook's parameters and plan. Pure: observed state in, frozen plan out.

Colour convention (what the flow creates and what the plan refers to):

- two Deployments, ``<service>-blue`` and ``<service>-green``, whose pods carry the labels
  ``app: <service>`` and ``colour: blue|green``;
- the active Service ``<service>`` selects ``{app: <service>, colour: <active>}``: promotion is
  one patch of that selector, and the active colour is read back from it;
- the preview Service ``<service>-preview`` selects the idle colour: pre-promotion analysis and
  synthetic load go through it, never through the active Service.

So ``service`` is at most 55 characters (``-preview`` makes a 63-character DNS label).

First rollout: when the active Service does not exist, :func:`plan_rollout` refuses (one
sentence saying so). Blue-green needs a running version to fall back to; creating the first
one has no rollback target and is a plain deploy, not this runbook's job. Refusing is the
simplest safe behaviour: nothing is changed and the message says what to create.

Re-running after a crash converges: the plan is rebuilt from live state. Before the selector
switch the idle colour is simply deployed again (idempotent). After it, the new image is
active: if the old colour is still scaled up the plan ``resume``-s (post-promotion analysis,
then scale-down), else there is nothing to do (``noop``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from decisions.analysis import AnalysisSpec
from decisions.flags import validate_flag_steps
from decisions.migrations import MigrationSpec, Phase

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SERVICE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_APPROVER = re.compile(r"^\S{1,200}$")
# An image reference: [host[:port]/]path[:tag][@algorithm:hex].
_DNS_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_DNS_PART}(?:\.{_DNS_PART})*(?::[0-9]+)?)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}))?$"
)


class Colour(StrEnum):
    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Colour:
        return Colour.GREEN if self is Colour.BLUE else Colour.BLUE


def deployment_name(service: str, colour: Colour) -> str:
    return f"{service}-{colour.value}"


def preview_service_name(service: str) -> str:
    return f"{service}-preview"


def flags_config_map_name(service: str) -> str:
    """The default ConfigMap of a service's feature flags (key :data:`FLAGS_KEY`)."""
    return f"{service}-flags"


FLAGS_KEY = "flags.json"
"""The ConfigMap key holding the flags document (``decisions.flags``)."""


def pod_labels(service: str, colour: Colour) -> dict[str, str]:
    """The labels of a colour's pods, and the active Service's selector when it is active."""
    return {"app": service, "colour": colour.value}


def check_image(value: str) -> str:
    """``value`` if it is an image reference with an explicit tag or digest, else ``ValueError``.

    ``latest`` is refused unless pinned by a digest: it is a moving target, so "the new image
    equals the active image" (nothing to do) and "roll back to the previous version" would mean
    nothing (both colours could run different code under one name), and Kubernetes pulls it
    again on every pod start. A tag is a name the plan, the audit trail and the rollback can
    rely on; ``name:tag@sha256:...`` is accepted and is the safest of all.
    """
    match = _IMAGE.match(value)
    if not match:
        raise ValueError(f"image must be a reference like demo/shop:v2, got {value!r}")
    tag, digest = match.group("tag"), match.group("digest")
    if tag is None and digest is None:
        raise ValueError(f"image must have an explicit tag or digest (demo/shop:v2), got {value!r}")
    if tag == "latest" and digest is None:
        raise ValueError(
            f"image tag 'latest' is mutable: name a version (demo/shop:v2) or pin a digest, "
            f"got {value!r}"
        )
    return value


class ApprovalMode(StrEnum):
    NONE = "none"
    REQUIRED = "required"


class ApprovalSpec(BaseModel):
    """The approval gate between pre-promotion analysis and the switch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ApprovalMode = Field(ApprovalMode.NONE, description="none, or required before switch.")
    timeout_seconds: int = Field(
        3600, ge=1, le=7 * 86400, description="Seconds to wait for an answer before aborting."
    )
    allowed_approvers: tuple[str, ...] = Field(
        (), description="Who may approve; empty: anyone who can answer the flow run."
    )

    @field_validator("allowed_approvers")
    @classmethod
    def _approvers_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for who in value:
            if not _APPROVER.match(who):
                raise ValueError(f"approvers must be non-empty names without spaces, got {who!r}")
        return value

    def may_approve(self, who: str) -> bool:
        return not self.allowed_approvers or who in self.allowed_approvers


class FlagRollout(BaseModel):
    """A staged feature-flag rollout after promotion, each step held while health holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Flag name in the service's flags ConfigMap.")
    steps: tuple[int, ...] = Field(
        (10, 50, 100), description="Percentages, strictly increasing in 1..100."
    )
    config_map: str | None = Field(
        None,
        description="ConfigMap holding the flags document under flags.json, mounted by the "
        "service's pods; empty: <service>-flags.",
    )
    hold: AnalysisSpec = Field(
        default_factory=lambda: AnalysisSpec(count=3),
        description="Analysis of the active colour after each step; the next step waits for it "
        "to pass, and a failure turns the flag off (kill switch) and rolls back.",
    )

    @field_validator("config_map")
    @classmethod
    def _config_map_shape(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _LABEL.match(value)):
            raise ValueError(
                "config_map must be a DNS-1123 label (lowercase letters, digits and '-', at "
                f"most 63 characters); got {value!r}"
            )
        return value

    def config_map_name(self, service: str) -> str:
        return self.config_map or flags_config_map_name(service)

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _FLAG.match(value):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {value!r}")
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_shape(cls, value: object) -> tuple[int, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(f"steps must be a list of percentages, got {value!r}")
        return validate_flag_steps(value)


def _pre_promotion() -> AnalysisSpec:
    # Preview traffic is only what we send: without synthetic load the metrics have no data and
    # the analysis would (rightly) be inconclusive. The first measurement waits one query window
    # (30 s): Prometheus must discover the new pods and scrape them twice before rate() has a
    # value, and a window that holds only the analysis's own traffic judges the new version alone.
    return AnalysisSpec(synthetic_load_rps=10.0, initial_delay_seconds=30.0)


class BlueGreenParams(BaseModel):
    """Parameters of the ``blue-green`` runbook (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(description="Service name (DNS-1035 label, at most 55 characters).")
    namespace: str = Field("default", description="Kubernetes namespace (DNS-1123 label).")
    image: str = Field(description="New image with an explicit tag or digest: demo/shop:v2.")
    replicas: int = Field(2, ge=1, le=1000, description="Replicas of the new colour.")
    preview_replicas: int | None = Field(
        None, ge=1, description="Replicas before promotion (1..replicas); empty: replicas."
    )
    pre_promotion: AnalysisSpec = Field(
        default_factory=_pre_promotion, description="Analysis through the preview Service."
    )
    post_promotion: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="Bake analysis after the switch."
    )
    approval: ApprovalSpec = Field(
        default_factory=ApprovalSpec, description="Approval gate before the switch."
    )
    scale_down_delay_seconds: int = Field(
        30, ge=0, le=86400, description="Old colour stays at full size this long after switch."
    )
    progress_deadline_seconds: int = Field(
        600, ge=1, le=86400, description="Seconds for the new colour to become available."
    )
    require_healthy_active: bool = Field(
        True, description="Refuse when the active colour is unhealthy (no warm rollback target)."
    )
    migration: MigrationSpec = Field(
        default_factory=MigrationSpec, description="Expand / backfill / contract SQL steps."
    )
    flag: FlagRollout | None = Field(None, description="Feature flag to roll out after promotion.")
    dry_run: bool = Field(False, description="Plan only: publish the plan and change nothing.")

    @field_validator("service")
    @classmethod
    def _service_shape(cls, value: str) -> str:
        if len(value) > 55 or not _SERVICE.match(value):
            raise ValueError(
                "service must be lowercase letters, digits and '-', start with a letter, end "
                f"with a letter or digit, at most 55 characters; got {value!r}"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if len(value) > 63 or not _LABEL.match(value):
            raise ValueError(
                "namespace must be a DNS-1123 label (lowercase letters, digits and '-', "
                f"at most 63 characters); got {value!r}"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image_shape(cls, value: str) -> str:
        return check_image(value)

    @model_validator(mode="after")
    def _preview_within_replicas(self) -> BlueGreenParams:
        if self.preview_replicas is not None and self.preview_replicas > self.replicas:
            raise ValueError(
                f"preview_replicas ({self.preview_replicas}) must be <= replicas ({self.replicas})"
            )
        return self

    @property
    def target(self) -> str:
        """The lock key: one rollout per namespace/service."""
        return f"{self.namespace}/{self.service}"


class ColourState(BaseModel):
    """One colour's Deployment as observed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exists: bool = False
    image: str | None = None
    replicas: int = Field(0, ge=0)
    available_replicas: int = Field(0, ge=0)
    updated_replicas: int = Field(0, ge=0)
    generation: int = Field(0, ge=0)
    observed_generation: int = Field(0, ge=0)

    @property
    def rolled_out(self) -> bool:
        """The controller saw the latest spec and every replica is updated and available."""
        return (
            self.exists
            and self.observed_generation >= self.generation
            and self.updated_replicas >= self.replicas
            and self.available_replicas >= self.replicas
        )


class ObservedState(BaseModel):
    """Live state read before planning."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    active_colour: Colour | None = Field(
        description="From the active Service's selector; None when the Service does not exist."
    )
    blue: ColourState = Field(default_factory=ColourState)
    green: ColourState = Field(default_factory=ColourState)
    active_healthy: bool = Field(
        description="The active colour answers its health check (the issue's 'blue health')."
    )

    def colour(self, colour: Colour) -> ColourState:
        return self.blue if colour is Colour.BLUE else self.green


class StepKind(StrEnum):
    LOCK = "lock"
    MIGRATE_EXPAND = "migrate_expand"
    DEPLOY_IDLE = "deploy_idle"
    WAIT_ROLLOUT = "wait_rollout"
    MIGRATE_BACKFILL = "migrate_backfill"
    POINT_PREVIEW = "point_preview"
    PRE_ANALYSIS = "pre_analysis"
    APPROVAL = "approval"
    SWITCH = "switch"
    POST_ANALYSIS = "post_analysis"
    FLAG = "flag"
    SCALE_DOWN_OLD = "scale_down_old"
    MIGRATE_CONTRACT = "migrate_contract"
    # undo steps (rollback_steps)
    FLAG_OFF = "flag_off"
    SCALE_UP_OLD = "scale_up_old"
    SWITCH_BACK = "switch_back"
    SCALE_DOWN_NEW = "scale_down_new"


class Step(BaseModel):
    """One step: ``key`` is unique within a plan (transaction key, audit trail)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    kind: StepKind
    sentence: str
    colour: Colour | None = None
    image: str | None = None
    replicas: int | None = None
    percent: int | None = None
    seconds: float | None = None
    migration_ids: tuple[str, ...] = ()


class PlanOutcome(StrEnum):
    ROLLOUT = "rollout"
    RESUME = "resume"
    NOOP = "noop"


class PlanRefused(ValueError):
    """The rollout must not start; the message is one sentence saying why."""


class RolloutPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    params: BlueGreenParams
    outcome: PlanOutcome
    reason: str
    active_colour: Colour
    idle_colour: Colour
    active_image: str
    target_image: str
    steps: tuple[Step, ...]

    def step(self, key: str) -> Step:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)


def plan_rollout(params: BlueGreenParams, observed: ObservedState) -> RolloutPlan:
    """The frozen plan for ``params`` given ``observed``; :class:`PlanRefused` when unsafe."""
    p = params
    if observed.active_colour is None:
        raise PlanRefused(
            f"service: Service {p.namespace}/{p.service} does not exist: blue-green needs a "
            "running version to fall back to, so create "
            f"{deployment_name(p.service, Colour.BLUE)} and a Service selecting "
            f"{pod_labels(p.service, Colour.BLUE)} first."
        )
    active = observed.active_colour
    idle = active.other
    current = observed.colour(active)
    if not current.exists:
        raise PlanRefused(
            f"Service {p.namespace}/{p.service} selects colour {active.value} but Deployment "
            f"{deployment_name(p.service, active)} does not exist: fix the Service first."
        )
    if not current.image:
        raise PlanRefused(
            f"Deployment {deployment_name(p.service, active)} has no container image to roll "
            "back to."
        )
    old_deploy = deployment_name(p.service, active)
    new_deploy = deployment_name(p.service, idle)
    lock = Step(key="lock", kind=StepKind.LOCK, sentence=f"Lock {p.target}: one rollout at a time.")

    def plan(outcome: PlanOutcome, reason: str, steps: list[Step]) -> RolloutPlan:
        return RolloutPlan(
            params=p,
            outcome=outcome,
            reason=reason,
            active_colour=active,
            idle_colour=idle,
            active_image=current.image or "",
            target_image=p.image,
            steps=tuple(steps),
        )

    if current.image == p.image:
        leftover = observed.colour(idle)
        if leftover.exists and leftover.replicas > 0:
            return plan(
                PlanOutcome.RESUME,
                f"{p.image} is already active on {active.value} and {new_deploy} still runs "
                f"{leftover.replicas} replica(s): finish the interrupted promotion.",
                [
                    lock,
                    _post_analysis(p, active),
                    _scale_down(p, idle, p.scale_down_delay_seconds),
                    *_contract(p),
                ],
            )
        return plan(PlanOutcome.NOOP, f"{p.image} is already active on {active.value}.", [])

    if p.require_healthy_active and not observed.active_healthy:
        raise PlanRefused(
            f"{old_deploy} (active) is unhealthy, so there is no warm version to roll back to; "
            "set require_healthy_active to false to ship a fix anyway."
        )

    steps = [lock]
    expand = p.migration.due(Phase.EXPAND)
    if expand:
        steps.append(_migration(Phase.EXPAND, StepKind.MIGRATE_EXPAND, expand, "before"))
    first = p.preview_replicas or p.replicas
    steps += [
        Step(
            key="deploy_idle",
            kind=StepKind.DEPLOY_IDLE,
            colour=idle,
            image=p.image,
            replicas=first,
            sentence=f"Deploy {new_deploy} (idle) with {p.image}, {first} replica(s).",
        ),
        Step(
            key="wait_rollout",
            kind=StepKind.WAIT_ROLLOUT,
            colour=idle,
            replicas=first,
            seconds=float(p.progress_deadline_seconds),
            sentence=f"Wait for {new_deploy} to be available, at most "
            f"{p.progress_deadline_seconds} s; a crash-looping pod fails this at once.",
        ),
    ]
    backfill = p.migration.due(Phase.BACKFILL)
    if backfill:
        steps.append(_migration(Phase.BACKFILL, StepKind.MIGRATE_BACKFILL, backfill, "after"))
    pre = p.pre_promotion
    steps += [
        Step(
            key="point_preview",
            kind=StepKind.POINT_PREVIEW,
            colour=idle,
            sentence=f"Point Service {preview_service_name(p.service)} at {idle.value}.",
        ),
        Step(
            key="pre_analysis",
            kind=StepKind.PRE_ANALYSIS,
            colour=idle,
            seconds=pre.interval_seconds * pre.count,
            sentence=f"Analyse {idle.value} through the preview Service: {pre.count} "
            f"measurement(s) every {pre.interval_seconds:g} s, failure limit "
            f"{pre.failure_limit}; no data is inconclusive.",
        ),
    ]
    if p.approval.mode is ApprovalMode.REQUIRED:
        who = ", ".join(p.approval.allowed_approvers) or "anyone"
        steps.append(
            Step(
                key="approval",
                kind=StepKind.APPROVAL,
                seconds=float(p.approval.timeout_seconds),
                sentence=f"Wait for approval by {who}, at most {p.approval.timeout_seconds} s.",
            )
        )
    if p.preview_replicas is not None and p.preview_replicas < p.replicas:
        steps += [
            Step(
                key="scale_up_new",
                kind=StepKind.DEPLOY_IDLE,
                colour=idle,
                image=p.image,
                replicas=p.replicas,
                sentence=f"Scale {new_deploy} to {p.replicas} replica(s) before the switch.",
            ),
            Step(
                key="wait_scale_up",
                kind=StepKind.WAIT_ROLLOUT,
                colour=idle,
                replicas=p.replicas,
                seconds=float(p.progress_deadline_seconds),
                sentence=f"Wait for {p.replicas} available replica(s) of {new_deploy}.",
            ),
        ]
    steps += [
        Step(
            key="switch",
            kind=StepKind.SWITCH,
            colour=idle,
            sentence=f"Switch Service {p.service} from {active.value} to {idle.value} "
            "(one selector patch).",
        ),
        _post_analysis(p, idle),
    ]
    if p.flag is not None:
        config_map = p.flag.config_map_name(p.service)
        hold = p.flag.hold
        for percent in p.flag.steps:
            steps.append(
                Step(
                    key=f"flag_{percent}",
                    kind=StepKind.FLAG,
                    colour=idle,
                    percent=percent,
                    seconds=hold.initial_delay_seconds + hold.interval_seconds * hold.count,
                    sentence=f"Roll flag {p.flag.name} out to {percent} % (ConfigMap "
                    f"{config_map}), then hold while {hold.count} measurement(s) pass.",
                )
            )
    steps += [_scale_down(p, active, p.scale_down_delay_seconds), *_contract(p)]
    return plan(
        PlanOutcome.ROLLOUT,
        f"Roll {p.service} out from {current.image} ({active.value}) to {p.image} ({idle.value}).",
        steps,
    )


def _migration(phase: Phase, kind: StepKind, due: tuple, when: str) -> Step:
    ids = tuple(s.id for s in due)
    moment = "the new version starts" if phase is Phase.EXPAND else "the new version is ready"
    return Step(
        key=f"migrate_{phase.value}",
        kind=kind,
        migration_ids=ids,
        sentence=f"Run {len(ids)} {phase.value} migration step(s) {when} {moment}.",
    )


def _post_analysis(p: BlueGreenParams, colour: Colour) -> Step:
    post = p.post_promotion
    return Step(
        key="post_analysis",
        kind=StepKind.POST_ANALYSIS,
        colour=colour,
        seconds=post.interval_seconds * post.count,
        sentence=f"Bake {colour.value} for {post.count} measurement(s) every "
        f"{post.interval_seconds:g} s while the old colour stays at full size.",
    )


def _scale_down(p: BlueGreenParams, colour: Colour, delay: int) -> Step:
    gone = (
        ", then wait until its pods are gone (the contract must not overlap the old code)"
        if p.migration.due(Phase.CONTRACT)
        else ""
    )
    return Step(
        key="scale_down_old",
        kind=StepKind.SCALE_DOWN_OLD,
        colour=colour,
        replicas=0,
        seconds=float(delay),
        sentence=f"Scale {deployment_name(p.service, colour)} to 0 once the bake passed and "
        f"at least {delay} s after the switch{gone}.",
    )


def _contract(p: BlueGreenParams) -> list[Step]:
    due = p.migration.due(Phase.CONTRACT)
    if not due:
        return []
    return [_migration(Phase.CONTRACT, StepKind.MIGRATE_CONTRACT, due, "after")]


def rollback_steps(plan: RolloutPlan, reached: Iterable[str]) -> tuple[Step, ...]:
    """The undo steps for the plan steps in ``reached`` (keys of steps started), newest first.

    Undo: flag steps -> one kill switch (flag off); old colour scaled down -> scale it back up
    (and wait) before anything else; switch -> selector back to the old colour; new colour
    deployed -> scale it to 0 (the Deployment stays, for the next rollout). Expand and backfill
    are kept (backward compatible by definition); lock, waits, analyses and approval have
    nothing to undo (the lock is released by the flow's concurrency context). Once a contract
    step has started the old version can no longer run: nothing is undone, returns ``()``.
    """
    keys = set(reached)
    unknown = sorted(keys - {s.key for s in plan.steps})
    if unknown:
        raise ValueError(f"reached names step(s) not in the plan: {unknown}")
    done = [s for s in plan.steps if s.key in keys]
    if any(s.kind is StepKind.MIGRATE_CONTRACT for s in done):
        return ()
    p, old, new = plan.params, plan.active_colour, plan.idle_colour
    resume = plan.outcome is PlanOutcome.RESUME
    if resume:  # the interrupted run switched already: the idle colour is the old version
        old, new = new, old
    scale_down_new = Step(
        key="undo_deploy_idle",
        kind=StepKind.SCALE_DOWN_NEW,
        colour=new,
        replicas=0,
        sentence=f"Scale {deployment_name(p.service, new)} to 0.",
    )
    undo: list[Step] = []
    for step in reversed(done):
        if step.kind is StepKind.FLAG and p.flag is not None:
            if all(u.kind is not StepKind.FLAG_OFF for u in undo):
                undo.append(
                    Step(
                        key="undo_flag",
                        kind=StepKind.FLAG_OFF,
                        percent=0,
                        sentence=f"Kill switch: turn flag {p.flag.name} off.",
                    )
                )
        elif step.kind is StepKind.SCALE_DOWN_OLD:
            undo.append(
                Step(
                    key="undo_scale_down_old",
                    kind=StepKind.SCALE_UP_OLD,
                    colour=old,
                    replicas=p.replicas,
                    seconds=float(p.progress_deadline_seconds),
                    sentence=f"Scale {deployment_name(p.service, old)} back to {p.replicas} "
                    "replica(s) and wait until they are available.",
                )
            )
        elif step.kind is StepKind.SWITCH or (resume and step.kind is StepKind.POST_ANALYSIS):
            undo.append(_switch_back(p, old))
            if resume:
                undo.append(scale_down_new)
        elif step.kind is StepKind.DEPLOY_IDLE and step.key == "deploy_idle":
            undo.append(scale_down_new)
    return tuple(undo)


def _switch_back(p: BlueGreenParams, old: Colour) -> Step:
    return Step(
        key="undo_switch",
        kind=StepKind.SWITCH_BACK,
        colour=old,
        sentence=f"Switch Service {p.service} back to {old.value}.",
    )
