"""Kraken WebSocket v2 client: the primary BTC/EUR price source for market-reference-ingest.

It keeps one public v2 connection, subscribes `ticker` with `event_trigger: "bbo"` (and, if asked,
`book` depth 10 with CRC32 verification), and turns the stream into typed `KrakenTick`s: best
bid/ask with sizes, last, the venue's timestamp when it sends one and our own receive time.

Wire truth, with its sources: `docs/kraken.md` (§n below). Liveness follows §10
and §12: two clocks, connection silence (no frame of any kind for ~5 s: close and reconnect)
and per-symbol data age (the ticker quiet for too long while heartbeats still flow: re-subscribe
once, then reconnect), because a v2 subscription can be acked and then deliver nothing.
Reconnects are paced by the shared `Backoff` and every subscription is replayed on each connect,
since Kraken never restores them. The client never decides whether a price is good enough to
trade on; it reports what it saw and why it is degraded, and the daemon's policy decides.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from daemons.core.events import now_utc
from daemons.core.logs import get_logger
from daemons.venues.backoff import Backoff

DEFAULT_URL = "wss://ws.kraken.com/v2"
DEFAULT_SYMBOL = "BTC/EUR"  # §2: v2 spells it BTC, not XBT (UNCONFIRMED live, §16)
CHECKSUM_LEVELS = 10  # §6: the CRC32 always covers the top 10 levels whatever the depth
BOOK_DEPTHS = (10, 25, 100, 500, 1000)  # §6
INT32_MAX = 2**31 - 1


class KrakenParseError(ValueError):
    """A frame that is not JSON, or does not fit the shape its own keys announce."""


# --- wire models (§3–§8) -----------------------------------------------------------------------


def _no_float(value: Any) -> Any:
    # Frames are decoded with parse_float=Decimal, so a float here means someone bypassed that.
    if isinstance(value, float) or isinstance(value, bool):
        raise ValueError("prices are parsed from the JSON text as Decimal, never float")
    return value


Dec = Annotated[Decimal, BeforeValidator(_no_float)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda d: d.astimezone(UTC))]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StatusData(_Wire):
    system: str
    api_version: str | None = None
    connection_id: int | None = None  # can exceed int64 (§4); a Python int holds it
    version: str | None = None


class StatusMessage(_Wire):
    """§4: pushed on connect and on every engine status change; cannot be subscribed to."""

    channel: Literal["status"]
    type: str | None = None
    data: list[StatusData]

    @property
    def system(self) -> str:
        return self.data[0].system if self.data else "unknown"


class HeartbeatMessage(_Wire):
    channel: Literal["heartbeat"]


class TickerData(_Wire):
    symbol: str
    bid: Dec
    bid_qty: Dec
    ask: Dec
    ask_qty: Dec
    last: Dec | None = None  # §5: "only guaranteed if traded within the past 24 hours"
    volume: Dec | None = None
    vwap: Dec | None = None
    low: Dec | None = None
    high: Dec | None = None
    change: Dec | None = None
    change_pct: Dec | None = None
    timestamp: UtcDatetime | None = None  # §5/§16: not always sent (UNCONFIRMED); optional


class TickerMessage(_Wire):
    channel: Literal["ticker"]
    type: Literal["snapshot", "update"]
    data: list[TickerData]


class BookLevel(_Wire):
    price: Dec
    qty: Dec


class BookData(_Wire):
    symbol: str
    bids: list[BookLevel] = []
    asks: list[BookLevel] = []
    checksum: int | None = None
    timestamp: UtcDatetime | None = None  # §6: snapshots carry none, updates do


class BookMessage(_Wire):
    channel: Literal["book"]
    type: Literal["snapshot", "update"]
    data: list[BookData]


class ChannelMessage(_Wire):
    """A channel this client does not interpret (trade, instrument, ...)."""

    channel: str
    type: str | None = None


class AckMessage(_Wire):
    """§3/§8: the reply to a request; `success: false` carries `error` and, for a rejected
    subscription, the failing `symbol` at the top level rather than under `result`."""

    method: str
    success: bool
    req_id: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    symbol: str | None = None
    warnings: list[str] = []
    time_in: UtcDatetime | None = None
    time_out: UtcDatetime | None = None

    @property
    def channel(self) -> str | None:
        return (self.result or {}).get("channel")

    @property
    def subject_symbol(self) -> str | None:
        return (self.result or {}).get("symbol") or self.symbol


class PongMessage(_Wire):
    method: Literal["pong"]
    req_id: int | None = None
    time_in: UtcDatetime | None = None
    time_out: UtcDatetime | None = None
    error: str | None = None


class BareError(_Wire):
    """§8: `{"Error": "Exceeded msg rate"}` (capital E, shape UNCONFIRMED) or an `error` with
    no `success` flag; either way a rejection we cannot tie to a request."""

    error: str


class UnknownMessage(_Wire):
    raw: dict[str, Any]


KrakenMessage = (
    StatusMessage
    | HeartbeatMessage
    | TickerMessage
    | BookMessage
    | ChannelMessage
    | AckMessage
    | PongMessage
    | BareError
    | UnknownMessage
)


def loads(raw: str | bytes) -> Any:
    """JSON with every non-integer number as Decimal, so a price is never a float (§5)."""
    return json.loads(raw, parse_float=Decimal)


def parse_message(raw: str | bytes) -> KrakenMessage:
    """Classify and validate one v2 frame. Raises `KrakenParseError` for anything malformed."""
    try:
        obj = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        raise KrakenParseError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise KrakenParseError(f"expected a JSON object, got {type(obj).__name__}")
    model: type[StatusMessage | HeartbeatMessage | TickerMessage | BookMessage | ChannelMessage]
    channels: dict[str, type[StatusMessage | HeartbeatMessage | TickerMessage | BookMessage]]
    try:
        if "channel" in obj:
            channels = {
                "status": StatusMessage,
                "heartbeat": HeartbeatMessage,
                "ticker": TickerMessage,
                "book": BookMessage,
            }
            model = channels.get(obj["channel"], ChannelMessage) if isinstance(obj["channel"], str) else ChannelMessage
            # (a non-string channel, e.g. a list, is unhashable: ChannelMessage then refuses it)
            return model.model_validate(obj)
        if obj.get("method") == "pong":
            return PongMessage.model_validate(obj)
        if "method" in obj and "success" in obj:
            return AckMessage.model_validate(obj)
        for key in ("error", "Error"):
            if isinstance(obj.get(key), str):
                return BareError(error=obj[key])
    except ValidationError as exc:
        raise KrakenParseError(f"bad {obj.get('channel') or obj.get('method')} frame: {exc.errors()[:3]}") from None
    return UnknownMessage(raw=obj)


# --- book and checksum (§6) ---------------------------------------------------------------------


def checksum_field(value: Decimal) -> str:
    """One price or qty as the checksum wants it: the wire text without `.` and leading zeros.

    `format(.., "f")` keeps the trailing zeros Kraken sent (they are part of the checksum) and
    never falls into exponent notation for tiny quantities."""
    return format(value, "f").replace(".", "").lstrip("0")


def book_checksum(asks: Iterable[tuple[Decimal, Decimal]], bids: Iterable[tuple[Decimal, Decimal]]) -> int:
    """CRC32 over the top 10 asks (low to high) then the top 10 bids (high to low), §6."""
    best_asks = sorted(asks, key=lambda lvl: lvl[0])[:CHECKSUM_LEVELS]
    best_bids = sorted(bids, key=lambda lvl: lvl[0], reverse=True)[:CHECKSUM_LEVELS]
    text = "".join(checksum_field(p) + checksum_field(q) for p, q in [*best_asks, *best_bids])
    return binascii.crc32(text.encode("ascii")) & 0xFFFFFFFF


class OrderBook:
    """A depth-limited L2 book kept from v2 `book` snapshots and updates."""

    def __init__(self, symbol: str, depth: int = 10) -> None:
        self.symbol = symbol
        self.depth = depth
        # price -> (price, qty); the stored price object is the latest wire text, which the
        # checksum needs (Decimal("1.0") == Decimal("1.00") but they print differently)
        self._bids: dict[Decimal, tuple[Decimal, Decimal]] = {}
        self._asks: dict[Decimal, tuple[Decimal, Decimal]] = {}

    def apply_snapshot(self, data: BookData) -> None:
        self._bids.clear()
        self._asks.clear()
        self.apply_update(data)

    def apply_update(self, data: BookData) -> None:
        # Levels are applied in order: one message may touch the same price twice (§6).
        for side, levels in ((self._bids, data.bids), (self._asks, data.asks)):
            for level in levels:
                if level.qty == 0:
                    side.pop(level.price, None)
                else:
                    side[level.price] = (level.price, level.qty)
        self._truncate()

    def _truncate(self) -> None:
        # Kraken sends no qty 0 for levels pushed out of the subscribed depth (§6).
        for side, worst_first in ((self._bids, False), (self._asks, True)):
            if len(side) > self.depth:
                for price in sorted(side, reverse=worst_first)[: len(side) - self.depth]:
                    del side[price]

    def bids(self) -> list[tuple[Decimal, Decimal]]:
        return [self._bids[p] for p in sorted(self._bids, reverse=True)]

    def asks(self) -> list[tuple[Decimal, Decimal]]:
        return [self._asks[p] for p in sorted(self._asks)]

    def checksum(self) -> int:
        return book_checksum(self._asks.values(), self._bids.values())

    def best_bid(self) -> tuple[Decimal, Decimal] | None:
        return self._bids[max(self._bids)] if self._bids else None

    def best_ask(self) -> tuple[Decimal, Decimal] | None:
        return self._asks[min(self._asks)] if self._asks else None


# --- what the client hands out ------------------------------------------------------------------


class KrakenTick(BaseModel):
    """One top-of-book observation for the symbol, from a ticker snapshot or update."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal | None
    source_time: AwareDatetime | None  # Kraken's `timestamp`, when it sends one
    received_at: AwareDatetime
    snapshot: bool


SubscriptionStatus = Literal["pending", "subscribed", "rejected"]
ClockAction = Literal["ok", "resubscribe", "reconnect_silence", "reconnect_silent_subscription"]


@dataclass
class _Subscription:
    channel: str
    symbol: str
    params: dict[str, Any]
    status: SubscriptionStatus = "pending"
    req_id: int | None = None
    error: str | None = None
    acked_at: datetime | None = None


@dataclass
class _Connection:
    """What belongs to one socket and dies with it."""

    ws: ClientConnection
    opened_at: datetime
    data_clock_from: datetime  # when the ticker data clock last started (subscribe sent)
    resubscribed: bool = False  # §12: one re-subscribe per quiet spell, then reconnect
    proved_good: bool = False
    close_reason: str | None = None
    requests: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # req_id -> (method, channel)
    pings: dict[int, datetime] = field(default_factory=dict)


class KrakenClient:
    """Kraken WS v2 ticker (and optional book) client with reconnect, re-subscribe and two clocks.

    Use `await client.run()` (or `start()`/`close()`, or `async with`), read ticks from
    `async for tick in client.ticks()` or an `on_tick` callback, and `state()` for health.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        symbol: str = DEFAULT_SYMBOL,
        *,
        silence_timeout_s: float = 5.0,
        data_timeout_s: float = 30.0,
        check_interval_s: float = 0.25,
        ping_interval_s: float | None = 10.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 1.0,
        book_depth: int | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = now_utc,
        on_tick: Callable[[KrakenTick], Awaitable[None] | None] | None = None,
        queue_size: int = 1000,
    ) -> None:
        if book_depth is not None and book_depth not in BOOK_DEPTHS:
            raise ValueError(f"book depth must be one of {BOOK_DEPTHS}")
        self.url = url
        self.symbol = symbol
        self.silence_timeout = timedelta(seconds=silence_timeout_s)
        self.data_timeout = timedelta(seconds=data_timeout_s)
        self.check_interval_s = check_interval_s
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.book_depth = book_depth
        self.backoff = backoff if backoff is not None else Backoff()
        self.clock = clock
        self.on_tick = on_tick
        self._log = get_logger("venues.kraken", venue="kraken")

        # §10: the local registry replayed on every connect.
        self._subs: dict[str, _Subscription] = {
            "ticker": _Subscription(
                "ticker", symbol, {"channel": "ticker", "symbol": [symbol], "event_trigger": "bbo", "snapshot": True}
            )
        }
        if book_depth is not None:
            self._subs["book"] = _Subscription(
                "book", symbol, {"channel": "book", "symbol": [symbol], "depth": book_depth, "snapshot": True}
            )
        self._req_ids = itertools.count(1)
        self._queue: asyncio.Queue[KrakenTick] = asyncio.Queue(maxsize=queue_size)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None

        self.book: OrderBook | None = None
        self.latest: KrakenTick | None = None
        self.system_status: str | None = None
        self._connection_id: int | None = None
        self._connected_at: datetime | None = None
        self._last_frame_at: datetime | None = None
        self._last_data_at: dict[str, datetime | None] = {symbol: None}
        self._last_book_at: datetime | None = None
        self._last_pong_at: datetime | None = None
        self._ping_rtt_ms: float | None = None
        self._next_attempt_at: datetime | None = None
        self._last_disconnect_reason: str | None = None
        self._last_error: str | None = None
        self._connects = 0
        self._ticks = 0
        self._ticks_dropped = 0
        self._errors: Counter[str] = Counter()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"kraken:{self.symbol}")
        return self._task

    async def close(self) -> None:
        self._stopping.set()
        conn = self._conn
        if conn is not None:
            conn.close_reason = conn.close_reason or "closing"
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> KrakenClient:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Connect, serve, and reconnect under the backoff until `close()`."""
        while not self._stopping.is_set():
            reason = await self._connect_and_serve()
            self._last_disconnect_reason = reason
            if self._stopping.is_set():
                break
            delay = self.backoff.next_delay()
            self._next_attempt_at = self.clock() + timedelta(seconds=delay)
            self._log.warning(
                "kraken_reconnect_scheduled",
                reason=reason,
                delay_s=round(delay, 3),
                reconnects_in_window=self.backoff.reconnects_in_window(),
                budget_exhausted=self.backoff.budget_exhausted(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            self._next_attempt_at = None

    async def ticks(self) -> AsyncIterator[KrakenTick]:
        """Every tick in arrival order (the oldest are dropped if the reader falls far behind)."""
        while True:
            yield await self._queue.get()

    # --- one connection -------------------------------------------------------------------------

    async def _connect_and_serve(self) -> str:
        try:
            ws = await connect(
                self.url,
                open_timeout=self.open_timeout_s,
                close_timeout=self.close_timeout_s,
                # Liveness is our silence clock on application frames (§10); protocol pings
                # would add a second, differently-timed opinion.
                ping_interval=None,
                max_size=4 * 1024 * 1024,
            )
        except Exception as exc:  # refused, timeout, invalid handshake, HTTP error from a proxy
            return self._note_error("connect_failed", exc)

        now = self.clock()
        conn = _Connection(ws=ws, opened_at=now, data_clock_from=now)
        self._conn = conn
        self._connects += 1
        self._connected_at = now
        self._last_frame_at = now
        self.book = None
        for sub in self._subs.values():
            sub.status, sub.error, sub.acked_at = "pending", None, None
        self._log.info("kraken_connected", url=self.url, connects=self._connects)

        helpers = [asyncio.create_task(self._watchdog(conn))]
        if self.ping_interval_s:
            helpers.append(asyncio.create_task(self._pinger(conn)))
        reason = "closed_by_peer"
        try:
            for sub in self._subs.values():
                await self._subscribe(conn, sub)
            async for raw in ws:
                await self._on_frame(conn, raw)
            if ws.close_code is not None and ws.close_code != 1000:
                reason = f"closed_by_peer_{ws.close_code}"
        except ConnectionClosed as exc:
            reason = f"connection_lost_{exc.rcvd.code if exc.rcvd else 1006}"
            self._errors["connection_lost"] += 1
        except Exception as exc:
            reason = self._note_error("connection_error", exc)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await ws.close()
            self._conn = None
            self._connected_at = None
        reason = conn.close_reason or reason
        self._log.warning("kraken_disconnected", reason=reason)
        return reason

    def _note_error(self, kind: str, exc: BaseException) -> str:
        self._errors[kind] += 1
        self._last_error = f"{kind}: {type(exc).__name__}: {exc}"
        return kind

    async def _send(self, conn: _Connection, method: str, params: dict[str, Any] | None = None) -> int:
        req_id = next(self._req_ids) % INT32_MAX or 1  # ccxt: req_id must fit an int32 (§3)
        message: dict[str, Any] = {"method": method, "req_id": req_id}
        if params is not None:
            message["params"] = params
        conn.requests[req_id] = (method, params.get("channel") if params else None)
        await conn.ws.send(json.dumps(message))
        return req_id

    async def _subscribe(self, conn: _Connection, sub: _Subscription) -> None:
        sub.status, sub.error = "pending", None
        sub.req_id = await self._send(conn, "subscribe", sub.params)
        if sub.channel == "ticker":
            conn.data_clock_from = self.clock()

    async def _resubscribe(self, conn: _Connection, sub: _Subscription) -> None:
        # Unsubscribe first: a second subscribe on a live subscription is refused
        # ("Already subscribed", §8). A "Subscription Not Found" reply is harmless here.
        unsub = {k: v for k, v in sub.params.items() if k in ("channel", "symbol", "depth", "event_trigger")}
        await self._send(conn, "unsubscribe", unsub)
        await self._subscribe(conn, sub)

    async def _close_for(self, conn: _Connection, reason: str) -> None:
        if conn.close_reason is None:
            conn.close_reason = reason
        self._errors[reason] += 1
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1000, reason=reason[:100])

    # --- the two clocks -------------------------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> ClockAction:
        """What the clocks ask for right now (pure apart from reading state)."""
        conn = self._conn
        if conn is None:
            return "ok"
        now = now or self.clock()
        if self._last_frame_at is not None and now - self._last_frame_at > self.silence_timeout:
            return "reconnect_silence"
        last = self._last_data_at.get(self.symbol)
        since = max(t for t in (last, conn.data_clock_from) if t is not None)
        if now - since > self.data_timeout:
            return "reconnect_silent_subscription" if conn.resubscribed else "resubscribe"
        return "ok"

    async def _watchdog(self, conn: _Connection) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            action = self.evaluate()
            if action == "reconnect_silence":
                self._log.warning("kraken_silent_connection", silence_s=self.silence_timeout.total_seconds())
                await self._close_for(conn, "silence")
                return
            if action == "reconnect_silent_subscription":
                self._log.warning("kraken_silent_subscription", symbol=self.symbol, action="reconnect")
                await self._close_for(conn, "silent_subscription")
                return
            if action == "resubscribe":
                self._log.warning("kraken_silent_subscription", symbol=self.symbol, action="resubscribe")
                conn.resubscribed = True
                self._errors["resubscribe"] += 1
                await self._resubscribe(conn, self._subs["ticker"])

    async def _pinger(self, conn: _Connection) -> None:
        assert self.ping_interval_s
        while True:
            await asyncio.sleep(self.ping_interval_s)
            req_id = await self._send(conn, "ping")
            conn.pings[req_id] = self.clock()
            if len(conn.pings) > 100:  # unanswered pings must not pile up forever
                conn.pings.pop(next(iter(conn.pings)))

    # --- frames ---------------------------------------------------------------------------------

    async def _on_frame(self, conn: _Connection, raw: str | bytes) -> None:
        now = self.clock()
        self._last_frame_at = now
        try:
            message = parse_message(raw)
        except KrakenParseError as exc:
            self._errors["parse"] += 1
            self._last_error = f"parse: {exc}"
            return
        match message:
            case StatusMessage():
                self._on_status(message)
            case TickerMessage():
                await self._on_ticker(conn, message, now)
            case BookMessage():
                await self._on_book(conn, message, now)
            case AckMessage():
                self._on_ack(conn, message, now)
            case PongMessage():
                sent = conn.pings.pop(message.req_id, None) if message.req_id is not None else None
                self._last_pong_at = now
                if sent is not None:
                    self._ping_rtt_ms = (now - sent).total_seconds() * 1000
            case BareError():
                self._errors["error_message"] += 1
                self._last_error = f"error: {message.error}"
                self._log.warning("kraken_error_message", error=message.error)
            case HeartbeatMessage() | ChannelMessage() | UnknownMessage():
                pass  # a heartbeat only feeds the silence clock, which every frame already did

    def _on_status(self, message: StatusMessage) -> None:
        if message.data and message.data[0].connection_id is not None:
            self._connection_id = message.data[0].connection_id
        system = message.system
        if system != self.system_status:
            level = self._log.info if system == "online" else self._log.warning
            level("kraken_system_status", system=system, previous=self.system_status)
        self.system_status = system

    async def _on_ticker(self, conn: _Connection, message: TickerMessage, now: datetime) -> None:
        for data in message.data:
            if data.symbol != self.symbol:
                continue
            if self._last_data_at.get(self.symbol) is None or conn.resubscribed:
                self._log.info("kraken_data_flowing", symbol=self.symbol)
            self._last_data_at[self.symbol] = now
            conn.resubscribed = False
            if not conn.proved_good:
                # Data, not a mere handshake, is what proves a connection (a silent
                # subscription must keep escalating the backoff).
                conn.proved_good = True
                self.backoff.reset()
            tick = KrakenTick(
                symbol=data.symbol,
                bid=data.bid,
                bid_qty=data.bid_qty,
                ask=data.ask,
                ask_qty=data.ask_qty,
                last=data.last,
                source_time=data.timestamp,
                received_at=now,
                snapshot=message.type == "snapshot",
            )
            self.latest = tick
            self._ticks += 1
            if self._queue.full():
                self._queue.get_nowait()
                self._ticks_dropped += 1
            self._queue.put_nowait(tick)
            if self.on_tick is not None:
                try:
                    result = self.on_tick(tick)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    # the consumer's bug must not read as a venue failure and cost a reconnect
                    self._note_error("on_tick", exc)
                    self._log.exception("kraken_on_tick_failed")

    async def _on_book(self, conn: _Connection, message: BookMessage, now: datetime) -> None:
        sub = self._subs.get("book")
        if sub is None:
            return
        for data in message.data:
            if data.symbol != self.symbol:
                continue
            if message.type == "snapshot":
                self.book = OrderBook(self.symbol, self.book_depth or 10)
                self.book.apply_snapshot(data)
            elif self.book is None:
                continue  # updates before the (re)snapshot belong to the book we discarded
            else:
                self.book.apply_update(data)
            self._last_book_at = now
            if data.checksum is not None and self.book.checksum() != data.checksum:
                self._errors["checksum_mismatch"] += 1
                self._log.warning("kraken_book_checksum_mismatch", symbol=self.symbol, action="resubscribe")
                # §15 (python-kraken-sdk): drop the book and take a fresh snapshot.
                self.book = None
                await self._resubscribe(conn, sub)
                return

    def _on_ack(self, conn: _Connection, ack: AckMessage, now: datetime) -> None:
        # Match by req_id: a failed unsubscribe comes back as method "subscribe" (§8 quirk).
        fallback = (ack.method, ack.channel)
        method, channel = conn.requests.pop(ack.req_id, fallback) if ack.req_id is not None else fallback
        sub = self._subs.get(channel) if channel else None
        if ack.success:
            if method == "subscribe" and sub is not None:
                sub.status, sub.error, sub.acked_at = "subscribed", None, now
            return
        error = ack.error or "unknown error"
        self._errors["error_ack"] += 1
        self._last_error = f"{method} rejected: {error}"
        if method == "unsubscribe":
            # part of a re-subscribe; the subscription may simply never have taken
            return
        if method == "subscribe" and sub is not None:
            if "already subscribed" in error.lower():
                sub.status, sub.error = "subscribed", None
                return
            sub.status, sub.error = "rejected", error
        self._log.warning(
            "kraken_request_rejected", method=method, channel=channel, symbol=ack.subject_symbol, error=error
        )

    # --- health ---------------------------------------------------------------------------------

    def degraded(self, now: datetime | None = None) -> tuple[str, str | None] | None:
        """(reason code, detail) when the Kraken price should not be relied on, else None."""
        now = now or self.clock()
        if self._conn is None:
            return ("disconnected", self._last_disconnect_reason)
        if self.system_status is not None and self.system_status != "online":
            # §11: anything but online means no matching, so no fair price
            return (f"system_{self.system_status}", None)
        ticker = self._subs["ticker"]
        if ticker.status == "rejected":
            return ("subscription_rejected", ticker.error)
        last = self._last_data_at.get(self.symbol)
        if last is None or last < self._connected_at_or(now):
            return ("no_data", None)
        if now - last > self.data_timeout:
            return ("data_stale", f"{(now - last).total_seconds():.1f}s")
        return None

    def _connected_at_or(self, now: datetime) -> datetime:
        return self._connected_at or now

    @property
    def connected(self) -> bool:
        """A WebSocket connection is open (whether or not data flows on it)."""
        return self._conn is not None

    def state(self) -> dict[str, Any]:
        now = self.clock()
        degraded = self.degraded(now)
        last = self._last_data_at.get(self.symbol)
        book: dict[str, Any] = {"enabled": self.book_depth is not None}
        if self.book_depth is not None:
            best_bid = self.book.best_bid() if self.book else None
            best_ask = self.book.best_ask() if self.book else None
            book |= {
                "depth": self.book_depth,
                "synced": self.book is not None,
                "last_at": _iso(self._last_book_at),
                "best_bid": str(best_bid[0]) if best_bid else None,
                "best_ask": str(best_ask[0]) if best_ask else None,
            }
        return {
            "venue": "kraken",
            "url": self.url,
            "symbol": self.symbol,
            "connected": self._conn is not None,
            "connected_at": _iso(self._connected_at),
            "connection_id": str(self._connection_id) if self._connection_id is not None else None,
            "system_status": self.system_status,
            "degraded": degraded is not None,
            "degraded_reason": degraded[0] if degraded else None,
            "degraded_detail": degraded[1] if degraded else None,
            "last_frame_at": _iso(self._last_frame_at),
            "last_data_at": {s: _iso(t) for s, t in self._last_data_at.items()},
            "data_age_s": (now - last).total_seconds() if last else None,
            "last_pong_at": _iso(self._last_pong_at),
            "ping_rtt_ms": self._ping_rtt_ms,
            "subscriptions": [
                {"channel": s.channel, "symbol": s.symbol, "status": s.status, "req_id": s.req_id, "error": s.error}
                for s in self._subs.values()
            ],
            "book": book,
            "connects": self._connects,
            "last_disconnect_reason": self._last_disconnect_reason,
            "reconnects_in_window": self.backoff.reconnects_in_window(),
            "reconnect_budget": self.backoff.budget,
            "reconnect_window_s": self.backoff.window_s,
            "budget_exhausted": self.backoff.budget_exhausted(),
            "backoff_attempts": self.backoff.attempts,
            "next_attempt_at": _iso(self._next_attempt_at),
            "ticks": self._ticks,
            "ticks_dropped": self._ticks_dropped,
            "errors": dict(self._errors),
            "last_error": self._last_error,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
