"""The Kubernetes API emulator through the official client, raw HTTP and both kubectl binaries.

Every read goes through the client's strict models (``kubernetes`` 37 fails on a missing
required field or a wrongly typed one), so decoding itself checks that the emulator sends what
the real server sends. Each test gets its own server (start-up takes milliseconds).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client as k
import pytest
import urllib3
from kubernetes.client import ApiClient, ApiException, Configuration
from kubernetes.watch import Watch

from runbooks.resilience import no_urllib3_retries
from sandbox.kube import KubeApiServer

NS = "default"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


@pytest.fixture
def client(api: KubeApiServer) -> Iterator[ApiClient]:
    configuration = Configuration(host=api.url)
    no_urllib3_retries(configuration)  # one request per call: fault counts stay exact
    with ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def core(client: ApiClient) -> k.CoreV1Api:
    return k.CoreV1Api(client)


@pytest.fixture
def apps(client: ApiClient) -> k.AppsV1Api:
    return k.AppsV1Api(client)


@pytest.fixture
def http(api: KubeApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=5) as raw:
        yield raw


def deployment(name: str = "web", image: str = "demo/shop:v1", replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "env": [{"name": "ROLE", "value": "frontend"}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ]
                },
            },
        },
    }


def service(name: str = "web", ports: list[dict] | None = None) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def pod(name: str, labels: dict[str, str], namespace: str = NS) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "demo/shop:v1"}]},
    }


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    return json.loads(exc.value.body)


# -- discovery and reading every kind back as typed models -------------------------------------


def test_discovery_documents_decode(client: ApiClient) -> None:
    assert k.VersionApi(client).get_code().git_version.startswith("v1.")
    assert k.CoreApi(client).get_api_versions().versions == ["v1"]
    groups = {
        g.name: g.preferred_version.version for g in k.ApisApi(client).get_api_versions().groups
    }
    assert groups["apps"] == "v1"
    assert groups["autoscaling"] == "v2"
    apps_resources = {r.name: r for r in k.AppsV1Api(client).get_api_resources().resources}
    assert apps_resources["deployments/scale"].kind == "Scale"
    assert "deploy" in apps_resources["deployments"].short_names
    core_resources = {r.name for r in k.CoreV1Api(client).get_api_resources().resources}
    assert {"pods", "pods/status", "services", "configmaps", "secrets", "events"} <= core_resources


def test_default_namespaces_exist_and_are_active(core: k.CoreV1Api) -> None:
    names = {ns.metadata.name: ns for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= set(names)
    assert names["default"].status.phase == "Active"


def test_every_kind_reads_back_typed_with_server_defaults(
    core: k.CoreV1Api, apps: k.AppsV1Api, client: ApiClient
) -> None:
    core.create_namespace({"metadata": {"name": "shop"}})
    created = apps.create_namespaced_deployment("shop", deployment())
    assert created.metadata.generation == 1
    assert created.metadata.uid
    assert created.metadata.creation_timestamp
    read = apps.read_namespaced_deployment("web", "shop")
    assert read.spec.strategy.type == "RollingUpdate"
    assert read.spec.strategy.rolling_update.max_surge == "25%"
    assert (read.spec.revision_history_limit, read.spec.progress_deadline_seconds) == (10, 600)
    template = read.spec.template.spec
    assert (template.restart_policy, template.dns_policy) == ("Always", "ClusterFirst")
    assert template.termination_grace_period_seconds == 30
    assert template.scheduler_name == "default-scheduler"
    container = template.containers[0]
    assert container.termination_message_path == "/dev/termination-log"
    assert container.image_pull_policy == "IfNotPresent"
    assert container.ports[0].protocol == "TCP"

    svc = core.create_namespaced_service("shop", service())
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.session_affinity == "None"
    assert svc.spec.cluster_ip.startswith("10.96.")
    assert svc.spec.ports[0].target_port == 8080
    assert svc.spec.ports[0].protocol == "TCP"
    assert 30000 <= svc.spec.ports[0].node_port <= 32767

    core.create_namespaced_config_map("shop", {"metadata": {"name": "flags"}, "data": {"a": "1"}})
    assert core.read_namespaced_config_map("flags", "shop").data == {"a": "1"}
    core.create_namespaced_secret(
        "shop", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    secret = core.read_namespaced_secret("creds", "shop")
    assert secret.type == "Opaque"
    assert secret.data == {"token": "czNjcmV0"}

    hpa = k.AutoscalingV2Api(client).create_namespaced_horizontal_pod_autoscaler(
        "shop",
        {
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 5,
            },
        },
    )
    assert hpa.spec.min_replicas == 1
    assert hpa.status.desired_replicas == 0
    assert hpa.spec.metrics[0].resource.target.average_utilization == 80
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 300

    core.create_namespaced_event(
        "shop",
        {
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "shop"},
            "reason": "ScalingReplicaSet",
            "message": "Scaled up",
            "type": "Normal",
            "firstTimestamp": "2025-01-01T00:00:00Z",
            "count": 1,
        },
    )
    events = core.list_namespaced_event("shop", field_selector="involvedObject.name=web")
    assert [e.reason for e in events.items] == ["ScalingReplicaSet"]
    assert core.read_namespace("shop").metadata.labels["kubernetes.io/metadata.name"] == "shop"


def test_pods_start_pending_and_carry_qos(core: k.CoreV1Api) -> None:
    created = core.create_namespaced_pod(NS, pod("p", {"app": "web"}))
    assert created.status.phase == "Pending"
    assert created.status.qos_class == "BestEffort"
    assert created.spec.service_account_name == "default"


def test_generate_name_and_already_exists(apps: k.AppsV1Api) -> None:
    body = deployment()
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "web-"
    first = apps.create_namespaced_deployment(NS, body)
    second = apps.create_namespaced_deployment(NS, body)
    assert first.metadata.name.startswith("web-")
    assert len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name
    apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, deployment())
    assert exc.value.status == 409
    assert status_of(exc)["reason"] == "AlreadyExists"


# -- lists and selectors -----------------------------------------------------------------------


def test_list_with_label_and_field_selectors(core: k.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_pod(NS, pod("web-1", {"app": "web", "track": "stable"}))
    core.create_namespaced_pod(NS, pod("web-2", {"app": "web", "track": "canary"}))
    core.create_namespaced_pod(NS, pod("api-1", {"app": "api"}))
    core.create_namespaced_pod("other", pod("web-3", {"app": "web"}, "other"))
    running = core.read_namespaced_pod("web-1", NS)
    running.status.phase = "Running"
    core.replace_namespaced_pod_status("web-1", NS, running)

    def names(items: list) -> list[str]:
        return sorted(p.metadata.name for p in items)

    assert names(core.list_namespaced_pod(NS, label_selector="app=web").items) == ["web-1", "web-2"]
    assert names(core.list_namespaced_pod(NS, label_selector="track!=canary").items) == [
        "api-1",
        "web-1",
    ]
    assert names(core.list_namespaced_pod(NS, label_selector="track in (canary)").items) == [
        "web-2"
    ]
    assert names(core.list_namespaced_pod(NS, label_selector="!track").items) == ["api-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector="app=web").items) == [
        "web-1",
        "web-2",
        "web-3",
    ]
    assert names(core.list_namespaced_pod(NS, field_selector="metadata.name=api-1").items) == [
        "api-1"
    ]
    assert names(core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items) == [
        "web-1"
    ]
    assert names(
        core.list_pod_for_all_namespaces(field_selector="metadata.namespace=other").items
    ) == ["web-3"]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert exc.value.status == 400
    assert "field label not supported" in status_of(exc)["message"]


def test_list_pagination_with_limit_and_continue(core: k.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"]
    assert rest.metadata._continue is None


# -- writes: conflicts, patches, status, generation, scale --------------------------------------


def test_stale_resource_version_on_replace_is_a_409(apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    stale = apps.read_namespaced_deployment("web", NS)
    fresh = apps.read_namespaced_deployment("web", NS)
    fresh.spec.replicas = 5
    apps.replace_namespaced_deployment("web", NS, fresh)
    stale.spec.replicas = 7
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment("web", NS, stale)
    body = status_of(exc)
    assert exc.value.status == 409
    assert (body["kind"], body["status"], body["reason"]) == ("Status", "Failure", "Conflict")
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert "the object has been modified" in body["message"]
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 5
    stale_patch = {"metadata": {"resourceVersion": stale.metadata.resource_version}}
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, stale_patch)
    assert exc.value.status == 409


def test_strategic_patch_of_one_image_keeps_env_and_ports(apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo/shop:v2"}]}}}
    }
    patched = apps.patch_namespaced_deployment("web", NS, patch)
    container = patched.spec.template.spec.containers[0]
    assert container.image == "demo/shop:v2"
    assert [(e.name, e.value) for e in container.env] == [("ROLE", "frontend")]
    assert [(p.container_port, p.name) for p in container.ports] == [(8080, "http")]
    assert patched.metadata.generation == 2


def test_merge_patch_replaces_lists_and_null_deletes(apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    patch = {"metadata": {"labels": {"app": "web", "tier": "front"}, "annotations": {"a": "b"}}}
    patched = apps.patch_namespaced_deployment(
        "web", NS, patch, _content_type="application/merge-patch+json"
    )
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    removed = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"annotations": None}},
        _content_type="application/merge-patch+json",
    )
    assert removed.metadata.annotations is None
    assert removed.metadata.generation == 1  # metadata only


def test_json_patch_with_a_failing_test_is_422_and_changes_nothing(apps: k.AppsV1Api) -> None:
    before = apps.create_namespaced_deployment(NS, deployment())
    operations = [
        {"op": "replace", "path": "/spec/replicas", "value": 9},
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "other:v9"},
    ]
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, operations)
    assert exc.value.status == 422
    assert "testing value" in status_of(exc)["message"]
    after = apps.read_namespaced_deployment("web", NS)
    assert after.metadata.resource_version == before.metadata.resource_version
    good = [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    assert apps.patch_namespaced_deployment("web", NS, good).spec.replicas == 4
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, [{"op": "remove", "path": "/spec/nope"}])
    assert exc.value.status == 422
    assert "missing path" in status_of(exc)["message"]


def test_status_subresource_semantics(apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, {**deployment(), "status": {"replicas": 99}})
    current = apps.read_namespaced_deployment("web", NS)
    assert current.status.replicas is None  # status is reset on create
    current.status.replicas = 42
    current.spec.replicas = 3
    updated = apps.replace_namespaced_deployment("web", NS, current)
    assert updated.spec.replicas == 3
    assert updated.status.replicas is None  # main write: no status
    status = {"status": {"replicas": 3, "observedGeneration": 2}, "spec": {"replicas": 10}}
    written = apps.patch_namespaced_deployment_status("web", NS, status)
    assert written.status.replicas == 3
    assert written.status.observed_generation == 2
    assert written.spec.replicas == 3  # status write: spec untouched
    assert written.metadata.generation == 2
    assert int(written.metadata.resource_version) > int(updated.metadata.resource_version)


def test_generation_bumps_only_on_spec_change(apps: k.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment())
    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    same = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})
    assert same.metadata.resource_version == labelled.metadata.resource_version  # no-op
    scaled = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
    assert scaled.metadata.generation == 2
    assert created.metadata.uid == scaled.metadata.uid


def test_scale_subresource_read_replace_and_patch(apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (2, 0, "app=web")
    scale.spec.replicas = 4
    assert apps.replace_namespaced_deployment_scale("web", NS, scale).spec.replicas == 4
    patched = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 6}})
    assert patched.spec.replicas == 6
    read = apps.read_namespaced_deployment("web", NS)
    assert (read.spec.replicas, read.metadata.generation) == (6, 3)
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": -1}})
    assert exc.value.status == 422
    assert status_of(exc)["details"]["causes"][0]["field"] == "spec.replicas"


# -- validation ---------------------------------------------------------------------------------


def _bad(change: Callable[[dict], None]) -> dict:
    body = deployment()
    change(body)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_bad(lambda d: d["spec"].update(replicas="three")), "spec.replicas"),
        (_bad(lambda d: d["spec"].update(replicas=-1)), "spec.replicas"),
        (_bad(lambda d: d["spec"].pop("selector")), "spec.selector"),
        (
            _bad(lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "api"})),
            "spec.template.metadata.labels",
        ),
        (
            _bad(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("image")),
            "spec.template.spec.containers[0].image",
        ),
        (
            _bad(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name")),
            "spec.template.spec.containers[0].name",
        ),
        (_bad(lambda d: d["metadata"].update(name="Web_1")), "metadata.name"),
        (
            _bad(lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Never")),
            "spec.template.spec.restartPolicy",
        ),
    ],
)
def test_malformed_deployment_is_422_naming_the_field_and_nothing_is_stored(
    http: httpx.Client, body: dict, field: str
) -> None:
    before = http.get(f"/apis/apps/v1/namespaces/{NS}/deployments").json()
    answer = http.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=body)
    status = answer.json()
    assert answer.status_code == 422, status
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Invalid", 422)
    assert field in [cause["field"] for cause in status["details"]["causes"]]
    assert status["details"]["kind"] == "Deployment"
    assert status["details"]["group"] == "apps"
    after = http.get(f"/apis/apps/v1/namespaces/{NS}/deployments").json()
    assert after["items"] == before["items"] == []
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_invalid_update_changes_nothing(http: httpx.Client, apps: k.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment())
    url = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    answer = http.patch(
        url,
        json={"spec": {"replicas": "many", "selector": {"matchLabels": {"app": "x"}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    fields = [c["field"] for c in answer.json()["details"]["causes"]]
    assert answer.status_code == 422
    assert {"spec.replicas", "spec.selector"} <= set(fields)
    read = apps.read_namespaced_deployment("web", NS)
    assert read.metadata.resource_version == created.metadata.resource_version


@pytest.mark.parametrize(
    ("ports", "field"),
    [
        ([{"port": 70000}], "spec.ports[0].port"),
        ([{"port": 80}, {"port": 81}], "spec.ports[0].name"),
        ([{"port": 80, "name": "a", "protocol": "HTTP"}], "spec.ports[0].protocol"),
        ([{"port": 80, "nodePort": 80}], "spec.ports[0].nodePort"),
    ],
)
def test_invalid_service_ports_are_422(http: httpx.Client, ports: list, field: str) -> None:
    answer = http.post(f"/api/v1/namespaces/{NS}/services", json=service(ports=ports))
    assert answer.status_code == 422
    assert field in [c["field"] for c in answer.json()["details"]["causes"]]


def test_status_writes_the_client_could_not_decode_are_refused(
    core: k.CoreV1Api, http: httpx.Client
) -> None:
    core.create_namespaced_pod(NS, pod("p", {"app": "web"}))
    answer = http.patch(
        f"/api/v1/namespaces/{NS}/pods/p/status",
        json={"status": {"containerStatuses": [{"name": "app", "ready": True}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    fields = {c["field"] for c in answer.json()["details"]["causes"]}
    assert answer.status_code == 422
    assert {
        "status.containerStatuses[0].image",
        "status.containerStatuses[0].restartCount",
    } <= fields
    assert core.read_namespaced_pod_status("p", NS).status.phase == "Pending"


# -- errors: unknown things, media types --------------------------------------------------------


def test_unknown_resources_and_objects_are_404(http: httpx.Client, apps: k.AppsV1Api) -> None:
    for path in ("/apis/apps/v1/namespaces/default/widgets", "/apis/nope.io/v1/things", "/nope"):
        answer = http.get(path)
        assert answer.status_code == 404
        assert answer.json()["reason"] == "NotFound", path
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("ghost", NS)
    assert exc.value.status == 404
    assert status_of(exc)["message"] == 'deployments.apps "ghost" not found'
    assert http.get("/api/v1/namespaces/default/configmaps/x/status").status_code == 404
    assert (
        http.post("/api/v1/namespaces/nowhere/configmaps", json={"metadata": {"name": "a"}}).json()[
            "message"
        ]
        == 'namespaces "nowhere" not found'
    )


def test_unsupported_patch_media_type_is_415(http: httpx.Client, apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    answer = http.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/web",
        content=b"{}",
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 415
    assert answer.json()["reason"] == "UnsupportedMediaType"
    assert http.put(f"/apis/apps/v1/namespaces/{NS}/deployments", json={}).status_code == 405


# -- delete -------------------------------------------------------------------------------------


def test_delete_answers_like_the_real_server(
    core: k.CoreV1Api, apps: k.AppsV1Api, http: httpx.Client
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    gone = http.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/web").json()
    assert (gone["kind"], gone["status"], gone["details"]["name"]) == ("Status", "Success", "web")
    core.create_namespaced_pod(NS, pod("p", {"app": "web"}))
    deleted = http.delete(f"/api/v1/namespaces/{NS}/pods/p").json()
    assert deleted["kind"] == "Pod"
    assert deleted["metadata"]["name"] == "p"
    with pytest.raises(ApiException) as exc:
        core.delete_namespace("default")
    assert exc.value.status == 403


def test_delete_collection_and_dry_run(core: k.CoreV1Api) -> None:
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": {"t": tier}}})
    dry = core.create_namespaced_config_map(NS, {"metadata": {"name": "d"}}, dry_run="All")
    assert dry.metadata.name == "d"
    core.delete_namespaced_config_map("c", NS, dry_run="All")
    core.delete_collection_namespaced_config_map(NS, label_selector="t=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["c"]


def test_deleting_a_namespace_deletes_its_objects(core: k.CoreV1Api, apps: k.AppsV1Api) -> None:
    core.create_namespace({"metadata": {"name": "shop"}})
    apps.create_namespaced_deployment("shop", deployment())
    core.create_namespaced_config_map("shop", {"metadata": {"name": "flags"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "kept"}})
    core.delete_namespace("shop")
    assert apps.list_deployment_for_all_namespaces().items == []
    assert [c.metadata.name for c in core.list_config_map_for_all_namespaces().items] == ["kept"]
    with pytest.raises(ApiException):
        core.read_namespace("shop")


def test_owner_references_are_garbage_collected_and_finalizers_hold(
    core: k.CoreV1Api, apps: k.AppsV1Api
) -> None:
    owner = apps.create_namespaced_deployment(NS, deployment())
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner.metadata.uid}
    child = pod("web-abc", {"app": "web"})
    child["metadata"]["ownerReferences"] = [ref]
    core.create_namespaced_pod(NS, child)
    held = {"metadata": {"name": "held", "finalizers": ["sandbox/hold"]}}
    core.create_namespaced_config_map(NS, held)
    apps.delete_namespaced_deployment("web", NS)
    assert core.list_namespaced_pod(NS).items == []
    core.delete_namespaced_config_map("held", NS)
    marked = core.read_namespaced_config_map("held", NS)
    assert marked.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("held", NS)


def test_pods_on_a_node_are_deleted_gracefully(api: KubeApiServer, core: k.CoreV1Api) -> None:
    api.store.graceful_pod_deletion = True
    body = pod("p", {"app": "web"})
    body["spec"]["nodeName"] = "sandbox"
    created = core.create_namespaced_pod(NS, body)
    terminating = core.delete_namespaced_pod("p", NS, grace_period_seconds=5)
    assert terminating.metadata.deletion_grace_period_seconds == 5
    assert terminating.metadata.deletion_timestamp > created.metadata.creation_timestamp
    core.patch_namespaced_pod_status("p", NS, {"status": {"phase": "Running"}})  # the kubelet
    assert core.read_namespaced_pod("p", NS).metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as exc:  # the kubelet's final delete names the uid
        core.delete_namespaced_pod("p", NS, body={"preconditions": {"uid": "other"}})
    assert exc.value.status == 409
    core.delete_namespaced_pod(
        "p", NS, body={"gracePeriodSeconds": 0, "preconditions": {"uid": created.metadata.uid}}
    )
    assert core.list_namespaced_pod(NS).items == []
    unbound = core.create_namespaced_pod(NS, pod("q", {"app": "web"}))
    assert core.delete_namespaced_pod("q", NS).metadata.uid == unbound.metadata.uid
    assert core.list_namespaced_pod(NS).items == []  # no node: gone at once


# -- watch ----------------------------------------------------------------------------------------


def test_watch_sees_added_modified_deleted_live(core: k.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "flags"}, "data": {"a": "1"}})
    seen: list[tuple[str, str]] = []
    watch = Watch()
    started = time.monotonic()
    for event in watch.stream(core.list_namespaced_config_map, NS, timeout_seconds=2):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name))
        if event["type"] == "ADDED":
            core.patch_namespaced_config_map("flags", NS, {"data": {"a": "2"}})
        elif event["type"] == "MODIFIED":
            assert obj.data == {"a": "2"}
            core.delete_namespaced_config_map("flags", NS)
        elif event["type"] == "DELETED":
            watch.stop()
    assert seen == [("ADDED", "flags"), ("MODIFIED", "flags"), ("DELETED", "flags")]
    assert time.monotonic() - started < 1.5


def test_watch_resumes_from_a_resource_version_and_ends_on_timeout(core: k.CoreV1Api) -> None:
    listed = core.list_namespaced_config_map(NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "b"}})
    core.delete_namespaced_config_map("a", NS)
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in Watch().stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
    ]
    elapsed = time.monotonic() - started
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert 0.9 <= elapsed < 2.5  # the server ended the watch at timeoutSeconds


def test_watch_from_a_compacted_resource_version_is_410(
    api: KubeApiServer, core: k.CoreV1Api, http: httpx.Client
) -> None:
    old = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    api.store.compact()
    with pytest.raises(ApiException) as exc:
        list(
            Watch().stream(
                core.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=1
            )
        )
    assert exc.value.status == 410
    lines = http.get(
        f"/api/v1/namespaces/{NS}/configmaps", params={"watch": "true", "resourceVersion": old}
    ).text.splitlines()
    assert json.loads(lines[0])["type"] == "ERROR"
    assert json.loads(lines[0])["object"]["reason"] == "Expired"


def test_watch_with_a_selector_sees_objects_enter_and_leave_it(core: k.CoreV1Api) -> None:
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("p", {"app": "web"}))
    core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"app": "api"}}})
    core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"app": "web", "v": "2"}}})
    watch, events = Watch(), []
    stream = watch.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="app=web",
        resource_version=rv,
        timeout_seconds=2,
    )
    for event in stream:
        events.append((event["type"], event["object"].metadata.labels.get("app")))
        if len(events) == 3:
            watch.stop()
    assert events == [("ADDED", "web"), ("DELETED", "api"), ("ADDED", "web")]


def test_watch_bookmarks(api: KubeApiServer, http: httpx.Client) -> None:
    api.bookmark_interval = 0.2
    lines = http.get(
        f"/api/v1/namespaces/{NS}/configmaps",
        params={"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1"},
    ).text.splitlines()
    bookmarks = [json.loads(line) for line in lines]
    assert bookmarks
    assert all(b["type"] == "BOOKMARK" for b in bookmarks)
    assert bookmarks[0]["object"]["metadata"]["resourceVersion"] == str(api.store.resource_version)


# -- custom resources ---------------------------------------------------------------------------

CRD = {
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {"kind": "ScaledObject", "plural": "scaledobjects", "shortNames": ["so"]},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["scaleTargetRef"],
                                "properties": {
                                    "scaleTargetRef": {
                                        "type": "object",
                                        "properties": {"name": {"type": "string"}},
                                    },
                                    "minReplicaCount": {"type": "integer", "minimum": 0},
                                    "pollingInterval": {"type": "integer", "default": 30},
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_serves_custom_objects(client: ApiClient, http: httpx.Client) -> None:
    crds = k.ApiextensionsV1Api(client)
    created = crds.create_custom_resource_definition(CRD)
    assert [c.type for c in created.status.conditions] == ["NamesAccepted", "Established"]
    groups = {g.name for g in k.ApisApi(client).get_api_versions().groups}
    assert "keda.sh" in groups
    resources = http.get("/apis/keda.sh/v1alpha1").json()["resources"]
    assert {r["name"] for r in resources} == {"scaledobjects", "scaledobjects/status"}

    custom = k.CustomObjectsApi(client)
    args = ("keda.sh", "v1alpha1", NS, "scaledobjects")
    body = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"name": "web"}, "minReplicaCount": 1, "unknown": 1},
        "status": {"ignored": True},
    }
    obj = custom.create_namespaced_custom_object(*args, body)
    assert obj["spec"] == {
        "scaleTargetRef": {"name": "web"},
        "minReplicaCount": 1,
        "pollingInterval": 30,
    }
    assert "status" not in obj
    assert obj["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object(*args, "web", {"spec": {"minReplicaCount": 2}})
    assert patched["spec"]["minReplicaCount"] == 2
    assert patched["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(*args, "web", {"status": {"ready": True}})
    assert status["status"] == {"ready": True}
    assert status["metadata"]["generation"] == 2
    listed = custom.list_namespaced_custom_object(*args)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["web"]
    assert listed["items"][0]["kind"] == "ScaledObject"
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(*args, "web", {"spec": {"minReplicaCount": -1}})
    assert exc.value.status == 422
    assert exc.value.body
    assert "spec.minReplicaCount" in exc.value.body
    strategic = http.patch(
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/web",
        json={"spec": {}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert strategic.status_code == 415
    custom.delete_namespaced_custom_object(*args, "web")
    assert custom.list_namespaced_custom_object(*args)["items"] == []

    custom.create_namespaced_custom_object(*args, {**body, "metadata": {"name": "again"}})
    crds.delete_custom_resource_definition("scaledobjects.keda.sh")
    assert http.get("/apis/keda.sh/v1alpha1/scaledobjects").status_code == 404
    crds.create_custom_resource_definition(CRD)
    assert custom.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects")["items"] == []


# -- fault injection ----------------------------------------------------------------------------


def test_injected_500_on_patch_leaves_the_object_unchanged(
    api: KubeApiServer, apps: k.AppsV1Api
) -> None:
    before = apps.create_namespaced_deployment(NS, deployment())
    fault = api.faults.inject(method="PATCH", path=r"/deployments/web$", status=500, times=2)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:v2"}]}}}}
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            apps.patch_namespaced_deployment("web", NS, image)
        assert exc.value.status == 500
        assert status_of(exc)["reason"] == "InternalError"
    assert fault.hits == 2
    after = apps.read_namespaced_deployment("web", NS)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.template.spec.containers[0].image == "demo/shop:v1"
    patched = apps.patch_namespaced_deployment("web", NS, image)
    assert patched.spec.template.spec.containers[0].image == "x:v2"


def test_injected_hang_makes_a_client_time_out(api: KubeApiServer, apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    api.faults.inject(method="GET", path=r"/deployments/web$", action="hang", seconds=10)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        apps.read_namespaced_deployment("web", NS, _request_timeout=0.5)
    assert time.monotonic() - started < 2
    assert apps.read_namespaced_deployment("web", NS, _request_timeout=2).metadata.name == "web"


def test_injected_hang_with_a_bound_then_serves(api: KubeApiServer, apps: k.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    api.faults.inject(path=r"/deployments/web$", action="hang", seconds=0.3)
    started = time.monotonic()
    assert apps.read_namespaced_deployment("web", NS, _request_timeout=3).metadata.name == "web"
    assert 0.25 <= time.monotonic() - started < 2


def test_injected_409_and_the_admin_endpoint(
    api: KubeApiServer, apps: k.AppsV1Api, http: httpx.Client
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    added = http.post(
        "/_sandbox/faults", json={"method": "PUT", "path": "deployments", "status": 409, "times": 1}
    )
    assert added.status_code == 201
    current = apps.read_namespaced_deployment("web", NS)
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment("web", NS, current)
    assert exc.value.status == 409
    assert status_of(exc)["reason"] == "Conflict"
    listed = http.get("/_sandbox/faults").json()["faults"]
    assert listed[0]["hits"] == 1
    assert listed[0]["times"] == 1
    apps.replace_namespaced_deployment("web", NS, current)  # consumed: the next one passes
    http.post("/_sandbox/faults", json={"status": 503, "times": None})
    assert http.get("/api/v1/namespaces").status_code == 503
    assert http.delete("/_sandbox/faults").json() == {"cleared": 2}
    assert http.get("/api/v1/namespaces").status_code == 200
    assert http.post("/_sandbox/faults", json={"action": "explode"}).status_code == 400


# -- services: node ports ------------------------------------------------------------------------


def _can_bind(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_every_service_port_gets_a_distinct_free_node_port(core: k.CoreV1Api) -> None:
    ports = [{"name": n, "port": p} for n, p in (("http", 80), ("https", 443), ("admin", 9000))]
    first = core.create_namespaced_service(NS, service("a", ports))
    second = core.create_namespaced_service(NS, service("b", ports))
    node_ports = [p.node_port for s in (first, second) for p in s.spec.ports]
    assert len(set(node_ports)) == 6
    assert all(30000 <= p <= 32767 and _can_bind(p) for p in node_ports)
    assert first.spec.cluster_ip != second.spec.cluster_ip
    # an update without nodePorts keeps them; a ClusterIP type still gets them
    body = service("a", [*ports, {"name": "extra", "port": 81}])
    body["metadata"]["resourceVersion"] = first.metadata.resource_version
    updated = core.replace_namespaced_service("a", NS, body)
    assert [p.node_port for p in updated.spec.ports[:3]] == node_ports[:3]
    assert updated.spec.cluster_ip == first.spec.cluster_ip


def test_explicit_node_ports_are_kept_or_refused(core: k.CoreV1Api, http: httpx.Client) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free = next(p for p in range(31000, 32767) if _can_bind(p))
        kept = core.create_namespaced_service(NS, service("a", [{"port": 80, "nodePort": free}]))
        assert kept.spec.ports[0].node_port == free
        taken = http.post(
            f"/api/v1/namespaces/{NS}/services", json=service("b", [{"port": 80, "nodePort": free}])
        )
        assert taken.status_code == 422
        assert "already allocated" in taken.json()["message"]
        in_use = busy.getsockname()[1]
        if 30000 <= in_use <= 32767:  # the kernel picked one inside the range: refused too
            answer = http.post(
                f"/api/v1/namespaces/{NS}/services",
                json=service("c", [{"port": 80, "nodePort": in_use}]),
            )
            assert answer.status_code == 422
    core.delete_namespaced_service("a", NS)
    again = core.create_namespaced_service(NS, service("d", [{"port": 80, "nodePort": free}]))
    assert again.spec.ports[0].node_port == free  # released on delete


# -- lifecycle and kubeconfig -------------------------------------------------------------------


def test_stop_ends_watches_and_leaves_no_thread_or_port() -> None:
    threads_before = set(threading.enumerate())
    server = KubeApiServer().start()
    port = server.port
    keep_alive = httpx.Client(base_url=server.url)
    keep_alive.get("/api/v1/namespaces")  # an idle keep-alive connection stays open
    outcomes: list[str] = []

    def call(path: str) -> None:
        try:
            outcomes.append(f"{path}: {httpx.get(server.url + path, timeout=10).status_code}")
        except httpx.HTTPError as exc:  # the hung request is cut off without an answer
            outcomes.append(f"{path}: {type(exc).__name__}")

    watching = threading.Thread(target=call, args=("/api/v1/pods?watch=1",), daemon=True)
    watching.start()
    server.faults.inject(path="/hang", action="hang", seconds=60)
    hanging = threading.Thread(target=call, args=("/hang",), daemon=True)
    hanging.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    watching.join(2)
    hanging.join(2)
    keep_alive.close()
    assert not watching.is_alive()
    assert not hanging.is_alive()
    assert sorted(outcomes) == ["/api/v1/pods?watch=1: 200", "/hang: RemoteProtocolError"]
    assert set(threading.enumerate()) - threads_before == set()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_only_loopback_addresses_are_served() -> None:
    with pytest.raises(ValueError, match="loopback"):
        KubeApiServer(host="0.0.0.0")


def test_kubeconfig_works_with_the_client_loader(api: KubeApiServer, tmp_path: Path) -> None:
    from kubernetes import config

    path = api.write_kubeconfig(tmp_path / "kube" / "config", context="sandbox")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with config.new_client_from_config(config_file=str(path), context="sandbox") as loaded:
        assert k.CoreV1Api(loaded).read_namespace("default").metadata.name == "default"


def test_static_token_is_required_when_set(tmp_path: Path) -> None:
    from kubernetes import config

    with KubeApiServer(token="t0ken") as server:
        assert httpx.get(f"{server.url}/api/v1/namespaces").status_code == 401
        path = server.write_kubeconfig(tmp_path / "config")
        with config.new_client_from_config(config_file=str(path)) as loaded:
            assert k.CoreV1Api(loaded).list_namespace().items


def test_module_runs_alone_and_prints_its_url(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.kube",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert process.stdout.readline().strip() == str(kubeconfig)
        assert httpx.get(f"{url}/version", timeout=5).json()["major"] == "1"
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()
    assert process.returncode == 0


# -- kubectl ------------------------------------------------------------------------------------

# Debian's kubernetes-client (1.20, what CI installs) and a recent kubectl, wherever they are
KUBECTL_CANDIDATES = ("/usr/bin/kubectl", "/tmp/kc/root/usr/bin/kubectl", shutil.which("kubectl"))


def _kubectl_binaries() -> dict[str, str]:
    """``{"kubectl-1.20": path, ...}``: each distinct binary found, named by its version."""
    found: dict[str, str] = {}
    for candidate in KUBECTL_CANDIDATES:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        path = os.path.realpath(candidate)
        if path in found.values():
            continue
        try:
            done = subprocess.run(
                [path, "version", "--client", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            info = json.loads(done.stdout)["clientVersion"]
            name = f"kubectl-{info['major']}.{info['minor'].rstrip('+')}"
        except (OSError, subprocess.SubprocessError, ValueError, KeyError):
            continue
        found[name if name not in found else f"{name}-{len(found)}"] = path
    return found


AVAILABLE = _kubectl_binaries()
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: demo/shop:v1
        env: [{name: ROLE, value: frontend}]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(params=sorted(AVAILABLE) or ["none"])
def kubectl(request: pytest.FixtureRequest, api: KubeApiServer, tmp_path: Path) -> Callable:
    if request.param == "none":
        places = ", ".join(c for c in KUBECTL_CANDIDATES if c) or "/usr/bin/kubectl"
        pytest.skip(f"no runnable kubectl binary found (looked at {places} and PATH)")
    binary = AVAILABLE[request.param]
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                binary,
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(tmp_path / "cache"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done

    return run


def test_kubectl_apply_get_scale_patch_delete(kubectl: Callable, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST)
    assert "deployment.apps/web created" in kubectl("apply", "-f", str(manifest)).stdout
    table = kubectl("get", "deploy,svc,pods").stdout
    assert "READY" in table
    assert "UP-TO-DATE" in table
    assert "0/1" in table
    assert "ClusterIP" in table
    assert "80:3" in table  # PORT(S) shows the nodePort
    listed = json.loads(kubectl("get", "deploy", "-o", "json").stdout)
    assert listed["items"][0]["spec"]["strategy"]["type"] == "RollingUpdate"
    manifest.write_text(MANIFEST.replace("demo/shop:v1", "demo/shop:v2"))
    assert "configured" in kubectl("apply", "-f", str(manifest)).stdout
    assert "scaled" in kubectl("scale", "deploy/web", "--replicas=2").stdout
    kubectl("patch", "deploy", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"x":"y"}}}')
    kubectl(
        "patch",
        "deploy",
        "web",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"demo/shop:v3"}]}}}}',
    )
    web = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "demo/shop:v3"
    assert container["env"] == [{"name": "ROLE", "value": "frontend"}]
    assert (web["spec"]["replicas"], web["metadata"]["labels"]["x"]) == (2, "y")
    assert web["metadata"]["generation"] == 4  # apply, scale, strategic patch; not the label
    assert 'deployment.apps "web" deleted' in kubectl("delete", "deploy", "web").stdout
    assert kubectl("get", "deploy", "web", check=False).returncode != 0


def test_kubectl_rollout_status_reads_a_completed_deployment(
    kubectl: Callable, apps: k.AppsV1Api
) -> None:
    created = apps.create_namespaced_deployment(NS, deployment(replicas=2))
    complete = {
        "status": {
            "observedGeneration": created.metadata.generation,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "lastUpdateTime": "2025-01-01T00:00:00Z",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                },
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            ],
        }
    }
    apps.patch_namespaced_deployment_status("web", NS, complete)
    done = kubectl("rollout", "status", "deploy/web", "--timeout=10s")
    assert 'deployment "web" successfully rolled out' in done.stdout
    pending = kubectl("rollout", "status", "deploy/web", "--timeout=1s", check=False)
    assert pending.returncode == 0  # still complete: nothing changed
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    waiting = kubectl("rollout", "status", "deploy/web", "--timeout=1s", check=False)
    assert waiting.returncode != 0  # generation moved on, the status did not


def test_kubectl_typed_creates(kubectl: Callable) -> None:
    """kubectl 1.32 sends these as protobuf (client-go typed clients), 1.20 as JSON."""
    kubectl("create", "namespace", "shop")
    kubectl("-n", "shop", "create", "configmap", "flags", "--from-literal=a=b")
    kubectl("-n", "shop", "create", "secret", "generic", "creds", "--from-literal=token=s3cret")
    kubectl("-n", "shop", "create", "deployment", "web", "--image=demo/shop:v1", "--replicas=0")
    kubectl("-n", "shop", "create", "service", "nodeport", "web", "--tcp=80:8080")
    listed = json.loads(kubectl("-n", "shop", "get", "deploy,svc,cm,secret", "-o", "json").stdout)
    by_kind = {item["kind"]: item for item in listed["items"]}
    assert by_kind["Deployment"]["spec"]["replicas"] == 0
    assert by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "demo/shop:v1"
    )
    assert by_kind["Service"]["spec"]["ports"][0]["targetPort"] == 8080
    assert by_kind["Service"]["spec"]["ports"][0]["nodePort"] >= 30000
    assert by_kind["ConfigMap"]["data"] == {"a": "b"}
    assert by_kind["Secret"]["data"] == {"token": "czNjcmV0"}
