"""The idle colour's manifest is the active one's with only image, colour and size changed."""

from __future__ import annotations

import pytest

from decisions.bluegreen import Colour
from decisions.bluegreen_manifest import idle_manifest, mounted_config_maps

LIVE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "shop-blue",
        "namespace": "default",
        "uid": "u-1",
        "resourceVersion": "42",
        "generation": 3,
        "labels": {"app": "shop", "colour": "blue", "team": "payments"},
        "annotations": {"deployment.kubernetes.io/revision": "3", "owner": "sre"},
    },
    "spec": {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "shop", "colour": "blue"}},
        "template": {
            "metadata": {"labels": {"app": "shop", "colour": "blue", "role": "payments"}},
            "spec": {"containers": [{"name": "shop", "image": "demo/shop:v1", "env": []}]},
        },
    },
    "status": {"replicas": 4},
}


def test_idle_manifest_changes_only_image_colour_and_size() -> None:
    out = idle_manifest(LIVE, service="shop", colour=Colour.GREEN, image="demo/shop:v2", replicas=2)
    assert out["metadata"]["name"] == "shop-green"
    assert out["metadata"]["labels"] == {"app": "shop", "colour": "green", "team": "payments"}
    assert out["metadata"]["annotations"] == {"owner": "sre"}
    assert "uid" not in out["metadata"]
    assert "resourceVersion" not in out["metadata"]
    assert "status" not in out
    assert out["spec"]["replicas"] == 2
    assert out["spec"]["selector"]["matchLabels"] == {"app": "shop", "colour": "green"}
    template = out["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": "shop", "colour": "green", "role": "payments"}
    assert template["spec"]["containers"][0]["image"] == "demo/shop:v2"
    assert LIVE["spec"]["template"]["spec"]["containers"][0]["image"] == "demo/shop:v1"


def test_idle_manifest_refuses_a_template_without_containers() -> None:
    with pytest.raises(ValueError, match="no container"):
        idle_manifest(
            {"spec": {"template": {"spec": {}}}},
            service="shop",
            colour=Colour.GREEN,
            image="demo/shop:v2",
            replicas=1,
        )


def test_mounted_config_maps_reads_plain_and_projected_volumes() -> None:
    manifest = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {"name": "flags", "configMap": {"name": "shop-flags"}},
                        {"name": "scratch", "emptyDir": {}},
                        {
                            "name": "all",
                            "projected": {
                                "sources": [{"configMap": {"name": "extra"}}, {"secret": {}}]
                            },
                        },
                    ]
                }
            }
        }
    }
    assert mounted_config_maps(manifest) == {"shop-flags", "extra"}
    assert mounted_config_maps(LIVE) == frozenset()
