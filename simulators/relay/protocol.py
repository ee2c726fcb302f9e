"""The relay simulator's wire: what the daemons talk to, as `docs/near-intents-relay.md` (§n below)
describes it — the solver WebSocket at `/ws` and the taker JSON-RPC at `POST /rpc`.

The solver WebSocket:

- Auth: the upgrade without `Authorization: Bearer <jwt>` is refused with HTTP 403 (§1).
  `?instance_id=` names the guaranteed-delivery queue (§6); a second live connection with the
  same id takes over and the older one is closed (§6: "one connection may be live per id").
- JSON-RPC requests (§2): `subscribe` (`["quote", filter?]`, `["quote_status"]`,
  `["quote_status", null, true]`), `unsubscribe`, `acknowledge [subscription, seq]`,
  `quote_response` (§4). Every answer is checked by `VerifierState.check_quote_response`;
  success is `{"result": "OK"}`, a refusal is a JSON-RPC error whose message is the verifier's
  string verbatim. Error shape: `{"code": -32000, "message": "<verbatim>"}` — the SDK's schema
  allows a string or `{code, message}` (§4); the object is the JSON-RPC 2.0 standard form and
  the default, `error_shape="string"` sends the bare string instead.
- `emit_quote` sends a quote request to the `quote` subscribers whose filter matches
  (server-side filtering; `ignore_filter` bypasses it, as §2 says to filter client-side anyway),
  in the working-code envelope (`method: event`, `params.data`) or the docs' flat
  `method: subscribe` one (§3), and tracks it for the takers (`load.py`).
- `broadcast_status` sends a `quote_status` `{quote_hash, intent_hash, tx_hash}` (§5) to every
  `quote_status` subscriber. Guaranteed subscribers get a per-instance `seq`; unacknowledged
  statuses are kept per instance_id across reconnects, replayed on the next guaranteed
  subscribe, and redelivered every `redelivery_s`.

The taker JSON-RPC (§7): `publish_intents` / `publish_intent` (empty-intent payloads burn nonces
through `VerifierState.burn_nonces`; payloads whose intents are all `ft_withdraw` are executed at
once through `VerifierState.execute_ft_withdrawals`, then SETTLED with the simulated
transaction's hash; a batch seen before answers FAILED "already processed", which clients treat
as success), `get_status` (SETTLED with `data.hash` for the intents it settled; `set_status`
scripts any status, including the old `NOT_FOUND_OR_NOT_VALID_ANYMORE`). Auth: `Authorization:
Bearer` or `X-API-Key` (§1 UNCONFIRMED which one; either is accepted), otherwise HTTP 401.

Faults it takes (set with `POST /_sim/fault`): `refuse_upgrade` (HTTP 503), `close_on_connect`
(accept, then close at once), `disconnect` (close on the next client frame), `malformed_next`
(the next event frame is broken JSON), `drop_responses` (quote_response is checked but never
answered), `hold_responses` (its reply is held until `release_held()`, so it arrives late),
`drop_status_frames` (a guaranteed quote_status frame is lost on the way; unacknowledged, it is
delivered again), `lose_status` (a status is never sent nor queued), `drop_subscribe` (subscribe
is never answered), `rpc_http_500`, `rpc_hang` (held until the client gives up).

Timing, for the latency benchmark (`bench/latency.py`): every tracked quote's request frame is
stamped (`time.perf_counter_ns`) right after the last subscriber's send returns
(`request_sent`), and every `quote_response` frame when it arrives, before parsing
(`answer_delay_ns`).

Sim-only choices (the real wording is UNDOCUMENTED): the JSON-RPC error strings for an unknown
quote, a closed quote, bad params and unknown methods; burn intents report NOT_FOUND_OR_NOT_VALID.
Every frame received is recorded in `seen` (the JWT never is); every request sent and answer
received goes into the answer book (`answer_book.py`).

`RelayProtocol` is the shell that holds the connections and does the I/O: the wire records,
frames and request checks are `wire.py`, the quote_status queues `status_delivery.py`, the
taker's intents and publishing `taker_rpc.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import WSMsgType, web

from simulators.base import SimServer
from simulators.relay.answer_book import AnswerBook
from simulators.relay.status_delivery import StatusDelivery
from simulators.relay.taker_rpc import TakerIntents
from simulators.relay.wire import (
    ERR_BAD_PARAMS,
    ERR_METHOD_NOT_FOUND,
    ERR_QUOTE_CLOSED,
    ERR_UNKNOWN_QUOTE,
    Connection,
    Envelope,
    QuoteRecord,
    event_frame,
    filter_allows,
    parse_subscribe,
    quote_request,
    reply_frame,
    utcnow,
)
from simulators.verifier import VerifierError, VerifierState

PickRule = Literal["best", "first", "none"]

BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"


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


class RelayProtocol(SimServer):
    """The wire's state: connections, subscriptions, guaranteed-delivery queues, the quotes sent
    and their answers, the intents' statuses. `load.RelayLoad` adds the takers and the request
    streams, `api.RelaySimulator` the `/_sim/` routes."""

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
        self.conns: dict[int, Connection] = {}
        self.quotes: dict[str, QuoteRecord] = {}
        self.counts: dict[str, int] = {}
        self.status_delivery = StatusDelivery(
            self.conns, self.faults, send_event=self._send_event, record=self.record, count=self._count
        )
        self.queues = self.status_delivery.queues  # instance_id -> its guaranteed-delivery queue
        self.taker = TakerIntents(verifier, count=self._count)
        self.statuses = self.taker.statuses  # intent_hash -> get_status result
        self.published = self.taker.published
        self._release = asyncio.Event()
        self._redelivery: asyncio.Task[None] | None = None
        self._held: list[tuple[Connection, Any, dict[str, Any]]] = []
        # quote_id -> (perf_counter_ns when its request frame left, wall time then)
        self.request_sent: dict[str, tuple[int, float]] = {}
        # quote_id -> ns from the request frame leaving to the first quote_response arriving
        self.answer_delay_ns: dict[str, int] = {}
        # the venue's own record of requests sent and answers received (`GET /_sim/book`)
        self.book = AnswerBook()
        verifier.nonce_listeners.append(self.book.nonce_spent)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        url = await super().start()
        self._release = asyncio.Event()
        if self.config.redelivery_s:
            self._redelivery = asyncio.create_task(self.status_delivery.redelivery_loop(self.config.redelivery_s))
        return url

    async def stop(self) -> None:
        self._release.set()
        if self._redelivery is not None:
            self._redelivery.cancel()
            await asyncio.gather(self._redelivery, return_exceptions=True)
        self._redelivery = None
        await self.close_all(code=1001, message="simulator stopping")
        await super().stop()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def rpc_url(self) -> str:
        return f"{self.base_url}/rpc"

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def reset_state(self) -> None:
        self.queues.clear()
        self.quotes.clear()
        self.statuses.clear()
        self.published.clear()
        self.counts.clear()
        self._held.clear()
        self.request_sent.clear()
        self.answer_delay_ns.clear()
        self.book.clear()

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_post("/rpc", self._rpc_handler)

        async def on_shutdown(_app: web.Application) -> None:
            await self.close_all(code=1001, message="simulator stopping")

        app.on_shutdown.append(on_shutdown)

    def _quote_tracked(self, quote_id: str) -> None:
        """A new quote request is tracked in `quotes`: the takers (`load.py`) open its window."""

    # --- solver WebSocket --------------------------------------------------------------------

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
        conn = Connection(id=next(self._conn_ids), ws=ws, instance_id=instance_id)
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

    async def _reply(self, conn: Connection, rid: Any, *, result: Any = None, error: Any = None) -> None:
        await conn.send(reply_frame(rid, result=result, error=error))

    async def _on_ws_text(self, conn: Connection, text: str) -> None:
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

    async def _subscribe(self, conn: Connection, rid: Any, params: Any) -> None:
        if self.faults.take("drop_subscribe"):
            self._count("subscribe_dropped")
            return
        sub = parse_subscribe(params, conn.instance_id)
        if isinstance(sub, str):
            await self._reply(conn, rid, error=self._error(sub, -32602))
            return
        sid = str(uuid.uuid4())
        conn.subs[sid] = sub
        self._count("subscriptions")
        await self._reply(conn, rid, result=sid)
        if sub.guaranteed and conn.instance_id:
            await self.status_delivery.replay(conn, sid, conn.instance_id)

    async def _acknowledge(self, conn: Connection, rid: Any, params: Any) -> None:
        if not (
            isinstance(params, list) and len(params) == 2 and isinstance(params[0], str) and isinstance(params[1], int)
        ):
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        sub = conn.subs.get(params[0])
        if sub is None or not sub.guaranteed or conn.instance_id is None:
            await self._reply(conn, rid, error=self._error(ERR_BAD_PARAMS, -32602))
            return
        self.status_delivery.acknowledge(conn.instance_id, params[1])
        await self._reply(conn, rid, result="OK")  # the real ack reply format is UNCONFIRMED (§2)

    async def _quote_response(self, conn: Connection, rid: Any, params: Any, arrived_ns: int | None = None) -> None:
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

    async def _send_event(self, conn: Connection, text: str) -> bool:
        if self.faults.take("malformed_next"):
            text = text[: max(1, len(text) // 2)]  # cut mid-object: invalid JSON
            self._count("malformed_sent")
        return await conn.send(text)

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
        data = quote_request(
            asset_in, asset_out, exact_amount_in, exact_amount_out, quote_id, min_deadline_ms, omit, extra
        )
        qid = str(data.get("quote_id"))
        if track and not omit:
            existing = self.quotes.get(qid)
            if existing is not None and not existing.closed:
                existing.repeats += 1
            else:
                self.quotes[qid] = QuoteRecord(data=dict(data), sent_at=utcnow())
                self._quote_tracked(qid)
        sent = 0
        for conn in list(self.conns.values()):
            for sid, sub in list(conn.subs.items()):
                if sub.kind != "quote":
                    continue
                if (
                    self.config.server_filter
                    and not ignore_filter
                    and not filter_allows(sub.filter, asset_in, asset_out)
                ):
                    self._count("quotes_filtered")
                    continue
                if await self._send_event(conn, event_frame(sid, data, envelope, metadata=metadata, seq=seq)):
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

    # --- quote_status ------------------------------------------------------------------------

    async def broadcast_status(self, data: dict[str, Any]) -> None:
        """Send a quote_status to every plain subscriber once, and queue it for every known
        instance (guaranteed delivery, §6). The counted fault `lose_status` loses it entirely
        (not sent, not queued): an outcome only the chain can tell."""
        await self.status_delivery.broadcast(data)

    # --- taker JSON-RPC ----------------------------------------------------------------------

    def set_status(
        self, intent_hash: str, status: str, *, tx_hash: str | None = None, status_details: str | None = None
    ) -> None:
        self.taker.set_status(intent_hash, status, tx_hash=tx_hash, status_details=status_details)

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
        return web.json_response(self.taker.answer(msg, self._error))
