"""The HTTP side of the emulator: one handler per connection, speaking the Kubernetes REST API.

It parses the request (path, query, media types), checks the static token and the injected
faults, then serves discovery, ``/openapi/v2``, the admin endpoint ``/_sandbox/faults`` or a
resource request against the store: collection verbs (list, watch, create, deletecollection)
and item verbs (get, update, patch, delete) on the object or its ``status`` / ``scale``
subresource. Failures are ``ApiError`` and leave as ``Status`` bodies; an unexpected exception
is a 500 ``InternalError`` (and a log line), never a dropped connection.

Lists of built-in kinds carry no ``kind``/``apiVersion`` on their items (as on the real
server); ``kubectl get`` asks for, and gets, ``Table`` answers (:mod:`sandbox.kube.tables`).
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from sandbox.kube import errors, protobuf, resources, tables, watch
from sandbox.kube.errors import ApiError
from sandbox.kube.faults import Fault
from sandbox.kube.patch import APPLY_PATCH, patch_types
from sandbox.kube.protobuf import ProtobufError
from sandbox.kube.resources import ResourceType
from sandbox.kube.routes import (
    Accept,
    Request,
    Route,
    media_type,
    parse_accept,
    parse_resource_path,
    split,
)
from sandbox.kube.selectors import SelectorError, parse_field_selector, parse_label_selector

if TYPE_CHECKING:
    from sandbox.kube.server import KubeApiServer

log = logging.getLogger(__name__)

_HEALTH = frozenset({"/healthz", "/livez", "/readyz"})
_MAX_WATCH_SECONDS = 3600


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "sandbox-kube-apiserver"
    api: KubeApiServer

    def setup(self) -> None:
        super().setup()
        self.api._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.api._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.api.requests.append((self.command, self.path, code))

    def _send_error(self, error: ApiError) -> None:
        self._send(error.code, error.status(), error.headers)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _serve(self) -> None:
        request = split(self.path)
        body = self._body()
        try:
            if request.path.startswith("/_sandbox/faults"):
                self._faults_endpoint(request, body)
                return
            if request.path in _HEALTH:
                self._send_text(200, "ok")
                return
            self._authenticate()
            fault = self.api.faults.take(self.command, request.path)
            if fault is not None and self._apply_fault(fault):
                return
            self._dispatch(request, body)
        except ApiError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("unhandled error serving %s %s", self.command, self.path)
            self._send_error(errors.internal(f"{type(exc).__name__}: {exc}"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def _send_text(self, code: int, text: str) -> None:
        payload = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authenticate(self) -> None:
        if self.api.token and self.headers.get("Authorization") != f"Bearer {self.api.token}":
            raise errors.unauthorized()

    def _apply_fault(self, fault: Fault) -> bool:
        """Act out ``fault``; True when the request has been answered (or abandoned)."""
        if fault.action == "hang":
            deadline = time.monotonic() + fault.seconds
            while time.monotonic() < deadline:
                if self.api.wait_stopping(0.05) or self._client_gone():
                    self.close_connection = True
                    return True
            if fault.status is None:
                return False
        code = fault.status or 500
        reason = errors.REASONS.get(code, "")
        message = fault.message or f"injected fault: {reason or code} (sandbox fault {fault.id})"
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        self._send_error(
            ApiError(
                code,
                reason,
                message,
                details={"retryAfterSeconds": fault.retry_after} if fault.retry_after else {},
                headers=headers,
            )
        )
        return True

    def _faults_endpoint(self, request: Request, body: bytes) -> None:
        injector = self.api.faults
        parts = [p for p in request.path.split("/") if p]
        if self.command == "GET" and len(parts) == 2:
            self._send(200, {"faults": [f.to_json() for f in injector.list()]})
        elif self.command == "POST" and len(parts) == 2:
            try:
                fault = injector.inject_json(json.loads(body or b"null"))
            except ValueError as exc:
                raise errors.bad_request(str(exc)) from None
            self._send(201, fault.to_json())
        elif self.command == "DELETE" and len(parts) == 2:
            self._send(200, {"cleared": injector.clear()})
        elif self.command == "DELETE" and len(parts) == 3 and parts[2].isdigit():
            if not injector.remove(int(parts[2])):
                raise errors.ApiError(404, "NotFound", f"no fault with id {parts[2]}")
            self._send(200, {"removed": int(parts[2])})
        else:
            raise errors.method_not_allowed()

    # -- API -----------------------------------------------------------------------------------

    def _dispatch(self, request: Request, body: bytes) -> None:
        registry = self.api.store.registry
        if self.command == "GET" and self._discovery(request.path):
            return

        def namespaced(group: str, version: str, plural: str) -> bool:
            resource = registry.lookup(group, version, plural)
            return resource is not None and resource.namespaced

        route = parse_resource_path(request.path, namespaced)
        if route is None:
            raise errors.path_not_found()
        resource = self.api.store.resource(route.group, route.version, route.plural)
        if route.namespace is not None and not resource.namespaced:
            raise errors.path_not_found()
        if route.subresource is not None:
            allowed = set(resource.subresources) | (
                {"finalize"} if resource.key == ("", "namespaces") else set()
            )
            if route.subresource not in allowed:
                raise errors.path_not_found()
        self._resource_request(route, resource, request, body)

    def _discovery(self, path: str) -> bool:
        """Answer a discovery (or version, or OpenAPI) request; False when ``path`` is not one."""
        registry = self.api.store.registry
        parts = path.split("/")[1:]
        document: dict[str, Any] | None
        if path == "/openapi/v2":
            self._send_openapi_v2()
            return True
        if path == "/version":
            document = resources.version_info()
        elif path == "/api":
            document = resources.api_versions(f"{self.api.host}:{self.api.port}")
        elif path == "/apis":
            document = resources.api_group_list(registry)
        elif path == "/api/v1":
            document = resources.api_resource_list(registry, "", "v1")
        elif parts[0] == "apis" and len(parts) == 2:
            document = resources.api_group(registry, parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            document = resources.api_resource_list(registry, parts[1], parts[2])
        else:
            return False
        if document is None:
            raise errors.path_not_found()
        self._send(200, document)
        return True

    def _send_openapi_v2(self) -> None:
        """An empty OpenAPI v2 document: enough for kubectl's client-side validation.

        ``kubectl apply``/``create`` (1.20, and 1.32 when ``/openapi/v3`` is absent) download
        ``/openapi/v2`` as gnostic protobuf before sending anything, and fail when they cannot;
        a kind missing from the document is not validated client-side, so an empty one lets
        the server do the validation, as it does for custom resources on a real cluster.
        """
        if "protobuf" in (self.headers.get("Accept") or ""):
            self.send_response(200)
            self.send_header("Content-Type", _OPENAPI_V2_PROTOBUF)
            self.send_header("Content-Length", str(len(_OPENAPI_V2_DOCUMENT)))
            self.end_headers()
            self.wfile.write(_OPENAPI_V2_DOCUMENT)
            return
        info = {"title": "Kubernetes", "version": resources.version_info()["gitVersion"]}
        self._send(200, {"swagger": "2.0", "info": info, "paths": {}, "definitions": {}})

    def _parse_body(self, body: bytes, content_type: str) -> Any:
        if not body:
            raise errors.bad_request("the request body is empty")
        if content_type.endswith("yaml"):
            import yaml  # only when a client sends YAML (a dependency of kubernetes)

            try:
                return yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise errors.bad_request(f"the request body is not valid YAML: {exc}") from None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise errors.bad_request(f"the request body is not valid JSON: {exc}") from None

    def _selectors(self, resource: ResourceType, request: Request) -> tuple[Any, Any]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(
                request.query.get("fieldSelector"), resource.selectable_fields
            )
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        return labels, fields

    def _resource_request(
        self, route: Route, resource: ResourceType, request: Request, body: bytes
    ) -> None:
        accept = parse_accept(self.headers.get("Accept"))
        if not accept.acceptable:
            raise errors.not_acceptable(["application/json", "application/yaml"])
        if route.name is None:
            self._collection(route, resource, request, body, accept)
        elif resource.namespaced and route.namespace is None:
            raise errors.path_not_found()
        else:
            self._item(route, resource, request, body, accept)

    def _table(
        self,
        resource: ResourceType,
        items: list,
        rv: str,
        request: Request,
        accept: Accept,
        following: str | None = None,
    ) -> dict[str, Any]:
        return tables.to_table(
            resource,
            items,
            resource_version=rv,
            continue_token=following,
            include_object=request.query.get("includeObject", "Metadata"),
            api_version=accept.table_version,
        )

    def _collection(
        self, route: Route, resource: ResourceType, request: Request, body: bytes, accept: Accept
    ) -> None:
        """list / watch / create / deletecollection on ``.../<plural>``."""
        store, method = self.api.store, self.command
        dry_run = request.query.get("dryRun") == "All"
        if method == "GET" and (route.watch or request.flag("watch")):
            self._watch(resource, route.namespace, request, accept.table)
        elif method == "GET":
            labels, fields = self._selectors(resource, request)
            items, rv, following, remaining = store.list(
                resource,
                route.namespace,
                labels,
                fields,
                limit=request.int("limit") or 0,
                token=request.query.get("continue") or None,
            )
            if accept.table:
                self._send(200, self._table(resource, items, rv, request, accept, following))
                return
            meta: dict[str, Any] = {"resourceVersion": rv}
            if following:
                meta["continue"] = following
                meta["remainingItemCount"] = remaining
            self._send(200, _list_of(resource, items, meta))
        elif method == "POST":
            if resource.namespaced and route.namespace is None:
                raise errors.method_not_allowed()
            namespace = route.namespace or ""
            created = store.create(
                resource, namespace, self._write_body(body, resource), dry_run=dry_run
            )
            self._send(201, created)
        elif method == "DELETE":
            labels, fields = self._selectors(resource, request)
            options = self._delete_options(body, request)
            deleted = store.delete_collection(
                resource, route.namespace, labels, fields, options, dry_run=dry_run
            )
            meta = {"resourceVersion": str(store.resource_version)}
            self._send(200, _list_of(resource, deleted, meta))
        else:
            raise errors.method_not_allowed()

    def _item(
        self, route: Route, resource: ResourceType, request: Request, body: bytes, accept: Accept
    ) -> None:
        """get / update / patch / delete on ``.../<plural>/<name>[/status|/scale]``."""
        store, method = self.api.store, self.command
        namespace, name, sub = route.namespace or "", route.name or "", route.subresource
        dry_run = request.query.get("dryRun") == "All"
        if method == "GET" and sub == "scale":
            self._send(200, store.get_scale(resource, namespace, name))
        elif method == "GET":
            obj = store.get(resource, namespace, name)
            if accept.table and sub is None:
                rv = obj["metadata"]["resourceVersion"]
                self._send(200, self._table(resource, [obj], rv, request, accept))
            else:
                self._send(200, obj)
        elif method == "PUT" and sub == "scale":
            data = self._write_body(body, resource)
            self._send(200, store.update_scale(resource, namespace, name, data, dry_run=dry_run))
        elif method == "PUT":
            data = self._write_body(body, resource)
            status_only = "status" if sub == "status" else None
            updated = store.update(
                resource, namespace, name, data, subresource=status_only, dry_run=dry_run
            )
            self._send(200, updated)
        elif method == "PATCH":
            content_type = media_type(self.headers.get("Content-Type"))
            if content_type not in patch_types(resource):
                raise errors.unsupported_media_type(content_type, patch_types(resource))
            if content_type == APPLY_PATCH and not request.query.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH requests with apply content type require a fieldManager"
                )
            patch = self._parse_body(body, content_type)
            subresource = sub if sub != "finalize" else None
            patched = store.patch(
                resource,
                namespace,
                name,
                content_type,
                patch,
                subresource=subresource,
                dry_run=dry_run,
            )
            self._send(200, patched)
        elif method == "DELETE" and sub is None:
            options = self._delete_options(body, request)
            code, result = store.delete(resource, namespace, name, options, dry_run=dry_run)
            self._send(code, result)
        else:
            raise errors.method_not_allowed()

    def _write_body(self, body: bytes, resource: ResourceType) -> Any:
        """The object of a POST/PUT: JSON, YAML, or protobuf (built-in kinds, as client-go)."""
        content_type = media_type(self.headers.get("Content-Type"))
        accepted = ["application/json", "application/yaml"]
        if resource.builtin:
            accepted.append(protobuf.MEDIA_TYPE)
        if content_type not in (*accepted, ""):
            raise errors.unsupported_media_type(content_type, accepted)
        if content_type == protobuf.MEDIA_TYPE:
            try:
                return protobuf.decode(body)
            except ProtobufError as exc:
                raise errors.bad_request(str(exc)) from None
        return self._parse_body(body, content_type)

    def _delete_options(self, body: bytes, request: Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if body:
            parsed = self._parse_body(body, media_type(self.headers.get("Content-Type")))
            if isinstance(parsed, dict):
                options.update(parsed)
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in request.query:
                options[key] = request.query[key]
        if str(options.get("orphanDependents", "")).lower() not in ("true", "1"):
            options.pop("orphanDependents", None)
        return options

    # -- watch ---------------------------------------------------------------------------------

    def _watch(
        self, resource: ResourceType, namespace: str | None, request: Request, table: bool
    ) -> None:
        labels, fields = self._selectors(resource, request)
        timeout = request.int("timeoutSeconds")
        bookmarks = request.flag("allowWatchBookmarks")
        initial = request.flag("sendInitialEvents")
        options = watch.WatchOptions(
            namespace=namespace,
            labels=labels,
            fields=fields,
            timeout_seconds=timeout if timeout and timeout > 0 else _MAX_WATCH_SECONDS,
            since=None if initial else request.query.get("resourceVersion"),
            bookmarks=bookmarks,
            initial_events_end=initial and bookmarks,
            bookmark_interval=self.api.bookmark_interval,
            table=table,
            include_object=request.query.get("includeObject", "Metadata"),
        )
        try:
            watch.serve(self.api.store, resource, options, self)
        except OSError:  # the client went away mid-write
            self.close_connection = True

    # -- watch.Stream: a chunked response, one JSON event per line ------------------------------

    def start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.api.requests.append((self.command, self.path, 200))

    def send(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def gone(self) -> bool:
        if self.api.stopping or self._client_gone():
            self.close_connection = True
            return True
        return False


def _protobuf_string(field: int, value: bytes) -> bytes:
    assert len(value) < 128  # one-byte length prefix
    return bytes([field << 3 | 2, len(value)]) + value


_OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
# gnostic openapi_v2.Document{swagger: "2.0", info: {title, version}, paths: {}}
_OPENAPI_V2_DOCUMENT = (
    _protobuf_string(1, b"2.0")
    + _protobuf_string(
        2,
        _protobuf_string(1, b"Kubernetes")
        + _protobuf_string(2, resources.version_info()["gitVersion"].encode()),
    )
    + _protobuf_string(8, b"")
)


def _list_of(resource: ResourceType, items: list, meta: dict[str, Any]) -> dict[str, Any]:
    """A ``<Kind>List``; items of built-in kinds carry no kind/apiVersion on the real server."""
    if resource.builtin:
        items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
    return {
        "kind": f"{resource.kind}List",
        "apiVersion": resource.api_version,
        "metadata": meta,
        "items": items,
    }
