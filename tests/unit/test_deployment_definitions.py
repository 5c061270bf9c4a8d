"""The deployment specs (deployments/definitions.py) and prefect.yaml, without a server."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import definitions
from deployments.automations import RETRY_STORM_DEPLOYMENT
from deployments.definitions import SPECS, Collision, CronSchedule
from runbooks.catalogue import CATALOGUE, CatalogueError

ROOT = Path(__file__).resolve().parents[2]
PROCESS_POOL = "runbooks-process"
KUBERNETES_POOL = "runbooks-kubernetes"

EXPECTED_SCHEDULES = {
    "load-forecast": CronSchedule("0 2 * * *"),
    "apply-scaling": CronSchedule("5 * * * *"),
    "regional-health": CronSchedule("* * * * *"),
    "select-regions": CronSchedule("0 3 * * 1"),
    "alert-bridge": CronSchedule("* * * * *"),
}


def _yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _yaml_deployments(pool: str) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _yaml()["deployments"] if d["work_pool"]["name"] == pool}


def _slug_ref(slug: str) -> dict[str, Any]:
    return {"$ref": {"block_document_slug": slug}}


def test_every_catalogue_runbook_has_one_spec() -> None:
    names = [spec.runbook for spec in SPECS]
    assert sorted(names) == sorted(CATALOGUE)
    assert len(set(names)) == len(names)


def test_schedules_are_the_issues_in_utc() -> None:
    schedules = {spec.runbook: spec.schedule for spec in SPECS if spec.schedule is not None}
    assert schedules == EXPECTED_SCHEDULES
    assert all(schedule.timezone == "UTC" for schedule in schedules.values())


def test_the_automation_finds_retry_storm_under_its_name() -> None:
    spec = definitions.spec("retry-storm")
    assert spec.full_name == RETRY_STORM_DEPLOYMENT
    assert spec.params is None  # the automation's params would replace a default whole
    assert spec.schedule is None


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.runbook)
def test_entrypoints_import_the_catalogues_flow(spec: definitions.DeploymentSpec) -> None:
    path = spec.entrypoint.partition(":")[0]
    assert (ROOT / path).is_file()
    module, _, name = spec.module_entrypoint.partition(":")
    flow = getattr(importlib.import_module(module), name)
    assert flow is CATALOGUE[spec.runbook].flow_function()
    assert flow.name == spec.runbook  # so the deployment is <runbook>/<runbook>


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.runbook)
def test_tags_and_concurrency_follow_what_a_runbook_may_change(
    spec: definitions.DeploymentSpec,
) -> None:
    assert spec.tags[0] == "runbooks"
    assert spec.tags[1] in definitions.AREAS
    assert spec.tags[2] == ("mutating" if spec.mutating else "read-only")
    if spec.mutating:
        assert spec.concurrency == definitions.Concurrency(1, Collision.ENQUEUE)
    elif spec.schedule is not None and spec.schedule.minute_level:
        assert spec.concurrency == definitions.Concurrency(1, Collision.CANCEL_NEW)
    else:
        assert spec.concurrency is None


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.runbook)
def test_params_defaults_are_complete_runs_or_absent(spec: definitions.DeploymentSpec) -> None:
    if spec.params is not None:
        CATALOGUE[spec.runbook].params_class().model_validate(dict(spec.params))
    assert spec.schedule_active() == (spec.schedule is not None and spec.params is not None)
    if spec.schedule is not None:
        assert spec.schedule_active({"anything": "given"})


def test_descriptions_read_as_one_or_two_sentences() -> None:
    for spec in SPECS:
        assert 40 < len(spec.description) < 300, spec.runbook
        assert spec.description.endswith("."), spec.runbook
        assert spec.description.count(". ") <= 2, spec.runbook


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.runbook)
def test_block_references_pass_the_servers_parameter_checks(
    spec: definitions.DeploymentSpec,
) -> None:
    """Each block default, a reference, against the flow's schema as Prefect's API checks it
    (every deployment enforces it): on creating the deployment (the raw schema, ``required``
    ignored, no reference alternative), on updating it and on creating a run (the block's schema
    ``oneOf`` a reference; ``required`` ignored, then kept). A reference must match exactly one
    alternative, which a block whose fields all have defaults (KubernetesTarget) needs its
    schema for; a malformed reference is still refused when a run is created."""
    from prefect._internal.schemas.validators import validate_values_conform_to_schema
    from prefect.utilities.schema_tools import validate

    schema = CATALOGUE[spec.runbook].flow_function().parameters.model_dump_for_openapi()
    for name, slug in spec.block_defaults().items():
        reference = {name: _slug_ref(slug)}
        validate_values_conform_to_schema(reference, schema, ignore_required=True)  # no raise
        assert validate(reference, schema, ignore_required=True) == []
        run_errors = [e.message for e in validate(reference, schema) if list(e.path)[:1] == [name]]
        assert run_errors == []
        malformed = validate({name: {"$ref": 5}}, schema)
        assert [list(e.path)[:1] for e in malformed if e.path] == [[name]]


def test_an_unknown_runbook_is_named() -> None:
    with pytest.raises(CatalogueError, match="unknown runbook 'nope'"):
        definitions.spec("nope")


# --- prefect.yaml, as `prefect deploy --all` reads it (safe_load resolves anchors and merges) ---


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.runbook)
def test_prefect_yaml_process_deployment_matches_the_spec(
    spec: definitions.DeploymentSpec,
) -> None:
    entry = _yaml_deployments(PROCESS_POOL)[spec.name]
    assert entry["entrypoint"] == spec.entrypoint
    assert entry["tags"] == list(spec.tags)
    assert " ".join(entry["description"].split()) == spec.description
    schedules = entry.get("schedules", [])
    if spec.schedule is None:
        assert schedules == []
    else:
        assert schedules == [
            {
                "cron": spec.schedule.cron,
                "timezone": spec.schedule.timezone,
                "active": spec.schedule_active(),
            }
        ]
    concurrency = entry.get("concurrency_limit")
    if spec.concurrency is None:
        assert concurrency is None
    else:
        assert concurrency == {
            "limit": spec.concurrency.limit,
            "collision_strategy": spec.concurrency.collision.value,
        }
    assert entry.get("enforce_parameter_schema", True) is True  # the server checks every run
    parameters = entry.get("parameters", {})
    blocks = {name: value for name, value in parameters.items() if name != "params"}
    assert blocks == {name: _slug_ref(slug) for name, slug in spec.block_defaults().items()}
    if spec.params is None:
        assert "params" not in parameters
    else:
        assert parameters["params"] == dict(spec.params)


def test_prefect_yaml_deploys_every_mutating_runbook_on_kubernetes_too() -> None:
    process = _yaml_deployments(PROCESS_POOL)
    kubernetes = _yaml_deployments(KUBERNETES_POOL)
    assert sorted(process) == sorted(spec.name for spec in SPECS)
    assert sorted(kubernetes) == sorted(f"{s.name}-kubernetes" for s in SPECS if s.mutating)
    for name, entry in kubernetes.items():
        twin = process[name.removesuffix("-kubernetes")]
        same = ("entrypoint", "tags", "description", "parameters", "concurrency_limit")
        assert {k: entry.get(k) for k in same} == {k: twin.get(k) for k in same}
        assert entry.get("enforce_parameter_schema", True) is True
        assert "schedules" not in entry  # scheduled on both pools would run twice
        assert set(entry["work_pool"]["job_variables"]) == {"image", "namespace"}


def _yaml_body() -> str:
    """prefect.yaml without its comments."""
    text = (ROOT / "prefect.yaml").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_prefect_yaml_references_blocks_and_never_copies_them() -> None:
    body = _yaml_body()
    assert "prefect.blocks." not in body  # would be replaced by the block's data, secrets too
    for forbidden in ("kubeconfig", "aws_secret_access_key", "endpoint_url", "base_url"):
        assert forbidden not in body


def test_prefect_yaml_shares_definitions_through_anchors() -> None:
    text = _yaml_body()
    data = _yaml()
    assert set(data["definitions"]) >= {"work_pools", "blocks", "schedules", "runbooks"}
    assert text.count("<<: *") == len(data["deployments"])
    assert text.count("block_document_slug") == len(data["definitions"]["blocks"])
