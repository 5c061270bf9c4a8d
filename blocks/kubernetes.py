"""`KubernetesTarget`: which Kubernetes API a runbook talks to, and a client factory for it.

Why it is built this way:
- each call of :meth:`KubernetesTarget.get_api_client` loads the kubeconfig (or the pod's service
  account) into a *fresh* ``kubernetes.client.Configuration``; the client's process-wide default
  configuration is never touched, so two blocks pointing at two clusters can be used side by
  side in one worker;
- urllib3's hidden retries are switched off (``runbooks.resilience.no_urllib3_retries``):
  retries happen in one layer only, the resilience layer, which backs off with full jitter and
  spends a retry budget; urllib3 would otherwise retry silently underneath it;
- every request gets ``request_timeout_seconds`` unless the caller passes its own
  ``_request_timeout`` (a long watch must pass a longer one): the generated client has no
  default timeout at all, so a hung API server would hang the flow;
- the kubeconfig is never written back (``persist_config=False``): a block does no I/O other
  than building its client;
- a missing kubeconfig or an unknown context is refused with one sentence naming the block field
  (``InvalidRequestError``), not a ``ConfigException`` about "kube-config/contexts list".
- its JSON schema refuses a block reference as the block's own data (see
  :meth:`KubernetesTarget.__get_pydantic_json_schema__`), so Prefect's server can enforce a flow's
  parameter schema on deployments whose default is ``{"$ref": {"block_document_slug": ...}}``.

``kubernetes`` is imported inside the factories: importing it costs about a second (v37 builds
pydantic models for every API type), and ``prefect block register -m blocks`` needs none of it.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO
from runbooks.errors import InvalidRequestError

if TYPE_CHECKING:
    from kubernetes.client import (
        ApiClient,
        AppsV1Api,
        AutoscalingV2Api,
        Configuration,
        CoreV1Api,
        CustomObjectsApi,
    )

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_NOT_A_REFERENCE = "__not_a_block_reference__"

REFERENCE_IS_NOT_BLOCK_DATA: Mapping[str, Any] = MappingProxyType(
    {"if": {"required": ["$ref"]}, "then": {"required": [_NOT_A_REFERENCE]}}
)
"""JSON Schema keywords of the block: data with a ``$ref`` key is block data only if it also has
a key no block data has, i.e. a reference (``{"$ref": {...}}``) never matches the block's schema.

Why not the plainer ``"not": {"required": ["$ref"]}``: Prefect's server checks a deployment's
parameters on creation against the raw schema with every ``required`` removed from nested objects
(defaults may be partial) and with no reference alternative, so that form becomes ``"not": {}``
there and refuses every value; this one becomes ``{"if": {}, "then": {}}`` and accepts the
reference, as before. When a run is created (and a deployment updated), the server wraps the
block's schema in ``oneOf`` with the reference, keeping ``required``, and this applies in full."""


class KubernetesTarget(Block):
    """A Kubernetes cluster and namespace that runbooks act on, reached through a kubeconfig
    context or, when the flow runs in a pod, through the pod's service account.

    Every request made through the clients it builds has an explicit timeout, and urllib3's
    own retries are off: the runbooks' resilience layer is the only one that retries.

    Example:
        Build typed API clients that share one connection pool:
        ```python
        from blocks import KubernetesTarget

        target = KubernetesTarget.load("BLOCK_NAME")
        with target.get_api_client() as api:
            pods = target.core_v1(api).list_namespaced_pod(target.namespace)
            deployments = target.apps_v1(api).list_namespaced_deployment(target.namespace)
        ```
    """

    _block_type_name: ClassVar[str] = "Kubernetes Target"
    _block_type_slug: ClassVar[str] = "kubernetes-target"
    _description: ClassVar[str] = (
        "A Kubernetes cluster and namespace to act on (kubeconfig context or in-cluster service "
        "account), with a request timeout and no hidden client retries."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    kubeconfig_path: Path | None = Field(
        default=None,
        title="Kubeconfig path",
        description=(
            "Path of the kubeconfig file to read; when empty, $KUBECONFIG or ~/.kube/config at "
            "the time the client is built. Not combined with in_cluster."
        ),
    )
    context: str | None = Field(
        default=None,
        description="Kubeconfig context to use; when empty, the file's current-context.",
    )
    in_cluster: bool = Field(
        default=False,
        title="In cluster",
        description=(
            "Use the service account of the pod this flow runs in instead of a kubeconfig."
        ),
    )
    namespace: str = Field(
        default="default",
        description="Namespace the runbooks act in (a DNS-1123 label, e.g. shop).",
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        title="Request timeout (seconds)",
        description="Timeout of each API request, connect and read, when the caller gives none.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns1123_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS1123_LABEL.match(value):
            raise ValueError(
                f"namespace must be a DNS-1123 label (at most 63 characters: lowercase letters, "
                f"digits and '-', starting and ending with a letter or digit), got {value!r}"
            )
        return value

    @field_validator("kubeconfig_path", "context", mode="before")
    @classmethod
    def _blank_means_unset(cls, value: object) -> object:
        # forms send "" for a cleared field; Path("") would silently mean the current directory
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _one_source_of_credentials(self) -> KubernetesTarget:
        if self.in_cluster and (self.kubeconfig_path is not None or self.context is not None):
            raise ValueError(
                "in_cluster cannot be combined with kubeconfig_path or context; "
                "set either in_cluster or a kubeconfig"
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The block's schema, with :data:`REFERENCE_IS_NOT_BLOCK_DATA` added to it.

        Why: Prefect's server checks a block parameter of a run as ``oneOf`` the block's schema
        and a reference (``{"$ref": ...}``). Every field of this block has a default and, like
        every block, it allows extra keys, so a reference matched both and the server refused
        every run of a deployment whose default is a reference (HTTP 409 "valid under each of").

        The keywords go into the model's own schema (inline, or the definition that a flow's
        parameter schema points at) beside Prefect's ``block_type_slug``, which is what the UI
        looks for to offer a block picker; the UI ignores ``if``/``then``.
        """
        json_schema = handler(core_schema)
        handler.resolve_ref_schema(json_schema).update(
            copy.deepcopy(dict(REFERENCE_IS_NOT_BLOCK_DATA))
        )
        return json_schema

    def get_api_client(self) -> ApiClient:
        """A new ``ApiClient`` for this cluster; close it (or use ``with``) when done.

        Raises ``InvalidRequestError`` naming the field at fault when the kubeconfig is missing
        or unusable, the context is unknown, or ``in_cluster`` is set outside a pod.
        """
        from runbooks.resilience import no_urllib3_retries

        configuration = self._load_configuration()
        no_urllib3_retries(configuration)
        return _api_client_class()(configuration, request_timeout=self.request_timeout_seconds)

    def core_v1(self, api_client: ApiClient | None = None) -> CoreV1Api:
        """``CoreV1Api`` (pods, services, events) over ``api_client`` or a new client."""
        from kubernetes.client import CoreV1Api

        return CoreV1Api(api_client or self.get_api_client())

    def apps_v1(self, api_client: ApiClient | None = None) -> AppsV1Api:
        """``AppsV1Api`` (deployments, replica sets) over ``api_client`` or a new client."""
        from kubernetes.client import AppsV1Api

        return AppsV1Api(api_client or self.get_api_client())

    def autoscaling_v2(self, api_client: ApiClient | None = None) -> AutoscalingV2Api:
        """``AutoscalingV2Api`` (horizontal pod autoscalers) over ``api_client`` or a new one."""
        from kubernetes.client import AutoscalingV2Api

        return AutoscalingV2Api(api_client or self.get_api_client())

    def custom_objects(self, api_client: ApiClient | None = None) -> CustomObjectsApi:
        """``CustomObjectsApi`` (CRDs, e.g. rollouts) over ``api_client`` or a new client."""
        from kubernetes.client import CustomObjectsApi

        return CustomObjectsApi(api_client or self.get_api_client())

    def _load_configuration(self) -> Configuration:
        import yaml
        from kubernetes import config
        from kubernetes.client import Configuration
        from kubernetes.config.config_exception import ConfigException

        configuration = Configuration()  # a new object: the global default stays untouched
        if self.in_cluster:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise InvalidRequestError(
                    f"in_cluster is set but no pod service account is usable here ({exc}); "
                    "unset in_cluster and give a kubeconfig_path when running outside a pod"
                ) from exc
            return configuration

        kubeconfig = self._kubeconfig_to_read()
        try:
            config.load_kube_config(
                config_file=kubeconfig,
                context=self.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
            raise self._explain(kubeconfig, exc) from exc
        return configuration

    def _kubeconfig_to_read(self) -> str:
        """The kubeconfig path(s) to load, checked to exist, resolved now rather than at import."""
        if self.kubeconfig_path is not None:
            path = self.kubeconfig_path.expanduser()
            if not path.is_file():
                raise InvalidRequestError(
                    f"kubeconfig_path {path} does not exist or is not a file; "
                    "set kubeconfig_path to a kubeconfig file or set in_cluster"
                )
            return str(path)
        candidates = os.environ.get("KUBECONFIG") or "~/.kube/config"
        if not any(
            Path(part).expanduser().is_file() for part in candidates.split(os.pathsep) if part
        ):
            raise InvalidRequestError(
                f"kubeconfig_path is empty and no kubeconfig was found at {candidates}; "
                "set kubeconfig_path to a kubeconfig file or set in_cluster"
            )
        return candidates

    def _explain(self, kubeconfig: str, exc: Exception) -> InvalidRequestError:
        """One sentence naming the field at fault for a kubeconfig that failed to load."""
        if self.context is not None:
            contexts = _context_names(kubeconfig)
            if contexts is not None and self.context not in contexts:
                known = ", ".join(sorted(contexts)) or "none"
                return InvalidRequestError(
                    f"context {self.context!r} is not defined in kubeconfig {kubeconfig} "
                    f"(it has: {known}); set the block's context to one of those"
                )
        detail = " ".join(str(exc).split())[:200]
        return InvalidRequestError(
            f"kubeconfig_path {kubeconfig} cannot be used ({detail}); "
            "fix the file or point kubeconfig_path at another one"
        )


def _context_names(kubeconfig: str) -> set[str] | None:
    """Names of the contexts in ``kubeconfig``, or ``None`` when the file cannot be read."""
    from kubernetes import config

    try:
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:
        return None  # the caller then reports the original loading error
    return {str(ctx.get("name")) for ctx in contexts if isinstance(ctx, dict)}


@functools.cache
def _api_client_class() -> type[ApiClient]:
    """``ApiClient`` that gives every request a default timeout (built once, on first use)."""
    from kubernetes.client import ApiClient

    class BoundedApiClient(ApiClient):
        """An ``ApiClient`` whose requests time out after ``request_timeout`` seconds by default.

        The generated API methods pass ``_request_timeout=None`` when the caller gives none,
        which urllib3 treats as "wait forever".
        """

        def __init__(self, configuration: Configuration, *, request_timeout: float) -> None:
            super().__init__(configuration)
            self.request_timeout = request_timeout

        def call_api(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            if _request_timeout is None:
                _request_timeout = self.request_timeout
            return super().call_api(*args, _request_timeout=_request_timeout, **kwargs)

    BoundedApiClient.__qualname__ = "BoundedApiClient"
    BoundedApiClient.__module__ = __name__
    return BoundedApiClient
