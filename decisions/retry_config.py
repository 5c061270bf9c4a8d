"""A caller's retry settings as the ``retry-storm`` runbook edits them: a JSON document in a
ConfigMap, changed field by field, with its original kept beside it. Pure: no I/O.

Why field by field: the document is the team's, not ours. A rung sets only the fields it
needs (``decisions.retry_storm.SettingsChange.after``) and records what they were
(``before``; ``None`` = the key was absent, so the undo removes it again and the service's own
default applies). Before writing, the live fields are compared with ``before``: equal, the
change applies; already equal to ``after``, it is done (a re-run, or a retried write that had
landed); anything else is someone else's edit since we read, a conflict the runbook reports
instead of overwriting.

Why the original is kept in an annotation: a run can stop while containment is in force (the
dependency never healed within the timeout, the process died). The next run must still know
what the settings were before any containment, or "restore" would restore the contained values.
So the first change records the whole document in :data:`ORIGINAL_ANNOTATION`, later changes
leave it, and the annotation is removed when the document is back to it.

How a change is seen to take effect: each pod exports the settings in force as gauges
(``runbooks.alerts.RETRY_SETTING_GAUGES``). :func:`expected_gauges` says what they must read
after a change, for the fields it sets; a field set back to "absent" falls back to the pod's
env or default, which the document does not know, so the runbook sees that change taken by
each pod's reload counter instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from decisions.retry_storm import RETRY_FIELDS, SettingsChange

ORIGINAL_ANNOTATION = "runbooks.dev/retry-storm-original"
"""The caller's retry document before the first containment step, as JSON."""

Verdict = Literal["apply", "done", "conflict"]


class RetryDocumentError(ValueError):
    """The ConfigMap's retry document is not a JSON object: the runbook cannot edit it safely."""


def parse_document(text: str | None, where: str) -> dict[str, Any]:
    """The retry document from the ConfigMap's value (missing or empty: ``{}``)."""
    if text is None or not text.strip():
        return {}
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RetryDocumentError(f"{where} is not valid JSON ({exc}); fix it by hand") from exc
    if not isinstance(document, dict):
        raise RetryDocumentError(f"{where} must hold a JSON object, got {type(document).__name__}")
    return document


def render_document(document: Mapping[str, Any]) -> str:
    """Stable text (sorted keys) so an unchanged document is an unchanged ConfigMap."""
    return json.dumps(dict(document), sort_keys=True, indent=2) + "\n"


def fields_of(document: Mapping[str, Any], names: Any) -> dict[str, Any]:
    """The named fields' values (``None`` when absent)."""
    return {name: document.get(name) for name in names}


def verdict(document: Mapping[str, Any], change: SettingsChange) -> Verdict:
    """Whether ``change`` can be applied to the live ``document`` (see the module docstring)."""
    live = fields_of(document, change.after)
    if live == change.after:
        return "done"
    if live == fields_of(change.before, change.after):
        return "apply"
    return "conflict"


def applied(document: Mapping[str, Any], change: SettingsChange) -> dict[str, Any]:
    """The document with ``change`` made (a ``None`` value removes the key)."""
    out = dict(document)
    for name, value in change.after.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def annotations_after(
    annotations: Mapping[str, str], before: Mapping[str, Any], after: Mapping[str, Any]
) -> dict[str, str | None]:
    """The annotation changes for writing ``after`` over ``before`` (``None``: remove).

    First change: record ``before`` as the original. Back at the original *retry fields*: drop
    the record (a field we never touch, edited by the team meanwhile, must not keep it forever:
    a stale original would be "restored" over their later settings).
    """
    recorded = annotations.get(ORIGINAL_ANNOTATION)
    if recorded is None:
        return {} if dict(after) == dict(before) else {ORIGINAL_ANNOTATION: render_document(before)}
    original = parse_document(recorded, ORIGINAL_ANNOTATION)
    if fields_of(original, RETRY_FIELDS) == fields_of(after, RETRY_FIELDS):
        return {ORIGINAL_ANNOTATION: None}
    return {}


def restore_change(
    caller: str, document: Mapping[str, Any], original: Mapping[str, Any], fields: Any
) -> SettingsChange | None:
    """The change that puts ``fields`` back to the recorded ``original`` (``None``: nothing to
    do), for settings an earlier run left contained."""
    now, then = fields_of(document, fields), fields_of(original, fields)
    if now == then:
        return None
    differing = [k for k in now if now[k] != then[k]]
    return SettingsChange(
        caller=caller,
        after={k: then[k] for k in differing},
        before={k: now[k] for k in differing},
    )


def gauge_value(field: str, value: Any) -> float:
    """What a pod's gauge reads for a settings value (budget ``None`` -> -1, bool -> 1/0)."""
    if field == "budget_percent" and value is None:
        return -1.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def expected_gauges(after: Mapping[str, Any], gauged: Any) -> dict[str, float]:
    """The gauges every pod must read once ``after`` is in force: each gauged field ``after``
    sets to a value. A field removed (``None``) is not checked: the pod falls back to its env or
    built-in default, which this document does not know; a field not touched is not checked.
    """
    out: dict[str, float] = {}
    for field in gauged:
        if field not in after:
            continue
        value = after[field]
        if value is not None:
            out[field] = gauge_value(field, value)
    return out
