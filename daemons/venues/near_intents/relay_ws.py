"""Solver relay v2 WebSocket client ("Message Bus"; wire facts: `docs/near-intents-relay.md` (§n below)).

One `RelayWsClient` owns one logical connection to `wss://…/ws`: it connects with the partner JWT
as `Authorization: Bearer` (§1, without it the upgrade is refused with 403), subscribes `quote`
(with the pair filter, §2) and `quote_status` (optionally guaranteed, §6), routes events by
subscription id, answers quotes with `quote_response` (§4), and reconnects with capped, jittered
backoff under a reconnect budget (`daemons.venues.backoff.Backoff`, §8).

Usage::

    client = RelayWsClient(RelayWsConfig(url=..., jwt=jwt, quote_filter=QuoteFilter(...),
                                         instance_id="prod-1", guaranteed_status=True))
    await client.start()
    async for item in client.events():          # single consumer (or `await client.next_event()`)
        match item:
            case QuoteRequest():  answer = await client.send_quote_response(item.quote_id, out, signed)
            case QuoteStatus():   ...           # at-least-once: dedupe by quote_hash (§6)
            case Reject():        ...           # counted; never raised
            case LateRelayAnswer(): ...         # the relay answered after RelayTimeout
            case Connected() | Disconnected(): ...  # gaps in the stream
    await client.stop()                         # ends events() after a final Disconnected

Items arrive on an internal queue in wire order. `Connected` is queued once every subscription
of the session is in place, so no quote of a session is missed by a caller that waits for it
(quotes may only precede it if the relay sends them before answering the last subscribe).
`send_quote_response` returns a `RelayAnswer` (ok, or the relay's error string verbatim), raises
`RelayNotConnected` when nothing was sent, and `RelayTimeout` (or its subclass
`RelayConnectionLost`) when the frame went out but no answer came: the caller must treat that
as *uncertain*, never as a refusal. A late answer still arrives as `LateRelayAnswer`.

Guaranteed `quote_status` events carry a `seq`; with `auto_ack=True` (default) the client sends
`acknowledge [subscription, seq]` (§2) as soon as the item is queued. A daemon that must not
lose a fill across a crash sets `auto_ack=False` and calls `await client.ack(item)` after its
durable write; an ack whose connection has gone is skipped, because the relay redelivers
unacknowledged events on the next connection anyway.

Parsing is tolerant (§3, §9): `method` "event" (payload in `params.data`, with `metadata`
and `seq`) or the documented flat "subscribe" form; `min_deadline_ms` as int or decimal string;
amounts as u128 decimal strings, parsed to int; exactly one of `exact_amount_in`/`exact_amount_out`.
Anything else becomes a `Reject` with a reason code, counted in `state()`. The JWT is never logged
nor put in `state()` or reprs.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from daemons.core.amounts import parse_u128
from daemons.core.events import now_utc
from daemons.core.logs import get_logger
from daemons.venues.backoff import Backoff

log = get_logger("relay_ws", venue="near_intents")

SubKind = Literal["quote", "quote_status"]
Envelope = Literal["event", "subscribe"]
RejectCode = Literal[
    "invalid_json",  # not JSON, or not UTF-8
    "unknown_frame",  # JSON, but no shape we know
    "unknown_subscription",  # an event for a subscription id we do not hold (e.g. one just replaced)
    "missing_fields",  # a quote / status event without a required field
    "invalid_field",  # a field present but malformed (amount not u128, both amounts, ...)
    "oversize",  # over max_frame_bytes
    "filtered",  # a quote outside the current pair filter (§2: still filter client-side)
    "unmatched_reply",  # a JSON-RPC reply whose id we never sent
]


# --- caller-facing items --------------------------------------------------------------------


class QuoteFilter(BaseModel):
    """The `quote` subscription filter (§2). `tokens_in` is matched against the
    event's `defuse_asset_identifier_in` (what the taker gives) and `tokens_out` against
    `defuse_asset_identifier_out`; the only known client sends the same list for both, so the
    direction convention is UNCONFIRMED and matters only for asymmetric filters."""

    model_config = ConfigDict(frozen=True)

    tokens_in: tuple[str, ...]
    tokens_out: tuple[str, ...]

    def allows(self, asset_in: str, asset_out: str) -> bool:
        return asset_in in self.tokens_in and asset_out in self.tokens_out

    def wire(self) -> dict[str, list[str]]:
        return {"tokens_in": list(self.tokens_in), "tokens_out": list(self.tokens_out)}


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True)


class QuoteRequest(_Item):
    """A `quote` event (§3): the taker asks for a price on `asset_in` → `asset_out`."""

    kind: Literal["quote"] = "quote"
    quote_id: str
    asset_in: str  # defuse_asset_identifier_in: the solver receives it
    asset_out: str  # defuse_asset_identifier_out: the solver gives it
    exact_amount_in: int | None
    exact_amount_out: int | None
    min_deadline_ms: int
    metadata: dict[str, Any]  # e.g. partner_id, traceparent (§3)
    subscription: str
    seq: int | None
    envelope: Envelope
    raw: str
    received_at: datetime
    epoch: int = 0  # connection number the frame came on


class QuoteStatus(_Item):
    """A `quote_status` event (§5): one of our quotes was used. `quote_hash` is base58 of our
    NEP-413 digest; `intent_hash` is the taker's intent; `tx_hash` the NEAR transaction.
    Only `quote_hash` is required: a fill notice is never dropped for a missing secondary field."""

    kind: Literal["quote_status"] = "quote_status"
    quote_hash: str
    intent_hash: str | None
    tx_hash: str | None
    subscription: str
    seq: int | None
    guaranteed: bool
    envelope: Envelope
    raw: str
    received_at: datetime
    epoch: int = 0


class Reject(_Item):
    """A frame we could not use. Never raised; counted and handed to the caller."""

    kind: Literal["reject"] = "reject"
    raw: str
    reason: str
    code: RejectCode
    received_at: datetime
    subscription: str | None = None
    seq: int | None = None  # set for a malformed event on a guaranteed stream, so it can be acked
    guaranteed: bool = False
    epoch: int = 0


class RpcReply(_Item):
    """A JSON-RPC response frame (internal; answers go out as `RelayAnswer`)."""

    kind: Literal["reply"] = "reply"
    id: int | str | None
    result: Any = None
    error: Any = None
    has_error: bool = False
    raw: str
    received_at: datetime


class RelayAnswer(_Item):
    """The relay's answer to a `quote_response`. `error` is the relay's message verbatim
    (the JSON-RPC error string, or `error.message` of a `{code, message}` object, §4)."""

    ok: bool
    error: str | None
    error_code: int | None = None
    error_data: Any = None
    raw: str


class LateRelayAnswer(_Item):
    """The answer to a `quote_response` that had already raised `RelayTimeout`."""

    kind: Literal["late_answer"] = "late_answer"
    quote_id: str
    answer: RelayAnswer
    received_at: datetime


class Connected(_Item):
    kind: Literal["connected"] = "connected"
    at: datetime
    epoch: int
    subscriptions: dict[str, SubKind]
    instance_id: str | None


class Disconnected(_Item):
    kind: Literal["disconnected"] = "disconnected"
    at: datetime
    epoch: int
    reason: str


RelayItem = QuoteRequest | QuoteStatus | Reject | LateRelayAnswer | Connected | Disconnected
Frame = QuoteRequest | QuoteStatus | Reject | RpcReply


# --- errors -----------------------------------------------------------------------------------


class RelayWsError(Exception):
    """Base of the client's errors."""


class RelayNotConnected(RelayWsError):
    """Nothing was sent: there is no live connection."""


class RelayTimeout(RelayWsError):
    """The request went out and no answer came in time. For a quote_response the outcome is
    UNKNOWN: the relay may have accepted it (watch for `LateRelayAnswer` / `quote_status`)."""

    def __init__(self, method: str, request_id: int, detail: str) -> None:
        super().__init__(f"{method} (id {request_id}): {detail}")
        self.method = method
        self.request_id = request_id


class RelayConnectionLost(RelayTimeout):
    """The connection dropped after the request went out and before its answer: also uncertain."""


class RelayRequestError(RelayWsError):
    """A subscribe / unsubscribe / acknowledge request answered with a JSON-RPC error."""

    def __init__(self, method: str, message: str, raw: str) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message
        self.raw = raw


# --- pure parsing ---------------------------------------------------------------------------


def _amount(value: Any) -> int:
    """An amount of a quote request or answer: a u128 decimal string (§3) or a JSON integer from a
    lenient peer; zero is no amount to trade, so it is refused like a malformed one."""
    return parse_u128(value, positive=True, allow_int=True)


def _parse_ms(value: Any) -> int:
    # §3: the old gitbook shows "60000" as a string; working code has a number.
    if isinstance(value, bool):
        raise ValueError("min_deadline_ms must be an integer")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        n = int(value)
    else:
        raise ValueError(f"min_deadline_ms must be an integer or decimal string, got {value!r}")
    if n < 0:
        raise ValueError("min_deadline_ms must not be negative")
    return n


_NO_AMOUNT = "neither exact_amount_in nor exact_amount_out given; exactly one is required"


class _QuoteData(BaseModel):
    """Wire shape of a quote event's payload (§3, `IQuoteRequestData`)."""

    model_config = ConfigDict(extra="allow")

    quote_id: str = Field(min_length=1)
    defuse_asset_identifier_in: str = Field(min_length=1)
    defuse_asset_identifier_out: str = Field(min_length=1)
    exact_amount_in: int | None = None
    exact_amount_out: int | None = None
    min_deadline_ms: int

    @field_validator("exact_amount_in", "exact_amount_out", mode="before")
    @classmethod
    def _u128(cls, v: Any) -> int | None:
        return None if v is None else _amount(v)

    @field_validator("min_deadline_ms", mode="before")
    @classmethod
    def _ms(cls, v: Any) -> int:
        return _parse_ms(v)

    @model_validator(mode="after")
    def _exactly_one_amount(self) -> _QuoteData:
        if self.exact_amount_in is None and self.exact_amount_out is None:
            raise ValueError(_NO_AMOUNT)
        if self.exact_amount_in is not None and self.exact_amount_out is not None:
            raise ValueError("both exact_amount_in and exact_amount_out given; exactly one is allowed")
        return self


class _StatusData(BaseModel):
    """Wire shape of a quote_status payload (§5, `IPublishedQuoteData`)."""

    model_config = ConfigDict(extra="allow")

    quote_hash: str = Field(min_length=1)
    intent_hash: str | None = None
    tx_hash: str | None = None


def _validation_reason(exc: ValidationError) -> tuple[RejectCode, str]:
    missing = [".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "missing"]
    missing += ["exact_amount_in|exact_amount_out" for e in exc.errors() if _NO_AMOUNT in e["msg"]]
    if missing:
        return "missing_fields", "missing: " + ", ".join(missing)
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid_field", "; ".join(parts)


def _seq(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 40:
        return int(value)  # isdigit() alone admits "²", which int() refuses
    return None


@dataclass(frozen=True)
class SubscriptionInfo:
    kind: SubKind
    guaranteed: bool = False


def parse_frame(
    raw: str | bytes,
    *,
    subscriptions: Mapping[str, SubscriptionInfo],
    received_at: datetime,
    max_frame_bytes: int = 1 << 20,
    quote_filter: QuoteFilter | None = None,
    epoch: int = 0,
) -> Frame:
    """Classify one text frame. Pure: no I/O, never raises."""

    def reject(code: RejectCode, reason: str, text: str, **extra: Any) -> Reject:
        return Reject(raw=text, reason=reason, code=code, received_at=received_at, epoch=epoch, **extra)

    size = len(raw) if isinstance(raw, bytes) else len(raw)
    if size > max_frame_bytes or (
        isinstance(raw, str) and size * 4 > max_frame_bytes and len(raw.encode("utf-8", "replace")) > max_frame_bytes
    ):
        head = raw[:512] if isinstance(raw, str) else raw[:512].decode("utf-8", "replace")
        return reject("oversize", f"frame over {max_frame_bytes} bytes", head)
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return reject("invalid_json", "binary frame is not UTF-8", raw.decode("utf-8", "replace"))
    else:
        text = raw
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: pathologically deep nesting
        return reject("invalid_json", f"invalid JSON: {exc}", text)
    if not isinstance(msg, dict):
        return reject("unknown_frame", f"top-level JSON {type(msg).__name__}, expected an object", text)

    method = msg.get("method")
    if method is None and "id" in msg and ("result" in msg or "error" in msg):
        return RpcReply(
            id=msg["id"],
            result=msg.get("result"),
            error=msg.get("error"),
            has_error=msg.get("error") is not None,
            raw=text,
            received_at=received_at,
        )
    if method not in ("event", "subscribe"):
        return reject("unknown_frame", f"unknown method {method!r}" if method else "no method and no id", text)
    params = msg.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("subscription"), str):
        return reject("unknown_frame", "event without params.subscription", text)
    subscription: str = params["subscription"]
    envelope: Envelope = method
    seq = _seq(params.get("seq"))
    info = subscriptions.get(subscription)
    if info is None:
        return reject(
            "unknown_subscription",
            f"event for unknown subscription {subscription}",
            text,
            subscription=subscription,
            seq=seq,
        )
    # §3: working code nests the payload in params.data; the docs put it flat in params.
    data = params.get("data")
    if not isinstance(data, dict):
        data = params
    ctx = {"subscription": subscription, "seq": seq, "guaranteed": info.guaranteed}

    if info.kind == "quote":
        try:
            q = _QuoteData.model_validate(data)
        except ValidationError as exc:
            code, reason = _validation_reason(exc)
            return reject(code, f"quote: {reason}", text, **ctx)
        if quote_filter is not None and not quote_filter.allows(
            q.defuse_asset_identifier_in, q.defuse_asset_identifier_out
        ):
            return reject(
                "filtered",
                f"pair {q.defuse_asset_identifier_in} -> {q.defuse_asset_identifier_out} outside the quote filter",
                text,
                **ctx,
            )
        metadata = params.get("metadata")
        if not isinstance(metadata, dict):
            metadata = data.get("metadata")
            if not isinstance(metadata, dict):
                metadata = {}
        return QuoteRequest(
            quote_id=q.quote_id,
            asset_in=q.defuse_asset_identifier_in,
            asset_out=q.defuse_asset_identifier_out,
            exact_amount_in=q.exact_amount_in,
            exact_amount_out=q.exact_amount_out,
            min_deadline_ms=q.min_deadline_ms,
            metadata=metadata,
            subscription=subscription,
            seq=seq,
            envelope=envelope,
            raw=text,
            received_at=received_at,
            epoch=epoch,
        )
    try:
        s = _StatusData.model_validate(data)
    except ValidationError as exc:
        code, reason = _validation_reason(exc)
        return reject(code, f"quote_status: {reason}", text, **ctx)
    return QuoteStatus(
        quote_hash=s.quote_hash,
        intent_hash=s.intent_hash,
        tx_hash=s.tx_hash,
        subscription=subscription,
        seq=seq,
        guaranteed=info.guaranteed,
        envelope=envelope,
        raw=text,
        received_at=received_at,
        epoch=epoch,
    )


def answer_from_reply(reply: RpcReply) -> RelayAnswer:
    """Turn a quote_response reply into a RelayAnswer. §4: success is `result: "OK"`; an error is
    a string or a `{code, message}` object (UNCONFIRMED which the relay sends: both accepted)."""
    err = reply.error
    if err is not None:
        if isinstance(err, str):
            return RelayAnswer(ok=False, error=err, raw=reply.raw)
        if isinstance(err, dict):
            message = err.get("message")
            code = err.get("code")
            return RelayAnswer(
                ok=False,
                error=message if isinstance(message, str) else json.dumps(err, separators=(",", ":")),
                error_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                error_data=err.get("data"),
                raw=reply.raw,
            )
        return RelayAnswer(ok=False, error=json.dumps(err), raw=reply.raw)
    result = reply.result
    if result == "OK" or (isinstance(result, dict) and result.get("status") == "OK"):
        return RelayAnswer(ok=True, error=None, raw=reply.raw)
    if isinstance(result, dict) and isinstance(result.get("reason"), str):
        return RelayAnswer(ok=False, error=result["reason"], raw=reply.raw)
    return RelayAnswer(ok=False, error=f"unexpected result: {json.dumps(result)}", raw=reply.raw)


def _amount_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"amounts are int or u128 decimal strings, never {type(value).__name__}")
    return str(_amount(value))


# --- the client -------------------------------------------------------------------------------


@dataclass
class RelayWsConfig:
    url: str
    jwt: str = field(repr=False)
    instance_id: str | None = None  # §6: fixed per instance; required for guaranteed delivery
    quote_filter: QuoteFilter | None = None
    # False hands other-pair quotes to the caller as QuoteRequests (an ingest that records and
    # classifies every frame) instead of `filtered` Rejects
    client_side_filter: bool = True
    guaranteed_status: bool = False
    auto_ack: bool = True
    request_timeout_s: float = 5.0  # subscribe / unsubscribe / acknowledge (§2: the AMM solver uses 5 s)
    answer_timeout_s: float = 5.0  # quote_response
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0  # protocol pings; the relay's own keepalive is UNCONFIRMED (§8)
    ping_timeout_s: float | None = 20.0
    max_frame_bytes: int = 1 << 20  # larger frames are Rejects; the stream goes on
    hard_max_frame_bytes: int | None = None  # websockets closes (1009) above this; default 4 x max_frame_bytes
    queue_max: int = 10_000  # items beyond this are dropped and counted
    late_answer_memory: int = 1_000
    proxy: str | None = None
    # permessage-deflate off by default: frames are a few hundred bytes, and compressing each one
    # cost CPU on both ends of every request and answer for no useful saving
    compression: bool = False


@dataclass
class _Pending:
    future: asyncio.Future[RpcReply]
    method: str
    on_reply: Callable[[RpcReply], None] | None = None


class _Stop(enum.Enum):
    """The end of the items: queued by `stop()`, and again by each `next_event()` that takes it."""

    STOP = "stop"


_STOP: Final = _Stop.STOP


class RelayWsClient:
    """See the module docstring."""

    def __init__(self, config: RelayWsConfig, *, backoff: Backoff | None = None) -> None:
        if config.guaranteed_status and not config.instance_id:
            raise ValueError("guaranteed quote_status delivery needs an instance_id (docs/near-intents-relay.md §6)")
        self.config = config
        self.backoff = backoff or Backoff(initial_s=1.0, max_s=30.0)
        self._filter = config.quote_filter
        self._queue: asyncio.Queue[RelayItem | _Stop] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._late: OrderedDict[int, str] = OrderedDict()  # timed-out quote_response id -> quote_id
        self._subs: dict[str, SubscriptionInfo] = {}
        self._sub_lock = asyncio.Lock()
        self._ws: ClientConnection | None = None
        self._epoch = 0
        self._announced = False
        self._connected_since: datetime | None = None
        self._last_frame_at: datetime | None = None
        self._last_disconnect: str | None = None
        self._next_attempt_at: datetime | None = None
        self._connects = 0
        # every reject code and the main flows start at 0 so state() always shows them
        self._counts: Counter[str] = Counter(
            {
                k: 0
                for k in (
                    *get_args(RejectCode),
                    "frames",
                    "quotes",
                    "statuses",
                    "rejects",
                    "dropped",
                    "request_timeouts",
                )
            }
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="relay-ws")

    async def stop(self) -> None:
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        for t in list(self._bg):
            t.cancel()
        self._queue.put_nowait(_STOP)

    async def events(self) -> AsyncIterator[RelayItem]:
        """Every item in wire order, until `stop()`. One consumer at a time. Do not wrap
        `anext()` of it in a timeout (cancelling closes the generator): use `next_event()`."""
        while True:
            item = await self.next_event()
            if item is None:
                return
            yield item

    async def next_event(self) -> RelayItem | None:
        """The next item, or None once stopped. Safe to cancel (e.g. under `asyncio.wait_for`)."""
        item = await self._queue.get()
        if item is _STOP:
            self._queue.put_nowait(_STOP)  # every later call sees the end too
            return None
        return item

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._announced

    @property
    def connected_since(self) -> datetime | None:
        """When the current connection's subscriptions were confirmed; None while down."""
        return self._connected_since

    @property
    def quote_filter(self) -> QuoteFilter | None:
        return self._filter

    def ws_url(self) -> str:
        if not self.config.instance_id:
            return self.config.url
        parts = urlsplit(self.config.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "instance_id"]
        query.append(("instance_id", self.config.instance_id))
        return urlunsplit(parts._replace(query=urlencode(query)))

    # --- public requests ------------------------------------------------------------------

    async def send_quote_response(
        self,
        quote_id: str,
        quote_output: dict[str, Any],
        signed_data: dict[str, Any],
        other_quote_hashes: list[str] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> RelayAnswer:
        """Answer a quote (§4). `quote_output` is `{"amount_out": n}` for exact-in requests or
        `{"amount_in": n}` for exact-out; ints are sent as u128 decimal strings."""
        body: dict[str, Any] = {
            "quote_id": quote_id,
            "quote_output": {k: _amount_str(v) for k, v in quote_output.items() if v is not None},
            "signed_data": signed_data,
        }
        if other_quote_hashes:
            body["other_quote_hashes"] = list(other_quote_hashes)
        timeout = self.config.answer_timeout_s if timeout_s is None else timeout_s
        try:
            reply = await self._call("quote_response", [body], timeout_s=timeout, late_key=quote_id)
        except RelayTimeout:
            self._counts["answer_timeouts"] += 1
            raise
        answer = answer_from_reply(reply)
        self._counts["answers_ok" if answer.ok else "answers_refused"] += 1
        return answer

    async def set_quote_filter(self, quote_filter: QuoteFilter | None) -> None:
        """Change the pair filter. Client-side filtering switches at once; on a live connection
        the new `quote` subscription is made before the old one is dropped, so there is no gap."""
        async with self._sub_lock:
            self._filter = quote_filter
            if not self.connected:
                return  # the next connection subscribes with it
            old = [sid for sid, info in self._subs.items() if info.kind == "quote"]
            try:
                await self._subscribe("quote", self._quote_params(), guaranteed=False)
            except (RelayConnectionLost, RelayNotConnected):
                return  # the reconnect subscribes with the new filter
            for sid in old:
                self._subs.pop(sid, None)  # stray events of the old subscription now count as unknown
                try:
                    await self._call("unsubscribe", [sid], timeout_s=self.config.request_timeout_s)
                except RelayWsError as exc:
                    self._counts["unsubscribe_errors"] += 1
                    log.warning("relay_unsubscribe_failed", subscription=sid, error=str(exc))

    async def ack(self, item: QuoteStatus | Reject) -> bool:
        """Acknowledge a guaranteed event (§6). False when there is nothing to ack or its
        connection is gone (the relay will redeliver it)."""
        if item.seq is None or item.subscription is None or not item.guaranteed:
            return False
        if item.epoch != self._epoch or self._ws is None:
            self._counts["acks_skipped"] += 1
            return False
        try:
            await self._call("acknowledge", [item.subscription, item.seq], timeout_s=self.config.request_timeout_s)
        except RelayWsError as exc:
            # the ack reply format is UNCONFIRMED (§2); any non-error reply counts as done
            self._counts["ack_errors"] += 1
            log.warning("relay_ack_failed", subscription=item.subscription, seq=item.seq, error=str(exc))
            return False
        self._counts["acks"] += 1
        return True

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot for the control API / TUI."""
        return {
            "url": self.config.url,
            "instance_id": self.config.instance_id,
            "connected": self.connected,
            "connected_since": self._connected_since.isoformat() if self._connected_since else None,
            "epoch": self._epoch,
            "connects": self._connects,
            "subscriptions": {sid: {"kind": i.kind, "guaranteed": i.guaranteed} for sid, i in self._subs.items()},
            "last_frame_at": self._last_frame_at.isoformat() if self._last_frame_at else None,
            "counts": dict(self._counts),
            "reconnects_in_window": self.backoff.reconnects_in_window(),
            "reconnect_budget": self.backoff.budget,
            "reconnect_window_s": self.backoff.window_s,
            "budget_exhausted": self.backoff.budget_exhausted(),
            "backoff_attempts": self.backoff.attempts,
            "next_attempt_at": self._next_attempt_at.isoformat() if self._next_attempt_at else None,
            "last_disconnect_reason": self._last_disconnect,
            "filter": self._filter.wire() if self._filter else None,
            "guaranteed_status": self.config.guaranteed_status,
            "auto_ack": self.config.auto_ack,
            "pending_requests": len(self._pending),
            "queue_depth": self._queue.qsize(),
        }

    # --- connection loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._next_attempt_at = None
            try:
                ws = await connect(
                    self.ws_url(),
                    additional_headers={"Authorization": f"Bearer {self.config.jwt}"},
                    open_timeout=self.config.open_timeout_s,
                    close_timeout=self.config.close_timeout_s,
                    ping_interval=self.config.ping_interval_s,
                    ping_timeout=self.config.ping_timeout_s,
                    max_size=self.config.hard_max_frame_bytes or 4 * self.config.max_frame_bytes,
                    proxy=self.config.proxy,
                    compression="deflate" if self.config.compression else None,
                )
            except InvalidStatus as exc:
                # §1: 403 means the JWT is missing or refused; retried under the same budget
                reason = f"handshake refused: HTTP {exc.response.status_code}"
                self._counts["handshake_refused"] += 1
            except Exception as exc:  # noqa: BLE001 - any connect failure is retried with backoff
                reason = f"connect failed: {type(exc).__name__}: {exc}"
                self._counts["connect_failures"] += 1
            else:
                if self._stopping.is_set():
                    await ws.close()
                    break
                reason = await self._session(ws)
            if self._stopping.is_set():
                break
            self._last_disconnect = reason
            delay = self.backoff.next_delay()
            self._next_attempt_at = now_utc() + timedelta(seconds=delay)
            log.warning(
                "relay_ws_retry",
                reason=reason,
                delay_s=round(delay, 3),
                reconnects_in_window=self.backoff.reconnects_in_window(),
                budget_exhausted=self.backoff.budget_exhausted(),
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
        self._next_attempt_at = None

    async def _session(self, ws: ClientConnection) -> str:
        self._epoch += 1
        epoch = self._epoch
        self._ws = ws
        self._subs = {}
        self._announced = False
        reader = asyncio.create_task(self._reader(ws, epoch), name=f"relay-ws-reader-{epoch}")
        reason = "session ended"
        try:
            async with self._sub_lock:
                await self._subscribe("quote", self._quote_params(), guaranteed=False)
                status_params: list[Any] = (
                    ["quote_status", None, True] if self.config.guaranteed_status else ["quote_status"]
                )
                await self._subscribe(
                    "quote_status", status_params, guaranteed=self.config.guaranteed_status, announce=True
                )
        except RelayWsError as exc:
            await ws.close()
            reason = await reader
            if not isinstance(exc, RelayConnectionLost):
                reason = f"subscribe failed: {exc}"
        else:
            self.backoff.reset()
            reason = await reader
        finally:
            if not reader.done():
                reader.cancel()
            self._ws = None
            self._subs = {}
            self._fail_pending(reason)
        if self._announced:
            self._announced = False
            self._connected_since = None
            self._emit(Disconnected(at=now_utc(), epoch=epoch, reason=reason))
            log.warning("relay_ws_disconnected", epoch=epoch, reason=reason)
        return reason

    async def _reader(self, ws: ClientConnection, epoch: int) -> str:
        reason = await self._read_until_closed(ws, epoch)
        # Fail in-flight requests now, not at their timeout: a subscribe or an answer waiting on a
        # dead connection would otherwise hold up the reconnect.
        self._fail_pending(reason)
        return reason

    async def _read_until_closed(self, ws: ClientConnection, epoch: int) -> str:
        try:
            async for message in ws:
                self._on_frame(message, epoch)
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                self._count_reject(
                    Reject(
                        raw="",
                        reason=f"frame over the hard limit closed the connection: {exc}",
                        code="oversize",
                        received_at=now_utc(),
                        epoch=epoch,
                    )
                )
            return f"connection lost: {exc}"
        except Exception as exc:  # noqa: BLE001 - the reader must end with a reason, not kill the loop
            return f"reader failed: {type(exc).__name__}: {exc}"
        if self._stopping.is_set():
            return "stopped"
        return f"closed: code={ws.close_code} reason={ws.close_reason!r}"

    def _fail_pending(self, reason: str) -> None:
        for rid, p in self._pending.items():
            if not p.future.done():
                p.future.set_exception(RelayConnectionLost(p.method, rid, f"connection lost: {reason}"))
        self._pending.clear()

    # --- frames ---------------------------------------------------------------------------

    def _on_frame(self, message: str | bytes, epoch: int) -> None:
        received_at = now_utc()
        self._counts["frames"] += 1
        self._last_frame_at = received_at
        frame = parse_frame(
            message,
            subscriptions=self._subs,
            received_at=received_at,
            max_frame_bytes=self.config.max_frame_bytes,
            quote_filter=self._filter if self.config.client_side_filter else None,
            epoch=epoch,
        )
        if isinstance(frame, RpcReply):
            self._on_reply(frame)
        elif isinstance(frame, QuoteRequest):
            self._counts["quotes"] += 1
            self._emit(frame)
        elif isinstance(frame, QuoteStatus):
            self._counts["statuses"] += 1
            if self._emit(frame) and self.config.auto_ack:
                self._spawn(self.ack(frame))
        else:
            queued = self._count_reject(frame)
            if queued and frame.guaranteed and self.config.auto_ack:
                self._spawn(self.ack(frame))  # a poison event must not be redelivered forever

    def _on_reply(self, reply: RpcReply) -> None:
        rid = reply.id
        if isinstance(rid, str) and rid.isdigit():
            rid = int(rid)
        pending = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if pending is not None:
            if pending.on_reply is not None:
                pending.on_reply(reply)
            if not pending.future.done():
                pending.future.set_result(reply)
            return
        quote_id = self._late.pop(rid, None) if isinstance(rid, int) else None
        if quote_id is not None:
            self._counts["late_answers"] += 1
            self._emit(
                LateRelayAnswer(quote_id=quote_id, answer=answer_from_reply(reply), received_at=reply.received_at)
            )
            return
        self._count_reject(
            Reject(
                raw=reply.raw,
                reason=f"reply to unknown request id {reply.id!r}",
                code="unmatched_reply",
                received_at=reply.received_at,
            )
        )

    def _count_reject(self, reject: Reject) -> bool:
        self._counts["rejects"] += 1
        self._counts[reject.code] += 1
        return self._emit(reject)

    def _emit(self, item: RelayItem) -> bool:
        if self._queue.qsize() >= self.config.queue_max:
            self._counts["dropped"] += 1
            return False
        self._queue.put_nowait(item)
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # --- requests -------------------------------------------------------------------------

    def _quote_params(self) -> list[Any]:
        return ["quote", self._filter.wire()] if self._filter else ["quote"]

    async def _subscribe(self, kind: SubKind, params: list[Any], *, guaranteed: bool, announce: bool = False) -> str:
        info = SubscriptionInfo(kind=kind, guaranteed=guaranteed)
        epoch = self._epoch

        def on_reply(reply: RpcReply) -> None:
            # Runs inside the reader, before the next frame is parsed, so an event that follows the
            # subscribe answer immediately is already routed by its new id.
            if not reply.has_error and isinstance(reply.result, str):
                self._subs[reply.result] = info
                if announce and not self._announced:
                    self._announced = True
                    self._connects += 1
                    self._connected_since = reply.received_at
                    self._emit(
                        Connected(
                            at=reply.received_at,
                            epoch=epoch,
                            subscriptions={s: i.kind for s, i in self._subs.items()},
                            instance_id=self.config.instance_id,
                        )
                    )
                    log.info("relay_ws_connected", epoch=epoch, subscriptions=len(self._subs))

        reply = await self._call("subscribe", params, timeout_s=self.config.request_timeout_s, on_reply=on_reply)
        if reply.has_error or not isinstance(reply.result, str):
            message = answer_from_reply(reply).error or "no subscription id"
            raise RelayRequestError("subscribe", message, reply.raw)
        return reply.result

    async def _call(
        self,
        method: str,
        params: list[Any],
        *,
        timeout_s: float,
        on_reply: Callable[[RpcReply], None] | None = None,
        late_key: str | None = None,
    ) -> RpcReply:
        ws = self._ws
        if ws is None:
            raise RelayNotConnected(f"{method}: not connected")
        rid = next(self._ids)
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(future=future, method=method, on_reply=on_reply)
        frame = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, separators=(",", ":"))
        try:
            await ws.send(frame)
        except ConnectionClosed as exc:
            self._pending.pop(rid, None)
            # the frame may or may not have left: uncertain, like a timeout
            raise RelayConnectionLost(method, rid, f"connection closed while sending: {exc}") from exc
        try:
            return await asyncio.wait_for(future, timeout=timeout_s)
        except TimeoutError:
            self._pending.pop(rid, None)
            self._counts["request_timeouts"] += 1
            if late_key is not None:
                self._late[rid] = late_key
                while len(self._late) > self.config.late_answer_memory:
                    self._late.popitem(last=False)
            raise RelayTimeout(method, rid, f"no answer within {timeout_s}s") from None
        except RelayConnectionLost as exc:
            raise RelayConnectionLost(method, rid, str(exc)) from None
