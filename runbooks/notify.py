"""Outcomes of runbooks as Slack messages, and posting them without ever failing a run.

Two halves:

- **pure formatting** (no Prefect, no I/O): :func:`outcome_message` turns a run's outcome
  (:class:`~runbooks.kit.RunbookResult` or its fields) into Slack's JSON: a plain ``text`` (what
  phones and screen readers show) and Block Kit ``blocks`` (the headline with an emoji per
  :class:`~runbooks.kit.Outcome`, the reason, the flow run's UI link). :func:`message_template`
  renders the *same* layout as a Jinja template whose values are expressions, for the Prefect
  automations (``deployments/automations.py``) whose server renders it from the triggering
  event: one layout, whether a flow posts its outcome or the server notices a failed run;
- **posting**: :func:`notify_outcome` posts a result through a
  :class:`~blocks.slack.SlackIncomingWebhook` and never raises into the caller's flow: a
  notification must not fail a rollback. A failed post is a warning in the run's log and
  ``False``.

Slack's ``mrkdwn`` treats ``&``, ``<`` and ``>`` as markup (``<url|label>`` links, ``<!here>``
mentions), so every value is escaped; a target is shown as code, so its backticks are replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runbooks.kit.results import Outcome, RunbookResult

if TYPE_CHECKING:
    from blocks.slack import SlackIncomingWebhook

DEFAULT_WEBHOOK_BLOCK = "runbooks"
"""Name of the ``slack-incoming-webhook`` block used when none is given."""

EMOJI: Mapping[Outcome, str] = {
    Outcome.SUCCEEDED: ":white_check_mark:",
    Outcome.NO_CHANGE: ":heavy_minus_sign:",
    Outcome.DRY_RUN: ":memo:",
    Outcome.ROLLED_BACK: ":rewind:",
    Outcome.FAILED: ":x:",
}
"""One emoji per outcome, so a channel scrolled at 3 a.m. reads at a glance."""

LABEL: Mapping[Outcome, str] = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.NO_CHANGE: "no change needed",
    Outcome.DRY_RUN: "dry run, nothing changed",
    Outcome.ROLLED_BACK: "rolled back",
    Outcome.FAILED: "failed",
}

LINK_LABEL = "Open the flow run in Prefect"
NO_LINK = "no link to the flow run (not run in Prefect, or PREFECT_UI_URL not set)"
NO_REASON = "no reason given"
SECTION_LIMIT = 3000
"""Slack refuses a section whose text exceeds 3000 characters (``invalid_blocks``)."""


def escape_mrkdwn(text: str) -> str:
    """``text`` with Slack's three control characters escaped, as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return escape_mrkdwn(text).replace("`", "'")


def _clip(text: str, limit: int = SECTION_LIMIT - 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layout(
    *, emoji: str, runbook: str, target: str, outcome: str, reason: str, link: str
) -> dict[str, Any]:
    """Slack's JSON for one outcome, from values already safe for ``mrkdwn``.

    ``link`` is ``mrkdwn`` as is (``<url|label>``); an empty one leaves the link line out.
    """
    blocks: list[dict[str, Any]] = [
        _section(f"{emoji} *{runbook}* on `{target}`: *{outcome}*"),
        _section(reason),
    ]
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return {"text": f"{emoji} {runbook} on {target}: {outcome}", "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def outcome_message(
    runbook: str,
    target: str,
    outcome: Outcome,
    reason: str,
    ui_url: str | None = None,
) -> dict[str, Any]:
    """The Slack message for one run's outcome (``ui_url``: the flow run's page, if known)."""
    outcome = Outcome(outcome)
    link = f"<{ui_url}|{LINK_LABEL}>" if ui_url else ""
    return layout(
        emoji=EMOJI[outcome],
        runbook=escape_mrkdwn(runbook),
        target=_code(target),
        outcome=LABEL[outcome],
        reason=_clip(escape_mrkdwn(reason.strip() or NO_REASON)),
        link=link,
    )


def result_message(result: RunbookResult, ui_url: str | None = None) -> dict[str, Any]:
    """:func:`outcome_message` of a runbook's result."""
    return outcome_message(result.runbook, result.target, result.outcome, result.reason, ui_url)


# -- the same layout, rendered by Prefect's server -----------------------------------------------

_ESCAPE = "| replace('&', '&amp;') | replace('<', '&lt;') | replace('>', '&gt;')"


def message_template(
    *, emoji: str, runbook: str, target: str, outcome: str, reason: str, link: str
) -> str:
    """:func:`layout` as a Jinja template (a ``CallWebhook`` payload); each argument is a Jinja
    *expression* (``"flow.name"``), evaluated by the server from the triggering event.

    Each value is escaped for ``mrkdwn`` (``link`` excepted: it is ``mrkdwn``) and then for a
    JSON string (``tojson`` without its quotes), so whatever a reason holds, the body stays
    valid JSON. The expressions must never be empty: Slack refuses an empty section.
    """
    expressions = {
        "emoji": (emoji, _ESCAPE),
        "runbook": (runbook, _ESCAPE),
        "target": (target, _ESCAPE + " | replace('`', \"'\")"),
        "outcome": (outcome, _ESCAPE),
        "reason": (reason, _ESCAPE + f" | truncate({SECTION_LIMIT - 100})"),
        "link": (link, ""),
    }
    tokens = {name: f"@@{name}@@" for name in expressions}
    body = json.dumps(layout(**tokens), ensure_ascii=False)
    setup = []
    for name, (expression, escape) in expressions.items():
        setup.append(f"{{%- set v_{name} = (({expression}) | string {escape} | tojson)[1:-1] -%}}")
        body = body.replace(tokens[name], f"{{{{ v_{name} }}}}")
    return "\n".join(setup) + "\n" + body


# -- posting ---------------------------------------------------------------------------------


def notify_outcome(
    result: RunbookResult,
    webhook: SlackIncomingWebhook | str = DEFAULT_WEBHOOK_BLOCK,
    *,
    ui_url: str | None = None,
) -> bool:
    """Post ``result`` to Slack; True once Slack took it, False (and a warning) otherwise.

    ``webhook``: the block, or the name of a saved ``slack-incoming-webhook`` block.
    ``ui_url``: the flow run's page; by default the current flow run's, when called in one.
    Never raises an ``Exception``: a notification must not fail the run that sends it (a
    rollback above all). Retries are the block's (the resilience layer, bounded).
    """
    from runbooks.kit._run import logger

    try:
        from blocks.slack import SlackIncomingWebhook

        block = webhook if isinstance(webhook, SlackIncomingWebhook) else _load(webhook)
        link = ui_url if ui_url is not None else _current_run_url()
        block.post(result_message(result, link))
    except Exception as exc:
        logger(__name__).warning(
            "could not notify Slack that %s on %s ended %s: %s",
            result.runbook,
            result.target,
            result.outcome.value,
            _describe(exc),
        )
        return False
    return True


def _load(name: str) -> SlackIncomingWebhook:
    from blocks.slack import SlackIncomingWebhook

    try:
        return SlackIncomingWebhook.load(name)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise LookupError(
            f"no slack-incoming-webhook block named {name!r} is saved on the Prefect API; save "
            f"one (SlackIncomingWebhook(url=...).save({name!r})) or pass the block"
        ) from exc


def _current_run_url() -> str | None:
    from runbooks.kit._run import in_run

    if not in_run():
        return None
    from prefect.runtime import flow_run

    url = flow_run.ui_url
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _describe(exc: BaseException) -> str:
    from runbooks.errors import RunbookError

    if isinstance(exc, RunbookError | LookupError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
