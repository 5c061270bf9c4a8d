"""The demo shop deployed on the sandbox, the way a runbook's user would see it.

``deploy_shop`` creates, through the official client (so it works on any cluster the sandbox
stands in for), a Service and a Deployment per role: frontend -> checkout -> payments. The
sandbox has no cluster DNS, so each caller's ``SHOP_DOWNSTREAM_URL`` is its downstream
Service's loopback ``nodePort``: Services are created first, then the Deployments that call them.

Each pod mounts two ConfigMaps it re-reads when they change, as a real service's mounted
config: ``<name>-fault`` (key ``fault.json``, the injected fault, ``SHOP_FAULT_FILE``: how a
drill makes payments fail through the Kubernetes API alone) and, for the callers,
``<name>-retry`` (key ``retry.json``, their retry settings, ``SHOP_RETRY_CONFIG``: what the
``retry-storm`` runbook edits). Both start as ``{}``: no fault, the shop's naive retry defaults.

``deploy_blue_green`` creates the shape the ``blue-green`` runbook expects of a service it rolls
out (``decisions.bluegreen``): a ``<service>-blue`` Deployment whose pods carry
``{app: <service>, colour: blue}``, behind an active Service selecting exactly those labels.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from runbooks.errors import UnavailableError
from runbooks.resilience import call_kubernetes

ROLES = ("payments", "checkout", "frontend")  # downstream first
DOWNSTREAM = {"frontend": "checkout", "checkout": "payments"}
FAULT_KEY, RETRY_KEY = "fault.json", "retry.json"
FAULT_MOUNT, RETRY_MOUNT = "/etc/shop/fault", "/etc/shop/retry"


def fault_config_map(name: str) -> str:
    """The ConfigMap holding the fault of the shop Deployment ``name``."""
    return f"{name}-fault"


def retry_config_map(name: str) -> str:
    """The ConfigMap holding the retry settings of the shop Deployment ``name`` (a caller)."""
    return f"{name}-retry"


def mount_config_maps(manifest: dict[str, Any], mounts: dict[str, tuple[str, str, str]]) -> None:
    """Mount ConfigMaps into the Deployment's first container: ``{env var: (ConfigMap, key,
    mount path)}``; the env var names the file."""
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for n, (env, (config_map, key, path)) in enumerate(sorted(mounts.items())):
        volume = f"config-{n}"
        pod.setdefault("volumes", []).append({"name": volume, "configMap": {"name": config_map}})
        container.setdefault("volumeMounts", []).append({"name": volume, "mountPath": path})
        container["env"].append({"name": env, "value": f"{path}/{key}"})


@dataclass(frozen=True)
class ShopService:
    role: str
    name: str
    url: str


def service_manifest(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def deployment_manifest(
    name: str, role: str, image: str, replicas: int, env: dict[str, str]
) -> dict[str, Any]:
    labels = {"app": name, "role": role}
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
                            "name": "shop",
                            "image": image,
                            "env": [{"name": "SHOP_ROLE", "value": role}]
                            + [{"name": k, "value": v} for k, v in env.items()],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


def deploy_shop(
    apps: Any,
    core: Any,
    *,
    namespace: str = "default",
    image: str = "demo/shop:v1",
    replicas: int = 2,
    prefix: str = "",
    timeout_seconds: float = 60.0,
) -> dict[str, ShopService]:
    """Create the shop's Services and Deployments; wait until every Deployment is available."""
    services: dict[str, ShopService] = {}
    for role in ROLES:
        name = f"{prefix}{role}"
        labels = {"app": name, "role": role}
        created = call_kubernetes(
            f"create Service {namespace}/{name}",
            core.create_namespaced_service,
            namespace,
            service_manifest(name, labels),
        )
        url = f"http://127.0.0.1:{created.spec.ports[0].node_port}"
        services[role] = ShopService(role, name, url)
        env = {"SHOP_DOWNSTREAM_URL": services[DOWNSTREAM[role]].url} if role in DOWNSTREAM else {}
        mounts = {"SHOP_FAULT_FILE": (fault_config_map(name), FAULT_KEY, FAULT_MOUNT)}
        if role in DOWNSTREAM:
            mounts["SHOP_RETRY_CONFIG"] = (retry_config_map(name), RETRY_KEY, RETRY_MOUNT)
        for config_map, key, _ in mounts.values():
            call_kubernetes(
                f"create ConfigMap {namespace}/{config_map}",
                core.create_namespaced_config_map,
                namespace,
                {"metadata": {"name": config_map, "labels": labels}, "data": {key: "{}\n"}},
            )
        manifest = deployment_manifest(name, role, image, replicas, env)
        mount_config_maps(manifest, mounts)
        call_kubernetes(
            f"create Deployment {namespace}/{name}",
            apps.create_namespaced_deployment,
            namespace,
            manifest,
        )
    deadline = time.monotonic() + timeout_seconds
    for service in services.values():
        _wait_available(apps, namespace, service.name, replicas, deadline, timeout_seconds)
    for service in services.values():  # available pods; now the Service must route to them
        _wait_ready(f"{service.url}/ready", deadline, timeout_seconds)
    return services


def blue_green_manifests(
    service: str, image: str, replicas: int, role: str = "payments"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Blue's Deployment and the active Service selecting it, as the blue-green runbook expects."""
    labels = {"app": service, "colour": "blue"}
    deployment = deployment_manifest(f"{service}-blue", role, image, replicas, {})
    deployment["metadata"]["labels"] = labels | {"role": role}
    deployment["spec"]["selector"]["matchLabels"] = labels
    deployment["spec"]["template"]["metadata"]["labels"] = labels | {"role": role}
    return deployment, service_manifest(service, labels)


def deploy_blue_green(
    apps: Any,
    core: Any,
    service: str,
    *,
    namespace: str = "default",
    image: str = "demo/shop:v1",
    replicas: int = 2,
    timeout_seconds: float = 60.0,
) -> str:
    """Create blue and the active Service; return the Service's URL once it routes to blue."""
    deployment, active = blue_green_manifests(service, image, replicas)
    created = call_kubernetes(
        f"create Service {namespace}/{service}", core.create_namespaced_service, namespace, active
    )
    call_kubernetes(
        f"create Deployment {namespace}/{service}-blue",
        apps.create_namespaced_deployment,
        namespace,
        deployment,
    )
    url = f"http://127.0.0.1:{created.spec.ports[0].node_port}"
    deadline = time.monotonic() + timeout_seconds
    _wait_available(apps, namespace, f"{service}-blue", replicas, deadline, timeout_seconds)
    _wait_ready(f"{url}/ready", deadline, timeout_seconds)
    return url


def delete_blue_green(apps: Any, core: Any, service: str, *, namespace: str = "default") -> None:
    """Delete both colours and the active and preview Services; what is missing is skipped."""
    from decisions.bluegreen import Colour, deployment_name, preview_service_name

    for colour in Colour:
        with contextlib.suppress(Exception):  # never created, or already gone
            apps.delete_namespaced_deployment(deployment_name(service, colour), namespace)
    for name in (service, preview_service_name(service)):
        with contextlib.suppress(Exception):  # never created, or already gone
            core.delete_namespaced_service(name, namespace)


def _wait_available(
    apps: Any, namespace: str, name: str, replicas: int, deadline: float, timeout_seconds: float
) -> None:
    while True:
        status = call_kubernetes(
            f"read Deployment {namespace}/{name}",
            apps.read_namespaced_deployment_status,
            name,
            namespace,
        ).status
        if (status.available_replicas or 0) >= replicas:
            return
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"Deployment {namespace}/{name} was not available within "
                f"{timeout_seconds:g}s; see `kubectl describe deploy {name}`"
            )
        time.sleep(0.1)


def _wait_ready(url: str, deadline: float, timeout_seconds: float) -> None:
    import httpx

    while True:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise UnavailableError(f"{url} did not answer within {timeout_seconds:g}s")
        time.sleep(0.1)


def create_auto_scaling_group(
    ec2: Any, autoscaling: Any, name: str, *, region: str, min_size: int, max_size: int
) -> None:
    """An EC2 Auto Scaling group on moto (and its launch template, both named ``name``): what
    ``load-forecast`` writes scheduled actions to in the demo and the tests."""
    ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name},
        MinSize=min_size,
        MaxSize=max_size,
        DesiredCapacity=min_size,
        AvailabilityZones=[f"{region}a"],
    )
