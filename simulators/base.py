"""What every simulator shares: an aiohttp server on loopback, a record of what it saw, and the
`/_sim/` control routes (`GET /_sim/seen`, `POST /_sim/reset`, `POST /_sim/fault`).

A simulator subclasses `SimServer`, adds its venue routes in `venue_routes()` and reads
`self.faults` where a fault can apply. Faults are named one-shot or sticky switches set by tests
(`{"name": "drop_next", "count": 1}` or `{"name": "maintenance", "on": true}`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web


def exact_json(obj: Any) -> str:
    """JSON with Decimals written as bare numbers in their exact text, as venues write prices
    (Kraken's book, CoinGecko's `precision=full`): never through float."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{exact_json(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(exact_json(v) for v in obj) + "]"
    return json.dumps(obj)


class Faults:
    """Named fault switches: a count of remaining uses, or sticky until turned off."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = defaultdict(int)
        self._sticky: dict[str, Any] = {}

    def set(self, name: str, *, count: int | None = None, on: bool | None = None, value: Any = None) -> None:
        if count is not None:
            self._counts[name] = count
        if on is not None:
            if on:
                self._sticky[name] = True if value is None else value
            else:
                self._sticky.pop(name, None)
        elif value is not None:
            self._sticky[name] = value

    def take(self, name: str) -> bool:
        """True if the fault applies now (consumes one use of a counted fault)."""
        if name in self._sticky:
            return True
        if self._counts.get(name, 0) > 0:
            self._counts[name] -= 1
            return True
        return False

    def value(self, name: str, default: Any = None) -> Any:
        return self._sticky.get(name, default)

    def clear(self) -> None:
        self._counts.clear()
        self._sticky.clear()

    def snapshot(self) -> dict[str, Any]:
        return {"counted": {k: v for k, v in self._counts.items() if v}, "sticky": dict(self._sticky)}


class SimServer:
    """A loopback aiohttp server with the `/_sim/` control routes."""

    name = "sim"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.faults = Faults()
        self.seen: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    # --- for subclasses -------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def reset_state(self) -> None:
        """Back to the initial scenario (called by `POST /_sim/reset`)."""

    def extra_sim_state(self) -> dict[str, Any]:
        return {}

    # --- shared -----------------------------------------------------------------------------

    def record(self, kind: str, **data: Any) -> None:
        self.seen.append({"kind": kind, "at": time.time(), **data})

    def build_app(self) -> web.Application:
        app = web.Application()
        self.venue_routes(app)

        async def seen(_r: web.Request) -> web.Response:
            return web.json_response({"seen": self.seen, "faults": self.faults.snapshot(), **self.extra_sim_state()})

        async def reset(_r: web.Request) -> web.Response:
            self.seen.clear()
            self.faults.clear()
            self.reset_state()
            return web.json_response({"reset": True})

        async def fault(request: web.Request) -> web.Response:
            body = await request.json()
            self.faults.set(body["name"], count=body.get("count"), on=body.get("on"), value=body.get("value"))
            return web.json_response(self.faults.snapshot())

        app.router.add_get("/_sim/seen", seen)
        app.router.add_post("/_sim/reset", reset)
        app.router.add_post("/_sim/fault", fault)
        return app

    async def start(self) -> str:
        """Start listening; returns the base URL (http://host:port)."""
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses  # the bound sockets' names: (host, port, ...)
        assert addresses
        self.port = addresses[0][1]
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def until_signalled() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_standalone(sims: Sequence[SimServer], banner: Callable[[list[str]], str]) -> None:
    """Start `sims`, print the banner built from their base URLs, run until signalled, stop."""
    urls = [await sim.start() for sim in sims]
    print(banner(urls), flush=True)
    try:
        await until_signalled()
    finally:
        for sim in reversed(sims):
            await sim.stop()
