"""The emulator's protobuf decoder, on bodies captured from kubectl 1.32 (client-go typed)."""

from __future__ import annotations

import pytest

from sandbox.kube.protobuf import ProtobufError, decode

# kubectl create deployment pbtest --image=demo/shop:v1 --replicas=0 --port=8080
DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412cb010a250a0670627465737412001a00"
    "22002a003200380042005a0d0a0361707012067062746573741293010800120f0a0d0a036170701206706274"
    "6573741a760a1f0a0012001a0022002a003200380042005a0d0a036170701206706274657374125312350a04"
    "73686f70120c64656d6f2f73686f703a76312a00320b0a00100018903f22002a0042006a0072008001008801"
    "00900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a"
    "0c0800100018002000280038001a002200"
)
# kubectl create secret generic pbs --from-literal=token=s3cret
SECRET = bytes.fromhex(
    "6b3873000a0c0a027631120653656372657412280a130a0370627312001a0022002a00320038004200120f0a"
    "05746f6b656e12067333637265741a001a002200"
)
# kubectl create configmap x --from-literal=a=b
CONFIG_MAP = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d6170121b0a110a01781200"
    "1a0022002a003200380042001206" + "0a01611201621a002200"
)


def test_deployment_keeps_pointer_zeros_and_drops_go_empty_values() -> None:
    assert decode(DEPLOYMENT) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pbtest", "labels": {"app": "pbtest"}},
        "spec": {
            "replicas": 0,  # *int32: an explicit zero
            "selector": {"matchLabels": {"app": "pbtest"}},
            "template": {
                "metadata": {"labels": {"app": "pbtest"}},
                "spec": {
                    "containers": [
                        {
                            "name": "shop",
                            "image": "demo/shop:v1",
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def test_secret_data_is_base64_like_its_json_form() -> None:
    assert decode(SECRET) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pbs"},
        "data": {"token": "czNjcmV0"},
    }


def test_config_map() -> None:
    assert decode(CONFIG_MAP) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "data": {"a": "b"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"kind": "ConfigMap"}', "k8s"),
        (b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Widget", "supported for Namespace"),
        (CONFIG_MAP[:-12], "truncated"),
    ],
)
def test_refused_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufError, match=message):
        decode(body)


def test_unknown_empty_fields_are_dropped() -> None:
    body = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x03\xfa\x01\x00"
    assert decode(body) == {"apiVersion": "v1", "kind": "ConfigMap"}


def test_unknown_non_empty_fields_are_refused_not_lost() -> None:
    body = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x04\xfa\x01\x01x"
    with pytest.raises(ProtobufError, match="field 31 is not supported"):
        decode(body)
