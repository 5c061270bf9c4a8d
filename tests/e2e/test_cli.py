"""The README's main command refuses bad input before starting anything (the demo itself runs
in ``test_demo.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUNBOOKS = Path(sys.executable).with_name("runbooks")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run(
        [str(RUNBOOKS), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_bad_input_is_refused_naming_the_option() -> None:
    done = _run("demo", "--time-scale", "5")
    assert done.returncode == 2
    assert "--time-scale" in done.stderr
    done = _run("demo", "--outage-seconds", "100000")
    assert done.returncode == 2
    assert "max_wall_seconds" in done.stderr
