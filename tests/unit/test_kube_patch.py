"""The emulator's patch formats: strategic merge, JSON merge patch (RFC 7386), JSON patch (6902)."""

from __future__ import annotations

import copy

import pytest

from sandbox.kube.patch import (
    PatchError,
    json_merge_patch,
    json_patch,
    merge_key,
    strategic_merge_patch,
)

DEPLOYMENT = {
    "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
    "spec": {
        "replicas": 3,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "shop:v1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "volumeMounts": [{"name": "flags", "mountPath": "/flags"}],
                    },
                    {"name": "sidecar", "image": "proxy:1"},
                ],
                "volumes": [{"name": "flags", "configMap": {"name": "flags"}}],
                "tolerations": [{"key": "a"}],
            }
        },
    },
    "status": {"conditions": [{"type": "Available", "status": "True"}]},
}


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_merge_keys_depend_on_where_the_list_is() -> None:
    assert merge_key(("spec", "template", "spec", "containers")) == "name"
    assert merge_key(("spec", "template", "spec", "containers", "ports")) == "containerPort"
    assert merge_key(("spec", "ports")) == "port"  # a Service's ports
    assert merge_key(("spec", "containers", "volumeMounts")) == "mountPath"
    assert merge_key(("status", "conditions")) == "type"
    assert merge_key(("spec", "template", "spec", "tolerations")) is None


def test_strategic_patch_of_one_image_keeps_env_ports_and_other_containers() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v2"}]}}}}
    result = strategic_merge_patch(DEPLOYMENT, patch)
    app, sidecar = containers(result)
    assert app["image"] == "shop:v2"
    assert app["env"] == containers(DEPLOYMENT)[0]["env"]
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert sidecar == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_patch_never_mutates_its_input() -> None:
    before = copy.deepcopy(DEPLOYMENT)
    strategic_merge_patch(DEPLOYMENT, {"spec": {"replicas": 1, "template": {"spec": {}}}})
    assert before == DEPLOYMENT


def test_strategic_patch_merges_env_by_name_and_adds_new_items() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "B", "value": "9"}, {"name": "C", "value": "3"}],
                        }
                    ]
                }
            }
        }
    }
    env = containers(strategic_merge_patch(DEPLOYMENT, patch))[0]["env"]
    assert env == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "9"},
        {"name": "C", "value": "3"},
    ]


def test_strategic_delete_directive_removes_one_list_item() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "app", "env": [{"name": "A", "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    result = containers(strategic_merge_patch(DEPLOYMENT, patch))
    assert [c["name"] for c in result] == ["app"]
    assert result[0]["env"] == [{"name": "B", "value": "2"}]


def test_strategic_replace_directive_replaces_the_whole_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x:1"}]}
            }
        }
    }
    assert containers(strategic_merge_patch(DEPLOYMENT, patch)) == [
        {"name": "only", "image": "x:1"}
    ]


def test_strategic_replace_directive_on_a_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "tier": "web"}}}
    assert strategic_merge_patch(DEPLOYMENT, patch)["metadata"]["labels"] == {"tier": "web"}


def test_lists_without_a_merge_key_are_replaced_and_null_deletes() -> None:
    patch = {"spec": {"template": {"spec": {"tolerations": [{"key": "b"}]}}}, "status": None}
    result = strategic_merge_patch(DEPLOYMENT, patch)
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "b"}]
    assert "status" not in result


def test_primitive_merge_lists_and_delete_from_primitive_list() -> None:
    added = strategic_merge_patch(DEPLOYMENT, {"metadata": {"finalizers": ["b", "a"]}})
    assert added["metadata"]["finalizers"] == ["a", "b"]
    removed = strategic_merge_patch(
        added, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    )
    assert removed["metadata"]["finalizers"] == ["b"]


def test_set_element_order_and_retain_keys_from_kubectl_apply() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app", "image": "shop:v3"}],
                }
            },
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
        }
    }
    original = copy.deepcopy(DEPLOYMENT)
    original["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    result = strategic_merge_patch(original, patch)
    assert [c["name"] for c in containers(result)] == ["sidecar", "app"]
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_conditions_merge_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}
    conditions = strategic_merge_patch(DEPLOYMENT, patch)["status"]["conditions"]
    assert [c["type"] for c in conditions] == ["Available", "Progressing"]


def test_item_without_its_merge_key_is_refused() -> None:
    with pytest.raises(PatchError, match="merge key: name"):
        strategic_merge_patch(
            DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
        )


def test_service_ports_merge_by_port() -> None:
    service = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    result = strategic_merge_patch(service, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert result["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


# -- RFC 7386 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # the examples of RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_rfc_examples(target, patch, expected) -> None:
    assert json_merge_patch(target, patch) == expected


def test_json_merge_patch_replaces_lists_whole() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "v2"}]}}}}
    assert containers(json_merge_patch(DEPLOYMENT, patch)) == [{"name": "app", "image": "v2"}]


# -- RFC 6902 ----------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    result = json_patch(
        doc,
        [
            {"op": "test", "path": "/c", "value": "x"},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/a/e"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "add", "path": "/with~1slash", "value": True},
        ],
    )
    assert result == {"a": {"b": [0, 2, 3], "e": "y"}, "c": "y", "with/slash": True}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([{"op": "test", "path": "/c", "value": "nope"}], "testing value /c failed"),
        ([{"op": "test", "path": "/n", "value": 2}], "testing value /n failed"),
        ([{"op": "test", "path": "/n", "value": True}], "testing value /n failed"),
        ([{"op": "remove", "path": "/missing"}], "doc is missing path: /missing"),
        ([{"op": "replace", "path": "/a/zz", "value": 1}], "doc is missing path"),
        ([{"op": "add", "path": "/a/b/9", "value": 1}], "out of bounds"),
        ([{"op": "add", "path": "/x/y", "value": 1}], "doc is missing path: /x/y"),
        ([{"op": "frobnicate", "path": "/c"}], "unexpected kind"),
        ([{"op": "add", "path": "c", "value": 1}], "must be empty or start"),
        ([{"op": "add", "path": "/c"}], "missing value"),
        ({"op": "add"}, "must be a list"),
    ],
)
def test_json_patch_errors(operations, message) -> None:
    doc = {"a": {"b": [1]}, "c": "x", "n": 1}
    with pytest.raises(PatchError, match=message):
        json_patch(doc, operations)


def test_a_failing_test_op_applies_nothing() -> None:
    doc = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(
            doc,
            [{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}],
        )
    assert doc == {"a": 1}
