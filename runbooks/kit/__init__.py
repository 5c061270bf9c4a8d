"""The runbook kit: the pieces every runbook shares, so none reinvents them.

Rules of this package:

- **Thin helpers over Prefect.** Each helper wraps one Prefect feature (artifacts, events, global
  concurrency limits, run loggers) with the project's conventions: key and event names, the
  result shape, secret refusal, and our exception tree. No business logic lives here; a helper
  never knows what a blue-green rollout or a Route 53 record is.
- **Usable inside a flow or task run, harmless and clear outside one.** Inside a run the helpers
  attach what they publish to the run. Outside a run they never start a Prefect server behind
  your back: artifacts are skipped with a log line (Prefect deprecates run-less artifacts),
  events are sent only when ``PREFECT_API_URL`` is configured, and logs go to the module logger.
- **Synchronous** (DESIGN principle 9): call them from sync flows and tasks.
- **Nothing computed at import time** (principle 8): clocks and defaults are read per call.
- **Secrets never leave** (principle 5): event payloads and published artifacts refuse
  ``SecretStr`` / ``SecretBytes`` values with a ``TypeError`` naming where the secret was.
"""

from __future__ import annotations

from runbooks.kit.artifacts import (
    artifact_key,
    publish_image,
    publish_markdown,
    publish_plan,
    publish_table,
    publish_timeline,
)
from runbooks.kit.dryrun import plan_gate, result_for_dry_run
from runbooks.kit.events import emit, event_name
from runbooks.kit.locking import lock_name, release_target, target_lock
from runbooks.kit.markdown import escape_markdown, render_plan, render_timeline
from runbooks.kit.results import Outcome, RunbookResult, Timeline, TimelineEntry, utc_now

__all__ = [
    "Outcome",
    "RunbookResult",
    "Timeline",
    "TimelineEntry",
    "artifact_key",
    "emit",
    "escape_markdown",
    "event_name",
    "lock_name",
    "plan_gate",
    "publish_image",
    "publish_markdown",
    "publish_plan",
    "publish_table",
    "publish_timeline",
    "release_target",
    "render_plan",
    "render_timeline",
    "result_for_dry_run",
    "target_lock",
    "utc_now",
]
