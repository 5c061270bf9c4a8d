"""The runbook kit against the session's real Prefect server.

Each test uses targets with a fresh suffix, so tests never see each other's artifacts, events or
locks on the shared server. Events reach the server asynchronously (client worker, then the
server's persister, which flushes every few seconds), so they are polled with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prefect import flow, task
from prefect.client.orchestration import PrefectClient, SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, ConfigDict

from runbooks.errors import InvalidRequestError, TargetBusyError
from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    emit,
    lock_name,
    plan_gate,
    publish_markdown,
    publish_table,
    publish_timeline,
    result_for_dry_run,
    target_lock,
)
from runbooks.kit.locking import (
    LeaseRecord,
    _ensure_limit,
    read_lease_record,
    release_target,
)

T = TypeVar("T")
DEADLINE_SECONDS = 30.0


@pytest.fixture
def client(prefect_server: str) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


@pytest.fixture
def target() -> str:
    return f"shop/checkout-{uuid.uuid4().hex[:8]}"


def eventually(read: Callable[[], T | None], what: str, deadline: float = DEADLINE_SECONDS) -> T:
    """Poll ``read`` until it returns something truthy, failing after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while True:
        value = read()
        if value:
            return value
        if time.monotonic() > give_up:
            pytest.fail(f"{what} did not happen within {deadline:g}s")
        time.sleep(0.1)


def artifacts(client: SyncPrefectClient, key: str) -> list[Artifact]:
    return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def events(client: SyncPrefectClient, name: str, resource_id: str) -> list[Event]:
    # limit=50: the client's default (100) is above the server's maximum and gets a 422.
    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
        ),
        limit=50,
    )
    return list(page.events)


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)
    action: str
    replicas: int


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    image: str
    steps: tuple[Step, ...]


PLAN = Plan(image="shop:2.0|beta", steps=(Step(action="scale green", replicas=3),))


class DemoResult(RunbookResult):
    flow_run_id: str


@flow
def kit_demo(target: str) -> DemoResult:
    timeline = Timeline()
    timeline.add("observe", "blue serves 100%")
    acting = plan_gate("kit-demo", target, PLAN, dry_run=True)
    timeline.add("plan", f"acting={acting}")
    publish_table(
        f"kit-demo-measurements-{target}",
        [{"region": "eu-west-1", "p99_ms": 120.5}, {"region": "us-east-1", "p99_ms": None}],
        description="latency by region",
    )
    publish_timeline("kit-demo", target, timeline)
    emit("kit-demo", "plan.published", target, payload={"steps": 1, "acting": acting})
    return result_for_dry_run(
        timeline,
        runbook="kit-demo",
        target=target,
        result_type=DemoResult,
        flow_run_id=str(current_flow_run.id),
    )


def test_a_flow_publishes_plan_table_timeline_and_an_event(
    client: SyncPrefectClient, target: str
) -> None:
    result = kit_demo(target)

    assert (result.outcome, result.dry_run) == (Outcome.DRY_RUN, True)
    assert [entry.step for entry in result.timeline] == ["observe", "plan"]
    assert result.timeline[1].detail == "acting=False"
    suffix = target.replace("/", "-")

    (plan,) = artifacts(client, f"kit-demo-plan-{suffix}")
    assert plan.type == "markdown"
    assert str(plan.flow_run_id) == result.flow_run_id
    assert plan.description == f"kit-demo plan for {target}"
    assert plan.data.startswith("# kit-demo plan\n")
    assert f"**Target:** {target}" in plan.data
    assert r"| image | shop:2.0\|beta |" in plan.data
    assert "1. action: scale green; replicas: 3" in plan.data

    (table,) = artifacts(client, f"kit-demo-measurements-{suffix}")
    assert table.type == "table"
    assert json.loads(table.data) == [
        {"region": "eu-west-1", "p99_ms": 120.5},
        {"region": "us-east-1", "p99_ms": None},
    ]

    (timeline,) = artifacts(client, f"kit-demo-timeline-{suffix}")
    assert "| 1 |" in timeline.data
    assert "| observe | ok | blue serves 100% |" in timeline.data

    (event,) = eventually(
        lambda: events(client, "runbooks.kit-demo.plan.published", f"runbooks.target.{target}"),
        "the plan.published event",
    )
    assert event.resource["prefect.resource.name"] == target
    assert event.resource["runbooks.runbook"] == "kit-demo"
    assert event.payload == {"steps": 1, "acting": False}
    related = {resource.id for resource in event.related}
    assert f"prefect.flow-run.{result.flow_run_id}" in related  # linked to its run


@task
def gate_in_a_task(target: str) -> tuple[bool, str]:
    return plan_gate("kit-gate", target, PLAN, dry_run=True), str(current_task_run.id)


@flow
def gated(target: str) -> tuple[bool, str]:
    return gate_in_a_task(target)


def test_plan_gate_on_a_dry_run_publishes_the_plan_and_says_stop(
    client: SyncPrefectClient, target: str
) -> None:
    acting, task_run_id = gated(target)

    assert acting is False
    (plan,) = artifacts(client, f"kit-gate-plan-{target.replace('/', '-')}")
    assert str(plan.task_run_id) == task_run_id
    assert "scale green" in plan.data


def test_outside_a_run_events_go_out_and_artifacts_do_not(
    client: SyncPrefectClient, target: str
) -> None:
    assert publish_markdown("kit-outside", "# not published") is None
    sent = emit("kit-outside", "checked", target, payload={"n": 1})

    assert sent is not None
    assert sent.event == "runbooks.kit-outside.checked"
    (event,) = eventually(
        lambda: events(client, "runbooks.kit-outside.checked", f"runbooks.target.{target}"),
        "the event sent outside a run",
    )
    assert event.id == sent.id
    assert not artifacts(client, "kit-outside")


# --- locks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", " #1?x=y&z", "/ünïcode"])
def test_the_lock_is_created_with_one_slot_and_released(
    client: SyncPrefectClient, target: str, suffix: str
) -> None:
    target += suffix
    with target_lock(target) as name:
        assert name == lock_name(target)
        limit = client.read_global_concurrency_limit_by_name(name)
        assert (limit.limit, limit.active, limit.active_slots) == (1, True, 1)
    assert client.read_global_concurrency_limit_by_name(name).active_slots == 0


def test_runs_creating_the_lock_at_once_all_get_the_same_limit(
    client: SyncPrefectClient, target: str
) -> None:
    racers = 6
    start = threading.Barrier(racers)
    ids: list[Any] = []
    errors: list[BaseException] = []

    def create() -> None:
        start.wait()
        try:
            ids.append(_ensure_limit(lock_name(target), target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(ids)) == 1
    assert client.read_global_concurrency_limit_by_name(lock_name(target)).id == ids[0]


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when the server answers 423 (slot taken) to an acquisition: proof a run is waiting.

    The server's count of refused attempts is in no API response, and Prefect's own "retrying"
    record is below its internal log level, so we spy on (and still call) the client method
    that asks for the slot.
    """
    seen = threading.Event()
    original = PrefectClient.increment_concurrency_slots_with_lease

    async def spy(self: PrefectClient, *args: Any, **kwargs: Any) -> httpx.Response:
        try:
            return await original(self, *args, **kwargs)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                seen.set()
            raise

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", spy)
    return seen


class Holder:
    """Holds the target's lock in a thread until told to let go."""

    def __init__(self, target: str, *, in_flow: bool = False):
        self.target = target
        self.held = threading.Event()
        self.release = threading.Event()
        self.released_at = 0.0
        self.error: BaseException | None = None
        body = flow(name="kit-lock-holder")(self._hold) if in_flow else self._hold
        self.thread = threading.Thread(target=self._run, args=(body,), daemon=True)

    def _hold(self) -> None:
        with target_lock(self.target):
            self.held.set()
            self.release.wait(DEADLINE_SECONDS * 2)
            self.released_at = time.monotonic()

    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:
            self.error = exc
            self.held.set()

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.held.wait(DEADLINE_SECONDS), "the holder never took the lock"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(DEADLINE_SECONDS)
        assert self.error is None, self.error


def test_a_second_run_waits_and_gets_the_lock_after_release(
    client: SyncPrefectClient, target: str, refused: threading.Event
) -> None:
    got_it_at: list[float] = []
    waiter_errors: list[BaseException] = []

    def wait_for_the_lock() -> None:
        try:
            with target_lock(target, timeout_seconds=DEADLINE_SECONDS):
                got_it_at.append(time.monotonic())
        except BaseException as exc:
            waiter_errors.append(exc)

    with Holder(target) as holder:
        waiter = threading.Thread(target=wait_for_the_lock, daemon=True)
        waiter.start()
        # Let go only once the server has refused the waiter at least once: it is waiting.
        assert refused.wait(DEADLINE_SECONDS), "the waiter was never refused"
        assert not got_it_at
    waiter.join(DEADLINE_SECONDS * 2)

    assert waiter_errors == []
    assert len(got_it_at) == 1
    assert got_it_at[0] >= holder.released_at


def test_a_second_run_with_a_short_timeout_gets_target_busy(
    client: SyncPrefectClient, target: str
) -> None:
    with Holder(target):
        started = time.monotonic()
        with pytest.raises(TargetBusyError) as caught, target_lock(target, timeout_seconds=1):
            pytest.fail("the lock was held by another run")
        waited = time.monotonic() - started
        assert client.read_global_concurrency_limit_by_name(lock_name(target)).active_slots == 1

    busy = caught.value
    assert 1 <= waited < 15
    assert busy.transient
    assert busy.target == target
    assert isinstance(busy.__cause__, TimeoutError)
    message = str(busy)
    assert message.startswith(f"target {target!r} is busy")
    assert f"{lock_name(target)!r}" in message
    assert "1s this run waited" in message
    assert "retry when it has finished" in message


def test_the_busy_error_names_the_flow_run_holding_the_lock(
    client: SyncPrefectClient, target: str
) -> None:
    with Holder(target, in_flow=True):
        limit = client.read_global_concurrency_limit_by_name(lock_name(target))
        (acquired,) = eventually(
            lambda: events(
                client,
                "prefect.concurrency-limit.acquired",
                f"prefect.concurrency-limit.{limit.id}",
            ),
            "the holder's acquisition event",
        )
        holder_run = next(r for r in acquired.related if r.role == "flow-run")
        with (
            pytest.raises(TargetBusyError, match=f"last taken by flow run {holder_run.name!r}"),
            target_lock(target, timeout_seconds=1),
        ):
            pytest.fail("the lock was held by another run")


def test_the_held_lease_is_recorded_and_forgotten_at_release(
    client: SyncPrefectClient, target: str
) -> None:
    @flow(name="kit-lock-recorder")
    def hold() -> tuple[LeaseRecord | None, str]:
        with target_lock(target, lease_seconds=60):
            return read_lease_record(target), str(current_flow_run.id)

    record, run_id = hold()
    assert record is not None
    assert (record.target, record.lock, record.lease_seconds) == (target, lock_name(target), 60)
    assert (record.holder_type, str(record.holder_id)) == ("flow_run", run_id)
    assert read_lease_record(target) is None
    assert release_target(target) is None  # free: nothing to release


HOLD_AND_HANG = """
import sys, time
from prefect import flow
from runbooks.kit import target_lock

@flow(name="kit-lock-killed-holder")
def hold(target: str) -> None:
    with target_lock(target):
        print("held", flush=True)
        time.sleep(120)

hold(sys.argv[1])
"""


def test_a_killed_holders_lock_is_freed_by_release_target(
    prefect_server: str, client: SyncPrefectClient, target: str
) -> None:
    """SIGKILL leaves the lease to expire (300 s by default): the busy error says how to free
    it, and ``release_target`` does, so the next run gets the lock at once."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_HANG, target],
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ | {"PREFECT_API_URL": prefect_server},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
    finally:
        holder.kill()
        holder.wait(DEADLINE_SECONDS)
        if holder.stdout is not None:
            holder.stdout.close()

    with pytest.raises(TargetBusyError) as caught, target_lock(target, timeout_seconds=1):
        pytest.fail("the killed run's lease still holds the lock")
    message = str(caught.value)
    assert "within 300s of its last renewal" in message
    assert f"runbooks.kit.locking.release_target({target!r})" in message

    released = release_target(target)
    assert released is not None
    assert released.holder_type == "flow_run"
    assert client.read_global_concurrency_limit_by_name(lock_name(target)).active_slots == 0
    assert read_lease_record(target) is None
    started = time.monotonic()
    with target_lock(target, timeout_seconds=5):
        assert time.monotonic() - started < 5
    assert client.read_global_concurrency_limit_by_name(lock_name(target)).active_slots == 0
    assert release_target(target) is None


def test_a_misconfigured_lock_is_refused_with_the_fix(
    client: SyncPrefectClient, target: str
) -> None:
    name = lock_name(target)
    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))

    with (
        pytest.raises(InvalidRequestError, match=r"has limit 2 and is active") as caught,
        target_lock(target),
    ):
        pytest.fail("a lock with two slots must not be used")
    assert f"prefect gcl update {name} --limit 1 --enable" in str(caught.value)
