"""The chat-ops endpoint: Slack slash commands and a JSON API turned into deployment runs and
approvals on the Prefect API (``runbooks chatops``).

    POST /slack/commands   form-encoded slash command, signed by Slack (chatops.signing)
    POST /api/commands     {"text": ..., "user": ..., "channel": ...}, Authorization: Bearer
    GET  /health           "ok"

Why it is built this way:

- the signature is checked over the raw body *before* the form is parsed, and a request that
  fails it gets 401 with nothing read from it and nothing run;
- the ASGI layer is async only to read bodies and answer; everything that talks to Prefect or
  posts to Slack is synchronous (the project's rule: sync, not mixed) and runs in Starlette's
  thread pool, or in a watcher thread per started run. Threads are started with a copy of the
  current context, so the Prefect settings in effect where the app was built apply in them;
- ``run`` creates a flow run of the deployment ``<runbook>/<runbook>`` and returns at once (no
  worker is waited for) with an idempotency key taken from the Slack request (its team and
  trigger id, else the body's hash): Slack delivering the same command twice
  (``X-Slack-Retry-Num``) gets the same run back, never a second one. The JSON API takes the
  key from an ``Idempotency-Key`` header;
- the parameters are validated into the runbook's model over the deployment's defaults before
  the run is created: a bad value is answered with its field and nothing is started;
- the outcome is posted later to the command's ``response_url`` by a watcher bounded by
  ``watch_seconds``; posts go only to the block's allowed prefixes;
- ``approve`` / ``reject`` resume a paused run with the blue-green gate's ``ApprovalInput``
  fields, naming the caller as approver; a run that is not paused is answered with its state;
- Slack shows a reply only when the status is 200, so refusals other than 401/403 go back to
  Slack as 200 with an ephemeral text; the JSON API answers with the real status (400, 404,
  409, 503).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatops import commands as cmd
from chatops.config import ChatOpsSettings
from chatops.signing import SignatureError, check_bearer, verify_slack
from runbooks import catalogue
from runbooks.errors import NotFoundError, RunbookError, from_httpx

log = logging.getLogger("runbooks.chatops")

MAX_BODY_BYTES = 64 * 1024  # a slash command is a few hundred bytes
DEFAULT_PORT = 8787
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    """An answer: HTTP status, text for people, whether the channel sees it, data for bots."""

    status: int
    text: str
    public: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)


class ApiRequest(BaseModel):
    """The JSON API's body: the same command text as in Slack, and who asks from where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, max_length=4000, description="The command, as in Slack.")
    user: str = Field(min_length=1, max_length=200, description="Who asks (matched by rules).")
    channel: str = Field("api", min_length=1, max_length=200, description="Where from.")
    response_url: str | None = Field(None, description="Where to post the outcome of a run.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="run: parameters merged over the key=value words."
    )


class ChatOps:
    """The commands over the Prefect API (synchronous; called from worker threads)."""

    def __init__(self, settings: ChatOpsSettings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watched: set[UUID] = set()
        self._threads: list[threading.Thread] = []

    # -- entry point --

    def handle(
        self,
        text: str,
        caller: cmd.Caller,
        *,
        idempotency_key: str | None = None,
        response_url: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Reply:
        """Parse, authorise and execute one command; every refusal is a :class:`Reply`."""
        try:
            command = cmd.parse_command(text)
            if isinstance(command, cmd.RunCommand) and params:
                command = dataclasses.replace(
                    command, values=catalogue.merge(command.values, params)
                )
            reply = self._execute(command, caller, idempotency_key, response_url)
        except (cmd.CommandError, catalogue.CatalogueError) as exc:
            reply = Reply(400, str(exc))
        except cmd.Forbidden as exc:
            reply = Reply(403, f"forbidden: {exc}")
        except NotFoundError as exc:
            reply = Reply(404, str(exc))
        except RunbookError as exc:  # the Prefect API failed (transient) or refused the call
            reply = Reply(503 if exc.transient else 502, str(exc))
        log.info(
            "%s command from %s in %s: %s -> %s",
            caller.source,
            caller.describe_user(),
            caller.describe_channel(),
            text.split(maxsplit=1)[0] if text.strip() else "",
            reply.status,
        )
        return reply

    def _execute(
        self,
        command: cmd.Command,
        caller: cmd.Caller,
        idempotency_key: str | None,
        response_url: str | None,
    ) -> Reply:
        policy = self.settings.access
        if isinstance(command, cmd.ListCommand):
            policy.check("list", caller)
            return Reply(200, cmd.list_text(policy, caller))
        if isinstance(command, cmd.RunCommand):
            policy.check("run", caller, command.runbook)
            return self._run(command, caller, idempotency_key, response_url)
        if isinstance(command, cmd.StatusCommand):
            policy.check("status", caller)
            return self._status(command.run_id)
        return self._resume(command, caller)

    # -- run --

    def _run(
        self,
        command: cmd.RunCommand,
        caller: cmd.Caller,
        idempotency_key: str | None,
        response_url: str | None,
    ) -> Reply:
        from prefect.exceptions import ObjectNotFound

        if response_url and not self.settings.allows_response_url(response_url):
            return Reply(400, "response_url is not under an allowed prefix (response_url_prefixes)")
        name = f"{command.runbook}/{command.runbook}"
        with self._prefect(f"start a run of the deployment {name}") as client:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise NotFoundError(
                    f"no deployment {name} on the Prefect API: serve the deployments first "
                    "(`runbooks serve`)"
                ) from None
            defaults = (deployment.parameters or {}).get("params") or {}
            params = command.params(defaults if isinstance(defaults, Mapping) else {})
            run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"params": params.model_dump(mode="json", exclude_unset=True)},
                tags=["chatops"],
                idempotency_key=idempotency_key,
            )
        link = self._link(run.id)
        state = run.state.name if run.state else "Scheduled"
        typed = " ".join(f"{k}={v}" for k, v in command.values.items())
        text = (
            f"{caller.who} started {command.runbook} ({typed or 'deployment defaults'}): "
            f"flow run {run.name} is {state}" + (f" - {link}" if link else f" (id {run.id})")
        )
        if response_url:
            self._watch(run.id, command.runbook, response_url)
        data = {"flow_run_id": str(run.id), "flow_run_name": run.name, "url": link, "state": state}
        return Reply(200, text, public=True, data=data)

    # -- status --

    def _status(self, run_id: UUID) -> Reply:
        with self._prefect(f"read flow run {run_id}") as client:
            run = self._read_run(client, run_id)
            runbook = client.read_flow(run.flow_id).name
        state = run.state.name if run.state else "unknown"
        why = f": {run.state.message}" if run.state and run.state.message else ""
        link = self._link(run.id)
        text = f"{runbook} flow run {run.name} is {state}{why}" + (f" - {link}" if link else "")
        data = {"flow_run_id": str(run.id), "runbook": runbook, "state": state, "url": link}
        return Reply(200, text, data=data)

    # -- approve / reject --

    def _resume(self, command: cmd.ApproveCommand | cmd.RejectCommand, caller: cmd.Caller) -> Reply:
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.responses import SetStateStatus

        answer = command.run_input(caller)
        with self._prefect(f"{command.name} flow run {command.run_id}") as client:
            run = self._read_run(client, command.run_id)
            runbook = client.read_flow(run.flow_id).name
            self.settings.access.check(command.name, caller, runbook)
            if run.state is None or not run.state.is_paused():
                state = run.state.name if run.state else "without a state"
                return Reply(
                    409,
                    f"{runbook} flow run {run.name} is {state}, not paused: nothing to "
                    f"{command.name}",
                    data={"state": state},
                )
            result = client.resume_flow_run(run.id, run_input=answer)
        if result.status == SetStateStatus.REJECT:
            why = result.details.reason if hasattr(result.details, "reason") else ""
            if result.state is not None and result.state.type == StateType.FAILED:
                return Reply(409, f"{runbook} flow run {run.name} can no longer be resumed")
            return Reply(400, f"{runbook} flow run {run.name} refused the answer: {why}")
        link = self._link(run.id)
        verb = "approved" if command.name == "approve" else "rejected"
        said = f": {command.reason}" if command.reason else ""
        text = f"{verb} by {caller.who}{said} - {runbook} flow run {run.name} resumes" + (
            f" ({link})" if link else ""
        )
        data = {"flow_run_id": str(run.id), "runbook": runbook, "url": link, **answer}
        return Reply(200, text, public=True, data=data)

    # -- watching a run for its outcome --

    def _watch(self, run_id: UUID, runbook: str, response_url: str) -> None:
        """Post the run's outcome to ``response_url`` later (once per run, however often asked)."""
        with self._lock:
            if run_id in self._watched or self._stop.is_set():
                return
            self._watched.add(run_id)
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run,
                args=(self._follow, run_id, runbook, response_url),
                name=f"chatops-watch-{run_id}",
                daemon=True,
            )
            self._threads.append(thread)
        thread.start()

    def _follow(self, run_id: UUID, runbook: str, response_url: str) -> None:
        deadline = time.monotonic() + self.settings.watch_seconds
        link = self._link(run_id) or str(run_id)
        told_paused = False
        state_name = "unknown"
        while not self._stop.is_set():
            try:
                with self._prefect(f"read flow run {run_id}") as client:
                    state = self._read_run(client, run_id).state
            except RunbookError as exc:  # the next poll may succeed; the deadline bounds it
                log.warning("watching %s flow run %s: %s", runbook, run_id, exc)
                state = None
            if state is not None:
                state_name = state.name
                if state.is_final():
                    why = f": {state.message}" if state.message else ""
                    self._post(response_url, f"{runbook} flow run {state.name}{why} - {link}")
                    return
                if state.is_paused() and not told_paused:
                    told_paused = True
                    self._post(
                        response_url,
                        f"{runbook} flow run is waiting for approval: `approve {run_id} "
                        f"[reason]` or `reject {run_id} <reason>` - {link}",
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._post(
                    response_url,
                    f"{runbook} flow run still {state_name} after "
                    f"{self.settings.watch_seconds:g} s; follow it at {link}",
                )
                return
            self._stop.wait(min(self.settings.poll_seconds, remaining))

    def _post(self, url: str, text: str) -> None:
        body = {"response_type": "in_channel", "replace_original": False, "text": text}
        try:
            with self.settings.get_response_client() as client:
                client.post(url, json=body).raise_for_status()
        except (httpx.HTTPError, RunbookError) as exc:  # no caller to raise to: say it loudly
            error = from_httpx(exc, "post a chat-ops outcome to the response URL")
            log.error("%s (message was: %s)", error, text)

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop the watchers (they post nothing more) and wait for them, bounded."""
        self._stop.set()
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- Prefect helpers --

    @contextmanager
    def _prefect(self, action: str) -> Iterator[Any]:
        """A sync Prefect client with the block's timeout; HTTP errors become the error tree."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with get_client(
                httpx_settings=self.settings.prefect_httpx_settings(), sync_client=True
            ) as client:
                yield client
        except ObjectNotFound as exc:
            raise NotFoundError(f"{action}: not found on the Prefect API") from exc
        except httpx.HTTPError as exc:
            raise from_httpx(exc, action, target="prefect-api") from exc

    @staticmethod
    def _read_run(client: Any, run_id: UUID) -> Any:
        from prefect.exceptions import ObjectNotFound

        try:
            return client.read_flow_run(run_id)
        except ObjectNotFound:
            raise NotFoundError(f"no flow run {run_id} on the Prefect API") from None

    def _link(self, run_id: UUID) -> str | None:
        ui_url = self.settings.ui_url
        if ui_url is None:
            from prefect.settings import PREFECT_UI_URL

            ui_url = PREFECT_UI_URL.value()
        return cmd.run_link(ui_url, run_id)


# --- HTTP ---


def create_app(settings: ChatOpsSettings, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app; ``clock`` (Unix seconds) is what signatures' timestamps are checked against."""
    chatops = ChatOps(settings)

    async def slack_commands(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return _slack_reply(Reply(413, "the request body is too large"))
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else ""
        try:
            verify_slack(
                secret,
                timestamp=request.headers.get("x-slack-request-timestamp"),
                signature=request.headers.get("x-slack-signature"),
                body=body,
                now=clock(),
            )
        except SignatureError as exc:
            log.warning("refused a Slack request: %s", exc)
            return _slack_reply(Reply(401, f"unauthenticated: {exc}"))
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return _slack_reply(Reply(400, "the request body is not UTF-8 form data"))
        caller = cmd.Caller(
            user_id=form.get("user_id", ""),
            user_name=form.get("user_name", ""),
            channel_id=form.get("channel_id", ""),
            channel_name=form.get("channel_name", ""),
        )
        if not caller.user_id:
            return _slack_reply(Reply(400, "the slash command has no user_id"))
        reply = await run_in_threadpool(
            chatops.handle,
            _slack_unescape(form.get("text", "")),
            caller,
            idempotency_key=slack_idempotency_key(form, body),
            response_url=form.get("response_url") or None,
        )
        return _slack_reply(reply)

    async def api_commands(request: Request) -> Response:
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        try:
            check_bearer(token, request.headers.get("authorization"))
        except SignatureError as exc:
            return _json_reply(Reply(401, f"unauthenticated: {exc}"))
        body = await _read_body(request)
        if body is None:
            return _json_reply(Reply(413, "the request body is too large"))
        try:
            asked = ApiRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            return _json_reply(Reply(400, f"{where}: {first.get('msg', 'invalid')}"))
        key = request.headers.get("idempotency-key")
        reply = await run_in_threadpool(
            chatops.handle,
            asked.text,
            cmd.Caller(user_id=asked.user, channel_id=asked.channel, source="api"),
            idempotency_key=f"chatops-api-{_digest(key.encode())}" if key else None,
            response_url=asked.response_url,
            params=asked.params,
        )
        return _json_reply(reply)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await run_in_threadpool(chatops.close)

    app = Starlette(
        routes=[
            Route("/slack/commands", slack_commands, methods=["POST"]),
            Route("/api/commands", api_commands, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.chatops = chatops
    return app


def slack_idempotency_key(form: Mapping[str, str], body: bytes) -> str:
    """The same for every delivery of one slash command: its team + trigger id (unique per
    invocation), else the body's hash (a retry re-sends the same body)."""
    trigger = form.get("trigger_id")
    if trigger:
        team = form.get("team_id", "")
        return f"chatops-slack-{_digest(f'{team}:{trigger}'.encode())}"
    return f"chatops-slack-{_digest(body)}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:40]


def _slack_unescape(text: str) -> str:
    """Slack escapes exactly these three characters in a command's text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or ``None`` when it is larger than :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _slack_reply(reply: Reply) -> JSONResponse:
    status = reply.status if reply.status in (401, 403, 413) else 200
    visible = "in_channel" if reply.public and reply.status < 400 else "ephemeral"
    return JSONResponse({"response_type": visible, "text": reply.text}, status_code=status)


def _json_reply(reply: Reply) -> JSONResponse:
    ok = reply.status < 400
    body = {"ok": ok, "text": reply.text, **reply.data}
    if not ok:
        body["error"] = reply.text
    return JSONResponse(body, status_code=reply.status)


# --- running it ---


def serve(
    host: str = LOOPBACK, port: int = DEFAULT_PORT, settings: ChatOpsSettings | None = None
) -> None:
    """Serve the endpoint with uvicorn until interrupted (loopback unless told otherwise: put
    a TLS-terminating proxy in front of it before exposing it to Slack)."""
    import uvicorn

    if settings is None:
        raise TypeError("serve needs its settings: serve(host, port, ChatOpsSettings.load(name))")
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="info", ws="none", http="h11")


class RunningServer:
    """The endpoint served by uvicorn in a background thread (tests, the demo): ``with
    RunningServer(settings) as server: server.url``. Port 0 picks a free port."""

    def __init__(
        self,
        settings: ChatOpsSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        startup_timeout_seconds: float = 10.0,
    ) -> None:
        import uvicorn

        self.app = create_app(settings, clock=clock)
        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", ws="none", http="h11"
        )
        self._server = uvicorn.Server(config)
        self._timeout = startup_timeout_seconds
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def chatops(self) -> ChatOps:
        return self.app.state.chatops

    def __enter__(self) -> RunningServer:
        context = contextvars.copy_context()  # the Prefect settings in effect here
        self._thread = threading.Thread(
            target=context.run, args=(self._server.run,), name="chatops-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError(f"the chat-ops server did not start within {self._timeout} s")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._timeout)
