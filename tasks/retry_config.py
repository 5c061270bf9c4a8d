"""A caller's retry settings in its ConfigMap: read them, and change them field by field.

The rules of the edit (field-level changes checked against what was read, the original kept in
an annotation) are :mod:`decisions.retry_config`'s; these tasks read, decide with them and
write. Each write is a merge patch carrying the ``resourceVersion`` read, so a concurrent edit
makes it fail with 409 instead of being overwritten; we then read and decide again
(:func:`tasks.kubernetes.converge`). A 500 is retried: the precondition means a stored first
attempt makes the retry a 409, and the next round sees our own values ("done").
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks.kubernetes import KubernetesTarget
from decisions.retry_config import (
    ORIGINAL_ANNOTATION,
    RetryDocumentError,
    annotations_after,
    applied,
    parse_document,
    render_document,
    verdict,
)
from decisions.retry_storm import SettingsChange
from runbooks.errors import ConflictError, InvalidRequestError, NotFoundError
from tasks.kubernetes import _target, converge, guarded_merge_patch, read_or_none


class RetryConfig(BaseModel):
    """A caller's retry document as read, and the original an earlier change recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    name: str
    document: dict[str, Any]
    original: dict[str, Any] | None = Field(
        description="The document before containment began, when a change is in force."
    )


class ConfigWrite(BaseModel):
    """One change as made: written, or found already made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller: str
    where: str
    changed: bool
    note: str


def _read(k8s: KubernetesTarget, api: Any, namespace: str, name: str) -> Any:
    core = k8s.core_v1(api)
    live = read_or_none(
        api, f"ConfigMap {namespace}/{name}", core.read_namespaced_config_map, name, namespace
    )
    if live is None:
        raise NotFoundError(
            f"ConfigMap {namespace}/{name} does not exist: the retry-storm runbook edits a "
            "caller's retry settings there (params.config_map names it)",
            status=404,
            target=_target(api),
        )
    return live


def _parsed(live: Any, namespace: str, name: str, key: str) -> RetryConfig:
    where = f"ConfigMap {namespace}/{name} key {key!r}"
    annotations = live.metadata.annotations or {}
    try:
        document = parse_document((live.data or {}).get(key), where)
        recorded = annotations.get(ORIGINAL_ANNOTATION)
        original = None if recorded is None else parse_document(recorded, f"{where} annotation")
    except RetryDocumentError as exc:
        raise InvalidRequestError(str(exc)) from exc
    return RetryConfig(namespace=namespace, name=name, document=document, original=original)


@task(name="read-retry-config", cache_policy=NO_CACHE)
def read_retry_config(k8s: KubernetesTarget, namespace: str, name: str, key: str) -> RetryConfig:
    """The caller's retry document (``NotFoundError`` when the ConfigMap is missing,
    ``InvalidRequestError`` when its value is not a JSON object)."""
    with k8s.get_api_client() as api:
        return _parsed(_read(k8s, api, namespace, name), namespace, name, key)


@task(name="change-retry-config", cache_policy=NO_CACHE)
def change_retry_config(
    k8s: KubernetesTarget, namespace: str, name: str, key: str, change: SettingsChange
) -> ConfigWrite:
    """Make ``change`` in the caller's retry document; ``ConflictError`` when someone else
    changed those fields since the plan was made (nothing is written then)."""
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        where = f"ConfigMap {namespace}/{name}"

        def decide(attempted: ConfigWrite | None) -> tuple[str, ConfigWrite, Any]:
            live = _read(k8s, api, namespace, name)
            config = _parsed(live, namespace, name, key)
            state = verdict(config.document, change)
            if state == "conflict":
                raise ConflictError(
                    f"{where}: fields {sorted(change.after)} are "
                    f"{ {k: config.document.get(k) for k in change.after} }, neither what the "
                    f"plan read ({change.before}) nor what it sets ({change.after}): someone "
                    "else changed them; not overwritten",
                    status=409,
                    target=_target(api),
                )
            if state == "done":
                made = attempted is not None  # our stored write whose answer was lost
                return (
                    where,
                    attempted
                    or ConfigWrite(
                        caller=change.caller, where=where, changed=made, note="already in force"
                    ),
                    None,
                )
            after = applied(config.document, change)
            annotations = annotations_after(live.metadata.annotations or {}, config.document, after)
            write = ConfigWrite(
                caller=change.caller,
                where=where,
                changed=True,
                note=", ".join(
                    f"{k} {change.before.get(k)} -> {v}" for k, v in change.after.items()
                ),
            )
            body = {
                "metadata": {
                    "resourceVersion": live.metadata.resource_version,
                    "annotations": annotations,
                },
                "data": {key: render_document(after)},
            }
            return (
                where,
                write,
                guarded_merge_patch(
                    f"patch {where}",
                    core.patch_namespaced_config_map,
                    name,
                    namespace,
                    body=body,
                    api=api,
                ),
            )

        return converge(
            decide, dry_run=False, what=f"changing {where}", target=f"{namespace}/{name}"
        )
