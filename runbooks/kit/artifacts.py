"""Artifacts with keys: plans, audit trails and tables, published the same way by every runbook.

Why keys matter: Prefect groups artifacts by key across runs (the UI's Artifacts page lists only
keyed artifacts, newest version first), so ``blue-green-plan-shop-checkout`` shows every plan
ever made for that target. Prefect accepts only lowercase letters, digits and dashes
(``prefect.types.names.LOWERCASE_LETTERS_NUMBERS_AND_DASHES_ONLY_REGEX``) and otherwise rejects
the artifact, so every key goes through :func:`artifact_key`. Distinct inputs may sanitise to
one key (``shop/checkout`` and ``shop.checkout``): a key names a collection to browse, not a
unique id; the artifact id returned by each ``publish_*`` is the unique handle.

Outside a flow or task run: Prefect 3.9 still creates the artifact when an API is reachable, but
warns ``FutureWarning: Artifact creation outside of a flow or task run is deprecated`` (an error
under this project's ``filterwarnings = error``), attaches it to no run, and, when no
``PREFECT_API_URL`` is set, first starts an ephemeral server subprocess just to store it. So the
``publish_*`` helpers skip publishing outside a run, log one line saying so, and return None.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from runbooks.kit import _run
from runbooks.kit._secrets import refuse_secrets
from runbooks.kit.markdown import render_plan, render_timeline
from runbooks.kit.results import Timeline, TimelineEntry

_NOT_KEY = re.compile(r"[^a-z0-9]+")
_LOGGER = __name__


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key made of ``parts``, joined by dashes.

    Deterministic: accents are folded (``é`` -> ``e``), letters lowercased, and every run of other
    characters becomes one dash; empty parts are dropped. A valid key is returned unchanged.
    Raises ``ValueError`` when no letter or digit remains.
    """
    cleaned = [_clean(str(part)) for part in parts]
    key = "-".join(part for part in cleaned if part)
    if not key:
        raise ValueError(
            f"artifact_key{parts!r} leaves nothing valid: a Prefect artifact key needs at least "
            "one letter or digit (it may hold only lowercase letters, digits and dashes)"
        )
    return key


def _clean(part: str) -> str:
    folded = unicodedata.normalize("NFKD", part).encode("ascii", "ignore").decode("ascii")
    return _NOT_KEY.sub("-", folded.lower()).strip("-")


def publish_markdown(key: str, markdown: str, description: str | None = None) -> UUID | None:
    """Publish a markdown artifact under ``artifact_key(key)``; its id, or None outside a run."""
    from prefect.artifacts import create_markdown_artifact

    key = artifact_key(key)
    if not _published_in_run(key):
        return None
    # _sync=True: the kit is synchronous even when called from inside an event loop (principle 9).
    return create_markdown_artifact(markdown=markdown, key=key, description=description, _sync=True)


def publish_table(
    key: str, rows: Sequence[Mapping[str, Any]], description: str | None = None
) -> UUID | None:
    """Publish ``rows`` (one mapping per row) as a table artifact; its id, or None outside a run.

    Values are converted to JSON first (datetimes, enums, models, ...), so an unsupported value
    fails here with a ``TypeError`` rather than inside Prefect; secrets are refused.
    """
    from prefect.artifacts import create_table_artifact

    key = artifact_key(key)
    refuse_secrets(list(rows), "rows")
    try:
        table = to_jsonable_python([dict(row) for row in rows])
    except ValueError as exc:  # PydanticSerializationError is a ValueError
        raise TypeError(f"rows for artifact {key!r} are not JSON-serialisable: {exc}") from exc
    if not _published_in_run(key):
        return None
    return create_table_artifact(table=table, key=key, description=description, _sync=True)


def publish_image(key: str, png: bytes, description: str | None = None) -> UUID | None:
    """Publish a PNG as an image artifact; its id, or None outside a run.

    The image goes in a ``data:`` URL: it travels inside the artifact, so the UI shows it with
    no file server or bucket to keep, and it lives as long as the run's other artifacts.
    """
    import base64

    from prefect.artifacts import create_image_artifact

    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise TypeError("png must be the bytes of a PNG image")
    key = artifact_key(key)
    if not _published_in_run(key):
        return None
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return create_image_artifact(image_url=url, key=key, description=description, _sync=True)


def publish_plan(
    runbook: str, target: str, plan: BaseModel, *, title: str | None = None
) -> UUID | None:
    """Publish ``plan`` as readable markdown keyed ``{runbook}-plan-{target}`` (sanitised).

    The plan must be a frozen pydantic model (DESIGN principle 1): what was published is what
    gets executed. Secrets anywhere in it are refused.
    """
    if not isinstance(plan, BaseModel):
        raise TypeError(f"plan must be a frozen pydantic model, got {type(plan).__name__}")
    if not plan.model_config.get("frozen", False):
        raise TypeError(
            f"plan {type(plan).__name__} must be frozen (model_config = "
            "ConfigDict(frozen=True)) so the plan published is the plan executed"
        )
    refuse_secrets(plan, "plan")
    markdown = render_plan(runbook, target, plan, title=title)
    return publish_markdown(
        artifact_key(runbook, "plan", target),
        markdown,
        description=f"{runbook} plan for {target}",
    )


def publish_timeline(
    runbook: str, target: str, timeline: Timeline | Sequence[TimelineEntry]
) -> UUID | None:
    """Publish the audit trail as a markdown table keyed ``{runbook}-timeline-{target}``."""
    entries = timeline.entries() if isinstance(timeline, Timeline) else tuple(timeline)
    return publish_markdown(
        artifact_key(runbook, "timeline", target),
        render_timeline(runbook, target, entries),
        description=f"{runbook} audit trail for {target}",
    )


def _published_in_run(key: str) -> bool:
    if _run.in_run():
        return True
    _run.logger(_LOGGER).info(
        "not in a flow or task run: artifact %r not published (Prefect deprecates artifacts "
        "outside runs)",
        key,
    )
    return False
