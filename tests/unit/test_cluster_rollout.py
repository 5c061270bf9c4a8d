"""The sandbox controller's pure parts: rollout steps, Deployment status, hashes, ports, env."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.cluster import rollout
from sandbox.cluster.objects import (
    matches_selector,
    resolve_int_or_percent,
    resolve_target_port,
    rfc3339,
    template_hash,
)
from sandbox.cluster.podenv import Volumes, expand, mount_variable, rewrite_paths
from sandbox.cluster.rollout import Counts, Limits, PodFacts, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(name: str, hash_: str, *, available: bool = True, created: str = "") -> PodFacts:
    return PodFacts(name, hash_, available, available, True, created or name)


@pytest.mark.parametrize(
    ("strategy", "replicas", "expected"),
    [
        ({}, 3, Limits(3, 1, 0, False)),  # 25 % of 3: surge rounds up, unavailable down
        ({}, 4, Limits(4, 1, 1, False)),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, 2, Limits(2, 0, 1, False)),
        ({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 2}}, 4, Limits(4, 2, 2, False)),
        ({"type": "Recreate"}, 3, Limits(3, 0, 3, True)),
    ],
)
def test_limits_resolve_surge_and_unavailability(
    strategy: dict, replicas: int, expected: Limits
) -> None:
    assert rollout.limits({"replicas": replicas, "strategy": strategy}) == expected


def test_percentages_round_like_upstream() -> None:
    assert resolve_int_or_percent("25%", 10, round_up=True, default="25%") == 3
    assert resolve_int_or_percent("25%", 10, round_up=False, default="25%") == 2
    assert resolve_int_or_percent(None, 4, round_up=False, default="25%") == 1


@pytest.mark.parametrize(("replicas", "strategy"), [(3, {}), (4, {}), (5, {"maxSurge": 0})])
def test_a_rolling_update_keeps_its_bounds_and_completes(replicas: int, strategy: dict) -> None:
    limits = rollout.limits({"replicas": replicas, "strategy": {"rollingUpdate": strategy}})
    pods = [pod(f"old{i}", "old") for i in range(replicas)]
    born = 0
    for _ in range(50):
        step = plan(limits, "new", pods)
        if not step.create and not step.delete:
            break
        pods = [p for p in pods if p.name not in step.delete]
        for _ in range(step.create):
            born += 1
            pods.append(pod(f"new{born}", "new", available=False))
        assert len(pods) <= replicas + limits.surge
        assert sum(p.available for p in pods) >= replicas - limits.unavailable
        # the world moves: new pods become available before the next pass
        pods = [pod(p.name, p.hash) for p in pods]
    assert sorted(p.hash for p in pods) == ["new"] * replicas


def test_unavailable_new_pods_hold_the_old_ones() -> None:
    limits = rollout.limits({"replicas": 3})
    pods = [pod(f"old{i}", "old") for i in range(3)] + [pod("new1", "new", available=False)]
    assert plan(limits, "new", pods) == rollout.Step()  # waits: no surge room, no unavailability


def test_unhealthy_old_pods_go_first() -> None:
    limits = rollout.limits({"replicas": 2, "strategy": {"rollingUpdate": {"maxUnavailable": 1}}})
    pods = [pod("old-bad", "old", available=False), pod("old-ok", "old"), pod("new1", "new")]
    assert plan(limits, "new", pods).delete[0] == "old-bad"


def test_recreate_deletes_everything_old_then_waits_then_creates() -> None:
    limits = rollout.limits({"replicas": 2, "strategy": {"type": "Recreate"}})
    old = [pod("a", "old"), pod("b", "old")]
    assert set(plan(limits, "new", old).delete) == {"a", "b"}
    assert plan(limits, "new", [], old_terminating=2) == rollout.Step()
    assert plan(limits, "new", []).create == 2


def test_scale_down_removes_unready_and_newest_pods_first() -> None:
    limits = rollout.limits({"replicas": 1})
    pods = [
        pod("ready-old", "h", created="2026-01-01T00:00:00Z"),
        pod("ready-new", "h", created="2026-01-01T00:00:09Z"),
        pod("unready", "h", available=False, created="2026-01-01T00:00:01Z"),
    ]
    assert plan(limits, "h", pods).delete == ("unready", "ready-new")


def deployment(status: dict | None = None, **spec: object) -> dict:
    return {"metadata": {"generation": 2}, "spec": {"replicas": 3, **spec}, "status": status or {}}


def test_status_counts_omit_zeros_and_report_availability() -> None:
    status = rollout.status(
        deployment(), Counts(3, 3, 0, 0), group_name="web-abc", created_group=True, at=T0
    )
    assert status["observedGeneration"] == 2
    assert "readyReplicas" not in status
    assert status["unavailableReplicas"] == 3
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetCreated"
    assert conditions["Progressing"]["message"] == 'Created new replica set "web-abc"'


def test_progress_moves_last_update_time_but_not_the_transition() -> None:
    first = rollout.status(
        deployment(), Counts(3, 1, 0, 0), group_name="g", created_group=True, at=T0
    )
    later = T0 + timedelta(seconds=30)
    second = rollout.status(
        deployment(first), Counts(3, 2, 1, 1), group_name="g", created_group=False, at=later
    )
    progressing = {c["type"]: c for c in second["conditions"]}["Progressing"]
    assert progressing["reason"] == "ReplicaSetUpdated"
    assert progressing["lastUpdateTime"] == rfc3339(later)
    assert progressing["lastTransitionTime"] == rfc3339(T0)


def test_no_progress_past_the_deadline_times_out_and_completion_never_does() -> None:
    first = rollout.status(
        deployment(progressDeadlineSeconds=5),
        Counts(4, 1, 3, 3),
        group_name="g",
        created_group=True,
        at=T0,
    )
    stuck = deployment(first, progressDeadlineSeconds=5)
    same = Counts(4, 1, 3, 3)
    early = rollout.status(stuck, same, group_name="g", created_group=False, at=T0)
    assert {c["type"]: c["reason"] for c in early["conditions"]}["Progressing"] == (
        "NewReplicaSetCreated"
    )
    late = rollout.status(
        stuck, same, group_name="g", created_group=False, at=T0 + timedelta(seconds=6)
    )
    progressing = {c["type"]: c for c in late["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    done = rollout.status(
        deployment(progressDeadlineSeconds=5),
        Counts(3, 3, 3, 3),
        group_name="g",
        created_group=False,
        at=T0 + timedelta(days=1),
    )
    assert {c["type"]: c["reason"] for c in done["conditions"]}["Progressing"] == (
        "NewReplicaSetAvailable"
    )


def test_template_hash_is_stable_and_follows_the_spec() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "shop", "image": "demo/shop:v1", "env": []}]},
    }
    same = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"image": "demo/shop:v1", "name": "shop"}]},
    }
    changed = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "shop", "image": "demo/shop:v2"}]},
    }
    assert template_hash(template) == template_hash(same)
    assert template_hash(template) != template_hash(changed)
    assert set(template_hash(template)) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash(template) != template_hash(template, collision_count=1)


def test_label_selectors() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}],
    }
    assert matches_selector(selector, {"app": "web"})
    assert not matches_selector(selector, {"app": "web", "track": "canary"})
    assert not matches_selector({}, {"app": "web"})  # an empty selector selects nothing


def test_target_ports_resolve_to_the_container_real_port() -> None:
    pod_ = {
        "metadata": {
            "annotations": {"sandbox.runbooks.dev/ports": '{"shop": 41001, "sidecar": 41002}'}
        },
        "spec": {
            "containers": [
                {"name": "shop", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "sidecar", "ports": [{"name": "admin", "containerPort": 9000}]},
            ]
        },
    }
    assert resolve_target_port(pod_, "http") == 41001
    assert resolve_target_port(pod_, 9000) == 41002
    assert resolve_target_port(pod_, 1234) == 41001  # undeclared number: the first container
    assert resolve_target_port(pod_, "grpc") is None  # unknown name: not an endpoint


def test_env_values_naming_mount_paths_are_rewritten() -> None:
    mounts = {"/etc/shop": "/state/pod/volumes/config", "/etc/shop/flags": "/state/pod/flags"}
    assert rewrite_paths("/etc/shop/flags/flags.json", mounts) == "/state/pod/flags/flags.json"
    assert rewrite_paths("/etc/shop/retry.json", mounts) == "/state/pod/volumes/config/retry.json"
    assert rewrite_paths("/etc/shopping", mounts) == "/etc/shopping"
    assert mount_variable("/etc/shop/flags") == "SANDBOX_MOUNT_ETC_SHOP_FLAGS"
    assert expand("$(HOST):$(PORT)/$$(X)", {"HOST": "a", "PORT": "1"}) == "a:1/$(X)"


def test_configmap_volumes_are_swapped_atomically(tmp_path: Path) -> None:
    pod_ = {
        "metadata": {"namespace": "shop"},
        "spec": {"volumes": [{"name": "flags", "configMap": {"name": "flags"}}]},
    }
    data = {"flags.json": '{"a": 1}'}
    volumes = Volumes(pod_, tmp_path)
    volumes.setup(lambda ns, name: {"data": dict(data)}, lambda ns, name: None)
    file = tmp_path / "flags" / "flags.json"
    assert file.read_text() == '{"a": 1}'
    assert file.is_symlink()
    before = os.stat(file).st_ino
    data["flags.json"] = '{"a": 2}'
    assert volumes.refresh("flags", lambda ns, name: {"data": dict(data)})
    assert file.read_text() == '{"a": 2}'
    assert os.stat(file).st_ino != before  # a new file: readers watching stat() see it
    assert not volumes.refresh("flags", lambda ns, name: {"data": dict(data)})  # no change
    assert len([p for p in (tmp_path / "flags").iterdir() if p.name.startswith("..2")]) == 1
