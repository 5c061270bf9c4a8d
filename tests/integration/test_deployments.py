"""The deployments on the session's Prefect test server: ``register_all`` (what ``runbooks serve``
registers) read back through the API, re-registered without change, refusals before anything is
written, and ``prefect deploy --all`` of prefect.yaml in a subprocess.

The blocks are the sandbox's, saved by ``sandbox.blocks_registration`` with endpoints nobody
calls (a deployment stores a reference to a block, it never connects to what it describes)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from deployments.definitions import SPECS, DeploymentSpec
from deployments.serve import register_all
from runbooks.catalogue import BlockError, CatalogueError

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = {
    "kubeconfig": "/nowhere/kubeconfig",
    "moto": "http://127.0.0.1:5000",
    "traces": "http://127.0.0.1:16686",
    "prometheus": "http://127.0.0.1:9090",
}
DEPLOY_TIMEOUT_SECONDS = 240


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _ours() -> list[Any]:
    """Every deployment of a runbook's flow on the server."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    names = [spec.runbook for spec in SPECS]
    with _client() as client:
        return client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=names)))


def _delete_ours() -> None:
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        for deployment in _ours():
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(deployment.id)


@pytest.fixture
def block_ids(prefect_server: str) -> Iterator[dict[str, UUID]]:
    """The sandbox's blocks saved: ``<type slug>/<name>`` -> block document id. No deployment
    of ours before or after the test (the retry-storm automation's tests own theirs)."""
    from prefect.blocks.core import Block

    from sandbox.blocks_registration import main

    _delete_ours()
    ids = {}
    for slug in main(ENDPOINTS):
        block = Block.load(slug)
        assert block._block_document_id is not None
        ids[slug] = block._block_document_id
    try:
        yield ids
    finally:
        _delete_ours()


def _read(spec: DeploymentSpec) -> Any:
    with _client() as client:
        return client.read_deployment_by_name(spec.full_name)


def _limit(deployment: Any) -> int | None:
    limit = deployment.global_concurrency_limit
    return None if limit is None else limit.limit


def _schedules(deployment: Any) -> list[tuple[str, str | None, bool]]:
    return [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules]


def test_register_all_creates_every_deployment_as_defined_and_again_changes_nothing(
    block_ids: dict[str, UUID],
) -> None:
    """One registration read back (fields, the issue's schedules), then a second one: the same
    ids, schedules replaced rather than added (one test: each registration costs seconds)."""
    ids = register_all()

    assert len(ids) == len(SPECS)
    for spec, deployment_id in zip(SPECS, ids, strict=True):
        deployment = _read(spec)
        assert deployment.id == deployment_id
        assert deployment.description == spec.description
        assert "params" in deployment.parameter_openapi_schema["properties"]
        assert deployment.enforce_parameter_schema  # the server checks every run's parameters

    def cron(runbook: str) -> list[tuple[str, str | None, bool]]:
        with _client() as client:
            return _schedules(client.read_deployment_by_name(f"{runbook}/{runbook}"))

    assert cron("load-forecast") == [("0 2 * * *", "UTC", False)]  # needs the team's services
    assert cron("apply-scaling") == [("5 * * * *", "UTC", True)]
    assert cron("regional-health") == [("* * * * *", "UTC", False)]  # needs the regions
    assert cron("select-regions") == [("0 3 * * 1", "UTC", False)]  # needs the access logs
    assert cron("alert-bridge") == [("* * * * *", "UTC", True)]

    before = {d.id: d for d in _ours()}
    assert register_all() == ids
    after = {d.id: d for d in _ours()}
    assert sorted(after) == sorted(before) == sorted(ids)
    for deployment_id, deployment in after.items():
        old = before[deployment_id]
        assert _schedules(deployment) == _schedules(old)  # replaced, never added
        same = ("name", "parameters", "tags", "description", "entrypoint", "concurrency_options")
        assert {k: getattr(deployment, k) for k in same} == {k: getattr(old, k) for k in same}
        assert _limit(deployment) == _limit(old)


RUN_PARAMS = {
    "blue-green": {"params": {"service": "shop", "image": "demo/shop:v2"}},
    "retry-storm": {"params": {"trigger": "by hand"}},  # as its automation does
    "apply-scaling": {},
    "alert-bridge": {},
}
BAD_RUN_PARAMS = {  # runbook -> (parameters, the field the server's refusal names)
    "blue-green": ({"params": {"service": "shop"}}, "params"),  # no image
    "retry-storm": (
        {"params": {"trigger": "by hand"}, "kubernetes": {"namespace": 5}},
        "kubernetes.namespace",
    ),
    "apply-scaling": ({"params": {"services": "checkout"}}, "params.services"),  # not a list
}
KUBERNETES_SLUG_REF = {"$ref": {"block_document_slug": "kubernetes-target/sandbox"}}


def test_a_run_can_be_started_from_the_deployments(block_ids: dict[str, UUID]) -> None:
    """What the UI, chat-ops and the automations do, block parameters given as references to
    saved blocks (KubernetesTarget's included); the server checks every run's parameters."""
    register_all()
    for runbook, parameters in RUN_PARAMS.items():
        _start_and_delete_a_run(f"{runbook}/{runbook}", parameters)
    for runbook, (parameters, field) in BAD_RUN_PARAMS.items():
        assert f"field {field!r}" in _refusal(f"{runbook}/{runbook}", parameters)


def _start_and_delete_a_run(name: str, parameters: dict[str, Any]) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        deployment = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        try:
            assert run.parameters == deployment.parameters | parameters
        finally:
            client.delete_flow_run(run.id)
            wanted = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            assert client.read_flow_runs(flow_run_filter=wanted) == []


def _refusal(name: str, parameters: dict[str, Any]) -> str:
    """The server's refusal (HTTP 409) of a run of deployment ``name`` with ``parameters``;
    no run is created."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import PrefectHTTPStatusError

    with _client() as client:
        deployment = client.read_deployment_by_name(name)
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        ours = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        assert client.read_flow_runs(deployment_filter=ours) == []
    assert refused.value.response.status_code == 409
    detail = str(refused.value.response.json()["detail"])
    assert detail.startswith("Error creating flow run: Validation failed")
    return detail


def _ui_form_check(prefect_server: str, schema: dict[str, Any], values: dict[str, Any]) -> Any:
    """What the UI's forms ask the server: are ``values`` valid under ``schema``?"""
    response = httpx.post(
        f"{prefect_server}/ui/schemas/validate",
        json={"schema": schema, "values": values},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def test_a_kubernetes_target_reference_passes_the_servers_parameter_check(
    block_ids: dict[str, UUID], prefect_server: str
) -> None:
    """A deployment of a flow taking ``KubernetesTarget`` (every field of which has a default)
    with the server's parameter check on and a ``$ref`` default, created and updated: its runs
    are created, with that reference, another or the block's data, and wrong parameters are
    refused. (Before the block's schema refused references as its own data, the server found a
    reference valid both ways and refused every run: HTTP 409 "is valid under each of".)"""
    from runbooks import catalogue

    by_id = {"$ref": {"block_document_id": str(block_ids["kubernetes-target/sandbox"])}}
    flow = catalogue.runbook("blue-green").flow_function()
    deployment = flow.to_deployment(
        name="schema-checked",
        parameters={"kubernetes": KUBERNETES_SLUG_REF},
        enforce_parameter_schema=True,
    )
    assert deployment.apply() == deployment.apply()  # created, then updated in place
    name = "blue-green/schema-checked"
    with _client() as client:
        stored = client.read_deployment_by_name(name)
    assert stored.enforce_parameter_schema
    assert stored.parameters == {"kubernetes": KUBERNETES_SLUG_REF}

    good = RUN_PARAMS["blue-green"]
    _start_and_delete_a_run(name, good)
    _start_and_delete_a_run(name, good | {"kubernetes": by_id})
    _start_and_delete_a_run(name, good | {"kubernetes": {"namespace": "shop"}})  # block data

    assert "field 'params'" in _refusal(name, {"params": "shop"})
    assert "'params' is a required property" in _refusal(name, {})
    assert "field 'kubernetes.namespace'" in _refusal(name, good | {"kubernetes": {"namespace": 5}})
    assert "field \"kubernetes['$ref']\"" in _refusal(name, good | {"kubernetes": {"$ref": 5}})

    # the run form of the UI: the schema is valid JSON Schema, a reference passes, a bad one not
    schema = stored.parameter_openapi_schema
    assert _ui_form_check(prefect_server, schema, good | {"kubernetes": by_id}) == {
        "errors": [],
        "valid": True,
    }
    refused = _ui_form_check(prefect_server, schema, good | {"kubernetes": {"$ref": 5}})
    assert not refused["valid"]
    assert [error["property"] for error in refused["errors"]] == ["kubernetes"]


def test_params_activate_a_schedule_that_needs_them(block_ids: dict[str, UUID]) -> None:
    regions = {"regions": {"eu-west-1": "http://127.0.0.1:9/health"}}
    register_all(params={"regional-health": regions})

    deployment = _read(next(s for s in SPECS if s.runbook == "regional-health"))
    assert deployment.parameters["params"] == regions
    assert _schedules(deployment) == [("* * * * *", "UTC", True)]

    register_all()  # without them: the definitions again, paused
    deployment = _read(next(s for s in SPECS if s.runbook == "regional-health"))
    assert "params" not in deployment.parameters
    assert _schedules(deployment) == [("* * * * *", "UTC", False)]


def test_bad_params_are_refused_before_anything_is_registered(
    block_ids: dict[str, UUID],
) -> None:
    with pytest.raises(
        CatalogueError,
        match="params of apply-scaling: services: 'Not A Name' is not a service name",
    ):
        register_all(params={"apply-scaling": {"services": ["Not A Name"]}})
    with pytest.raises(CatalogueError, match="retry-storm takes no params default"):
        register_all(params={"retry-storm": {"trigger": "by hand"}})
    assert _ours() == []


def test_missing_blocks_are_refused_together_before_anything_is_registered(
    block_ids: dict[str, UUID],
) -> None:
    with pytest.raises(BlockError) as refused:
        register_all(block_overrides={"kubernetes": "not-saved"})
    message = str(refused.value)
    for runbook in ("blue-green", "tracing-rollout", "retry-storm", "apply-scaling"):
        assert f"{runbook}: block kubernetes" in message
    assert "no kubernetes-target/not-saved block is saved" in message
    with pytest.raises(BlockError, match="no runbook has a block parameter kubernets"):
        register_all(block_overrides={"kubernets": "sandbox"})
    assert _ours() == []


def test_a_slug_reference_loads_the_block_when_a_run_starts(block_ids: dict[str, UUID]) -> None:
    """What prefect.yaml stores (``block_document_slug``) is resolved by the same Prefect code
    that validates a flow run's parameters before the flow starts."""
    from blocks import HttpService, KubernetesTarget
    from flows.retry_storm import retry_storm

    validated = retry_storm.validate_parameters(
        {
            "params": {},
            "prometheus": {"$ref": {"block_document_slug": "http-service/sandbox-prometheus"}},
            "kubernetes": {"$ref": {"block_document_slug": "kubernetes-target/sandbox"}},
        }
    )
    assert isinstance(validated["kubernetes"], KubernetesTarget)
    assert validated["kubernetes"].namespace == "default"
    assert isinstance(validated["prometheus"], HttpService)
    assert validated["prometheus"].base_url == ENDPOINTS["prometheus"]


def test_prefect_deploy_all_of_prefect_yaml(
    block_ids: dict[str, UUID], prefect_server: str
) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with _client() as client:
        for name, kind in (("runbooks-process", "process"), ("runbooks-kubernetes", "kubernetes")):
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type=kind))
    env = os.environ | {
        "PREFECT_API_URL": prefect_server,
        "RUNBOOKS_IMAGE": "registry.example/runbooks:1.0",
    }
    env.pop("RUNBOOKS_HOME", None)
    _prefect_deploy_all(env)  # (a re-deploy updating in place is Prefect's; not re-run here)

    deployed = {d.name: d for d in _ours()}
    mutating = [s for s in SPECS if s.mutating]
    assert sorted(deployed) == sorted(
        [s.name for s in SPECS] + [f"{s.name}-kubernetes" for s in mutating]
    )
    for spec in SPECS:
        process = deployed[spec.name]
        assert process.work_pool_name == "runbooks-process"
        assert process.entrypoint == spec.entrypoint
        assert sorted(process.tags) == sorted(spec.tags)
        if spec.schedule is None:
            assert process.schedules == []
        else:
            active = spec.schedule_active()
            assert _schedules(process) == [(spec.schedule.cron, "UTC", active)]
        # references, not the blocks' data: no settings and no secrets in the deployment
        for name, slug in spec.block_defaults().items():
            assert process.parameters[name] == {"$ref": {"block_document_slug": slug}}
        assert process.enforce_parameter_schema
        assert process.pull_steps == [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $RUNBOOKS_HOME }}"
                }
            }
        ]
    for spec in mutating:
        cluster = deployed[f"{spec.name}-kubernetes"]
        assert cluster.work_pool_name == "runbooks-kubernetes"
        assert cluster.job_variables == {
            "image": "registry.example/runbooks:1.0",
            "namespace": "runbooks",
        }
        assert cluster.schedules == []
        assert _limit(cluster) == 1
        assert cluster.enforce_parameter_schema
    for runbook, parameters in RUN_PARAMS.items():
        _start_and_delete_a_run(f"{runbook}/{runbook}", parameters)
    for runbook, (parameters, field) in BAD_RUN_PARAMS.items():
        assert f"field {field!r}" in _refusal(f"{runbook}/{runbook}-kubernetes", parameters)


def _prefect_deploy_all(env: dict[str, str]) -> dict[str, UUID]:
    """``prefect deploy --all`` from the repository root; deployment name -> id after it."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployed = _ours()
    assert all(len(d.schedules) <= 1 for d in deployed)
    return {d.name: d.id for d in deployed}


def test_run_and_wait_says_when_nothing_serves_the_deployment(block_ids: dict[str, UUID]) -> None:
    """No ``runbooks serve`` running: the run stays scheduled, the wait is bounded and the
    error names what to start, with the run's link; the run is left for a runner to take."""
    from deployments.serve import run_and_wait
    from runbooks import catalogue
    from runbooks.errors import UnavailableError

    register_all()
    entry = catalogue.runbook("alert-bridge")
    blocks = catalogue.load_blocks(entry, {})
    with pytest.raises(UnavailableError, match=r"runbooks serve.*flow-run/") as raised:
        run_and_wait(entry, catalogue.build_params(entry), blocks, timeout_seconds=1)
    run_id = UUID(str(raised.value).rsplit("/", 1)[1])
    with _client() as client:
        run = client.read_flow_run(run_id)
        assert run.state is not None
        assert run.state.is_scheduled()
        assert run.parameters["prometheus"] == {
            "$ref": {"block_document_id": str(block_ids["http-service/sandbox-prometheus"])}
        }  # a reference to the saved block, never its settings
        client.delete_flow_run(run_id)


def test_run_and_wait_refuses_an_unsaved_block_before_starting_anything(
    block_ids: dict[str, UUID],
) -> None:
    from blocks import HttpService
    from deployments.serve import run_and_wait
    from runbooks import catalogue
    from runbooks.errors import InvalidRequestError

    register_all()
    entry = catalogue.runbook("alert-bridge")
    unsaved = {"prometheus": HttpService(base_url="http://127.0.0.1:9")}
    with _client() as client:
        before = client.read_flow_runs()
        with pytest.raises(InvalidRequestError, match="block prometheus is not saved"):
            run_and_wait(entry, catalogue.build_params(entry), unsaved, timeout_seconds=1)
        assert client.read_flow_runs() == before
