"""Feature-flag tasks: the flags document in a ConfigMap the service's pods mount.

The document is :mod:`decisions.flags`' (``{"flags": {name: {...}}}``) under the key
:data:`decisions.bluegreen.FLAGS_KEY`; the service re-reads the mounted file when the kubelet
updates it, so changing a flag is one write of the ConfigMap. Why a read-modify-write with the
live ``resourceVersion`` rather than a merge patch of the one key: the document is one JSON
string, so two writers patching different flags would overwrite each other; with the version a
concurrent write makes ours fail with 409 and we read again (bounded, like ``apply_deployment``).
Other flags in the document are left exactly as they were.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.kubernetes import KubernetesTarget
from decisions.bluegreen import FLAGS_KEY
from decisions.flags import Flag, flags_document, killed, parse_flags, with_rollout
from runbooks.errors import ConflictError, InvalidRequestError
from runbooks.kit._run import logger as run_logger
from runbooks.resilience import call_kubernetes
from tasks.kubernetes import APPLY_ATTEMPTS, _target, read_or_none


@task(name="set-feature-flag", cache_policy=NO_CACHE)
def set_feature_flag(
    k8s: KubernetesTarget,
    namespace: str,
    config_map: str,
    flag: str,
    percent: float | None,
) -> Flag:
    """Set ``flag`` on for ``percent`` % of users, or off for everyone when ``percent`` is None
    (the kill switch); creates the ConfigMap when it is missing. Returns the flag as written.

    Idempotent: writing the same percentage twice gives the same document.
    """
    where = f"ConfigMap {namespace}/{config_map}"
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        target = _target(api)
        last: ConflictError | None = None
        for _ in range(APPLY_ATTEMPTS):
            live = read_or_none(api, where, core.read_namespaced_config_map, config_map, namespace)
            flags = _flags_of(live, where)
            changed = killed(flags, flag) if percent is None else with_rollout(flags, flag, percent)
            data = dict((live.data if live is not None else None) or {})
            data[FLAGS_KEY] = json.dumps(flags_document(changed.values()), sort_keys=True)
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": config_map, "namespace": namespace},
                "data": data,
            }
            try:
                if live is None:
                    call_kubernetes(
                        f"create {where}",
                        core.create_namespaced_config_map,
                        namespace,
                        body,
                        target=target,
                        idempotent=True,  # a lost create meets 409 AlreadyExists: read again
                    )
                else:
                    body["metadata"]["resourceVersion"] = live.metadata.resource_version
                    call_kubernetes(
                        f"replace {where}",
                        core.replace_namespaced_config_map,
                        config_map,
                        namespace,
                        body,
                        target=target,
                        idempotent=True,  # a replace with a resourceVersion cannot apply twice
                    )
            except ConflictError as exc:
                last = exc
                continue
            state = "off (kill switch)" if percent is None else f"on for {percent:g} %"
            run_logger(__name__).info("flag %s in %s: %s", flag, where, state)
            return changed[flag]
    raise ConflictError(
        f"setting flag {flag} in {where} conflicted {APPLY_ATTEMPTS} times in a row: another "
        "writer keeps changing it; stop that writer and run again",
        status=409,
        target=where,
    ) from last


def _flags_of(live: Any, where: str) -> dict[str, Flag]:
    text = ((live.data if live is not None else None) or {}).get(FLAGS_KEY)
    if text is None:
        return {}
    try:
        return parse_flags(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise InvalidRequestError(
            f"{where} key {FLAGS_KEY} is not a valid flags document ({exc}): fix or remove it "
            "before rolling a flag out"
        ) from exc
