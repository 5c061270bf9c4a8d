"""Every runbook's deployment, as data: name, description, tags, schedule, concurrency, defaults.

Why a spec list and not ``flow.to_deployment(...)`` calls scattered over the flows: one place says
how each runbook is deployed, ``runbooks serve`` (:mod:`deployments.serve`) and ``prefect.yaml``
(``prefect deploy --all``) are built from or checked against it, and a test holds them equal. The
list is pure (no Prefect, no I/O at import): listing it costs nothing and it can be tested without
a server. :func:`runner_deployments` is the Prefect half, importing the flows only when called.

Conventions:

- **Names.** The deployment is named after the runbook, and every flow is named after its runbook
  too, so a deployment is ``<runbook>/<runbook>``: ``retry-storm/retry-storm`` is what the
  automation runs (:data:`deployments.automations.RETRY_STORM_DEPLOYMENT`).
- **Tags.** ``runbooks``, the runbook's area (``rollout``, ``capacity``, ``routing``,
  ``observability``, ``resilience``) and ``mutating`` or ``read-only``, so the UI's filters answer
  "what may change my systems?" at a glance.
- **Schedules** are cron in UTC (never intervals: an interval is anchored at the moment it was
  registered, so re-registering would move it and shift the minute it fires).
- **Parameter defaults.** Blocks by their saved name (the catalogue's defaults, e.g.
  ``kubernetes-target/sandbox``), never literal settings. ``params`` (the runbook's pydantic
  model) gets a default only where the model's own defaults make a complete run
  (``apply-scaling``: every stored schedule; ``alert-bridge``: the retry-storm alerts). Where the
  input is the team's own (the services to forecast, the access logs to read, the regions to
  probe), no default is invented: the schedule is registered *paused* until ``params`` are given
  (:func:`runner_deployments`'s ``params``, or the deployment's form in the UI). A scheduled run
  with no ``params`` would fail every time, once a minute for ``regional-health``. ``retry-storm``
  has no ``params`` default on purpose: its automation sends ``{"params": {"trigger": ...}}`` and
  Prefect merges run parameters over the deployment's at the top level only, so a ``params``
  default would be silently replaced (``deployments/automations.py``).
- **Concurrency.** A mutating runbook's deployment takes one run at a time and queues the next
  (``limit=1``, ``ENQUEUE``): runs are never dropped, and two runs of one deployment cannot
  interleave their changes. That is a per-*deployment* limit, while one deployment serves many
  targets (services, namespaces, zones); exclusion per *target* is the flows' own
  ``target_lock`` (DESIGN.md principle 7), which also holds across the process and Kubernetes
  deployments of one runbook and against ``runbooks run``. Read-only runbooks are unlimited, but
  those scheduled every minute take one run at a time and cancel the newcomer (``limit=1``,
  ``CANCEL_NEW``): a slow probe must not pile runs up behind it, the next minute's run will look
  again anyway.
- **Parameter checks.** Every deployment has the Prefect API check a run's parameters against
  the flow's schema before creating it (``enforce_parameter_schema``), so a bad parameter from
  the UI, chat-ops or an automation is refused at once with HTTP 409 naming the field, rather
  than by a run that fails when it starts. Block parameters default to references
  (``{"$ref": ...}``), which the check tells from a block's own data through the block's schema
  (``blocks.kubernetes.REFERENCE_IS_NOT_BLOCK_DATA`` for ``KubernetesTarget``, whose fields all
  have defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx

from runbooks import catalogue
from runbooks.catalogue import BlockError, CatalogueError
from runbooks.errors import from_httpx

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

UTC = "UTC"
RUNBOOKS_TAG = "runbooks"
AREAS = ("rollout", "capacity", "routing", "observability", "resilience")


class Collision(StrEnum):
    """What Prefect does with a run that finds the deployment's concurrency limit reached."""

    ENQUEUE = "ENQUEUE"  # wait for a slot
    CANCEL_NEW = "CANCEL_NEW"  # cancel the newcomer


@dataclass(frozen=True)
class Concurrency:
    limit: int
    collision: Collision


ONE_AT_A_TIME = Concurrency(1, Collision.ENQUEUE)
SKIP_IF_BUSY = Concurrency(1, Collision.CANCEL_NEW)


@dataclass(frozen=True)
class CronSchedule:
    """A cron schedule; ``minute_level`` when it fires every minute."""

    cron: str
    timezone: str = UTC

    @property
    def minute_level(self) -> bool:
        return self.cron.split()[0] == "*"


NIGHTLY_0200 = CronSchedule("0 2 * * *")
HOURLY_AT_05 = CronSchedule("5 * * * *")
EVERY_MINUTE = CronSchedule("* * * * *")
MONDAY_0300 = CronSchedule("0 3 * * 1")

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class DeploymentSpec:
    """How one runbook is deployed. ``params`` is the default of the flow's ``params``
    argument, ``None`` when only the team can give it (see the module's docstring)."""

    runbook: str
    entrypoint: str  # "flows/<file>.py:<function>", as prefect.yaml writes it
    area: str
    mutating: bool
    description: str
    schedule: CronSchedule | None = None
    params: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.runbook

    @property
    def full_name(self) -> str:
        """``<flow name>/<deployment name>``: flows are named after their runbooks."""
        return f"{self.runbook}/{self.runbook}"

    @property
    def tags(self) -> tuple[str, ...]:
        return (RUNBOOKS_TAG, self.area, "mutating" if self.mutating else "read-only")

    @property
    def concurrency(self) -> Concurrency | None:
        if self.mutating:
            return ONE_AT_A_TIME
        if self.schedule is not None and self.schedule.minute_level:
            return SKIP_IF_BUSY
        return None

    @property
    def module_entrypoint(self) -> str:
        """The entrypoint as ``module:function`` (``flows/a/b.py:f`` -> ``flows.a.b:f``)."""
        path, _, function = self.entrypoint.partition(":")
        return f"{path.removesuffix('.py').replace('/', '.')}:{function}"

    def block_defaults(self) -> dict[str, str]:
        """Block parameter -> saved block (``<type slug>/<name>``), from the catalogue."""
        entry = catalogue.runbook(self.runbook)
        return {b.name: b.default for b in entry.blocks if b.default is not None}

    def schedule_active(self, params: Mapping[str, Any] | None = None) -> bool:
        """A schedule runs only when its runs get ``params`` (the spec's or ``params``)."""
        if self.schedule is None:
            return False
        return (params if params is not None else self.params) is not None


SPECS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        runbook="blue-green",
        entrypoint="flows/blue_green/flow.py:blue_green",
        area="rollout",
        mutating=True,
        description="Rolls a new image out to the idle colour of a Kubernetes service, checks "
        "it (health, Prometheus analysis, an approval when asked), then switches the Service or "
        "rolls back on its own. On demand: the UI, chat-ops or `runbooks run blue-green`.",
    ),
    DeploymentSpec(
        runbook="select-regions",
        entrypoint="flows/select_regions.py:select_regions",
        area="routing",
        mutating=False,
        schedule=MONDAY_0300,
        description="Reads the access logs and chooses the AWS regions that serve their users "
        "fastest (P95 per number of regions, the recommended set, a country -> region map). "
        "Weekly, Monday 03:00 UTC, once its log sources are set in params.",
    ),
    DeploymentSpec(
        runbook="geo-routing",
        entrypoint="flows/geo_routing.py:geo_routing",
        area="routing",
        mutating=True,
        description="Points a Route 53 name at the healthy regions by geolocation, with health "
        "checks, in one change batch; verifies it and restores the old records on any failure. "
        "On demand, typically after select-regions.",
    ),
    DeploymentSpec(
        runbook="regional-health",
        entrypoint="flows/regional_health.py:regional_health",
        area="routing",
        mutating=False,
        schedule=EVERY_MINUTE,
        description="Probes every region's health endpoint and emits a healthy or unhealthy "
        "event per region. Every minute (a slow run makes the next one skip), once the regions "
        "are set in params.",
    ),
    DeploymentSpec(
        runbook="tracing-rollout",
        entrypoint="flows/tracing_rollout/flow.py:tracing_rollout",
        area="observability",
        mutating=True,
        description="Turns OpenTelemetry tracing on service by service (a canary, then "
        "batches), checks each one reports in the trace backend and reverts those that do not. "
        "On demand.",
    ),
    DeploymentSpec(
        runbook="load-forecast",
        entrypoint="flows/load_forecast/flow.py:load_forecast",
        area="capacity",
        mutating=True,
        schedule=NIGHTLY_0200,
        description="Forecasts each service's load for the next 48 h, plans instances per hour "
        "within budget, stores the schedules and writes the Auto Scaling actions. Nightly at "
        "02:00 UTC, once the services are set in params.",
    ),
    DeploymentSpec(
        runbook="retry-storm",
        entrypoint="flows/retry_storm/flow.py:retry_storm",
        area="resilience",
        mutating=True,
        description="Contains a retry storm in the callers' retry settings (budget, retries "
        "off, breaker), waits for the dependency to heal and restores them. Started by its "
        "automation when Prometheus' retry-storm alerts fire, or by hand.",
    ),
    DeploymentSpec(
        runbook="alert-bridge",
        entrypoint="flows/alert_bridge.py:alert_bridge",
        area="observability",
        mutating=False,
        schedule=EVERY_MINUTE,
        params=_NO_PARAMS,
        description="Forwards Prometheus' firing alerts as Prefect events, which the automations "
        "turn into runbook runs (retry-storm). Every minute; a slow run makes the next skip.",
    ),
    DeploymentSpec(
        runbook="apply-scaling",
        entrypoint="flows/apply_scaling.py:apply_scaling",
        area="capacity",
        mutating=True,
        schedule=HOURLY_AT_05,
        params=_NO_PARAMS,
        description="Sets each service's autoscaler floor (HPA minReplicas or KEDA cron "
        "triggers) to this hour's planned minimum from load-forecast's schedules. Hourly at "
        "minute 5.",
    ),
)


def spec(runbook: str) -> DeploymentSpec:
    for candidate in SPECS:
        if candidate.runbook == runbook:
            return candidate
    catalogue.runbook(runbook)  # UnknownRunbook, naming the known ones
    raise CatalogueError(f"runbook {runbook} has no deployment in deployments/definitions.py")


# --- Prefect: the RunnerDeployments (imports inside) ---


def runner_deployments(
    block_overrides: Mapping[str, str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[RunnerDeployment]:
    """Every runbook's ``RunnerDeployment``, its blocks loaded from the Prefect API by name.

    ``block_overrides``: block parameter -> saved block (``{"kubernetes": "prod"}`` or
    ``"kubernetes-target/prod"``; ``"none"`` drops an optional block), for every runbook that
    has that parameter. ``params``: runbook -> its ``params`` default (validated against its
    model now); it activates the schedule of a runbook whose spec has none.

    Blocks are loaded (``Block.load``) rather than referenced by slug: the deployment then stores
    ``{"$ref": {"block_document_id": ...}}``, which Prefect resolves at run time and the UI
    renders as a block picker; settings and secrets stay in the block. A missing block is
    refused here, all of them in one ``BlockError``, before anything is registered.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    choices = _block_choices(block_overrides or {})
    defaults = _params_defaults(params or {})
    blocks: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for item in SPECS:
        try:
            blocks[item.runbook] = _load(item, choices[item.runbook])
        except BlockError as exc:
            errors.append(f"{item.runbook}: {exc}")
    if errors:
        raise BlockError("; ".join(errors))
    deployments = []
    for item in SPECS:
        given = defaults.get(item.runbook)
        parameters: dict[str, Any] = dict(blocks[item.runbook])
        if given is not None or item.params is not None:
            parameters["params"] = dict(given if given is not None else item.params or {})
        schedules = []
        if item.schedule is not None:
            active = item.schedule_active(given)
            schedules.append(Cron(item.schedule.cron, item.schedule.timezone, active=active))
        limit = None
        if item.concurrency is not None:
            limit = ConcurrencyLimitConfig(
                limit=item.concurrency.limit,
                collision_strategy=ConcurrencyLimitStrategy(item.concurrency.collision.value),
            )
        flow = catalogue.runbook(item.runbook).flow_function()
        deployments.append(
            flow.to_deployment(
                name=item.name,
                description=item.description,
                tags=list(item.tags),
                parameters=parameters,
                schedules=schedules or None,
                concurrency_limit=limit,
                enforce_parameter_schema=True,
                # imported as a module (flows.select_regions), not loaded from its file: a run's
                # persisted result then names classes anyone importing the package can load
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def _block_choices(overrides: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Per runbook, the overridden block choices (validated by the catalogue's rules)."""
    known = {b.name for item in SPECS for b in catalogue.runbook(item.runbook).blocks}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise BlockError(
            f"no runbook has a block parameter {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    choices = {}
    for item in SPECS:
        entry = catalogue.runbook(item.runbook)
        names = {b.name for b in entry.blocks}
        pairs = [f"{name}={choice}" for name, choice in overrides.items() if name in names]
        choices[item.runbook] = catalogue.parse_block_choices(entry, pairs)
    return choices


def _params_defaults(given: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """``params`` defaults by runbook, each refused (naming the field) unless its model takes it."""
    checked = {}
    for name, values in given.items():
        item = spec(name)
        if item.runbook == "retry-storm":
            raise CatalogueError(
                "retry-storm takes no params default: its automation's params replace it "
                "whole; keep its tuning in the model's defaults or its blocks"
            )
        try:
            catalogue.build_params(catalogue.runbook(name), overrides=values)
        except CatalogueError as exc:
            raise CatalogueError(f"params of {name}: {exc}") from exc
        checked[name] = values
    return checked


def _load(item: DeploymentSpec, choices: Mapping[str, str | None]) -> dict[str, Any]:
    try:
        return catalogue.load_blocks(catalogue.runbook(item.runbook), choices)
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"load the blocks of {item.runbook}", target="Prefect API") from exc
