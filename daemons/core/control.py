"""The control API every daemon serves: one aiohttp pattern on a Unix socket, optionally TCP.

Routes are declared once (`Route`), which gives both the handler wiring and `GET /openapi.json`.
A request body is parsed into its pydantic model before the handler runs: invalid JSON is a 400,
a body that does not fit the model a 422, each with a one-line message; handlers signal refusals
with `ControlError`. The Unix socket is created with mode 0660: its group (`QL_CONTROL_SOCKET_GROUP`,
else the daemon's own) is who may read; a request that changes state also needs `may_act` (root,
the daemon's user, or a member of `QL_CONTROL_ACT_GROUP`), else 403. The caller's kernel identity
(SO_PEERCRED) is recorded with every action, beside any operator name the body claims. The
loopback TCP listener, when enabled, refuses every request without the bearer token.
"""

from __future__ import annotations

import asyncio
import grp
import hmac
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemons.core.logs import get_logger
from daemons.core.secrets import read_secret_file

log = get_logger("control")


class OperatorAction(BaseModel):
    """Body of every state-changing endpoint that takes no other arguments."""

    model_config = ConfigDict(extra="forbid")
    operator: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)


class ControlError(Exception):
    """A refusal with an HTTP status (4xx) and a message the operator can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who made a request. `identity` is what the kernel says (the Unix socket peer's uid and
    user, or the TCP listener's bearer token holder); `operator` is the name the body claims,
    else that identity. Audit records keep both: a claim never replaces the identity."""

    operator: str
    reason: str | None
    identity: str = "unknown"


Handler = Callable[[web.Request, Any, Caller], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    # `body_optional`: an empty body is accepted and means the model's defaults.
    body_optional: bool = True


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


@dataclass(frozen=True)
class Peer:
    """The kernel's word on who is at the other end of a control connection."""

    identity: str
    uid: int | None = None  # a Unix socket peer's uid (SO_PEERCRED)
    gid: int | None = None
    user: str | None = None
    tcp: bool = False  # the loopback listener: its bearer token was checked already


def peer_of(request: web.Request) -> Peer:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return Peer(identity="unix-peer")
        _pid, uid, gid = struct.unpack("3i", creds)
        try:
            user: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = None
        return Peer(identity=f"uid:{uid}:{user}" if user else f"uid:{uid}", uid=uid, gid=gid, user=user)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return Peer(identity=f"tcp-token:{peer[0]}" if peer else "tcp-token", tcp=True)


def group_members_gid(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def may_act(peer: Peer, act_gid: int | None, own_uid: int) -> bool:
    """Who may change state (arm, limits, funding, withdrawals, ...): root, the daemon's own user,
    the bearer-token holder on TCP, and members of the act group. Everyone else who can open the
    socket (its group: the readers) may only read."""
    if peer.tcp:
        return True
    if peer.uid is None:
        return False
    if peer.uid in (0, own_uid):
        return True
    if act_gid is None:
        return False
    if peer.gid == act_gid:
        return True
    try:
        return act_gid in os.getgrouplist(peer.user, peer.gid) if peer.user and peer.gid is not None else False
    except OSError:
        return False


def _is_tcp(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def build_app(service: str, routes: list[Route], token: str | None, act_group: str | None = None) -> web.Application:
    """The aiohttp application for `service`; `token` guards requests arriving over TCP;
    requests that change state need `may_act` (`act_group` names the operators who may)."""
    act_gid = group_members_gid(act_group)
    own_uid = os.geteuid()

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if _is_tcp(request):
            supplied = request.headers.get("Authorization", "")
            if token is None or not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason or "error")
        except Exception as exc:  # a bug in a handler: say so in JSON, keep the daemon up
            log.exception("control_handler_failed", path=request.path)
            return _error(500, f"internal error in {request.method} {request.path}: {exc.__class__.__name__}")

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)

    def wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            body: Any = None
            raw = await request.read()
            if route.body is not None:
                if not raw.strip():
                    if not route.body_optional:
                        return _error(400, "a JSON body is required")
                    data: Any = {}
                else:
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError as exc:
                        return _error(400, f"body is not valid JSON: {exc}")
                    if not isinstance(data, dict):
                        return _error(400, "body must be a JSON object")
                try:
                    body = route.body.model_validate(data)
                except ValidationError as exc:
                    first = exc.errors(include_url=False)[0]
                    where = ".".join(str(p) for p in first["loc"]) or "body"
                    return _error(422, f"{where}: {first['msg']}")
            elif raw.strip():
                return _error(400, f"{route.method} {route.path} takes no body")
            peer = peer_of(request)
            if route.method != "GET" and not may_act(peer, act_gid, own_uid):
                return _error(
                    403,
                    f"{peer.identity} may read but not act: {route.method} {route.path} needs "
                    f"membership of the group {act_group or '(none configured)'}",
                )
            operator = getattr(body, "operator", None) or peer.identity
            caller = Caller(operator=operator, reason=getattr(body, "reason", None), identity=peer.identity)
            try:
                result = await route.handler(request, body, caller)
            except ControlError as exc:
                return _error(exc.status, exc.message)
            if isinstance(result, web.StreamResponse):
                return result
            return json_response(result)

        return endpoint

    for route in routes:
        app.router.add_route(route.method, route.path, wrap(route))

    spec = openapi_document(service, routes)

    async def openapi(_request: web.Request) -> web.Response:
        return json_response(spec)

    app.router.add_get("/openapi.json", openapi)
    return app


def openapi_document(service: str, routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "malformed request"},
                "409": {"description": "refused in the current state"},
                "422": {"description": "body does not fit the schema"},
            },
        }
        if route.path == "/healthz":
            op["responses"]["503"] = {"description": "unhealthy, with reasons"}
        if route.body is not None:
            op["requestBody"] = {
                "required": not route.body_optional,
                "content": {"application/json": {"schema": route.body.model_json_schema()}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"quoteloop {service} control API", "version": "1"},
        "paths": paths,
    }


def socket_path(control_dir: Path, service: str) -> Path:
    return control_dir / f"{service}.sock"


def _bind_unix(path: Path, gid: int | None = None) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a process that is gone
        else:
            raise RuntimeError(f"control socket {path} is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a umask that never lets others in, then set the exact mode: no window where the
    # socket is reachable more widely than 0660.
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if gid is not None:  # the readers' group: who may open the socket at all
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    sock.setblocking(False)
    return sock


class ControlServer:
    """Runs the app on the Unix socket and, if configured, on loopback TCP."""

    def __init__(
        self,
        service: str,
        routes: list[Route],
        control_dir: Path,
        *,
        tcp_port: int | None = None,
        token: str | None = None,
        socket_group: str | None = None,
        act_group: str | None = None,
    ) -> None:
        if tcp_port is not None and not token:
            raise ValueError("a TCP control port needs a bearer token (QL_CONTROL_TOKEN_FILE)")
        self.service = service
        self.path = socket_path(control_dir, service)
        self.tcp_port = tcp_port
        self.socket_gid = group_members_gid(socket_group)
        if socket_group and self.socket_gid is None:
            raise ValueError(f"control socket group {socket_group!r} does not exist (QL_CONTROL_SOCKET_GROUP)")
        self._app = build_app(service, routes, token, act_group)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        sock = _bind_unix(self.path, self.socket_gid)
        await web.SockSite(self._runner, sock).start()
        if self.tcp_port is not None:
            await web.TCPSite(self._runner, "127.0.0.1", self.tcp_port).start()
        log.info("control_listening", socket=str(self.path), tcp_port=self.tcp_port)

    async def stop(self) -> None:
        await self._runner.cleanup()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def read_token(path: Path | None) -> str | None:
    """The TCP listener's bearer token: a secret file like the others (owner-only, read through
    one descriptor, never logged)."""
    if path is None:
        return None
    return read_secret_file(path, "QL_CONTROL_TOKEN_FILE")


async def probe_health(control_dir: Path, service: str, timeout_s: float = 1.0) -> tuple[bool, str | None]:
    """Ask another daemon's `/healthz` over its socket: (healthy, why not)."""
    import aiohttp

    path = socket_path(control_dir, service)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(path)), timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as session:
            async with session.get(f"http://{service}/healthz") as resp:
                body = await resp.json(content_type=None)
                if resp.status == 200:
                    return True, None
                return False, "; ".join(body.get("reasons", [])) or f"HTTP {resp.status}"
    except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return False, f"{service} not reachable: {exc.__class__.__name__}"


class AuditWatch:
    """Strict audit mode: while history-writer says the audit history is impaired (or cannot be
    asked), `impaired` says why, and the daemon that runs this has no side effects."""

    def __init__(self, control_dir: Path, log: Any, interval_s: float = 1.0) -> None:
        self.control_dir = control_dir
        self.log = log
        self.interval_s = interval_s
        self.impaired: str | None = None

    async def run(self) -> None:
        while True:
            healthy, why = await probe_health(self.control_dir, "history-writer")
            impaired = None if healthy else (why or "history-writer unhealthy")
            if (impaired is None) != (self.impaired is None):
                self.log.warning("audit_history_impaired" if impaired else "audit_history_restored", detail=impaired)
            self.impaired = impaired
            await asyncio.sleep(self.interval_s)
