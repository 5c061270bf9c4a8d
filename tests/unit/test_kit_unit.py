"""The runbook kit without a Prefect server: names, rendering, results, refusals.

Everything here runs before (or instead of) any call to the Prefect API, so it holds whether or
not the session's test server happens to be running.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from itertools import count, pairwise

import pytest
from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, ValidationError

from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    TimelineEntry,
    artifact_key,
    emit,
    escape_markdown,
    event_name,
    lock_name,
    plan_gate,
    publish_markdown,
    publish_plan,
    publish_table,
    render_plan,
    render_timeline,
    result_for_dry_run,
    target_lock,
)
from runbooks.kit.locking import _QuietAcquisitionTimeouts, lease_record_name

PREFECT_KEY = re.compile(r"^[a-z0-9-]*$")  # prefect.types.names, for artifact keys
PREFECT_NAME = re.compile(r"^[^/%&><]+$")  # prefect.types.names.Name, for limit names
URL_PATH_SAFE = re.compile(r"^[A-Za-z0-9._:~-]+$")  # the client puts limit names in URLs as-is
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def ticking_clock(start: datetime = T0, step: timedelta = timedelta(seconds=1)):
    ticks = count()
    return lambda: start + step * next(ticks)


# --- artifact keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("blue-green", "plan", "shop/checkout"), "blue-green-plan-shop-checkout"),
        (("already-valid-key",), "already-valid-key"),
        (("Geo Routing", "PLAN", "example.com."), "geo-routing-plan-example-com"),
        (("  spaces  and__under ",), "spaces-and-under"),
        (("Café", "Zürich"), "cafe-zurich"),
        (("a", "", "b"), "a-b"),
        (("--x--", "//y//"), "x-y"),
        (("retry-storm", "timeline", "ns/svc:8080"), "retry-storm-timeline-ns-svc-8080"),
        (("日本", "tokyo-1"), "tokyo-1"),
    ],
)
def test_artifact_key_sanitises_deterministically(parts: tuple[str, ...], key: str) -> None:
    assert artifact_key(*parts) == key
    assert PREFECT_KEY.match(key)
    assert artifact_key(key) == key  # a valid key passes unchanged


@pytest.mark.parametrize("parts", [(), ("",), ("///", "!!"), ("日本",), ("---",)])
def test_artifact_key_refuses_when_nothing_valid_remains(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="leaves nothing valid"):
        artifact_key(*parts)


# --- markdown ---------------------------------------------------------------------------------


class Rollback(BaseModel):
    model_config = ConfigDict(frozen=True)
    enabled: bool
    timeout_seconds: int


class Scale(BaseModel):
    model_config = ConfigDict(frozen=True)
    deployment: str
    replicas: int


class Switch(BaseModel):
    model_config = ConfigDict(frozen=True)
    selector: str

    def __str__(self) -> str:
        return f"switch the Service selector to {self.selector}"


class RolloutPlan(BaseModel):
    model_config = ConfigDict(frozen=True)
    image: str
    note: str
    regions: tuple[str, ...]
    rollback: Rollback
    steps: tuple[Scale | Switch, ...]


PLAN = RolloutPlan(
    image="shop:2.0|beta",
    note="first line\nsecond *line*",
    regions=("eu-west-1", "us-east-1"),
    rollback=Rollback(enabled=True, timeout_seconds=60),
    steps=(Scale(deployment="checkout-green", replicas=3), Switch(selector="color=green")),
)


def _cells(line: str) -> list[str]:
    """Split a markdown table row on unescaped pipes."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_render_plan_has_heading_target_table_and_numbered_steps() -> None:
    markdown = render_plan("blue-green", "shop/checkout", PLAN)
    lines = markdown.splitlines()

    assert lines[0] == "# blue-green plan"
    assert "**Target:** shop/checkout" in lines
    assert "| Field | Value |" in lines
    rows = {
        (c := _cells(line))[0]: c[1]
        for line in lines
        if line.startswith("| ") and "---" not in line
    }
    assert rows["image"] == r"shop:2.0\|beta"
    assert rows["note"] == r"first line<br>second \*line\*"
    assert rows["regions"] == "eu-west-1, us-east-1"
    assert rows["rollback.enabled"] == "yes"
    assert rows["rollback.timeout\\_seconds"] == "60"
    assert "steps" not in rows  # lists of models are sections, not cells
    steps = lines[lines.index("## steps") + 2 :]
    assert steps[:2] == [
        "1. deployment: checkout-green; replicas: 3",
        "2. switch the Service selector to color=green",
    ]
    for line in lines:
        if line.startswith("| "):
            assert len(_cells(line)) == 2, line  # no cell leaked a pipe or a newline


def test_render_plan_uses_the_title_and_escapes_it() -> None:
    markdown = render_plan("x", "t|1", PLAN, title="Roll *out*")
    assert markdown.startswith("# Roll \\*out\\*\n")
    assert "**Target:** t\\|1" in markdown


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a|b", r"a\|b"),
        ("a\r\nb\nc\rd", "a<br>b<br>c<br>d"),
        (r"back\slash", r"back\\slash"),
        ("<script>", r"\<script\>"),
        ("`code` _em_ [link]", r"\`code\` \_em\_ \[link\]"),
        ("plain text, 1.5", "plain text, 1.5"),
    ],
)
def test_escape_markdown(text: str, escaped: str) -> None:
    assert escape_markdown(text) == escaped


def test_render_timeline_is_an_audit_table() -> None:
    timeline = Timeline(clock=ticking_clock())
    timeline.add("observe", "3 pods | ready")
    timeline.add("switch", "failed:\nselector unchanged", ok=False)

    lines = render_timeline("blue-green", "shop/checkout", timeline.entries()).splitlines()

    table = [line for line in lines if line.startswith("| ")]
    assert _cells(table[0]) == ["#", "At (UTC)", "Step", "Result", "Detail"]
    assert _cells(table[1]) == ["1", "2026-11-30 12:00:01.000", "observe", "ok", r"3 pods \| ready"]
    assert _cells(table[2])[3:] == ["FAILED", "failed:<br>selector unchanged"]
    assert "_No steps recorded._" in render_timeline("x", "t", ())


# --- plans and artifacts outside a run --------------------------------------------------------


class Mutable(BaseModel):
    image: str


class WithSecret(BaseModel):
    model_config = ConfigDict(frozen=True)
    token: SecretStr


def test_publish_plan_refuses_unfrozen_plans_non_models_and_secrets() -> None:
    with pytest.raises(TypeError, match="must be frozen"):
        publish_plan("blue-green", "t", Mutable(image="x"))
    with pytest.raises(TypeError, match="frozen pydantic model"):
        publish_plan("blue-green", "t", {"image": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"plan\.token is a secret"):
        publish_plan("blue-green", "t", WithSecret(token=SecretStr("hunter2")))


def test_publish_table_refuses_secrets_and_unserialisable_values() -> None:
    with pytest.raises(TypeError, match=r"rows\[0\]\['password'\] is a secret"):
        publish_table("k", [{"password": SecretStr("x")}])
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        publish_table("k", [{"handle": object()}])


def test_publishing_outside_a_run_is_skipped_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runbooks.kit.artifacts"):
        assert publish_markdown("Some Key", "# hi") is None
        assert publish_table("k", [{"a": 1, "at": T0}]) is None
        assert publish_plan("blue-green", "shop/checkout", PLAN) is None
    messages = [record.getMessage() for record in caplog.records]
    assert "'some-key' not published" in messages[0]
    assert "'blue-green-plan-shop-checkout' not published" in messages[2]


def test_plan_gate_outside_a_run_logs_to_the_module_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="runbooks.kit"):
        assert plan_gate("blue-green", "shop/checkout", PLAN, dry_run=True) is False
        assert plan_gate("blue-green", "shop/checkout", PLAN, dry_run=False) is True
    dryrun_messages = [r.getMessage() for r in caplog.records if r.name == "runbooks.kit.dryrun"]
    assert dryrun_messages == [
        "dry run: plan published, nothing changed",
        "plan published; acting on shop/checkout",
    ]


# --- timeline and results ---------------------------------------------------------------------


def test_timeline_keeps_call_order_and_uses_the_injected_clock() -> None:
    timeline = Timeline(clock=ticking_clock())
    assert timeline.started_at == T0
    first = timeline.add("observe", "ok")
    timeline.add("plan")
    timeline.add("act", "boom", ok=False)

    entries = timeline.entries()
    assert entries[0] == first
    assert [e.step for e in entries] == ["observe", "plan", "act"]
    assert [e.at - T0 for e in entries] == [timedelta(seconds=s) for s in (1, 2, 3)]
    assert [e.ok for e in entries] == [True, True, False]
    assert isinstance(entries, tuple)
    assert len(timeline) == 3


def test_timeline_is_thread_safe() -> None:
    timeline = Timeline(clock=ticking_clock(step=timedelta(microseconds=1)))
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)

    def record(worker: int) -> None:
        start.wait()
        for i in range(per_thread):
            timeline.add(f"w{worker}", str(i))

    pool = [threading.Thread(target=record, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    entries = timeline.entries()
    assert len(entries) == threads * per_thread
    assert all(a.at < b.at for a, b in pairwise(entries))  # clock in order
    for worker in range(threads):
        mine = [int(e.detail) for e in entries if e.step == f"w{worker}"]
        assert mine == list(range(per_thread))


def test_timeline_refuses_a_naive_clock_and_normalises_to_utc() -> None:
    with pytest.raises(ValueError, match="naive"):
        Timeline(clock=lambda: datetime(2026, 11, 30, 12, 0))
    paris = timezone(timedelta(hours=1))
    timeline = Timeline(clock=lambda: datetime(2026, 11, 30, 13, 0, tzinfo=paris))
    assert timeline.add("x").at == T0
    assert timeline.add("x").at.tzinfo is UTC


def test_timeline_entry_is_frozen_and_needs_an_aware_time() -> None:
    entry = TimelineEntry(at=T0, step="observe")
    with pytest.raises(ValidationError):
        entry.step = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TimelineEntry(at=datetime(2026, 11, 30), step="x")


class BlueGreenResult(RunbookResult):
    previous_color: str | None = None
    plan: RolloutPlan | None = None


def test_runbook_result_json_round_trip() -> None:
    timeline = Timeline(clock=ticking_clock())
    timeline.add("observe", "blue serves 100%")
    timeline.add("switch", "selector color=green", ok=True)
    result = BlueGreenResult.from_timeline(
        timeline,
        runbook="blue-green",
        target="shop/checkout",
        outcome=Outcome.SUCCEEDED,
        reason="green is healthy and serves all traffic",
        dry_run=False,
        previous_color="blue",
        plan=PLAN,
    )

    text = result.model_dump_json()
    data = json.loads(text)
    assert data["outcome"] == "succeeded"
    assert data["started_at"] == "2026-11-30T12:00:00Z"
    assert data["finished_at"] == "2026-11-30T12:00:03Z"
    assert data["timeline"][1] == {
        "at": "2026-11-30T12:00:02Z",
        "step": "switch",
        "detail": "selector color=green",
        "ok": True,
    }
    assert BlueGreenResult.model_validate_json(text) == result
    assert result.ok


def test_result_for_dry_run_has_the_common_shape() -> None:
    timeline = Timeline(clock=ticking_clock())
    timeline.add("plan", "2 steps")
    result = result_for_dry_run(
        timeline,
        runbook="blue-green",
        target="shop/checkout",
        result_type=BlueGreenResult,
        plan=PLAN,
    )
    assert isinstance(result, BlueGreenResult)
    assert (result.outcome, result.dry_run) == (Outcome.DRY_RUN, True)
    assert result.reason == "dry run: plan published, nothing changed"
    assert result.plan == PLAN
    assert [e.step for e in result.timeline] == ["plan"]
    assert RunbookResult.for_dry_run(timeline, runbook="x", target="y").ok


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"finished_at": T0 - timedelta(seconds=1)}, "before started_at"),
        ({"outcome": Outcome.DRY_RUN, "dry_run": False}, "requires dry_run=True"),
        ({"outcome": Outcome.SUCCEEDED, "dry_run": True}, "cannot be 'succeeded'"),
        ({"outcome": "exploded"}, "outcome"),
        ({"runbook": ""}, "runbook"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_runbook_result_refuses_inconsistent_records(changes: dict, message: str) -> None:
    fields = {
        "runbook": "blue-green",
        "target": "shop/checkout",
        "outcome": Outcome.NO_CHANGE,
        "reason": "already green",
        "started_at": T0,
        "finished_at": T0,
        "dry_run": False,
    }
    with pytest.raises(ValidationError, match=message):
        RunbookResult(**{**fields, **changes})


def test_outcome_values_are_stable_strings() -> None:
    assert [o.value for o in Outcome] == [
        "succeeded",
        "no_change",
        "dry_run",
        "rolled_back",
        "failed",
    ]
    assert Outcome("rolled_back") == "rolled_back"


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runbook", "what", "name"),
    [
        ("blue-green", "traffic-switched", "runbooks.blue-green.traffic-switched"),
        ("retry-storm", "breaker.opened", "runbooks.retry-storm.breaker.opened"),
        ("geo-routing", "v2", "runbooks.geo-routing.v2"),
    ],
)
def test_event_name(runbook: str, what: str, name: str) -> None:
    assert event_name(runbook, what) == name


@pytest.mark.parametrize(
    ("runbook", "what", "argument"),
    [
        ("Blue-Green", "switched", "runbook"),
        ("blue_green", "switched", "runbook"),
        ("blue.green", "switched", "runbook"),
        ("-blue", "switched", "runbook"),
        ("", "switched", "runbook"),
        ("blue-green", "", "what"),
        ("blue-green", "Switched", "what"),
        ("blue-green", "switched..twice", "what"),
        ("blue-green", "switched.", "what"),
        ("blue-green", "switched now", "what"),
    ],
)
def test_emit_refuses_unsafe_names_naming_the_argument(
    runbook: str, what: str, argument: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        emit(runbook, what, "shop/checkout")


class Credentials(BaseModel):
    user: str
    password: SecretStr


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"token": SecretStr("s3cr3t")}, r"payload\['token'\]"),
        ({"key": SecretBytes(b"k")}, r"payload\['key'\]"),
        (
            {"calls": [{"auth": ("user", SecretStr("x"))}]},
            r"payload\['calls'\]\[0\]\['auth'\]\[1\]",
        ),
        (
            {"creds": Credentials(user="u", password=SecretStr("p"))},
            r"payload\['creds'\]\.password",
        ),
    ],
)
def test_emit_refuses_secrets_anywhere_in_the_payload(payload: dict, where: str) -> None:
    with pytest.raises(TypeError, match=rf"^{where} is a secret"):
        emit("blue-green", "switched", "shop/checkout", payload=payload)


def test_emit_refuses_unserialisable_payloads_and_bad_related_resources() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        emit("blue-green", "switched", "t", payload={"lock": threading.Lock()})
    with pytest.raises(ValueError, match=r"prefect\.resource\.role"):
        emit("blue-green", "switched", "t", related=[{"prefect.resource.id": "x"}])
    with pytest.raises(ValueError, match="target must be"):
        emit("blue-green", "switched", " ")


# --- locks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("checkout", "runbooks-target:checkout"),
        ("shop.checkout:8080", "runbooks-target:shop.checkout:8080"),
        ("shop/checkout", "runbooks-target:shop_checkout~"),
        ("a%b&c>d<e", "runbooks-target:a_b_c_d_e~"),
        ("shop checkout#1?x", "runbooks-target:shop_checkout_1_x~"),
        ("a_b~1dfc2ea5", "runbooks-target:a_b_1dfc2ea5~"),
    ],
)
def test_lock_name_is_a_valid_prefect_name(target: str, name: str) -> None:
    assert lock_name(target).startswith(name)
    assert PREFECT_NAME.match(lock_name(target))
    assert URL_PATH_SAFE.match(lock_name(target))
    assert lock_name(target) == lock_name(target)


def test_lock_names_of_distinct_targets_differ() -> None:
    targets = ["shop/checkout", "shop_checkout", "shop&checkout", "shop/checkout/", "shop checkout"]
    assert len({lock_name(t) for t in targets}) == len(targets)


def test_lease_record_names_are_valid_prefect_variable_names_and_distinct() -> None:
    from prefect.client.schemas.actions import VariableCreate

    targets = ["shop/checkout", "shop_checkout", "shop&checkout", "Shop Checkout#1", "ünï/cöde"]
    names = {lease_record_name(t) for t in targets}
    assert len(names) == len(targets)
    for name in names:
        assert VariableCreate(name=name, value={}).name == name  # Prefect's own validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": ""}, "target must be"),
        ({"target": "t", "timeout_seconds": 0}, "timeout_seconds must be positive"),
        ({"target": "t", "lease_seconds": 30}, "lease_seconds must be between 60"),
        ({"target": "t", "lease_seconds": 90_000}, "lease_seconds must be between 60"),
    ],
)
def test_target_lock_refuses_bad_arguments_before_calling_prefect(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message), target_lock(**kwargs):
        pytest.fail("the lock must not be taken")


def _acquisition_record(outcome: BaseException | None) -> logging.LogRecord:
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
    item = (1, "concurrency", 2.0, None, 300, True, None, future)
    return logging.LogRecord(
        "prefect._internal.concurrency",
        logging.ERROR,
        __file__,
        1,
        "Service %r failed to process item %r",
        ("ConcurrencySlotAcquisitionWithLeaseService", item),
        None,
    )


def test_only_prefects_acquisition_timeout_record_is_silenced() -> None:
    quiet = _QuietAcquisitionTimeouts()
    assert quiet.filter(_acquisition_record(TimeoutError("timed out"))) is False
    assert quiet.filter(_acquisition_record(ConnectionError("refused"))) is True
    other = logging.LogRecord("x", logging.ERROR, __file__, 1, "something else", (), None)
    assert quiet.filter(other) is True


def test_an_unreachable_prefect_api_is_an_unavailable_error() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from runbooks.errors import UnavailableError

    closed_port = "http://127.0.0.1:9/api"  # discard port: nothing listens on loopback
    with (
        temporary_settings(updates={PREFECT_API_URL: closed_port, PREFECT_CLIENT_MAX_RETRIES: 0}),
        pytest.raises(UnavailableError, match="prepare lock 'runbooks-target:t' failed") as caught,
        target_lock("t"),
    ):
        pytest.fail("no lock without an API")
    assert caught.value.transient
    assert caught.value.__cause__ is not None
