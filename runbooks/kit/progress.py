"""Progress of a long step, where people look: a Prefect progress artifact and a terminal bar.

Why both: a run started from the UI or a schedule is watched in the UI (the progress artifact is
the bar on the run's page), a run started with ``runbooks run`` in a terminal is watched there.
Throttled: the artifact is updated at most every ``step_percent`` and the bar redrawn at most
every ``min_interval_seconds``, so reporting never costs more than the work it reports on.
Outside a flow or task run no artifact is made (as for every kit artifact); the bar is drawn only
when the stream is a terminal (a log file or a pipe gets no carriage-return noise).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO
from uuid import UUID

from runbooks.kit import _run
from runbooks.kit.artifacts import artifact_key

BAR_WIDTH = 30


class Progress:
    """``progress = Progress("select-regions-parse", "parsing logs")``; call
    ``progress(done, total)`` as work advances, then ``progress.finish()``."""

    def __init__(
        self,
        key: str,
        description: str,
        *,
        step_percent: float = 5.0,
        min_interval_seconds: float = 0.2,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = artifact_key(key)
        self.description = description
        self.step_percent = step_percent
        self.min_interval_seconds = min_interval_seconds
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._artifact: UUID | None = None
        self._reported = -1.0
        self._drawn_at = float("-inf")
        self.percent = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.percent = min(100.0, 100.0 * done / total) if total > 0 else 100.0
        if self.percent >= 100.0 or self.percent - self._reported >= self.step_percent:
            self._report()
        now = self._clock()
        if self.percent >= 100.0 or now - self._drawn_at >= self.min_interval_seconds:
            self._drawn_at = now
            self._draw()

    def finish(self) -> None:
        """Report 100 % and end the terminal line."""
        if self.percent < 100.0:
            self(1, 1)
        if self._is_terminal():
            self._stream.write("\n")
            self._stream.flush()

    def _report(self) -> None:
        self._reported = self.percent
        if not _run.in_run():
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self._artifact is None:
            self._artifact = create_progress_artifact(
                self.percent, key=self.key, description=self.description, _sync=True
            )
        else:
            update_progress_artifact(self._artifact, self.percent, _sync=True)

    def _draw(self) -> None:
        if not self._is_terminal():
            return
        filled = round(BAR_WIDTH * self.percent / 100)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self._stream.write(f"\r{self.description} [{bar}] {self.percent:5.1f} %")
        self._stream.flush()

    def _is_terminal(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())
