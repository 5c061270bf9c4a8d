"""One pod of the demo shop: its state and what each route answers, independent of HTTP plumbing.

:class:`Shop` holds what a request needs (behaviour of the image, config files, the downstream
client, metrics, tracing) and answers a parsed request with an :class:`Answer`; the HTTP server
around it lives in :mod:`sandbox.shop.server`. Importing this module imports neither Prefect nor
the OpenTelemetry SDK: a pod must start in well under a second (``tests/unit`` checks it).

Routes (every role)::

    GET  /ready             readiness probe target: 200 while serving, 503 once terminating
    GET  /health            deep health JSON: 200 when every check is ok, else 503 (degraded)
    GET  /metrics           Prometheus text: shop_* and the resilience layer's runbooks_client_*
    GET  /                  a business route: who am I (role, version, pod, flags)
    POST /orders            a business route: one row into the service database's ``orders``
                            (``{"customer": "ada", "amount_cents": 1250}`` -> 200 ``{"id": 7}``;
                            400 bad body; 503 without ``SHOP_DATABASE_URL`` or while the
                            database is unreachable or locked; 500 other database errors)
    GET|POST|DELETE /_sandbox/fault   the runtime fault (loopback clients only)
    GET  /_sandbox/config   retry settings, flags and fault in force (loopback clients only)

Business routes by role: frontend ``GET /buy?user=ID`` (calls checkout), checkout
``GET|POST /checkout`` (calls payments), payments ``GET|POST /pay``.

Why ``/ready`` and ``/health`` differ: a ``-broken`` version must become Ready in Kubernetes
terms (so the blue-green runbook's *analysis* catches it, as in production) while its deep
health says ``degraded`` with a 503. Readiness probes must therefore target ``/ready``; a probe
on ``/health`` would also take every caller of a failing dependency out of its Service, turning
one failure into a cascade.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from decisions.flags import Flag, evaluate, parse_flags
from sandbox.shop import tracing
from sandbox.shop.accesslog import AccessLog
from sandbox.shop.behaviour import NO_FAULT, Behaviour, Decider, Fault, fault_document, parse_fault
from sandbox.shop.config import ConfigError, Settings, WatchedJson, log
from sandbox.shop.metrics import ShopMetrics
from sandbox.shop.orders import Orders, open_orders, parse_order

if TYPE_CHECKING:
    from sandbox.shop.downstream import CallResult, Downstream, RetrySettings

BUSINESS_ROUTES = {"frontend": "/buy", "checkout": "/checkout", "payments": "/pay"}
CALLS = {"frontend": "/checkout", "checkout": "/pay"}  # the path each role calls downstream
_METHODS = {
    "/ready": ("GET",),
    "/health": ("GET",),
    "/metrics": ("GET",),
    "/": ("GET",),
    "/orders": ("POST",),
    "/_sandbox/fault": ("GET", "POST", "DELETE"),
    "/_sandbox/config": ("GET",),
    "/buy": ("GET",),
    "/checkout": ("GET", "POST"),
    "/pay": ("GET", "POST"),
}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request; ``headers`` has lower-case names."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client: str


@dataclass(slots=True)
class Answer:
    status: int
    payload: object
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def body(self) -> bytes:
        if isinstance(self.payload, bytes):
            return self.payload
        return json.dumps(self.payload, separators=(",", ":")).encode()


class Shop:
    """The state of one pod; thread-safe (one handler thread per connection calls it)."""

    def __init__(self, settings: Settings, behaviour: Behaviour, env: Mapping[str, str] | None):
        env = os.environ if env is None else env
        self.settings, self.behaviour = settings, behaviour
        self.metrics = ShopMetrics(settings.role, behaviour.tag, settings.pod)
        reloaded = self.metrics.config_reloaded
        self.flags: WatchedJson[dict[str, Flag]] = WatchedJson(
            settings.flags_file, parse_flags, {}, name="flags", on_reload=reloaded
        )
        self.retry: WatchedJson[RetrySettings] | None = None
        self.downstream: Downstream | None = None
        if settings.dependency is not None:
            self.retry, self.downstream = _downstream(settings, env, self.metrics)
        self._fault_file: WatchedJson[Fault] = WatchedJson(
            settings.fault_file, parse_fault, NO_FAULT, name="fault", on_reload=reloaded
        )
        self._fault_lock = threading.Lock()
        self._fault, self._fault_generation = NO_FAULT, 0
        self.decider = Decider(behaviour)
        self.tracing = tracing.setup(
            {
                "service.name": settings.role,
                "service.version": behaviour.tag,
                "service.namespace": settings.namespace,
                "k8s.pod.name": settings.pod,
                "k8s.namespace.name": settings.namespace,
            },
            env,
        )
        # SQLAlchemy and the driver are imported only here: a pod without a database pays nothing
        self.orders: Orders | None = (
            open_orders(settings.database_url) if settings.database_url is not None else None
        )
        self.access_log = AccessLog(settings.access_log)
        self.started = time.monotonic()
        self.draining = threading.Event()

    # -- state ---------------------------------------------------------------------------

    def fault(self) -> Fault:
        """The fault in force: the last one set, by the fault file or by the admin endpoint."""
        from_file = self._fault_file.get()
        with self._fault_lock:
            if self._fault_file.generation != self._fault_generation:
                self._fault_generation = self._fault_file.generation
                self._fault = from_file
            return self._fault

    def set_fault(self, fault: Fault) -> None:
        self.fault()  # take a pending file change first, so this one wins
        with self._fault_lock:
            self._fault = fault
        log(f"fault set through the admin endpoint: {fault_document(fault)}")

    def health(self) -> tuple[int, dict[str, object]]:
        checks: dict[str, object] = {"database": "ok", "cache": "ok"}
        failing = self.behaviour.degraded_check
        if failing is not None:
            checks[failing] = "failing"
        dependencies: dict[str, str] = {}
        if self.settings.dependency is not None:
            dependencies[self.settings.dependency] = (
                self.downstream.health() if self.downstream is not None else "unconfigured"
            )
        checks["dependencies"] = dependencies
        if self.fault().degrade_health:
            checks["fault"] = "failing"
        degraded = (
            any(checks.get(name) == "failing" for name in ("database", "cache", "fault"))
            or "failing" in dependencies.values()
        )
        document: dict[str, object] = {
            "status": "degraded" if degraded else "ok",
            "version": self.behaviour.tag,
            "role": self.settings.role,
            "pod": self.settings.pod,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "checks": checks,
        }
        return (503 if degraded else 200), document

    # -- routing -------------------------------------------------------------------------

    def route_of(self, path: str) -> str:
        """The ``route`` label of a request: a known path of this role, else ``other`` (one
        series for every unknown URL, so scanners cannot blow up the metrics)."""
        if path in _METHODS and (path not in BUSINESS_ROUTES.values() or path == self._business):
            return path
        return "other"

    @property
    def _business(self) -> str:
        return BUSINESS_ROUTES[self.settings.role]

    def answer(self, request: Request, route: str) -> Answer:
        if route == "other":
            return Answer(404, {"error": f"no route {request.path}", "role": self.settings.role})
        allowed = _METHODS[route]
        method = "GET" if request.method == "HEAD" else request.method
        if method not in allowed:
            return Answer(
                405, {"error": f"{request.method} not allowed"}, {"Allow": ", ".join(allowed)}
            )
        try:
            if route == "/ready":
                if self.draining.is_set():
                    return Answer(503, {"ready": False, "reason": "terminating"})
                return Answer(200, {"ready": True})
            if route == "/health":
                return Answer(*self.health())
            if route == "/metrics":
                return self._metrics()
            if route.startswith("/_sandbox/"):
                return self._admin(request, route)
            return self._business_request(request, route)
        except Exception:
            log(f"error serving {request.method} {request.path}:\n{traceback.format_exc()}")
            return Answer(500, {"error": "internal error"})

    def _metrics(self) -> Answer:
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        self.flags.get()
        self.fault()
        extra: list[bytes] = []
        if self.downstream is not None:
            self.downstream.refresh()
            extra.append(self.downstream.resilience.metrics.render())
        return Answer(200, self.metrics.render(*extra), content_type=CONTENT_TYPE_PLAIN_0_0_4)

    def _admin(self, request: Request, route: str) -> Answer:
        if not _is_loopback(request.client):
            return Answer(
                403, {"error": "the sandbox admin endpoints answer loopback clients only"}
            )
        if route == "/_sandbox/config":
            if self.downstream is not None:
                retry: dict[str, object] | None = self.downstream.refresh().model_dump()
            else:
                retry = self.retry.get().model_dump() if self.retry is not None else None
            return Answer(
                200,
                {
                    "retry": retry,
                    "flags": {
                        name: {
                            "enabled": f.enabled,
                            "rollout_percent": f.rollout_percent,
                            "allow": sorted(f.allow),
                        }
                        for name, f in self.flags.get().items()
                    },
                    "fault": fault_document(self.fault()),
                    "errors": {
                        w.name: w.last_error
                        for w in (self.flags, self.retry, self._fault_file)
                        if w is not None and w.last_error
                    },
                },
            )
        if request.method == "POST":
            try:
                fault = parse_fault(json.loads(request.body or b"{}"))
            except ValueError as exc:
                return Answer(400, {"error": str(exc)})
            self.set_fault(fault)
        elif request.method == "DELETE":
            self.set_fault(NO_FAULT)
        return Answer(200, fault_document(self.fault()))

    # -- business ------------------------------------------------------------------------

    def _business_request(self, request: Request, route: str) -> Answer:
        user = _user_of(request)
        attributes = {"url.path": request.path, "server.port": self.settings.port}
        with self.tracing.server_span(request.method, route, request.headers, attributes) as span:
            answer = self._serve_business(request, route, user)
            span.set_status(answer.status)
        return answer

    def _serve_business(self, request: Request, route: str, user: str | None) -> Answer:
        decision = self.decider.decide(self.fault())
        if decision.delay_seconds > 0:
            time.sleep(decision.delay_seconds)
        me = {"role": self.settings.role, "version": self.behaviour.tag, "pod": self.settings.pod}
        if decision.fail_status is not None:
            return Answer(decision.fail_status, {"ok": False, "error": decision.reason, **me})
        if route == "/orders":
            return self._write_order(request, me)
        flags = evaluate(self.flags.get(), user)
        if route == "/":
            return Answer(
                200, {"ok": True, **me, "namespace": self.settings.namespace, "flags": flags}
            )
        body: dict[str, object] = {"ok": True, **me, "user": user, "flags": flags, "chain": [me]}
        if self.settings.role == "payments":
            body["payment_id"] = uuid.uuid4().hex[:12]
            return Answer(200, body)
        if self.downstream is None:
            return Answer(
                503,
                {
                    "ok": False,
                    **me,
                    "error": f"SHOP_DOWNSTREAM_URL is not set: cannot call "
                    f"{self.settings.dependency}",
                },
            )
        result = self._call_downstream(request, user)
        if not result.ok:
            return Answer(
                503 if result.transient else 500,
                {
                    "ok": False,
                    **me,
                    "error": f"{self.downstream.name} failed: {result.error or result.status}",
                    "downstream_status": result.status,
                    "attempts": result.attempts,
                },
            )
        downstream_body = result.body if isinstance(result.body, dict) else {}
        chain = downstream_body.get("chain")
        body["chain"] = [me, *(chain if isinstance(chain, list) else [])]
        if self.settings.role == "checkout":
            body["order_id"] = uuid.uuid4().hex[:12]
        return Answer(200, body)

    def _write_order(self, request: Request, me: dict[str, str]) -> Answer:
        if self.orders is None:
            error = "SHOP_DATABASE_URL is not set: this pod has no database to write to"
            return Answer(503, {"ok": False, **me, "error": error})
        try:
            customer, cents = parse_order(json.loads(request.body or b"null"))
        except ValueError as exc:  # OrderError, or a body that is not JSON
            return Answer(400, {"ok": False, **me, "error": str(exc)})
        written = self.orders.write(customer, cents)
        if written.order_id is None:
            return Answer(written.status, {"ok": False, **me, "error": written.error})
        return Answer(200, {"ok": True, **me, "id": written.order_id})

    def _call_downstream(self, request: Request, user: str | None) -> CallResult:
        assert self.downstream is not None
        path = CALLS[self.settings.role]
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        with self.tracing.client_span(
            self.downstream.name, "POST", self.downstream.url + path
        ) as client:
            headers = {"X-Request-ID": request_id, **client.outgoing_headers()}
            result = self.downstream.call(path, {"user": user}, headers)
            client.set_status(result.status)
        return result

    def close(self) -> None:
        self.tracing.shutdown(2.0)
        if self.downstream is not None:
            self.downstream.close()
        if self.orders is not None:
            self.orders.close()
        self.access_log.close()


def _downstream(
    settings: Settings, env: Mapping[str, str], metrics: ShopMetrics
) -> tuple[WatchedJson[RetrySettings], Downstream | None]:
    """The retry settings and the client of a role that calls another service.

    Imported here, not at the top: httpx, pydantic and the resilience layer are most of a
    pod's start-up time, and payments (the leaf) needs none of them.
    """
    from sandbox.shop.downstream import Downstream, retry_defaults_from_env, retry_parser

    try:
        defaults = retry_defaults_from_env(env)
    except ValueError as exc:
        raise ConfigError(f"SHOP_RETRY_* settings are invalid: {exc}") from exc
    retry = WatchedJson(
        settings.retry_config,
        retry_parser(defaults),
        defaults,
        name="retry config",
        on_reload=metrics.config_reloaded,
    )
    assert settings.dependency is not None
    if settings.downstream_url is None:
        return retry, None
    return retry, Downstream(settings.dependency, settings.downstream_url, retry, metrics)


def _user_of(request: Request) -> str | None:
    users = parse_qs(request.query).get("user")
    if users and users[0]:
        return users[0]
    if request.body:
        try:
            document = json.loads(request.body)
        except ValueError:
            return None
        if isinstance(document, dict) and isinstance(document.get("user"), str):
            return document["user"] or None
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
