"""``runbooks run`` end to end: the Prefect test server, the sandbox's cluster, the real flow.

The command runs in-process (Typer's CliRunner) against the session's Prefect server; the
``KubernetesTarget`` of the shop is saved there under a test name and passed with ``--block``,
the way a user names a saved block. Analyses are short and health only (a params file, as a
user would keep one), so each run takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import prefect.main  # noqa: F401 -- see below
import pytest
from bluegreen_shop import NAMESPACE, Shop
from click.testing import Result
from typer.testing import CliRunner

from runbooks.cli import app

# Importing prefect.main configures Prefect's console log handler on the stderr of the moment:
# here, pytest's. Left to the first run, it would bind to a CliRunner's stream, closed after.

FAST = {"interval_seconds": 0.5, "count": 3, "success_rate_min": None, "p95_latency_max_ms": None}


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    file = tmp_path / "params.json"
    file.write_text(
        json.dumps(
            {
                "namespace": NAMESPACE,
                "replicas": 2,
                "pre_promotion": FAST,
                "post_promotion": FAST,
                "scale_down_delay_seconds": 1,
                "progress_deadline_seconds": 60,
            }
        )
    )
    return file


@pytest.fixture
def saved_k8s(shop: Shop) -> Iterator[str]:
    """The shop's KubernetesTarget saved on the test server; yields its name."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    shop.k8s.save(name, overwrite=True)
    try:
        yield name
    finally:
        type(shop.k8s).delete(name)


def _run(shop: Shop, block: str, params_file: Path, image: str, *extra: str) -> Result:
    return _invoke(
        "run",
        "blue-green",
        "--params-file",
        str(params_file),
        "-p",
        f"service={shop.service}",
        "--param",
        f"image={image}",
        "--block",
        f"kubernetes={block}",
        *extra,
    )


def test_dry_run_prints_the_plan_and_changes_nothing(
    shop: Shop, saved_k8s: str, params_file: Path
) -> None:
    done = _run(shop, saved_k8s, params_file, "demo/shop:v2", "--dry-run")
    assert done.exit_code == 0, done.output
    assert f"blue-green {NAMESPACE}/{shop.service}: dry_run" in done.stdout
    assert "plan:" in done.stdout
    assert f"Deploy {shop.service}-green (idle) with demo/shop:v2" in done.stdout
    assert f"Switch Service {shop.service} from blue to green" in done.stdout
    assert shop.deployment("green") is None
    assert shop.selector() == {"app": shop.service, "colour": "blue"}


def test_a_run_promotes_v2_and_exits_0(shop: Shop, saved_k8s: str, params_file: Path) -> None:
    done = _run(shop, saved_k8s, params_file, "demo/shop:v2")
    assert done.exit_code == 0, done.output
    assert f"blue-green {NAMESPACE}/{shop.service}: succeeded (promoted)" in done.stdout
    assert "timeline:" in done.stdout
    assert "/runs/flow-run/" in done.stdout
    assert shop.selector() == {"app": shop.service, "colour": "green"}
    assert shop.deployment("green").spec.template.spec.containers[0].image == "demo/shop:v2"


def test_a_broken_version_rolls_back_and_exits_1(
    shop: Shop, saved_k8s: str, params_file: Path
) -> None:
    done = _run(shop, saved_k8s, params_file, "demo/shop:v3-broken", "--json")
    assert done.exit_code == 1, done.output
    result = json.loads(done.stdout)
    assert result["rollout"] == "rolled_back"
    assert result["outcome"] == "rolled_back"
    assert result["rollback_seconds"] is not None
    assert result["active_image"] == "demo/shop:v1"
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("replicas=0", "replicas: Input should be greater than or equal to 1"),
        ("image=demo/shop", "image: image must have an explicit tag or digest"),
        ("colour=green", "colour: unknown parameter (known: service, namespace, image"),
    ],
)
def test_a_bad_parameter_exits_2_naming_it_and_starts_nothing(
    prefect_server: str, pair: str, named: str, params_file: Path
) -> None:
    done = _invoke(
        "run",
        "blue-green",
        "--params-file",
        str(params_file),
        "-p",
        "service=never-created",
        "-p",
        "image=demo/shop:v2",
        "-p",
        pair,
    )
    assert done.exit_code == 2, done.output
    assert named in done.stderr
    assert done.stdout == ""
    assert _flow_runs_of("never-created") == []


def test_an_unknown_runbook_exits_2() -> None:
    done = _invoke("run", "green-blue", "-p", "service=shop")
    assert done.exit_code == 2
    known = "known: alert-bridge, apply-scaling, blue-green"
    assert f"unknown runbook 'green-blue'; {known}" in done.stderr


def test_a_missing_block_exits_2_naming_it_and_how_to_create_it(
    prefect_server: str, params_file: Path
) -> None:
    args = ["run", "blue-green", "-p", "service=shop", "-p", "image=demo/shop:v2"]
    done = _invoke(*args, "--block", "kubernetes=not-saved")
    assert done.exit_code == 2, done.output
    assert "block kubernetes" in done.stderr
    assert "no kubernetes-target/not-saved block is saved" in done.stderr
    assert "KubernetesTarget(...).save('not-saved')" in done.stderr
    with _unsaved("kubernetes-target/sandbox"):  # the default, unless another test saved it
        done = _invoke(*args)
    assert done.exit_code == 2, done.output
    assert "no kubernetes-target/sandbox block is saved" in done.stderr
    assert "runbooks sandbox up" in done.stderr


@contextlib.contextmanager
def _unsaved(slug: str) -> Iterator[None]:
    """The block ``slug`` not saved on the test server while inside; as it was after (a test
    earlier on this worker's server may have saved the sandbox's blocks)."""
    from prefect.blocks.core import Block

    try:
        saved = Block.load(slug)
    except ValueError:  # not saved: nothing to take away
        saved = None
    if saved is not None:
        type(saved).delete(slug.split("/", 1)[1])
    try:
        yield
    finally:
        if saved is not None:
            saved.save(slug.split("/", 1)[1], overwrite=True)


def test_without_a_prefect_api_it_says_how_to_get_one(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        done = _invoke(
            "run",
            "blue-green",
            "-p",
            "service=shop",
            "-p",
            "image=demo/shop:v2",
            "--state-dir",
            str(tmp_path),
        )
    assert done.exit_code == 2, done.output
    assert "runbooks sandbox up --detach" in done.stderr
    assert "PREFECT_API_URL" in done.stderr


def test_list_names_the_runbooks() -> None:
    done = _invoke("list")
    assert done.exit_code == 0
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == [
        "blue-green",
        "select-regions",
        "geo-routing",
        "regional-health",
        "tracing-rollout",
        "load-forecast",
        "apply-scaling",
        "retry-storm",
        "alert-bridge",
    ]
    assert "Health-gated blue-green rollout" in done.stdout.splitlines()[0]


def _flow_runs_of(service: str) -> list[object]:
    """Flow runs whose parameters name ``service``: a refused input must start none."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    return [r for r in runs if (r.parameters.get("params") or {}).get("service") == service]
