"""Markdown for artifacts: plans and audit trails an on-call engineer can read at 3 a.m.

Pure functions (no Prefect, no I/O), so the rendering is tested without a server. Every piece of
text that comes from data goes through :func:`escape_markdown`, because a value holding ``|`` or
a newline would otherwise break the table it sits in, and ``*``/``_``/``<`` would restyle it.

How a plan renders (:func:`render_plan`):

- a heading (``title`` or "<runbook> plan"), the target, and the plan's type;
- the plan's fields as a ``Field | Value`` table, nested models flattened to dotted names
  (``rollback.timeout_seconds``), lists of plain values joined with commas;
- each field holding a list of models (the plan's steps) as its own numbered list. A step renders
  as ``name: value; ...``, or as ``str(step)`` when its class defines ``__str__``, which is the way
  to give steps a readable sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from enum import Enum
from typing import Any

from pydantic import BaseModel

from runbooks.kit.results import TimelineEntry

# CommonMark punctuation that can change structure or style inside a line of text. "\" comes
# first so the escapes we add are not escaped again.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_NEWLINES = re.compile(r"\r\n|\r|\n")


def escape_markdown(text: object) -> str:
    """``text`` as inline markdown: specials backslash-escaped, newlines turned into ``<br>``.

    Safe in table cells (``|`` cannot end the cell) and in list items (a newline cannot end the
    item). Backslash escapes of ASCII punctuation are part of CommonMark, so renderers show the
    original characters.
    """
    escaped = _SPECIAL.sub(r"\\\1", str(text))
    return _NEWLINES.sub("<br>", escaped)


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a GitHub-flavoured markdown table; every header and cell is escaped."""
    lines = [
        "| " + " | ".join(escape_markdown(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(escape_markdown(cell) for cell in row) + " |")
    return lines


def render_plan(runbook: str, target: str, plan: BaseModel, *, title: str | None = None) -> str:
    """A plan model as markdown: heading, target, a field table, and numbered lists of steps."""
    rows: list[tuple[str, str]] = []
    sections: list[tuple[str, list[str]]] = []
    _flatten(plan, "", rows, sections)
    lines = [
        f"# {escape_markdown(title or f'{runbook} plan')}",
        "",
        f"**Target:** {escape_markdown(target)}",
        "",
        f"**Runbook:** {escape_markdown(runbook)} · "
        f"**Plan:** {escape_markdown(type(plan).__name__)}",
        "",
    ]
    if rows:
        lines += [*table(("Field", "Value"), rows), ""]
    for name, items in sections:
        lines += [f"## {escape_markdown(name)}", ""]
        lines += [f"{number}. {escape_markdown(item)}" for number, item in enumerate(items, 1)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_timeline(runbook: str, target: str, entries: Iterable[TimelineEntry]) -> str:
    """The audit trail as a table: number, time (UTC), step, ok/FAILED, detail."""
    rows = [
        (
            number,
            entry.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            entry.step,
            "ok" if entry.ok else "FAILED",
            entry.detail,
        )
        for number, entry in enumerate(entries, 1)
    ]
    lines = [
        f"# {escape_markdown(f'{runbook} timeline')}",
        "",
        f"**Target:** {escape_markdown(target)}",
        "",
    ]
    if rows:
        lines += table(("#", "At (UTC)", "Step", "Result", "Detail"), rows)
    else:
        lines.append("_No steps recorded._")
    return "\n".join(lines) + "\n"


def plain(value: Any) -> str:
    """A value as short plain text (unescaped): what a person would write in a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return _step_text(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{plain(k)}={plain(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(plain(item) for item in items) or "(none)"
    return str(value)


def _fields(model: BaseModel) -> list[tuple[str, Any]]:
    names = [*type(model).model_fields, *type(model).model_computed_fields]
    return [(name, getattr(model, name)) for name in names]


def _flatten(
    model: BaseModel,
    prefix: str,
    rows: list[tuple[str, str]],
    sections: list[tuple[str, list[str]]],
) -> None:
    for name, value in _fields(model):
        label = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            _flatten(value, f"{label}.", rows, sections)
        elif _is_steps(value):
            sections.append((label, [_step_text(step) for step in value]))
        else:
            rows.append((label, plain(value)))


def _is_steps(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, BaseModel) for item in value)
    )


def _step_text(step: BaseModel) -> str:
    if type(step).__str__ is not BaseModel.__str__:
        return str(step)
    return "; ".join(f"{name}: {plain(value)}" for name, value in _fields(step))
