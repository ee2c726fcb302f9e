"""Solver relay v2 simulator: the solver WebSocket at `/ws` and the taker JSON-RPC at `POST /rpc`
(`docs/near-intents-relay.md` (§n below)).

What it models:

- WS auth: the upgrade without `Authorization: Bearer <jwt>` is refused with HTTP 403 (§1).
  `?instance_id=` names the guaranteed-delivery queue (§6); a second live connection with the
  same id takes over and the older one is closed (§6: "one connection may be live per id").
- JSON-RPC requests (§2): `subscribe` (`["quote", filter?]`, `["quote_status"]`,
  `["quote_status", null, true]`), `unsubscribe`, `acknowledge [subscription, seq]`,
  `quote_response` (§4). Every answer is checked by `VerifierState.check_quote_response`;
  success is `{"result": "OK"}`, a refusal is a JSON-RPC error whose message is the verifier's
  string verbatim. Error shape: `{"code": -32000, "message": "<verbatim>"}` — the SDK's schema
  allows a string or `{code, message}` (§4); the object is the JSON-RPC 2.0 standard form and
  the default, `error_shape="string"` sends the bare string instead.
- Quote requests go to `quote` subscribers whose filter matches (server-side filtering), in the
  working-code envelope (`method: event`, `params.data`) or the docs' flat `method: subscribe`
  one (§3). Tests send one with `POST /_sim/quote`, arbitrary text with `POST /_sim/send`, or a
  stream with `POST /_sim/scenario`; both can bypass the filter, as §2 says to filter
  client-side anyway.
- The takers: each quote collects answers for `collection_window_s`, then a taker picks one
  (`pick`: `best` price for the taker, `first`, `none`; sim-only `take_fraction` takes only that
  share of the quotes, evenly spread), settles it with `VerifierState.settle`
  (funding the simulated taker first unless `fund_taker=False`) and sends `quote_status`
  `{quote_hash, intent_hash, tx_hash}` (§5) to every `quote_status` subscriber. Guaranteed
  subscribers get a per-instance `seq`; unacknowledged statuses are kept per instance_id across
  reconnects, replayed on the next guaranteed subscribe, and redelivered every `redelivery_s`.
  `POST /_sim/settle {"quote_id"}` closes a quote's window at once (tests use it instead of waiting).
- RPC (§7): `publish_intents` / `publish_intent` (empty-intent payloads burn nonces through
  `VerifierState.burn_nonces`; payloads whose intents are all `ft_withdraw` are executed at
  once through `VerifierState.execute_ft_withdrawals`, then SETTLED with the
  simulated transaction's hash; a batch seen before answers FAILED "already processed", which
  clients treat as success), `get_status` (SETTLED with `data.hash` for the intents it settled;
  `POST /_sim/status` scripts any status, including the old `NOT_FOUND_OR_NOT_VALID_ANYMORE`).
  Auth: `Authorization: Bearer` or `X-API-Key` (§1 UNCONFIRMED which one; either is accepted),
  otherwise HTTP 401.

Faults (`POST /_sim/fault`): `refuse_upgrade` (HTTP 503), `close_on_connect` (accept, then close
at once), `disconnect` (close on the next client frame), `malformed_next` (the next event frame is
broken JSON), `drop_responses` (quote_response is checked but never answered), `hold_responses`
(its reply is held until `POST /_sim/release`, so it arrives late), `drop_status_frames` (a
guaranteed quote_status frame is lost on the way; unacknowledged, it is delivered again),
`lose_status` (a status is never sent nor queued), `drop_subscribe`
(subscribe is never answered), `rpc_http_500`, `rpc_hang` (held until the client gives up).
`POST /_sim/disconnect` closes every live WebSocket now.

Timing, for the latency benchmark (`bench/latency.py`): every tracked quote's request frame is
stamped (`time.perf_counter_ns`) right after the last subscriber's send returns, and every
`quote_response` frame when it arrives, before parsing; `GET /_sim/timing` returns, per quote id,
the send wall time and the request-to-answer delay (`?clear=1` starts over). `POST /_sim/load`
sends a fixed mix of request templates at an exact rate for a fixed time (paced on absolute
times, so a slow send does not lower the rate), and `POST /_sim/credit` deposits straight into
the simulated verifier (funding a benchmark run beyond what the runner credits).

Sim-only choices (the real wording is UNDOCUMENTED): the JSON-RPC error strings for an unknown
quote, a closed quote, bad params and unknown methods; burn intents report NOT_FOUND_OR_NOT_VALID.
Every frame received is recorded in `/_sim/seen` (the JWT never is). The venue's own record of
requests sent and answers received, with the verifier's balances at each answer and when each
answer's nonce was consumed, is `GET /_sim/book` (`simulators/answer_book.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import WSMsgType, web

from daemons.venues.near_intents.nep413 import MalformedPayload, quote_hash, signed_data_digest
from simulators.answer_book import AnswerBook
from simulators.base import SimServer, serve_standalone
from simulators.verifier import CheckedAnswer, Settlement, VerifierError, VerifierState, gross_up, token_fee_pips

PickRule = Literal["best", "first", "none"]
Envelope = Literal["event", "subscribe"]

# Sim-only strings (undocumented at the real relay).
ERR_UNKNOWN_QUOTE = "quote not found"
ERR_QUOTE_CLOSED = "quote is closed"
ERR_BAD_PARAMS = "invalid params"
ERR_METHOD_NOT_FOUND = "method not found"
ERR_GUARANTEED_NEEDS_INSTANCE = "guaranteed delivery requires the instance_id query parameter"
ERR_GUARANTEED_FILTER = "guaranteed delivery requires empty filters"
ERR_ALREADY_PROCESSED = "already processed"

BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RelaySimConfig:
    jwt: str = "sim-relay-jwt"
    taker_account_id: str = "taker.near"
    fee_pips: int | None = None  # set the verifier's fee (pips) at start; None keeps it
    fund_taker: bool = True  # deposit what the simulated taker needs before settling
    collection_window_s: float = 0.2
    pick: PickRule = "best"
    # Sim-only: the share of quotes a taker takes at all (the others close with no pick), spread
    # evenly (quote n is taken when floor(n * f) steps), so a load's settled share is exact.
    take_fraction: float = 1.0
    redelivery_s: float | None = 1.0  # resend unacked guaranteed statuses; None: only on resubscribe
    error_shape: Literal["object", "string"] = "object"
    error_code: int = -32000
    server_filter: bool = True


@dataclass
class _Sub:
    kind: Literal["quote", "quote_status"]
    filter: dict[str, Any] | None = None
    guaranteed: bool = False


@dataclass
class _Conn:
    id: int
    ws: web.WebSocketResponse
    instance_id: str | None
    subs: dict[str, _Sub] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> bool:
        if self.ws.closed:
            return False
        async with self.lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        return True


@dataclass
class _Pending:
    data: dict[str, Any]
    sent_at: float = 0.0


@dataclass
class _InstanceQueue:
    """A guaranteed-delivery queue `QS_<partner>_<instance_id>` (§6)."""

    next_seq: int = 1
    unacked: OrderedDict[int, _Pending] = field(default_factory=OrderedDict)
    acked: list[int] = field(default_factory=list)


@dataclass
class QuoteRecord:
    data: dict[str, Any]  # the quote request as sent (§3 data)
    sent_at: datetime
    answers: list[CheckedAnswer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    repeats: int = 0
    closed: bool = False
    outcome: dict[str, Any] | None = None
    window: asyncio.Task[Any] | None = None


class RelaySimulator(SimServer):
    name = "relay"

    def __init__(
        self,
        verifier: VerifierState,
        config: RelaySimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.verifier = verifier
        self.config = config or RelaySimConfig()
        if self.config.fee_pips is not None:
            verifier.set_fee(self.config.fee_pips)
        self._conn_ids = itertools.count(1)
        self.conns: dict[int, _Conn] = {}
        self.queues: dict[str, _InstanceQueue] = {}
        self.quotes: dict[str, QuoteRecord] = {}
        self.settlements: list[Settlement] = []
        self.statuses: dict[str, dict[str, Any]] = {}  # intent_hash -> get_status result
        self.published: set[str] = set()
        self.counts: dict[str, int] = {}
        self.scenarios: dict[int, asyncio.Task[dict[str, Any]]] = {}
        self.scenario_results: dict[int, dict[str, Any]] = {}
        self._scenario_ids = itertools.count(1)
        self._scenarios_running = asyncio.Event()  # cleared: every scenario waits before its next item
        self._scenarios_running.set()
        self._release = asyncio.Event()
        self._redelivery: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._held: list[tuple[_Conn, Any, dict[str, Any]]] = []
        # quote_id -> (perf_counter_ns when its request frame left, wall time then)
        self.request_sent: dict[str, tuple[int, float]] = {}
        # quote_id -> ns from the request frame leaving to the first quote_response arriving
        self.answer_delay_ns: dict[str, int] = {}
        self.loads: dict[int, dict[str, Any]] = {}
        self._closed_quotes = 0  # quotes whose window closed, for `take_fraction`
        # the venue's own record of requests sent and answers received (`GET /_sim/book`)
        self.book = AnswerBook()
        verifier.nonce_listeners.append(self.book.nonce_spent)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        url = await super().start()
        self._release = asyncio.Event()
        if self.config.redelivery_s:
            self._redelivery = asyncio.create_task(self._redelivery_loop(self.config.redelivery_s))
        return url

    async def stop(self) -> None:
        self._release.set()
        tasks = [t for t in (self._redelivery, *self.scenarios.values(), *self._windows(), *self._bg) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._redelivery = None
        await self.close_all(code=1001, message="simulator stopping")
        await super().stop()

    def _windows(self) -> list[asyncio.Task[Any]]:
        return [q.window for q in self.quotes.values() if q.window is not None]

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def rpc_url(self) -> str:
        return f"{self.base_url}/rpc"

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def reset_state(self) -> None:
        for t in (*self.scenarios.values(), *self._windows()):
            t.cancel()
        self.queues.clear()
        self.quotes.clear()
        self.settlements.clear()
        self.statuses.clear()
        self.published.clear()
        self.counts.clear()
        self.scenarios.clear()
        self.scenario_results.clear()
        self._held.clear()
        self.request_sent.clear()
        self.answer_delay_ns.clear()
        self.loads.clear()
        self.book.clear()

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "connections": [
                {
                    "id": c.id,
                    "instance_id": c.instance_id,
                    "subscriptions": {
                        s: {"kind": v.kind, "filter": v.filter, "guaranteed": v.guaranteed} for s, v in c.subs.items()
                    },
                }
                for c in self.conns.values()
            ],
            "counts": dict(self.counts),
            "quotes": len(self.quotes),
            "settlements": [
                {"quote_hash": s.quote_hash, "intent_hash": s.intent_hash, "tx_hash": s.tx_hash}
                for s in self.settlements
            ],
            "unacked": {i: list(q.unacked) for i, q in self.queues.items()},
            "acked": {i: list(q.acked) for i, q in self.queues.items()},
            "scenarios": {str(k): v for k, v in self.scenario_results.items()},
            "verifier": self.verifier.snapshot(),
        }

    # --- routes ------------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_post("/rpc", self._rpc_handler)
        app.router.add_post("/_sim/quote", self._sim_quote)
        app.router.add_post("/_sim/send", self._sim_send)
        app.router.add_post("/_sim/scenario", self._sim_scenario)
        app.router.add_post("/_sim/scenario/pause", self._sim_scenario_pause)
        app.router.add_post("/_sim/settle", self._sim_settle)
        app.router.add_post("/_sim/status", self._sim_status)
        app.router.add_post("/_sim/disconnect", self._sim_disconnect)
        app.router.add_post("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/release", self._sim_release)
        app.router.add_get("/_sim/timing", self._sim_timing)
        app.router.add_get("/_sim/book", self._sim_book)
        app.router.add_post("/_sim/load", self._sim_load)
        app.router.add_post("/_sim/credit", self._sim_credit)

        async def on_shutdown(_app: web.Application) -> None:
            await self.close_all(code=1001, message="simulator stopping")

        app.on_shutdown.append(on_shutdown)

    async def _sim_quote(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = await self.emit_quote(**body)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    async def _sim_send(self, request: web.Request) -> web.Response:
        body = await request.json()
        sent = await self.send_raw(body["text"], conn_id=body.get("conn_id"))
        return web.json_response({"sent": sent})

    async def _sim_scenario(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = self.start_scenario(**body)
        return web.json_response({"scenario_id": sid})

    async def _sim_scenario_pause(self, request: web.Request) -> web.Response:
        """`{"paused": true}` holds every running scenario before its next item; false resumes."""
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("paused"), bool):
            return web.json_response({"error": 'body must be {"paused": true|false}'}, status=400)
        if body["paused"]:
            self._scenarios_running.clear()
        else:
            self._scenarios_running.set()
        return web.json_response({"paused": body["paused"]})

    async def _sim_settle(self, request: web.Request) -> web.Response:
        body = await request.json()
        outcome = await self.close_quote(body["quote_id"], pick=body.get("pick"))
        return web.json_response(outcome)

    async def _sim_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.set_status(
            body["intent_hash"], body["status"], tx_hash=body.get("hash"), status_details=body.get("status_details")
        )
        return web.json_response({"ok": True})

    async def _sim_disconnect(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        closed = await self.close_all(
            code=int(body.get("code", 1012)), message=str(body.get("message", "sim disconnect"))
        )
        return web.json_response({"closed": closed})

    async def _sim_release(self, _request: web.Request) -> web.Response:
        return web.json_response({"released": await self.release_held()})

    async def _sim_timing(self, request: web.Request) -> web.Response:
        if request.query.get("summary") == "1":
            # counts and loads only: a caller polling a run in progress does not pay (nor make
            # the simulator pay) for every answer so far on each poll
            answered = sum(1 for qid in self.answer_delay_ns if qid in self.request_sent)
            return web.json_response(
                {
                    "sent": len(self.request_sent),
                    "answered": answered,
                    "unanswered": len(self.request_sent) - answered,
                    "loads": {str(k): v for k, v in self.loads.items()},
                }
            )
        body = {
            "sent": len(self.request_sent),
            "answers": {
                qid: {"sent_wall": self.request_sent[qid][1], "delay_ns": ns}
                for qid, ns in self.answer_delay_ns.items()
                if qid in self.request_sent
            },
            "unanswered": [qid for qid in self.request_sent if qid not in self.answer_delay_ns],
            "loads": {str(k): v for k, v in self.loads.items()},
        }
        if request.query.get("clear") == "1":
            self.request_sent.clear()
            self.answer_delay_ns.clear()
        return web.json_response(body)

    async def _sim_book(self, request: web.Request) -> web.Response:
        try:
            answers_from = max(0, int(request.query.get("answers_from", "0")))
            requests_from = max(0, int(request.query.get("requests_from", "0")))
        except ValueError:
            return web.json_response({"error": "answers_from and requests_from are integers"}, status=400)
        return web.json_response(
            {
                **self.book.page(answers_from, requests_from),
                "held_replies": len(self._held),
                "counts": dict(self.counts),
            }
        )

    async def _sim_load(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            load_id = self.start_load(
                rate_per_s=float(body["rate_per_s"]),
                duration_s=float(body["duration_s"]),
                templates=list(body["templates"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"load_id": load_id})

    async def _sim_credit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.verifier.deposit(str(body["account_id"]), str(body["asset_id"]), int(body["amount"]))
        return web.json_response(
            {"balance": str(self.verifier.balance(str(body["account_id"]), str(body["asset_id"])))}
        )

    def start_load(self, rate_per_s: float, duration_s: float, templates: list[dict[str, Any]]) -> int:
        """Send `rate_per_s * duration_s` quote requests, cycling through `templates` (keyword
        arguments of `emit_quote`), request i due at start + i / rate. Progress in `loads`."""
        if rate_per_s <= 0 or duration_s <= 0 or not templates:
            raise ValueError("rate_per_s and duration_s must be positive, templates non-empty")
        load_id = next(self._scenario_ids)
        total = int(rate_per_s * duration_s)
        progress: dict[str, Any] = {
            "rate_per_s": rate_per_s,
            "total": total,
            "sent": 0,
            "late_max_ms": 0.0,
            "done": False,
        }
        self.loads[load_id] = progress

        async def run() -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(total):
                due = start + i / rate_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:  # behind schedule: record by how much, and send at once
                    progress["late_max_ms"] = max(progress["late_max_ms"], -delay * 1000)
                await self.emit_quote(**templates[i % len(templates)])
                progress["sent"] = i + 1
            progress["elapsed_s"] = loop.time() - start
            progress["done"] = True
            return progress

        task = asyncio.create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return load_id

    async def _sim_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key, value in body.items():
            if not hasattr(self.config, key):
                return web.json_response({"error": f"unknown config {key}"}, status=400)
            setattr(self.config, key, value)
        return web.json_response({"ok": True})

    # --- WebSocket ---------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        instance_id = request.query.get("instance_id")
        authorized = request.headers.get("Authorization", "") == f"Bearer {self.config.jwt}"
        self.record("ws_upgrade", instance_id=instance_id, authorized=authorized)
        self._count("upgrades")
        if not authorized:
            self._count("upgrades_forbidden")
            return web.Response(status=403, text="Forbidden")  # §1: no JWT, no stream
        if self.faults.take("refuse_upgrade"):
            self._count("upgrades_refused")
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        conn = _Conn(id=next(self._conn_ids), ws=ws, instance_id=instance_id)
        if instance_id:
            for other in [c for c in self.conns.values() if c.instance_id == instance_id]:
                self.record("ws_takeover", instance_id=instance_id, old=other.id, new=conn.id)
                await other.ws.close(code=1008, message=b"replaced by a newer connection for this instance_id")
        self.conns[conn.id] = conn
        self._count("connections")
        if self.faults.take("close_on_connect"):
            await ws.close(code=1011, message=b"sim close_on_connect")
            self.conns.pop(conn.id, None)
            return ws
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.record("ws_in", conn=conn.id, binary=True, size=len(msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.conns.pop(conn.id, None)
            self.record("ws_closed", conn=conn.id, code=ws.close_code)
        return ws

    async def close_all(self, code: int = 1012, message: str = "sim disconnect") -> int:
        conns = list(self.conns.values())
        for c in conns:
            await c.ws.close(code=code, message=message.encode())
        return len(conns)

    def _error(self, message: str, code: int | None = None) -> Any:
        if self.config.error_shape == "string":
            return message
        return {"code": self.config.error_code if code is None else code, "message": message}

    async def _reply(self, conn: _Conn, rid: Any, *, result: Any = None, error: Any = None) -> None:
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            frame["error"] = error
        else:
            frame["result"] = result
        await conn.send(json.dumps(frame))

    async def _on_ws_text(self, conn: _Conn, text: str) -> None:
        arrived_ns = time.perf_counter_ns()  # before any parsing: the answer frame's arrival
        self.record("ws_in", conn=conn.id, text=text)
        self._count("frames_in")
        if self.faults.take("disconnect"):
            await conn.ws.close(code=1011, message=b"sim disconnect fault")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            await self._reply(conn, None, error=self._error("parse error", -32700))
            return
        if not isinstance(msg, dict):
            await self._reply(conn, None, error=self._error(ERR_BAD_PARAMS, -32600))
            return
        rid, method, params = msg.get("id"), msg.get("method"), msg.get("params")
        if method == "subscribe":
            await self._subscribe(conn, rid, params)
        elif method == "unsubscribe":
            sid = params[0] if isinstance(params, list) and params else None
            if isinstance(sid, str) and conn.subs.pop(sid, None) is not None:
                await self._reply(conn, rid, result="OK")
            else:
                await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
        elif method == "acknowledge":
            await self._acknowledge(conn, rid, params)
        elif method == "quote_response":
            await self._quote_response(conn, rid, params, arrived_ns)
        else:
            await self._reply(conn, rid, error=self._error(ERR_METHOD_NOT_FOUND, -32601))

    async def _subscribe(self, conn: _Conn, rid: Any, params: Any) -> None:
        if self.faults.take("drop_subscribe"):
            self._count("subscribe_dropped")
            return
        if not isinstance(params, list) or not params or params[0] not in ("quote", "quote_status"):
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        kind = params[0]
        flt = params[1] if len(params) > 1 else None
        guaranteed = len(params) > 2 and params[2] is True
        if flt is not None and not isinstance(flt, dict):
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        if guaranteed:
            # §6: JWT + instance_id, and "the second parameter (filters) must be empty"
            if not conn.instance_id:
                await self._reply(conn, rid, error=self._error(ERR_GUARANTEED_NEEDS_INSTANCE, -32602))
                return
            if flt:
                await self._reply(conn, rid, error=self._error(ERR_GUARANTEED_FILTER, -32602))
                return
        sid = str(uuid.uuid4())
        conn.subs[sid] = _Sub(kind=kind, filter=flt or None, guaranteed=guaranteed)
        self._count("subscriptions")
        await self._reply(conn, rid, result=sid)
        if guaranteed and conn.instance_id:
            # "Events wait while you are offline, then replay when you reconnect" (§6)
            queue = self.queues.setdefault(conn.instance_id, _InstanceQueue())
            for seq, pending in list(queue.unacked.items()):
                await self._deliver_guaranteed(conn, sid, seq, pending)
                self._count("status_replayed")

    async def _acknowledge(self, conn: _Conn, rid: Any, params: Any) -> None:
        if not (
            isinstance(params, list) and len(params) == 2 and isinstance(params[0], str) and isinstance(params[1], int)
        ):
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        sub = conn.subs.get(params[0])
        if sub is None or not sub.guaranteed or conn.instance_id is None:
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        queue = self.queues.setdefault(conn.instance_id, _InstanceQueue())
        if queue.unacked.pop(params[1], None) is not None:
            queue.acked.append(params[1])
            self._count("acks")
        await self._reply(conn, rid, result="OK")  # the real ack reply format is UNCONFIRMED (§2)

    async def _quote_response(self, conn: _Conn, rid: Any, params: Any, arrived_ns: int | None = None) -> None:
        drop = self.faults.take("drop_responses")
        if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], dict):
            if not drop:
                await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        response = params[0]
        sent = self.request_sent.get(str(response.get("quote_id")))
        if sent is not None and arrived_ns is not None:
            self.answer_delay_ns.setdefault(str(response.get("quote_id")), arrived_ns - sent[0])
        record = self.quotes.get(str(response.get("quote_id")))
        error: str | None = None
        if record is None:
            error = ERR_UNKNOWN_QUOTE
        elif record.closed:
            error = ERR_QUOTE_CLOSED
        else:
            try:
                answer = self.verifier.check_quote_response(record.data, response, utcnow())
            except VerifierError as exc:
                error = exc.message
                record.refused.append(exc.message)
            else:
                record.answers.append(answer)
                self.book.accepted(
                    answer.quote_id,
                    answer.signer_id,
                    answer.nonce,
                    answer.deadline.timestamp(),
                    {t: -d for t, d in answer.diff.items() if d < 0},
                    self.verifier.balances_of(answer.signer_id),
                )
        if error is not None:
            self.book.refused(str(response.get("quote_id")), error)
        self._count("answers_refused" if error else "answers_ok")
        if drop:
            # The answer was processed; only the reply is lost: the client must treat it as uncertain.
            self._count("responses_dropped")
            return
        reply: dict[str, Any] = {"error": self._error(error)} if error is not None else {"result": "OK"}
        if self.faults.take("hold_responses"):
            self._held.append((conn, rid, reply))  # sent by `release_held()` / POST /_sim/release
            return
        await self._reply(conn, rid, **reply)

    async def release_held(self) -> int:
        held, self._held = self._held, []
        for conn, rid, reply in held:
            await self._reply(conn, rid, **reply)
        return len(held)

    # --- emitting quotes ---------------------------------------------------------------------

    def _frame(
        self,
        sid: str,
        data: dict[str, Any],
        envelope: Envelope,
        *,
        metadata: dict[str, Any] | None = None,
        seq: int | None = None,
    ) -> str:
        if envelope == "subscribe":
            params: dict[str, Any] = {"subscription": sid, **data}
        else:
            params = {"subscription": sid, "data": data}
            if metadata is not None:
                params["metadata"] = metadata
        if seq is not None:
            params["seq"] = seq
        return json.dumps({"jsonrpc": "2.0", "method": envelope, "params": params})

    async def _send_event(self, conn: _Conn, text: str) -> bool:
        if self.faults.take("malformed_next"):
            text = text[: max(1, len(text) // 2)]  # cut mid-object: invalid JSON
            self._count("malformed_sent")
        return await conn.send(text)

    @staticmethod
    def _filter_allows(flt: dict[str, Any] | None, asset_in: str, asset_out: str) -> bool:
        if not flt:
            return True
        return asset_in in (flt.get("tokens_in") or []) and asset_out in (flt.get("tokens_out") or [])

    async def emit_quote(
        self,
        asset_in: str = BTC,
        asset_out: str = EURE,
        exact_amount_in: int | str | None = None,
        exact_amount_out: int | str | None = None,
        quote_id: str | None = None,
        min_deadline_ms: int | str = 60_000,
        metadata: dict[str, Any] | None = None,
        envelope: Envelope = "event",
        seq: int | None = None,
        ignore_filter: bool = False,
        omit: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        track: bool = True,
    ) -> dict[str, Any]:
        """Send one quote request to the matching `quote` subscribers and open its window.
        `omit`/`extra` shape deliberately broken requests (those are not tracked)."""
        if envelope not in ("event", "subscribe"):
            raise ValueError(f"envelope must be 'event' or 'subscribe', not {envelope!r}")
        if exact_amount_in is None and exact_amount_out is None and not omit:
            raise ValueError("give exact_amount_in or exact_amount_out")
        data: dict[str, Any] = {
            "quote_id": quote_id or str(uuid.uuid4()),
            "defuse_asset_identifier_in": asset_in,
            "defuse_asset_identifier_out": asset_out,
        }
        if exact_amount_in is not None:
            data["exact_amount_in"] = str(exact_amount_in)
        if exact_amount_out is not None:
            data["exact_amount_out"] = str(exact_amount_out)
        data["min_deadline_ms"] = min_deadline_ms
        for key in omit or []:
            data.pop(key, None)
        data.update(extra or {})
        qid = str(data.get("quote_id"))
        if track and not omit:
            existing = self.quotes.get(qid)
            if existing is not None and not existing.closed:
                existing.repeats += 1
            else:
                self.quotes[qid] = QuoteRecord(data=dict(data), sent_at=utcnow())
                self._open_window(qid)
        sent = 0
        for conn in list(self.conns.values()):
            for sid, sub in list(conn.subs.items()):
                if sub.kind != "quote":
                    continue
                if (
                    self.config.server_filter
                    and not ignore_filter
                    and not self._filter_allows(sub.filter, asset_in, asset_out)
                ):
                    self._count("quotes_filtered")
                    continue
                if await self._send_event(conn, self._frame(sid, data, envelope, metadata=metadata, seq=seq)):
                    sent += 1
        if sent and track and not omit:
            self.request_sent.setdefault(qid, (time.perf_counter_ns(), time.time()))
            self.book.request_sent(qid, sent)
        self._count("quotes_sent", sent)
        return {"quote_id": qid, "sent": sent, "data": data}

    async def send_raw(self, text: str, conn_id: int | None = None) -> int:
        sent = 0
        for conn in list(self.conns.values()):
            if conn_id is None or conn.id == conn_id:
                sent += await conn.send(text)
        self._count("raw_sent", sent)
        return sent

    # --- takers ------------------------------------------------------------------------------

    def _open_window(self, quote_id: str) -> None:
        record = self.quotes[quote_id]

        async def window() -> None:
            await asyncio.sleep(self.config.collection_window_s)
            await self.close_quote(quote_id, from_window=True)

        record.window = asyncio.create_task(window())

    async def close_quote(
        self, quote_id: str, *, pick: PickRule | None = None, from_window: bool = False
    ) -> dict[str, Any]:
        """End a quote's collection window now: the taker picks and settles (or not)."""
        record = self.quotes.get(quote_id)
        if record is None:
            return {"quote_id": quote_id, "settled": False, "error": ERR_UNKNOWN_QUOTE}
        if record.closed:
            return record.outcome or {"quote_id": quote_id, "settled": False}
        record.closed = True
        if record.window is not None and not from_window:
            record.window.cancel()
        rule = pick or self.config.pick
        if pick is None and from_window:
            fraction = min(1.0, max(0.0, float(self.config.take_fraction)))
            n = self._closed_quotes = self._closed_quotes + 1
            if math.floor(n * fraction) == math.floor((n - 1) * fraction):
                rule = "none"
        outcome: dict[str, Any] = {"quote_id": quote_id, "settled": False, "answers": len(record.answers), "rule": rule}
        chosen = self._choose(record, rule)
        if chosen is not None:
            outcome["quote_hash"] = chosen.quote_hash
            now = utcnow()
            try:
                if self.config.fund_taker:
                    self._fund_taker(chosen)
                settlement = self.verifier.settle(chosen, self.config.taker_account_id, now)
            except VerifierError as exc:
                outcome["error"] = exc.message
                self._count("settle_failed")
                self.record("settle_failed", quote_id=quote_id, quote_hash=chosen.quote_hash, error=exc.message)
            else:
                self.settlements.append(settlement)
                self.book.settled(chosen.signer_id, chosen.nonce, settlement.tx_hash)
                self._count("settled")
                # the status goes out once the block holding the execution is produced
                tx = self.verifier.transactions.get(settlement.tx_hash)
                if tx is not None:
                    await self.verifier.chain.reached(tx.height, "optimistic")
                self.set_status(settlement.intent_hash, "SETTLED", tx_hash=settlement.tx_hash)
                outcome.update(settled=True, intent_hash=settlement.intent_hash, tx_hash=settlement.tx_hash)
                await self.broadcast_status(
                    {
                        "quote_hash": chosen.quote_hash,
                        "intent_hash": settlement.intent_hash,
                        "tx_hash": settlement.tx_hash,
                    }
                )
        record.outcome = outcome
        return outcome

    def _choose(self, record: QuoteRecord, rule: PickRule) -> CheckedAnswer | None:
        if not record.answers or rule == "none":
            return None
        if rule == "first":
            return record.answers[0]
        if "exact_amount_in" in record.data:
            # exact in: the taker gives a fixed amount and wants the most out (§7.1 sortQuotes)
            return max(record.answers, key=lambda a: a.amount_out)
        return min(record.answers, key=lambda a: a.amount_in)

    def _fund_taker(self, answer: CheckedAnswer) -> None:
        token_in = next(t for t, d in answer.diff.items() if d > 0)
        needed = gross_up(answer.amount_in, token_fee_pips(token_in, answer.amount_in, self.verifier.fee_pips))
        short = needed - self.verifier.balance(self.config.taker_account_id, token_in)
        if short > 0:
            self.verifier.deposit(self.config.taker_account_id, token_in, short)

    async def broadcast_status(self, data: dict[str, Any]) -> None:
        """Send a quote_status to every plain subscriber once, and queue it for every known
        instance (guaranteed delivery, §6). The counted fault `lose_status` loses it entirely
        (not sent, not queued): an outcome only the chain can tell."""
        if self.faults.take("lose_status"):
            self.record("status_lost", quote_hash=data.get("quote_hash"))
            self._count("status_lost")
            return
        for conn in list(self.conns.values()):
            for sid, sub in list(conn.subs.items()):
                if sub.kind == "quote_status" and not sub.guaranteed:
                    await self._send_event(conn, self._frame(sid, data, "event"))
                    self._count("status_sent")
        for instance_id, queue in self.queues.items():
            seq = queue.next_seq
            queue.next_seq += 1
            pending = _Pending(data=dict(data))
            queue.unacked[seq] = pending
            for conn, sid in self._guaranteed_subs(instance_id):
                await self._deliver_guaranteed(conn, sid, seq, pending)

    def _guaranteed_subs(self, instance_id: str) -> list[tuple[_Conn, str]]:
        return [
            (c, sid)
            for c in self.conns.values()
            if c.instance_id == instance_id
            for sid, s in c.subs.items()
            if s.kind == "quote_status" and s.guaranteed
        ]

    async def _deliver_guaranteed(self, conn: _Conn, sid: str, seq: int, pending: _Pending) -> None:
        pending.sent_at = asyncio.get_running_loop().time()
        if self.faults.take("drop_status_frames"):
            # lost on the way: still unacknowledged, so the redelivery (or the next guaranteed
            # subscribe) sends it again
            self._count("status_frames_dropped")
            return
        await self._send_event(conn, self._frame(sid, pending.data, "event", seq=seq))
        self._count("status_sent")

    async def _redelivery_loop(self, every_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            for instance_id, queue in list(self.queues.items()):
                for conn, sid in self._guaranteed_subs(instance_id):
                    for seq, pending in list(queue.unacked.items()):
                        if loop.time() - pending.sent_at >= every_s:
                            await self._deliver_guaranteed(conn, sid, seq, pending)
                            self._count("status_redelivered")

    # --- scenario ----------------------------------------------------------------------------

    def start_scenario(
        self,
        count: int = 100,
        rate_per_s: float = 100.0,
        pairs: list[list[str]] | None = None,
        sizes: list[int] | None = None,
        sizes_by_asset: dict[str, list[int]] | None = None,  # the fixed side's asset -> its sizes
        exact_out_ratio: float = 0.3,
        other_pairs: list[list[str]] | None = None,
        other_pair_ratio: float = 0.1,
        other_pairs_bypass_filter: bool = True,
        flat_envelope_ratio: float = 0.3,
        string_deadline_ratio: float = 0.1,
        repeat_ratio: float = 0.05,
        malformed_ratio: float = 0.05,
        min_deadline_ms: int = 60_000,
        seed: int = 0,
    ) -> int:
        """Start a background stream of `count` items at `rate_per_s`: quotes in both directions
        of `pairs`, exact-in and exact-out, other pairs mixed in, both envelopes, repeated quote
        ids and malformed frames, by the given ratios. Progress is in `/_sim/seen` `scenarios`;
        `POST /_sim/scenario/pause` holds and resumes every scenario."""
        scenario_id = next(self._scenario_ids)
        rng = random.Random(seed)
        pairs = pairs or [[BTC, EURE]]
        directions = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
        others = [tuple(p) for p in (other_pairs or [["nep141:wrap.near", "nep141:usdt.tether-token.near"]])]
        sizes = sizes or [10_000, 100_000, 1_000_000]
        result: dict[str, Any] = {"sent": 0, "done": False, "by_kind": {}}
        self.scenario_results[scenario_id] = result
        sent_ids: list[str] = []

        def bump(kind: str) -> None:
            result["by_kind"][kind] = result["by_kind"].get(kind, 0) + 1

        async def run() -> dict[str, Any]:
            interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
            malformed = [
                '{"jsonrpc":"2.0","method":"event","params":',  # cut off
                "not json at all",
                json.dumps({"jsonrpc": "2.0", "method": "mystery", "params": {}}),
            ]
            for i in range(count):
                await self._scenarios_running.wait()
                roll = rng.random()
                if roll < malformed_ratio:
                    text = malformed[i % len(malformed)]
                    if i % 4 == 3:  # a quote event missing its quote_id, on a real subscription
                        for conn in list(self.conns.values()):
                            for sid, sub in conn.subs.items():
                                if sub.kind == "quote":
                                    await conn.send(
                                        self._frame(
                                            sid,
                                            {
                                                "defuse_asset_identifier_in": BTC,
                                                "defuse_asset_identifier_out": EURE,
                                                "exact_amount_in": "1",
                                                "min_deadline_ms": 60000,
                                            },
                                            "event",
                                        )
                                    )
                    else:
                        await self.send_raw(text)
                    bump("malformed")
                elif roll < malformed_ratio + repeat_ratio and sent_ids:
                    qid = rng.choice(sent_ids)
                    rec = self.quotes.get(qid)
                    if rec is not None:
                        d = rec.data
                        await self.emit_quote(
                            d["defuse_asset_identifier_in"],
                            d["defuse_asset_identifier_out"],
                            d.get("exact_amount_in"),
                            d.get("exact_amount_out"),
                            quote_id=qid,
                            min_deadline_ms=d["min_deadline_ms"],
                        )
                    bump("repeat")
                else:
                    other = rng.random() < other_pair_ratio
                    a, b = rng.choice(others) if other else rng.choice(directions)
                    size = rng.choice(sizes)
                    exact_out = rng.random() < exact_out_ratio
                    if sizes_by_asset:  # drawn after: without it a seed streams what it always did
                        size = rng.choice(sizes_by_asset.get(b if exact_out else a, sizes))
                    out = await self.emit_quote(
                        a,
                        b,
                        exact_amount_in=None if exact_out else size,
                        exact_amount_out=size if exact_out else None,
                        min_deadline_ms=str(min_deadline_ms)
                        if rng.random() < string_deadline_ratio
                        else min_deadline_ms,
                        metadata={"partner_id": "1click"},
                        envelope="subscribe" if rng.random() < flat_envelope_ratio else "event",
                        ignore_filter=other and other_pairs_bypass_filter,
                    )
                    if not other:
                        sent_ids.append(out["quote_id"])  # repeats are of in-filter quotes only
                    bump("other_pair" if other else ("exact_out" if exact_out else "exact_in"))
                result["sent"] = i + 1
                if interval:
                    await asyncio.sleep(interval)
            result["done"] = True
            return result

        self.scenarios[scenario_id] = asyncio.create_task(run())
        return scenario_id

    # --- RPC ---------------------------------------------------------------------------------

    def set_status(
        self, intent_hash: str, status: str, *, tx_hash: str | None = None, status_details: str | None = None
    ) -> None:
        result: dict[str, Any] = {"intent_hash": intent_hash, "status": status}
        if tx_hash is not None:
            result["data"] = {"hash": tx_hash}
        if status_details is not None:
            result["status_details"] = status_details
        self.statuses[intent_hash] = result

    async def _rpc_handler(self, request: web.Request) -> web.StreamResponse:
        auth_header = request.headers.get("Authorization")
        api_key = request.headers.get("X-API-Key")
        authorized = auth_header == f"Bearer {self.config.jwt}" or api_key == self.config.jwt
        text = await request.text()
        self.record(
            "rpc_in",
            text=text,
            authorized=authorized,
            query=dict(request.query),
            has_bearer=auth_header is not None,
            has_api_key=api_key is not None,
        )
        if not authorized:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "Unauthorized"}}, status=401
            )
        if self.faults.take("rpc_http_500"):
            return web.Response(status=500, text="Internal Server Error")
        if self.faults.take("rpc_hang"):
            await self._release.wait()
            return web.Response(status=504)
        try:
            msg = json.loads(text)
        except ValueError:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            )
        rid = msg.get("id") if isinstance(msg, dict) else None
        method = msg.get("method") if isinstance(msg, dict) else None
        params = msg.get("params") if isinstance(msg, dict) else None
        arg = params[0] if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict) else None

        def error(message: str, code: int) -> web.Response:
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": self._error(message, code)})

        def result(value: Any) -> web.Response:
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": value})

        if method in ("publish_intents", "publish_intent"):
            if arg is None:
                return error(ERR_BAD_PARAMS, -32602)
            many = method == "publish_intents"
            signed = arg.get("signed_datas") if many else [arg.get("signed_data")]
            if not isinstance(signed, list) or not signed or not all(isinstance(s, dict) for s in signed):
                return error(ERR_BAD_PARAMS, -32602)
            return result(self._publish(signed, many))
        if method == "get_status":
            if arg is None or not isinstance(arg.get("intent_hash"), str):
                return error(ERR_BAD_PARAMS, -32602)
            status = self.statuses.get(arg["intent_hash"]) or {
                "intent_hash": arg["intent_hash"],
                "status": "NOT_FOUND_OR_NOT_VALID",
            }
            tx = self.verifier.transactions.get(str((status.get("data") or {}).get("hash")))
            if status.get("status") == "SETTLED" and tx is not None and tx.height > self.verifier.chain.head():
                # executed in the block being produced: broadcast, not settled yet (§7.4 statuses)
                status = {**status, "status": "TX_BROADCASTED"}
            return result(status)
        return error(ERR_METHOD_NOT_FOUND, -32601)

    def _publish(self, signed_datas: list[dict[str, Any]], many: bool) -> dict[str, Any]:
        hashes: list[str] = []
        for s in signed_datas:
            try:
                hashes.append(quote_hash(signed_data_digest(s)))
            except (MalformedPayload, ValueError):
                hashes.append("")
        key = "intent_hashes" if many else "intent_hash"

        def shaped(status: str, **extra: Any) -> dict[str, Any]:
            return {"status": status, key: hashes if many else hashes[0], **extra}

        if all(h and h in self.published for h in hashes):
            # a retried publish (§7.3: the SDK treats "already processed" as success)
            return shaped("FAILED", reason=ERR_ALREADY_PROCESSED)
        if _only_ft_withdrawals(signed_datas):
            # Withdrawals (docs/poa-bridge.md §8): executed at once as one `execute_intents`, SETTLED with its tx hash.
            try:
                done = self.verifier.execute_ft_withdrawals(signed_datas, utcnow())
            except VerifierError as exc:
                self._count("publish_failed")
                return shaped("FAILED", reason=exc.message)
            for w in done:
                self.set_status(w.intent_hash, "SETTLED", tx_hash=w.tx_hash)
            self.published.update(hashes)
            self._count("ft_withdrawals", len(done))
            return shaped("OK")
        try:
            self.verifier.burn_nonces(signed_datas, utcnow())
        except VerifierError as exc:
            self._count("publish_failed")
            return shaped("FAILED", reason=exc.message)
        self.published.update(hashes)
        self._count("nonces_burned", len(hashes))
        return shaped("OK")


def _only_ft_withdrawals(signed_datas: list[dict[str, Any]]) -> bool:
    """True when every payload's message carries intents and all of them are `ft_withdraw`
    (anything else keeps the nonce-burn path and its refusals)."""
    for s in signed_datas:
        payload = s.get("payload")
        message = payload.get("message") if isinstance(payload, dict) else None
        try:
            doc = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            return False
        intents = doc.get("intents") if isinstance(doc, dict) else None
        if not isinstance(intents, list) or not intents:
            return False
        if not all(isinstance(i, dict) and i.get("intent") == "ft_withdraw" for i in intents):
            return False
    return True


# --- standalone --------------------------------------------------------------------------------


async def _serve(host: str, port: int, config: RelaySimConfig) -> None:
    sim = RelaySimulator(VerifierState(), config, host, port)
    await serve_standalone([sim], lambda u: f"relay simulator on {u[0]} (WS {sim.ws_url}, RPC POST {sim.rpc_url})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.relay", description="Solver relay v2 simulator (WS /ws, JSON-RPC POST /rpc)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--jwt", default=RelaySimConfig.jwt, help="the bearer token the simulator expects")
    parser.add_argument("--window", type=float, default=1.0, help="taker collection window per quote, seconds")
    parser.add_argument("--pick", choices=["best", "first", "none"], default="best")
    parser.add_argument("--taker", default=RelaySimConfig.taker_account_id)
    args = parser.parse_args(argv)
    config = RelaySimConfig(jwt=args.jwt, collection_window_s=args.window, pick=args.pick, taker_account_id=args.taker)
    asyncio.run(_serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
