"""The sandbox as the runbooks will use it: blocks pointing at it, the shop deployed through the
Kubernetes API, Prometheus scraping the pods, moto answering the AWS APIs the runbooks call."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest

from blocks import AwsTarget, KubernetesTarget
from runbooks.resilience import call_kubernetes
from sandbox.showcase import deployment_manifest, service_manifest

T = TypeVar("T")


def _eventually(check: Callable[[], T], what: str, seconds: float) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds:g}s")
        time.sleep(0.1)


@pytest.fixture
def kubernetes_target(sandbox) -> KubernetesTarget:
    return KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace="default"
    )


def test_the_shop_deploys_through_the_block_and_prometheus_scrapes_it(
    sandbox, kubernetes_target: KubernetesTarget
) -> None:
    if not sandbox.endpoints.get("prometheus"):
        assert not shutil.which("prometheus")
        pytest.skip("prometheus is not installed (bin/runbooks test installs it as root)")
    name = f"shop-{uuid.uuid4().hex[:6]}"
    deployment = deployment_manifest(name, "payments", "demo/shop:v1", 2, {})
    service = service_manifest(name, {"app": name, "role": "payments"})
    client = kubernetes_target.get_api_client()
    apps, core = kubernetes_target.apps_v1(client), kubernetes_target.core_v1(client)
    call_kubernetes("create Deployment", apps.create_namespaced_deployment, "default", deployment)
    call_kubernetes("create Service", core.create_namespaced_service, "default", service)

    def ready_at() -> float | None:
        status = apps.read_namespaced_deployment_status(name, "default").status
        return time.monotonic() if (status.ready_replicas or 0) == 2 else None

    became_ready = _eventually(ready_at, "2 ready replicas", 30)
    url = sandbox.cluster.wait_for_service("default", name, endpoints=2)
    with httpx.Client(base_url=url, timeout=5) as shop:
        for _ in range(20):
            assert shop.get("/pay").status_code == 200

    prometheus = httpx.Client(base_url=sandbox.endpoints["prometheus"], timeout=5)

    def scraped() -> list:
        query = f'up{{app="{name}"}} == 1'
        result = prometheus.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
        return result if len(result) == 2 else []

    _eventually(scraped, "both pods scraped", 15)
    # "within two scrape intervals" (2 s each) of readiness, plus file_sd's pickup of the file
    assert time.monotonic() - became_ready < 2 * 2.0 + 5.0

    def rate() -> list:
        query = f'sum(rate(shop_requests_total{{app="{name}"}}[10s]))'
        result = prometheus.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
        return [r for r in result if float(r["value"][1]) > 0]

    _eventually(rate, "a request rate from PromQL", 20)
    prometheus.close()


def test_prometheus_evaluates_the_shipped_alerting_rules(sandbox) -> None:
    """The retry-storm runbook's alerts are loaded and healthy in the sandbox's Prometheus."""
    from runbooks.alerts import ALERT_NAMES

    if not sandbox.endpoints.get("prometheus"):
        pytest.skip("prometheus is not installed (bin/runbooks test installs it as root)")
    groups = httpx.get(f"{sandbox.endpoints['prometheus']}/api/v1/rules", timeout=5).json()
    rules = {r["name"]: r for g in groups["data"]["groups"] for r in g["rules"]}
    assert set(ALERT_NAMES) <= set(rules)
    assert all(rules[name]["health"] in ("ok", "unknown") for name in ALERT_NAMES)


def test_moto_answers_the_aws_apis_the_runbooks_use(sandbox) -> None:
    aws = AwsTarget(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto accepts any credentials
        endpoint_url=sandbox.endpoints["moto"],
    )
    zone = aws.get_client("route53").create_hosted_zone(
        Name="shop.example.", CallerReference=uuid.uuid4().hex
    )
    assert zone["HostedZone"]["Name"] == "shop.example."
    ec2 = aws.get_client("ec2")
    template = ec2.create_launch_template(
        LaunchTemplateName=f"shop-{uuid.uuid4().hex[:6]}",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )["LaunchTemplate"]
    autoscaling = aws.get_client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="shop",
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"]},
        MinSize=1,
        MaxSize=3,
        AvailabilityZones=["us-east-1a"],
    )
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["shop"])
    assert groups["AutoScalingGroups"][0]["MaxSize"] == 3
    cloudwatch = aws.get_client("cloudwatch")
    cloudwatch.put_metric_data(
        Namespace="Shop", MetricData=[{"MetricName": "Requests", "Value": 12.0}]
    )
    assert cloudwatch.list_metrics(Namespace="Shop")["Metrics"]
    s3 = aws.get_client("s3")
    s3.create_bucket(Bucket="shop-logs")
    s3.put_object(Bucket="shop-logs", Key="access.log", Body=b"line\n")
    assert s3.get_object(Bucket="shop-logs", Key="access.log")["Body"].read() == b"line\n"
