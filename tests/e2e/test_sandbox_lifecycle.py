"""`runbooks sandbox up|status|url|down` as a user runs them: a detached supervisor, its
endpoints, and nothing left behind (no process, no listening port) after `down` or a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

RUNBOOKS = Path(sys.executable).with_name("runbooks")


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run(
        [str(RUNBOOKS), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def state(tmp_path: Path):
    folder = tmp_path / "sandbox"
    yield folder
    _run("sandbox", "down", "--state-dir", str(folder))


def test_up_status_url_down_leaves_nothing_behind(state: Path) -> None:
    done = _run("sandbox", "up", "--detach", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    endpoints = json.loads(done.stdout)
    for key in ("kube_api", "kubeconfig", "moto", "traces", "otlp", "prefect_api", "prefect_ui"):
        assert key in endpoints, key
    assert json.loads((state / "endpoints.json").read_text()) == endpoints
    assert Path(endpoints["kubeconfig"]).is_file()
    assert httpx.get(f"{endpoints['kube_api']}/version").json()["gitVersion"]
    assert httpx.get(f"{endpoints['prefect_api']}/health").json() is True
    if shutil.which("prometheus"):
        assert httpx.get(f"{endpoints['prometheus']}/-/ready").status_code == 200
    assert "kubernetes-target/sandbox" in endpoints["blocks"]
    assert "trace-backend/sandbox" in endpoints["blocks"]
    assert httpx.get(f"{endpoints['traces']}/api/v3/services").status_code == 200
    # the blue-green service runbooks run can roll out right away, serving steady traffic
    assert httpx.get(f"{endpoints['shop']}/pay", timeout=5).status_code == 200

    again = _run("sandbox", "up", "--detach", "--state-dir", str(state))
    assert again.returncode == 0
    assert json.loads(again.stdout) == endpoints  # reused, not started twice
    assert _run("sandbox", "status", "--state-dir", str(state)).returncode == 0
    missing = _run("sandbox", "url", "default/nope", "--state-dir", str(state))
    assert missing.returncode == 1
    assert "found nothing" in missing.stderr

    pgid = json.loads((state / "supervisor.json").read_text())["pgid"]
    urls = [
        v
        for k, v in endpoints.items()
        if k in ("kube_api", "moto", "prometheus", "traces", "otlp", "prefect_api")
    ]
    done = _run("sandbox", "down", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert _wait(lambda: not _group_alive(pgid), 10)
    assert not any(_listening(url) for url in urls if url)
    assert not (state / "endpoints.json").exists()
    assert _run("sandbox", "status", "--state-dir", str(state)).returncode == 1


def test_up_after_a_crashed_supervisor_recovers(state: Path) -> None:
    done = _run("sandbox", "up", "--detach", "--no-prefect", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    info = json.loads((state / "supervisor.json").read_text())
    os.kill(info["pid"], signal.SIGKILL)  # the supervisor dies; its children may linger
    assert _wait(lambda: _run("sandbox", "status", "--state-dir", str(state)).returncode == 1, 10)
    done = _run("sandbox", "up", "--detach", "--no-prefect", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert httpx.get(f"{second['kube_api']}/version").status_code == 200
    assert not _group_alive(info["pgid"])  # the crashed supervisor's children were ended
    if first.get("prometheus"):
        assert not _listening(first["prometheus"])
