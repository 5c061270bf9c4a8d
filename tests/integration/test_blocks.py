"""The blocks of `blocks/`: Prefect's standard block checks, validation, secrecy, and each client
factory for real against a server on loopback (stdlib HTTP servers, moto, the Prefect test server).

The logo check of Prefect's suite fetches ``_logo_url``; with no network, the tests serve the
logo bytes shipped in ``blocks._logo`` for that one URL (any other URL still goes to the network).
"""

from __future__ import annotations

import contextlib
import email.message
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import urllib.response
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

import blocks
from blocks import (
    AwsTarget,
    DatabaseTarget,
    HttpService,
    KubernetesTarget,
    SlackIncomingWebhook,
    TraceBackend,
)
from blocks._logo import LOGO_PNG, LOGO_URL
from runbooks.errors import InvalidRequestError

REPO = Path(blocks.__file__).resolve().parent.parent


# --- loopback HTTP servers ------------------------------------------------------------------


@dataclass
class Recorder:
    """What a loopback server saw, and how it should answer."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # names lowered
    fail_next: int = 0  # answer this many requests with 503 + Retry-After: 0
    delay_seconds: float = 0.0  # wait this long (or until released) before answering
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve(routes: dict[str, Callable[[], tuple[int, dict]]]) -> Iterator[tuple[str, Recorder]]:
    """A threaded stdlib server on 127.0.0.1 answering GET ``routes`` with JSON; yields its URL."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            # like kube-apiserver, "/version" and "/version/" are one route
            route = self.path.split("?")[0].rstrip("/") or "/"
            with recorder.lock:
                recorder.requests.append(
                    (self.path, {name.lower(): value for name, value in self.headers.items()})
                )
                failing = recorder.fail_next > 0
                recorder.fail_next -= failing
            if recorder.delay_seconds:
                recorder.release.wait(recorder.delay_seconds)
            if failing:
                self._reply(503, {"kind": "Status", "message": "unavailable"}, retry_after=True)
            elif route in routes:
                self._reply(*routes[route]())
            else:
                self._reply(404, {"kind": "Status", "message": "not found"})

        def _reply(self, status: int, body: dict, retry_after: bool = False) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if retry_after:
                self.send_header("Retry-After", "0")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)  # fails when the client gave up (timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        recorder.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- Prefect's standard block suite -----------------------------------------------------------


class _LogoHandler(urllib.request.BaseHandler):
    """Answers the shipped logo for ``LOGO_URL``; other URLs fall through to the real handlers."""

    handler_order = 100  # before HTTPSHandler (500)

    def https_open(self, request: urllib.request.Request) -> urllib.response.addinfourl | None:
        if request.full_url != LOGO_URL:
            return None
        headers = email.message.Message()
        headers["Content-Type"] = "image/png"
        headers["Content-Length"] = str(len(LOGO_PNG))
        response = urllib.response.addinfourl(io.BytesIO(LOGO_PNG), headers, LOGO_URL, 200)
        response.msg = "OK"  # read by urllib's HTTP error processor
        return response


class _OfflineBlockSuite(BlockStandardTestSuite):
    @pytest.fixture(autouse=True)
    def _serve_logo_offline(self) -> Iterator[None]:
        urllib.request.install_opener(urllib.request.build_opener(_LogoHandler()))
        try:
            yield
        finally:
            urllib.request.install_opener(None)  # back to the default opener


class TestSlackIncomingWebhookStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return SlackIncomingWebhook


class TestKubernetesTargetStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return KubernetesTarget


class TestAwsTargetStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return AwsTarget


class TestHttpServiceStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return HttpService


class TestDatabaseTargetStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return DatabaseTarget


class TestTraceBackendStandard(_OfflineBlockSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return TraceBackend


def test_shipped_logo_file_is_the_logo_constant() -> None:
    assert (REPO / "blocks" / "logo.png").read_bytes() == LOGO_PNG
    assert LOGO_URL.startswith("https://")
    for block in (KubernetesTarget, AwsTarget, HttpService, DatabaseTarget, TraceBackend):
        assert str(block._logo_url) == LOGO_URL
        # Prefect's client validates the block type (logo URL included) before registering it
        assert str(block._to_block_type().logo_url) == LOGO_URL


def test_package_exports_every_block() -> None:
    exported = {name for name in blocks.__all__ if Block.is_block_class(getattr(blocks, name))}
    assert exported == {
        "KubernetesTarget",
        "AwsTarget",
        "HttpService",
        "DatabaseTarget",
        "TraceBackend",
        "SlackIncomingWebhook",
    }


# --- validation: refusals name the field ------------------------------------------------------

_AWS_KEYS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "wJalrEXAMPLEKEY"}


@pytest.mark.parametrize(
    ("block", "settings", "field_named"),
    [
        (KubernetesTarget, {"namespace": "Shop_Prod"}, "namespace"),
        (KubernetesTarget, {"namespace": "-shop"}, "namespace"),
        (KubernetesTarget, {"namespace": "a" * 64}, "namespace"),
        (KubernetesTarget, {"request_timeout_seconds": 0}, "request_timeout_seconds"),
        (KubernetesTarget, {"request_timeout_seconds": -1}, "request_timeout_seconds"),
        (KubernetesTarget, {"in_cluster": True, "context": "kind"}, "in_cluster"),
        (AwsTarget, {"region_name": "US East"}, "region_name"),
        (AwsTarget, {"region_name": "useast1"}, "region_name"),
        (
            AwsTarget,
            {"region_name": "us-east-1", "endpoint_url": "ftp://127.0.0.1:5000"},
            "endpoint_url",
        ),
        (AwsTarget, {"region_name": "us-east-1", "endpoint_url": "127.0.0.1:5000"}, "endpoint_url"),
        (
            AwsTarget,
            {"region_name": "us-east-1", "aws_access_key_id": "AKIDEXAMPLE"},
            "aws_secret_access_key",
        ),
        (
            AwsTarget,
            {"region_name": "us-east-1", "aws_secret_access_key": "x"},
            "aws_access_key_id",
        ),
        (AwsTarget, {"region_name": "us-east-1", "aws_session_token": "t"}, "aws_session_token"),
        (
            AwsTarget,
            {"region_name": "us-east-1", "profile_name": "ops", **_AWS_KEYS},
            "profile_name",
        ),
        (
            AwsTarget,
            {"region_name": "us-east-1", "connect_timeout_seconds": 0},
            "connect_timeout_seconds",
        ),
        (
            AwsTarget,
            {"region_name": "us-east-1", "read_timeout_seconds": -5},
            "read_timeout_seconds",
        ),
        (AwsTarget, {"region_name": "us-east-1", "max_attempts": 0}, "max_attempts"),
        (AwsTarget, {"region_name": "us-east-1", "max_attempts": 11}, "max_attempts"),
        (HttpService, {"base_url": "shop.internal:8080"}, "base_url"),
        (HttpService, {"base_url": "ftp://shop.internal"}, "base_url"),
        (HttpService, {"base_url": "http://shop.internal/?debug=1"}, "base_url"),
        (HttpService, {"base_url": "http://shop.internal", "health_path": "health"}, "health_path"),
        (
            HttpService,
            {"base_url": "http://shop.internal", "connect_timeout_seconds": 0},
            "connect_timeout_seconds",
        ),
        (
            HttpService,
            {"base_url": "http://shop.internal", "read_timeout_seconds": 0},
            "read_timeout_seconds",
        ),
        (
            HttpService,
            {"base_url": "http://shop.internal", "headers": {"Authorization": "x"}},
            "headers",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    block: type[Block], settings: dict, field_named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        block(**settings)
    assert field_named in str(caught.value)


def test_missing_required_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="region_name"):
        AwsTarget()
    with pytest.raises(ValidationError, match="base_url"):
        HttpService()


def test_blank_optional_settings_mean_unset() -> None:
    kube = KubernetesTarget(kubeconfig_path="", context="  ")
    assert (kube.kubeconfig_path, kube.context) == (None, None)
    aws = AwsTarget(region_name="us-east-1", profile_name="", endpoint_url=" ")
    assert (aws.profile_name, aws.endpoint_url) == (None, None)
    assert HttpService(base_url="http://shop.internal", target_name="").target_name is None


def test_defaults_are_sensible() -> None:
    kube = KubernetesTarget()
    assert (kube.namespace, kube.in_cluster, kube.request_timeout_seconds) == ("default", False, 10)
    aws = AwsTarget(region_name="eu-west-1")
    assert (aws.connect_timeout_seconds, aws.read_timeout_seconds, aws.max_attempts) == (5, 30, 3)
    http = HttpService(base_url="http://127.0.0.1:8080/")
    assert http.health_path == "/health"
    assert http.verify_tls is True
    assert http.target == "127.0.0.1:8080"
    assert http.health_url == "http://127.0.0.1:8080/health"
    assert HttpService(base_url="https://shop.example").target == "shop.example:443"
    assert HttpService(base_url="http://shop.example", target_name="shop").target == "shop"


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-central-2", "ap-southeast-5", "us-gov-west-1", "cn-northwest-1"]
)
def test_real_region_codes_are_accepted(region: str) -> None:
    assert AwsTarget(region_name=region).region_name == region


# --- secrets stay hidden ----------------------------------------------------------------------

_SECRET = "s3cr3t-value-never-shown"


def _secret_blocks() -> list[Block]:
    return [
        AwsTarget(
            region_name="us-east-1",
            aws_access_key_id=_SECRET + "-id",
            aws_secret_access_key=_SECRET,
            aws_session_token=_SECRET + "-token",
        ),
        HttpService(base_url="http://127.0.0.1:8080", bearer_token=_SECRET),
    ]


@pytest.mark.parametrize("block", _secret_blocks(), ids=lambda block: type(block).__name__)
def test_secrets_never_appear_unless_revealed(block: Block) -> None:
    shown = [
        repr(block),
        str(block),
        block.model_dump_json(),
        json.dumps(block.model_dump(mode="json")),
    ]
    for text in shown:
        assert _SECRET not in text
    revealed = [
        value.get_secret_value() for value in vars(block).values() if isinstance(value, SecretStr)
    ]
    assert _SECRET in revealed


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        AwsTarget(region_name="nowhere", aws_access_key_id=_SECRET, aws_secret_access_key=_SECRET)
    assert "region_name" in str(caught.value)
    assert _SECRET not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        HttpService(base_url=f"http://ops:{_SECRET}@shop.internal")
    assert "base_url" in str(caught.value)
    assert _SECRET not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        AwsTarget(region_name="us-east-1", aws_access_key_id=_SECRET)
    assert _SECRET not in str(caught.value)


# --- KubernetesTarget against a loopback API server ------------------------------------------

_VERSION = {
    "major": "1",
    "minor": "34",
    "emulationMajor": "1",
    "emulationMinor": "34",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "33",
    "gitVersion": "v1.34.2",
    "gitCommit": "8cc511e399b929453cd98ae65b419c3cc227ec79",
    "gitTreeState": "clean",
    "buildDate": "2025-11-11T19:10:24Z",
    "goVersion": "go1.24.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@pytest.fixture
def apiserver() -> Iterator[tuple[str, Recorder]]:
    with serve({"/version": lambda: (200, _VERSION)}) as served:
        yield served


def write_kubeconfig(path: Path, server_url: str, *, context: str = "sandbox") -> Path:
    """A kubeconfig (JSON is YAML) with one cluster, one token user and one context."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "sandbox", "cluster": {"server": server_url}}],
                "users": [{"name": "operator", "user": {"token": "kube-token-123"}}],
                "contexts": [
                    {
                        "name": context,
                        "context": {"cluster": "sandbox", "user": "operator", "namespace": "shop"},
                    }
                ],
                "current-context": context,
            }
        )
    )
    return path


def test_kubernetes_client_talks_to_the_api_server(
    apiserver: tuple[str, Recorder], tmp_path: Path
) -> None:
    from kubernetes.client import Configuration, VersionApi

    url, seen = apiserver
    default_before = Configuration._default
    block = KubernetesTarget(
        kubeconfig_path=write_kubeconfig(tmp_path / "config", url), context="sandbox"
    )
    with block.get_api_client() as api:
        info = VersionApi(api).get_code()
        assert api.configuration.host == url
    assert (info.major, info.minor, info.git_version) == ("1", "34", "v1.34.2")
    assert info.platform == "linux/amd64"
    path, headers = seen.requests[-1]
    assert path in ("/version", "/version/")  # the generated client asks for "/version/"
    assert headers["authorization"] == "Bearer kube-token-123"
    # the process-wide default configuration was neither created nor replaced
    assert Configuration._default is default_before


def test_kubernetes_kubeconfig_location_is_read_when_the_client_is_built(
    apiserver: tuple[str, Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.client import VersionApi

    url, _ = apiserver
    block = KubernetesTarget()
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", url)))
    with block.get_api_client() as api:
        assert VersionApi(api).get_code().git_version == "v1.34.2"


def test_kubernetes_typed_apis_share_one_client(
    apiserver: tuple[str, Recorder], tmp_path: Path
) -> None:
    from kubernetes import client

    url, _ = apiserver
    block = KubernetesTarget(kubeconfig_path=write_kubeconfig(tmp_path / "config", url))
    with block.get_api_client() as api:
        typed = [
            (block.core_v1(api), client.CoreV1Api),
            (block.apps_v1(api), client.AppsV1Api),
            (block.autoscaling_v2(api), client.AutoscalingV2Api),
            (block.custom_objects(api), client.CustomObjectsApi),
        ]
        for made, kind in typed:
            assert isinstance(made, kind)
            assert made.api_client is api
    own = block.core_v1()
    try:
        assert own.api_client.configuration.host == url
        assert own.api_client.configuration.retries is False
    finally:
        own.api_client.close()


def test_kubernetes_urllib3_does_not_retry(apiserver: tuple[str, Recorder], tmp_path: Path) -> None:
    from kubernetes import config
    from kubernetes.client import ApiClient, Configuration, VersionApi
    from kubernetes.client.exceptions import ApiException

    url, seen = apiserver
    kubeconfig = write_kubeconfig(tmp_path / "config", url)

    # control: a client configured the usual way retries a 503 + Retry-After by itself
    usual = Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=usual, persist_config=False)
    seen.fail_next = 1
    with ApiClient(usual) as api:
        assert VersionApi(api).get_code().git_version == "v1.34.2"
    assert len(seen.requests) == 2

    # the block's client sees the 503 on its first and only attempt
    seen.requests.clear()
    seen.fail_next = 1
    block = KubernetesTarget(kubeconfig_path=kubeconfig)
    with block.get_api_client() as api, pytest.raises(ApiException) as caught:
        VersionApi(api).get_code()
    assert caught.value.status == 503
    assert len(seen.requests) == 1


def test_kubernetes_requests_time_out_by_default(
    apiserver: tuple[str, Recorder], tmp_path: Path
) -> None:
    import urllib3
    from kubernetes.client import VersionApi

    url, seen = apiserver
    seen.delay_seconds = 10  # released when the server stops
    block = KubernetesTarget(
        kubeconfig_path=write_kubeconfig(tmp_path / "config", url), request_timeout_seconds=0.3
    )
    started = time.monotonic()
    with block.get_api_client() as api, pytest.raises(urllib3.exceptions.ReadTimeoutError):
        VersionApi(api).get_code()
    assert time.monotonic() - started < 5
    assert len(seen.requests) == 1


def _one_sentence(message: str) -> bool:
    return "\n" not in message and message.count(". ") == 0


def test_kubernetes_missing_kubeconfig_is_one_sentence_naming_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config"
    with pytest.raises(InvalidRequestError) as caught:
        KubernetesTarget(kubeconfig_path=missing).get_api_client()
    message = str(caught.value)
    assert message.startswith(f"kubeconfig_path {missing} does not exist")
    assert _one_sentence(message)


def test_kubernetes_no_default_kubeconfig_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(InvalidRequestError, match=r"^kubeconfig_path is empty and no kubeconfig"):
        KubernetesTarget().get_api_client()


def test_kubernetes_unknown_context_names_the_field(
    apiserver: tuple[str, Recorder], tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", apiserver[0])
    with pytest.raises(InvalidRequestError) as caught:
        KubernetesTarget(kubeconfig_path=kubeconfig, context="production").get_api_client()
    message = str(caught.value)
    assert message.startswith("context 'production' is not defined in kubeconfig")
    assert "sandbox" in message
    assert _one_sentence(message)
    assert caught.value.__cause__ is not None


def test_kubernetes_unreadable_kubeconfig_names_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "config"
    broken.write_text("clusters: [unclosed\n")
    with pytest.raises(InvalidRequestError, match=r"^kubeconfig_path .* cannot be used"):
        KubernetesTarget(kubeconfig_path=broken).get_api_client()


def test_kubernetes_in_cluster_outside_a_pod_names_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(InvalidRequestError, match=r"^in_cluster is set but"):
        KubernetesTarget(in_cluster=True).get_api_client()


# --- AwsTarget against moto on loopback -------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AWS config files of our own, so the machine's ~/.aws never leaks into a test."""
    config = tmp_path / "aws-config"
    config.write_text("[profile sandbox]\nregion = eu-west-1\n")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[sandbox]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_aws_client_creates_and_lists_a_bucket_on_moto(moto_url: str, aws_files: Path) -> None:
    block = AwsTarget(
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="moto-secret",
        connect_timeout_seconds=1.5,
        read_timeout_seconds=7,
        max_attempts=4,
    )
    s3 = block.get_client("s3")
    s3.create_bucket(Bucket="runbooks-audit")
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert "runbooks-audit" in names

    config = s3.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (1.5, 7)
    assert s3.meta.endpoint_url == moto_url
    assert s3.meta.region_name == "us-east-1"


def test_aws_session_carries_the_block_credentials(aws_files: Path) -> None:
    block = AwsTarget(
        region_name="ap-southeast-2",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="block-secret",
        aws_session_token="session-token",
    )
    session = block.get_session()
    credentials = session.get_credentials().get_frozen_credentials()
    assert session.region_name == "ap-southeast-2"
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "AKIDEXAMPLE",
        "block-secret",
        "session-token",
    )
    assert block.get_session() is not session  # never boto3's shared default session


def test_aws_profile_is_used_and_a_missing_one_names_the_field(aws_files: Path) -> None:
    session = AwsTarget(region_name="us-east-1", profile_name="sandbox").get_session()
    assert session.get_credentials().get_frozen_credentials().access_key == "AKIDPROFILE"
    assert session.region_name == "us-east-1"  # the block's region wins over the profile's
    with pytest.raises(InvalidRequestError, match=r"^profile_name 'nope' is not in"):
        AwsTarget(region_name="us-east-1", profile_name="nope").get_session()


def test_aws_unknown_service_names_the_argument(aws_files: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"^service_name 'route54'"):
        AwsTarget(region_name="us-east-1", **_AWS_KEYS).get_client("route54")


# --- HttpService against a loopback server ----------------------------------------------------


@pytest.fixture
def service() -> Iterator[tuple[str, Recorder]]:
    routes = {
        "/health": lambda: (200, {"status": "ok"}),
        "/shop/health": lambda: (200, {"status": "ok", "prefix": True}),
    }
    with serve(routes) as served:
        yield served


def test_http_client_reaches_health_with_correlation_and_auth_headers(
    service: tuple[str, Recorder],
) -> None:
    url, seen = service
    block = HttpService(
        base_url=url, bearer_token="http-token", headers={"User-Agent": "runbooks-tests"}
    )
    with block.get_client() as client:
        response = client.get(block.health_path)
        assert client.timeout == httpx.Timeout(connect=2, read=5, write=5, pool=2)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    path, lowered = seen.requests[-1]
    assert path == "/health"
    assert lowered["authorization"] == "Bearer http-token"
    assert lowered["user-agent"] == "runbooks-tests"
    assert lowered["x-request-id"]
    assert lowered["traceparent"].startswith("00-")
    assert len(lowered["traceparent"].split("-")) == 4


def test_http_base_url_path_prefix_and_health_url_agree(service: tuple[str, Recorder]) -> None:
    url, seen = service
    block = HttpService(base_url=f"{url}/shop")
    assert block.health_url == f"{url}/shop/health"
    with block.get_client() as client:
        assert client.get(block.health_path).json()["prefix"] is True
    assert seen.requests[-1][0] == "/shop/health"


def test_http_client_secret_is_masked_in_reprs(service: tuple[str, Recorder]) -> None:
    block = HttpService(base_url=service[0], bearer_token=_SECRET)
    with block.get_client() as client:
        assert _SECRET not in repr(client.headers)
        assert client.headers["Authorization"] == f"Bearer {_SECRET}"


# --- registration and storage in the Prefect server ------------------------------------------


def test_block_types_register_with_the_prefect_cli(prefect_server: str) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("Kubernetes Target", "AWS Target", "HTTP Service", "Database Target"):
        assert name in result.stdout


def test_blocks_save_and_load_with_secrets_hidden(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    HttpService(
        base_url="http://127.0.0.1:8080", bearer_token=_SECRET, headers={"X-Team": "sre"}
    ).save("x", overwrite=True)
    loaded = HttpService.load("x")
    assert loaded.bearer_token is not None
    assert loaded.bearer_token.get_secret_value() == _SECRET
    assert loaded.headers == {"X-Team": "sre"}
    assert _SECRET not in repr(loaded)

    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            name="x", block_type_slug="http-service", include_secrets=False
        )
    assert _SECRET not in json.dumps(document.data, default=str)

    AwsTarget(region_name="eu-west-1", **_AWS_KEYS).save("sandbox-aws", overwrite=True)
    aws = AwsTarget.load("sandbox-aws")
    assert aws.aws_secret_access_key is not None
    assert aws.aws_secret_access_key.get_secret_value() == _AWS_KEYS["aws_secret_access_key"]

    KubernetesTarget(kubeconfig_path=Path("/etc/kube/config"), namespace="shop").save(
        "sandbox-kube", overwrite=True
    )
    kube = KubernetesTarget.load("sandbox-kube")
    assert (kube.kubeconfig_path, kube.namespace) == (Path("/etc/kube/config"), "shop")


def test_kubernetes_target_schema_keeps_references_apart_and_registers(prefect_server: str) -> None:
    """KubernetesTarget's schema refuses a block reference as the block's own data (so Prefect's
    parameter check can tell the two apart, tests/integration/test_deployments.py): it registers
    and is stored as is, stays valid JSON Schema for the UI's block form (which asks the server's
    ``/ui/schemas/validate``), takes the block's data there, and the block saves and loads."""
    from prefect.client.orchestration import get_client

    from blocks.kubernetes import REFERENCE_IS_NOT_BLOCK_DATA

    KubernetesTarget.register_type_and_schema()
    checksum = KubernetesTarget._calculate_schema_checksum()
    with get_client(sync_client=True) as client:
        stored = client.read_block_schema_by_checksum(checksum)
    assert stored.fields == KubernetesTarget.model_json_schema()
    assert {key: stored.fields[key] for key in REFERENCE_IS_NOT_BLOCK_DATA} == dict(
        REFERENCE_IS_NOT_BLOCK_DATA
    )
    assert stored.fields["block_type_slug"] == "kubernetes-target"  # the UI's block picker

    def form(values: dict[str, object]) -> dict[str, object]:
        response = httpx.post(
            f"{prefect_server}/ui/schemas/validate",
            json={"schema": stored.fields, "values": values},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    assert form({"namespace": "shop", "context": "kind"}) == {"errors": [], "valid": True}
    assert form({}) == {"errors": [], "valid": True}  # every field has a default
    assert not form({"$ref": {"block_document_slug": "kubernetes-target/sandbox"}})["valid"]
    assert not form({"namespace": 5})["valid"]

    KubernetesTarget(namespace="shop", context="kind").save("schema-check", overwrite=True)
    loaded = KubernetesTarget.load("schema-check")
    assert (loaded.namespace, loaded.context) == ("shop", "kind")
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            name="schema-check", block_type_slug="kubernetes-target"
        )
    assert document.block_schema is not None
    assert document.block_schema.checksum == checksum
