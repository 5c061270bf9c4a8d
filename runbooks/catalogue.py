"""The runbooks one can run by name, and how their parameters are read from text.

Why one catalogue: ``runbooks run``, the demo, the deployments and the chat-ops endpoint
(``/runbook run blue-green service=shop image=demo/shop:v2``) all turn a runbook name and some
``key=value`` words into a validated parameters model and the blocks its flow needs. Doing that
in one place means one syntax, one set of error messages and one list of runbooks.

Two halves:

- **pure** (no Prefect, no I/O but reading a params file): :func:`runbook`,
  :func:`parse_pairs`, :func:`read_params_file`, :func:`build_params`,
  :func:`parse_block_choices`, :func:`summary_lines`. Flows and block classes are named by
  import path and resolved only when a run needs them, so listing the catalogue is instant and
  a chat bot can validate a command without importing a flow;
- **Prefect** (imported inside): :func:`load_blocks` reads saved blocks from the Prefect API,
  :func:`run_in_process` runs the flow and returns its result with the flow run's id.

Every input error is a :class:`CatalogueError` whose message is one sentence naming what to
fix (the parameter, the block, the runbook); nothing has been started when one is raised.
"""

from __future__ import annotations

import importlib
import json
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

NO_BLOCK = "none"
"""``--block prometheus=none``: run without an optional block its default would load."""


class CatalogueError(ValueError):
    """Bad input to a runbook (name, parameter, block); the message says what to fix."""


class UnknownRunbook(CatalogueError):
    pass


class ParamError(CatalogueError):
    """A parameter is malformed or invalid; ``field`` is its dotted name ('' for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class BlockError(CatalogueError):
    """A block is unknown to the runbook, not saved, or of the wrong type."""


@dataclass(frozen=True)
class BlockParam:
    """One block parameter of a flow, and the saved block used when none is named."""

    name: str
    block_class: str  # "module:Class", imported only to load it
    type_slug: str  # the block type's slug, to name it without importing Prefect
    required: bool
    default: str | None = None  # "<type slug>/<name>" where the sandbox saves one
    description: str = ""

    def slug(self, choice: str) -> str:
        """``choice`` as ``<type slug>/<name>``: a bare name is of this parameter's type."""
        return choice if "/" in choice else f"{self.type_slug}/{choice}"


@dataclass(frozen=True)
class Runbook:
    """A runnable runbook: its flow takes ``params`` (the model) and its blocks by name."""

    name: str
    description: str
    flow: str  # "module:function"
    params_model: str  # "module:Class"
    blocks: tuple[BlockParam, ...] = ()

    def params_class(self) -> type[BaseModel]:
        return _resolve(self.params_model)

    def flow_function(self) -> Any:
        return _resolve(self.flow)

    def block(self, name: str) -> BlockParam:
        for block in self.blocks:
            if block.name == name:
                return block
        known = ", ".join(b.name for b in self.blocks) or "none"
        raise BlockError(f"runbook {self.name} has no block parameter {name!r} (known: {known})")


CATALOGUE: dict[str, Runbook] = {
    runbook.name: runbook
    for runbook in (
        Runbook(
            name="blue-green",
            description="Health-gated blue-green rollout of a Kubernetes service with automatic "
            "rollback.",
            flow="flows.blue_green:blue_green",
            params_model="decisions.bluegreen:BlueGreenParams",
            blocks=(
                BlockParam(
                    "kubernetes",
                    "blocks.kubernetes:KubernetesTarget",
                    "kubernetes-target",
                    required=True,
                    default="kubernetes-target/sandbox",
                    description="the cluster and namespace the service runs in",
                ),
                BlockParam(
                    "prometheus",
                    "blocks.http:HttpService",
                    "http-service",
                    required=False,
                    default="http-service/sandbox-prometheus",
                    description="Prometheus, for success-rate and latency analysis",
                ),
                BlockParam(
                    "database",
                    "blocks.database:DatabaseTarget",
                    "database-target",
                    required=False,
                    description="the database the migration steps run on",
                ),
            ),
        ),
        Runbook(
            name="select-regions",
            description="Choose the AWS regions that serve the users in access logs fastest "
            "(P95 per k, the recommended k, a country -> region map).",
            flow="flows.select_regions:select_regions",
            params_model="decisions.selection:SelectRegionsParams",
            blocks=(
                BlockParam(
                    "aws",
                    "blocks.aws:AwsTarget",
                    "aws-target",
                    required=False,
                    default="aws-target/sandbox",
                    description="AWS account for s3:// log sources",
                ),
            ),
        ),
        Runbook(
            name="geo-routing",
            description="Health-checked Route 53 geolocation records for a set of regions: plan, "
            "one change batch, verify, restore on failure.",
            flow="flows.geo_routing:geo_routing",
            params_model="decisions.georouting:GeoRoutingParams",
            blocks=(
                BlockParam(
                    "aws",
                    "blocks.aws:AwsTarget",
                    "aws-target",
                    required=True,
                    default="aws-target/sandbox",
                    description="the AWS account whose Route 53 zone is changed",
                ),
            ),
        ),
        Runbook(
            name="regional-health",
            description="Probe each region's health endpoint: a table artifact and "
            "healthy/unhealthy events per region.",
            flow="flows.regional_health:regional_health",
            params_model="flows.regional_health:RegionalHealthParams",
        ),
        Runbook(
            name="tracing-rollout",
            description="Roll OpenTelemetry tracing out service by service (canary, batches), "
            "verify each one reports in the trace backend, revert the ones that do not.",
            flow="flows.tracing_rollout:tracing_rollout",
            params_model="decisions.tracing_plan:TracingRolloutParams",
            blocks=(
                BlockParam(
                    "kubernetes",
                    "blocks.kubernetes:KubernetesTarget",
                    "kubernetes-target",
                    required=True,
                    default="kubernetes-target/sandbox",
                    description="the cluster whose Deployments are traced",
                ),
                BlockParam(
                    "traces",
                    "blocks.traces:TraceBackend",
                    "trace-backend",
                    required=True,
                    default="trace-backend/sandbox",
                    description="the trace backend the spans are looked for in",
                ),
            ),
        ),
        Runbook(
            name="load-forecast",
            description="Forecast each service's load (best model by backtest), plan instances "
            "per hour within budget, store the schedules and write Auto Scaling actions.",
            flow="flows.load_forecast:load_forecast",
            params_model="decisions.load_forecast:LoadForecastParams",
            blocks=(
                BlockParam(
                    "prometheus",
                    "blocks.http:HttpService",
                    "http-service",
                    required=False,
                    default="http-service/sandbox-prometheus",
                    description="Prometheus, for prometheus metric sources",
                ),
                BlockParam(
                    "aws",
                    "blocks.aws:AwsTarget",
                    "aws-target",
                    required=False,
                    default="aws-target/sandbox",
                    description="AWS account for CloudWatch sources and Auto Scaling groups",
                ),
            ),
        ),
        Runbook(
            name="apply-scaling",
            description="Set each service's HPA minReplicas (or KEDA cron triggers) to this "
            "hour's planned minimum from load-forecast's schedules.",
            flow="flows.apply_scaling:apply_scaling",
            params_model="decisions.load_forecast:ApplyScalingParams",
            blocks=(
                BlockParam(
                    "kubernetes",
                    "blocks.kubernetes:KubernetesTarget",
                    "kubernetes-target",
                    required=True,
                    default="kubernetes-target/sandbox",
                    description="the cluster whose autoscalers follow the schedules",
                ),
            ),
        ),
        Runbook(
            name="retry-storm",
            description="Detect a retry storm from Prometheus, contain it step by step in the "
            "callers' retry settings (budget, retries off, breaker), wait for recovery, restore.",
            flow="flows.retry_storm:retry_storm",
            params_model="decisions.retry_storm:RetryStormParams",
            blocks=(
                BlockParam(
                    "prometheus",
                    "blocks.http:HttpService",
                    "http-service",
                    required=True,
                    default="http-service/sandbox-prometheus",
                    description="the Prometheus scraping the callers",
                ),
                BlockParam(
                    "kubernetes",
                    "blocks.kubernetes:KubernetesTarget",
                    "kubernetes-target",
                    required=True,
                    default="kubernetes-target/sandbox",
                    description="the cluster holding the callers' retry ConfigMaps",
                ),
            ),
        ),
        Runbook(
            name="alert-bridge",
            description="Read Prometheus' firing alerts and emit one Prefect event per alert "
            "(runbooks.alert.firing) for the automations that run the runbooks.",
            flow="flows.alert_bridge:alert_bridge",
            params_model="flows.alert_bridge:AlertBridgeParams",
            blocks=(
                BlockParam(
                    "prometheus",
                    "blocks.http:HttpService",
                    "http-service",
                    required=True,
                    default="http-service/sandbox-prometheus",
                    description="the Prometheus whose firing alerts are forwarded",
                ),
            ),
        ),
    )
}


def runbook(name: str) -> Runbook:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise UnknownRunbook(f"unknown runbook {name!r}; known: {known}") from None


def parse_value(text: str) -> Any:
    """JSON when ``text`` is valid JSON (``3``, ``null``, ``["alice"]``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}``; later pairs win."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not all(parts):
            raise ParamError(
                key if sep else "",
                f"expected key=value (dotted keys for nested fields), got {pair!r}",
            )
        values = merge(values, _nest(parts, parse_value(text)), where="")
    return values


def _nest(parts: Sequence[str], value: Any) -> dict[str, Any]:
    for part in reversed(parts[1:]):
        value = {part: value}
    return {parts[0]: value}


def merge(base: Mapping[str, Any], override: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``override`` over ``base``, nested mappings merged key by key (the file, then pairs)."""
    merged = dict(base)
    for key, value in override.items():
        field = f"{where}.{key}" if where else key
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = merge(old, value, field)
        elif isinstance(value, Mapping) and key in merged and old is not None:
            raise ParamError(field, f"is {old!r}, so it cannot also take nested keys")
        else:
            merged[key] = value
    return merged


def read_params_file(path: Path) -> dict[str, Any]:
    """A mapping from a JSON file, or a YAML one (``.yaml`` / ``.yml``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParamError("", f"cannot read the params file {path}: {exc.strerror}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # installed with Prefect

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParamError("", f"the params file {path} is not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ParamError("", f"the params file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamError("", f"the params file {path} must hold a mapping of parameters")
    return data


def build_params(
    entry: Runbook,
    pairs: Iterable[str] = (),
    params_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BaseModel:
    """The runbook's parameters model from a file, then ``pairs``, then ``overrides``."""
    values = read_params_file(params_file) if params_file is not None else {}
    values = merge(values, parse_pairs(pairs))
    values = merge(values, overrides or {})
    model = entry.params_class()
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _param_error(model, exc) from None


def _param_error(model: type[BaseModel], exc: ValidationError) -> ParamError:
    """The first error, named by its dotted field; an unknown key lists the known ones."""
    first = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in first.get("loc", ()))
    field = ".".join(loc)
    if first.get("type") == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = f" (known: {', '.join(known)})" if known else ""
        return ParamError(field, f"unknown parameter{hint}")
    message = str(first.get("msg", exc)).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "required, but not given"
    return ParamError(field, message)


def _fields_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """Field names of the (nested) model at ``loc``; empty when it is not a model."""
    current: Any = model
    for part in loc:
        info = current.model_fields.get(part) if _is_model(current) else None
        if info is None:
            return []
        current = next(
            (a for a in (info.annotation, *get_args(info.annotation)) if _is_model(a)), None
        )
    return list(current.model_fields) if _is_model(current) else []


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def parse_block_choices(entry: Runbook, pairs: Iterable[str]) -> dict[str, str | None]:
    """``["kubernetes=prod"]`` -> ``{"kubernetes": "kubernetes-target/prod"}``; ``none`` skips
    an optional block. Unnamed blocks are absent (their defaults apply)."""
    choices: dict[str, str | None] = {}
    for pair in pairs:
        name, sep, choice = (part.strip() for part in pair.partition("="))
        if not sep or not name or not choice:
            raise BlockError(f"expected --block name=saved-block, got {pair!r}")
        block = entry.block(name)
        if choice.lower() == NO_BLOCK:
            if block.required:
                raise BlockError(f"block {name} is required by {entry.name}: name a saved block")
            choices[name] = None
            continue
        slug = block.slug(choice)
        if slug.split("/", 1)[0] != block.type_slug:
            raise BlockError(f"block {name} must be a {block.type_slug} block, got {slug!r}")
        choices[name] = slug
    return choices


def parse_invocation(text: str) -> tuple[Runbook, dict[str, Any]]:
    """``"blue-green service=shop image=demo/shop:v2"`` (a chat command's words, shell-quoted)
    -> the runbook and its raw values (validate them with :func:`build_params`)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise CatalogueError(f"cannot split the command: {exc}") from exc
    if not words:
        raise UnknownRunbook(f"name a runbook; known: {', '.join(sorted(CATALOGUE))}")
    return runbook(words[0]), parse_pairs(words[1:])


def summary_lines(result: Any, ui_url: str | None = None) -> list[str]:
    """A run's result as a few readable lines: outcome, reason, plan of a dry run, timeline."""
    rollout = getattr(result, "rollout", None)
    outcome = _text(result.outcome)
    headline = f"{result.runbook} {result.target}: {outcome}"
    if rollout is not None and _text(rollout) != outcome:
        headline += f" ({_text(rollout)})"
    lines = [headline, f"  reason: {result.reason}"]
    seconds = getattr(result, "rollback_seconds", None)
    if seconds is not None:
        undone = ", ".join(getattr(result, "undone", ())) or "nothing"
        lines.append(f"  rolled back in {seconds} s (undone: {undone})")
    plan = getattr(result, "plan", None)
    if result.dry_run and plan is not None:
        lines.append("  plan:")
        lines += [f"    {n}. {step.sentence}" for n, step in enumerate(plan.steps, 1)]
    lines.append("  timeline:")
    for entry in result.timeline:
        mark = "  " if entry.ok else "!!"
        at = entry.at.strftime("%H:%M:%S.%f")[:-3]
        lines.append(f"    {at} {mark} {entry.step}: {entry.detail}".rstrip())
    if ui_url:
        lines.append(f"  flow run: {ui_url}")
    return lines


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


# --- Prefect: loading blocks and running a flow (imports inside) ---


def load_blocks(entry: Runbook, choices: Mapping[str, str | None]) -> dict[str, Any]:
    """The flow's block arguments: each named (or default) saved block, loaded from the API.

    A required block that is not saved is a :class:`BlockError` saying how to create it; an
    optional block is skipped when only its default is missing, and is ``None`` when chosen
    so (``prometheus=none``).
    """
    loaded: dict[str, Any] = {}
    for block in entry.blocks:
        explicit = block.name in choices
        slug = choices[block.name] if explicit else block.default
        if slug is None:
            if block.required:
                raise BlockError(f"block {block.name} is required: pass --block {block.name}=NAME")
            if explicit:  # "none" chosen: said explicitly, so a deployment's default is not used
                loaded[block.name] = None
            continue
        try:
            loaded[block.name] = _load_block(block, slug)
        except BlockError:
            if explicit or block.required:
                raise
    return loaded


def _load_block(block: BlockParam, slug: str) -> Any:
    cls = _resolve(block.block_class)
    name = slug.split("/", 1)[1]
    try:
        return cls.load(name)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        how = (
            f"save one ({cls.__name__}(...).save({name!r}) or the Prefect UI's Blocks page)"
            if slug != block.default
            else f"pass --block {block.name}=NAME"
        )
        raise BlockError(
            f"block {block.name} ({block.description}): no {slug} block is saved on the Prefect "
            f"API; {how}, or run `runbooks sandbox up`, which saves the sandbox's blocks"
        ) from exc


@dataclass(frozen=True)
class Launched:
    """What a run gave: its result, or the error that ended it; its flow run."""

    result: Any | None
    error: BaseException | None
    flow_run_id: str | None
    ui_url: str | None

    def unwrap(self) -> Any:
        """The run's result; the error that ended it is raised."""
        if self.error is not None:
            raise self.error
        return self.result


Launch = Callable[[Runbook, BaseModel, Mapping[str, Any]], Launched]
"""How a runbook is run: :func:`run_in_process` here, or through its served deployment
(:func:`deployments.serve.run_and_wait`); ``runbooks demo``'s steps take either."""


def run_in_process(entry: Runbook, params: BaseModel, blocks: Mapping[str, Any]) -> Launched:
    """Run the flow here, against the configured Prefect API; never raises the flow's error.

    The run is tagged ``runbooks``, as the deployments' runs are, so the automations that
    notify on failed runs see it too."""
    from prefect import tags
    from prefect.utilities.urls import url_for

    with tags("runbooks"):
        state = entry.flow_function()(params=params, **blocks, return_state=True)
    run_id = state.state_details.flow_run_id
    ui_url = url_for("flow-run", obj_id=run_id) if run_id is not None else None
    try:
        result: Any = state.result()
    except Exception as exc:
        return Launched(None, exc, str(run_id) if run_id else None, ui_url)
    return Launched(result, None, str(run_id) if run_id else None, ui_url)


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
