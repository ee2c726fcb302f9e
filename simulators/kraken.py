"""Kraken WebSocket v2 simulator (TEST INFRASTRUCTURE): the public market-data side of
`wss://ws.kraken.com/v2` as `docs/kraken.md` (§n below) describes it.

On connect it pushes `status`; it answers `ping` with `pong`, and `subscribe`/`unsubscribe` for
`ticker` and `book` with one ack per symbol (errors name the symbol at the top level, §8),
then a snapshot and updates that follow either a scripted path of (bid, ask) steps
(`POST /_sim/prices`) or a seeded random walk. Heartbeats flow while anything is subscribed.
Books carry the v2 CRC32 checksum, computed here independently of the client's code.

Faults (`POST /_sim/fault`): `maintenance` (sticky; its value, e.g. "cancel_only", is the pushed
`system`), `silent_subscription` (ack, then no data for that subscription), `disconnect` (close every
socket with a close frame), `disconnect_abort` (drop TCP without one: a 1006, as Cloudflare
does, §9), `stop_heartbeats`, `silence`
(send nothing at all), `bad_checksum` (corrupt the next book checksum).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import json
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from simulators.base import SimServer, exact_json, serve_standalone

TICK = Decimal("0.1")
QTY_PLACES = Decimal("0.00000001")
BOOK_DEPTHS = (10, 25, 100, 500, 1000)


def rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


dumps = exact_json


def _crc_field(value: Decimal) -> str:
    return format(value, "f").replace(".", "").lstrip("0")


def book_checksum(asks: list[tuple[Decimal, Decimal]], bids: list[tuple[Decimal, Decimal]]) -> int:
    # §6: top 10 asks low->high, then top 10 bids high->low; price+qty without "." or leading 0s
    text = "".join(_crc_field(p) + _crc_field(q) for p, q in [*sorted(asks)[:10], *sorted(bids, reverse=True)[:10]])
    return binascii.crc32(text.encode()) & 0xFFFFFFFF


@dataclass
class _Market:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    path: deque[tuple[Decimal, Decimal]] = field(default_factory=deque)
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


@dataclass
class _Sub:
    channel: str
    symbol: str
    silent: bool
    depth: int = 10


@dataclass(eq=False)  # identity-hashed: peers live in a set
class _Peer:
    ws: web.WebSocketResponse
    request: web.Request
    subs: dict[tuple[str, str], _Sub] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sent_data_since_heartbeat: bool = False


class KrakenSimulator(SimServer):
    name = "kraken"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_interval_s: float = 1.0,
        tick_interval_s: float = 0.5,
        seed: int = 7,
        random_walk: bool = True,
        markets: dict[str, tuple[str, str]] | None = None,
        include_timestamp: bool = True,
    ) -> None:
        super().__init__(host, port)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.tick_interval_s = tick_interval_s
        self.seed = seed
        self.default_random_walk = random_walk
        self.include_timestamp = include_timestamp  # §5, §16: real tickers may omit it
        self._initial = markets or {"BTC/EUR": ("60000.0", "60000.1")}
        self._peers: set[_Peer] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.reset_state()

    # --- scenario state -------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.rng = random.Random(self.seed)
        self.random_walk = self.default_random_walk
        self.system = "online"
        self.markets = {
            sym: _Market(sym, Decimal(bid), Decimal(ask), Decimal(bid)) for sym, (bid, ask) in self._initial.items()
        }
        for market in self.markets.values():
            self._rebuild_book(market)

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "connections": len(self._peers),
            "markets": {
                s: {"bid": str(m.bid), "ask": str(m.ask), "pending_steps": len(m.path)} for s, m in self.markets.items()
            },
            "subscriptions": [
                {"channel": s.channel, "symbol": s.symbol, "silent": s.silent}
                for p in self._peers
                for s in p.subs.values()
            ],
        }

    def _rebuild_book(self, market: _Market) -> None:
        market.bids = {market.bid - TICK * i: self._qty() for i in range(10)}
        market.asks = {market.ask + TICK * i: self._qty() for i in range(10)}

    def _qty(self) -> Decimal:
        return Decimal(self.rng.randint(1, 300_000_000)).scaleb(-8).quantize(QTY_PLACES)

    # --- routes ---------------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_get("/v2", self._ws_handler)
        app.router.add_get("/", self._ws_handler)
        app.router.add_post("/_sim/prices", self._set_prices)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _set_prices(self, request: web.Request) -> web.Response:
        """`{"path": [[bid, ask], ...], "symbol": "BTC/EUR", "random_walk": false}`: steps are
        played one per tick; `random_walk` switches the walk on or off."""
        body = json.loads(await request.text(), parse_float=Decimal)
        market = self.markets.get(body.get("symbol", "BTC/EUR"))
        if market is None:
            return web.json_response({"error": "unknown symbol"}, status=400)
        for bid, ask in body.get("path", []):
            market.path.append((Decimal(str(bid)), Decimal(str(ask))))
        if "random_walk" in body:
            self.random_walk = bool(body["random_walk"])
        return web.json_response({"queued": len(market.path), "random_walk": self.random_walk})

    async def _on_startup(self, _app: web.Application) -> None:
        self._tasks = [asyncio.create_task(self._engine()), asyncio.create_task(self._heartbeats())]

    async def _on_shutdown(self, _app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for peer in list(self._peers):
            with contextlib.suppress(Exception):
                await peer.ws.close(code=1001, message=b"shutdown")

    # --- sending --------------------------------------------------------------------------------

    async def _send(self, peer: _Peer, message: dict[str, Any], *, data: bool = False) -> None:
        if self.faults.value("silence") or peer.ws.closed:
            return
        async with peer.lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await peer.ws.send_str(dumps(message))
        if data:
            peer.sent_data_since_heartbeat = True

    async def _reply(self, peer: _Peer, body: dict[str, Any], time_in: str) -> None:
        # §3: every ack carries time_in/time_out
        await self._send(peer, {**body, "time_in": time_in, "time_out": rfc3339()})

    def _status_message(self) -> dict[str, Any]:
        return {
            "channel": "status",
            "data": [
                {"api_version": "v2", "connection_id": 13834774380200032777, "system": self.system, "version": "2.0.0"}
            ],
            "type": "update",
        }

    def _ticker(self, market: _Market, kind: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "symbol": market.symbol,
            "bid": market.bid,
            "bid_qty": market.bids.get(market.bid, Decimal("1.00000000")),
            "ask": market.ask,
            "ask_qty": market.asks.get(market.ask, Decimal("1.00000000")),
            "last": market.last,
            "volume": Decimal("1234.56789012"),
            "vwap": (market.bid + market.ask) / 2,
            "low": min(market.bid, market.last),
            "high": max(market.ask, market.last),
            "change": Decimal("0.0"),
            "change_pct": Decimal("0.00"),
        }
        if self.include_timestamp:
            data["timestamp"] = rfc3339()
        return {"channel": "ticker", "type": kind, "data": [data]}

    def _book_snapshot(self, market: _Market, depth: int) -> dict[str, Any]:
        bids = sorted(market.bids.items(), reverse=True)[:depth]
        asks = sorted(market.asks.items())[:depth]
        checksum = book_checksum(asks, bids)
        return {
            "channel": "book",
            "type": "snapshot",
            "data": [
                {
                    "symbol": market.symbol,
                    "bids": [{"price": p, "qty": q} for p, q in bids],
                    "asks": [{"price": p, "qty": q} for p, q in asks],
                    "checksum": self._maybe_corrupt(checksum),
                }
            ],
        }

    def _maybe_corrupt(self, checksum: int) -> int:
        return checksum ^ 0x1 if self.faults.take("bad_checksum") else checksum

    # --- the WebSocket endpoint -----------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        peer = _Peer(ws=ws, request=request)
        self._peers.add(peer)
        self.record("connect", path=request.path)
        await self._send(peer, self._status_message())  # §4: unsolicited on connect
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_request(peer, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._peers.discard(peer)
            self.record("disconnect", path=request.path)
        return ws

    async def _on_request(self, peer: _Peer, text: str) -> None:
        time_in = rfc3339()
        try:
            request = json.loads(text)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            self.record("recv", raw=text)
            await self._reply(peer, {"error": "Malformed request", "success": False, "method": None}, time_in)
            return
        self.record("recv", message=request)
        method = request.get("method")
        req_id = request.get("req_id")
        envelope: dict[str, Any] = {"req_id": req_id} if req_id is not None else {}
        if method == "ping":
            await self._send(peer, {"method": "pong", **envelope, "time_in": time_in, "time_out": rfc3339()})
        elif method in ("subscribe", "unsubscribe"):
            await self._on_subscription(peer, method, request.get("params") or {}, envelope, time_in)
        else:
            error = {"error": f"Method not found: {method}", "method": method, "success": False, **envelope}
            await self._reply(peer, error, time_in)

    async def _on_subscription(
        self, peer: _Peer, method: str, params: dict[str, Any], envelope: dict[str, Any], time_in: str
    ) -> None:
        channel = params.get("channel")
        symbols = params.get("symbol")

        async def reject(error: str, symbol: str | None = None, as_method: str | None = None) -> None:
            body: dict[str, Any] = {"error": error, "method": as_method or method, "success": False, **envelope}
            if symbol is not None:
                body["symbol"] = symbol  # §8: the failing symbol sits at the top level
            await self._reply(peer, body, time_in)

        if channel not in ("ticker", "book"):
            await reject("Subscription name invalid")
            return
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            await reject("Malformed request")
            return
        depth = params.get("depth", 10)
        if channel == "book" and depth not in BOOK_DEPTHS:
            await reject("Subscription depth not supported")
            return
        trigger = params.get("event_trigger", "trades")
        if channel == "ticker" and trigger not in ("bbo", "trades"):
            await reject("Unsupported event_trigger")
            return
        snapshot = params.get("snapshot", True)
        for symbol in symbols:  # §6: one ack per symbol
            key = (channel, symbol)
            market = self.markets.get(symbol)
            if market is None:
                await reject(f"Currency pair not supported {symbol}", symbol)
                continue
            result: dict[str, Any] = {"channel": channel, "symbol": symbol}
            if channel == "ticker":
                result["event_trigger"] = trigger
            else:
                result["depth"] = depth
            if method == "unsubscribe":
                if peer.subs.pop(key, None) is None:
                    # §8: Kraken names the failed unsubscribe "subscribe"
                    await reject("Subscription Not Found", symbol, as_method="subscribe")
                    continue
                ack = {"method": "unsubscribe", "result": result, "success": True, **envelope}
                await self._reply(peer, ack, time_in)
                continue
            if key in peer.subs:
                await reject("Already subscribed", symbol)
                continue
            silent = self.faults.take("silent_subscription")
            peer.subs[key] = _Sub(channel, symbol, silent=silent, depth=depth)
            result["snapshot"] = snapshot
            await self._reply(peer, {"method": "subscribe", "result": result, "success": True, **envelope}, time_in)
            if silent or not snapshot:
                continue
            if channel == "ticker":
                await self._send(peer, self._ticker(market, "snapshot"), data=True)
            else:
                await self._send(peer, self._book_snapshot(market, depth), data=True)

    # --- the market engine ----------------------------------------------------------------------

    def _desired_system(self) -> str:
        value = self.faults.value("maintenance")
        if not value:
            return "online"
        return value if isinstance(value, str) else "maintenance"

    async def _engine(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                await self._engine_step()
            except Exception as exc:  # the simulator must keep serving whatever a test did
                self.record("engine_error", error=repr(exc))

    async def _engine_step(self) -> None:
        system = self._desired_system()
        if system != self.system:
            self.system = system
            for peer in list(self._peers):
                await self._send(peer, self._status_message())
        close = self.faults.take("disconnect")
        abort = self.faults.take("disconnect_abort")
        if close or abort:
            for peer in list(self._peers):
                self.record("fault_disconnect", abort=abort)
                if abort and peer.request.transport is not None:
                    peer.request.transport.abort()
                else:
                    with contextlib.suppress(Exception):
                        await peer.ws.close(code=1001, message=b"going away")
        for market in self.markets.values():
            if not self._step(market):
                continue
            old_bids, old_asks = market.bids, market.asks
            self._rebuild_book(market)
            for peer in list(self._peers):
                for sub in list(peer.subs.values()):
                    if sub.symbol != market.symbol or sub.silent:
                        continue
                    if sub.channel == "ticker":
                        await self._send(peer, self._ticker(market, "update"), data=True)
                    else:
                        await self._send(peer, self._book_update(market, old_bids, old_asks, sub.depth), data=True)

    def _step(self, market: _Market) -> bool:
        if market.path:
            market.bid, market.ask = market.path.popleft()
        elif self.random_walk:
            move = TICK * self.rng.choice((-2, -1, 1, 2))
            market.bid += move
            market.ask += move
        else:
            return False
        market.last = market.bid if self.rng.random() < 0.5 else market.ask
        return True

    def _book_update(
        self, market: _Market, old_bids: dict[Decimal, Decimal], old_asks: dict[Decimal, Decimal], depth: int
    ) -> dict[str, Any]:
        def diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[dict[str, Decimal]]:
            gone = [{"price": p, "qty": Decimal("0.00000000")} for p in old if p not in new]
            changed = [{"price": p, "qty": q} for p, q in new.items() if old.get(p) != q]
            return gone + changed

        bids = sorted(market.bids.items(), reverse=True)[:depth]
        asks = sorted(market.asks.items())[:depth]
        return {
            "channel": "book",
            "type": "update",
            "data": [
                {
                    "symbol": market.symbol,
                    "bids": diff(old_bids, market.bids),
                    "asks": diff(old_asks, market.asks),
                    "checksum": self._maybe_corrupt(book_checksum(asks, bids)),
                    "timestamp": rfc3339(),
                }
            ],
        }

    async def _heartbeats(self) -> None:
        # §4: about once a second, only while subscribed, and only when nothing else was sent
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self.faults.value("stop_heartbeats"):
                continue
            for peer in list(self._peers):
                if peer.subs and not peer.sent_data_since_heartbeat:
                    await self._send(peer, {"channel": "heartbeat"})
                peer.sent_data_since_heartbeat = False


async def _serve(args: argparse.Namespace) -> None:
    sim = KrakenSimulator(
        args.host,
        args.port,
        heartbeat_interval_s=args.heartbeat_interval,
        tick_interval_s=args.tick_interval,
        seed=args.seed,
    )
    await serve_standalone(
        [sim], lambda u: f"kraken simulator: {u[0].replace('http', 'ws', 1)}/v2 (control {u[0]}/_sim/)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kraken WebSocket v2 simulator (test infrastructure)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--tick-interval", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
