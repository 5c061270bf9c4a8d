"""The progress reporter's terminal bar and throttling (no Prefect run: no artifact)."""

from __future__ import annotations

import io

from runbooks.kit.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_is_drawn_on_a_terminal_and_throttled() -> None:
    now = [0.0]
    out = Terminal()
    progress = Progress("x", "parsing", stream=out, min_interval_seconds=1.0, clock=lambda: now[0])
    progress(10, 100)
    progress(20, 100)  # same instant: not redrawn
    assert out.getvalue().count("\r") == 1
    now[0] = 2.0
    progress(50, 100)
    assert out.getvalue().count("\r") == 2
    assert "[###############...............]  50.0 %" in out.getvalue()
    progress.finish()
    assert out.getvalue().endswith("100.0 %\n")


def test_nothing_is_written_to_a_pipe_or_file() -> None:
    out = io.StringIO()
    progress = Progress("x", "parsing", stream=out)
    progress(5, 10)
    progress.finish()
    assert out.getvalue() == ""
    assert progress.percent == 100.0


def test_zero_total_counts_as_done() -> None:
    progress = Progress("x", "empty", stream=io.StringIO())
    progress(0, 0)
    assert progress.percent == 100.0
