"""CoinGecko API simulator (TEST INFRASTRUCTURE): `GET /api/v3/simple/price` and `/api/v3/ping`
as `docs/coingecko.md` (§n below) describes them.

Demo and Pro share the path `/api/v3` on different hosts (§1); one simulator plays one plan,
checks that plan's key header (or query parameter) when a key is configured, and answers the
other plan's header with the key/host mismatch code (10010/10011). Prices follow the cache
semantics of §3 in *simulated* time: the published price and its `last_updated_at` change only
when the clock crosses a `cache_s` boundary, so polling faster returns the same value. Tests move
the clock with `POST /_sim/clock` and set prices with `POST /_sim/prices`; unknown ids are left
out (`{}` when none is known, §2).

Faults (`POST /_sim/fault`): `rate_limit` (429 with the §4 body; a `retry-after` header when the
fault's value or the simulator's `retry_after` gives one), `rate_limit_body` (HTTP 200 carrying
the 429 body, a third-party report), `timeout` (hold the answer for the value's seconds, default
until reset/stop), `http_500`, `http_status` (value = the status to answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web

from simulators.base import SimServer, exact_json, serve_standalone

KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
KEY_PARAMS = {"demo": "x_cg_demo_api_key", "pro": "x_cg_pro_api_key"}
DEFAULT_PRICES = {"bitcoin": "60000.123456789", "monerium-eur-money-2": "0.998912", "monerium-eur-money": "0.9871"}
VS_RATES = {"eur": Decimal(1), "usd": Decimal("1.08")}  # usd only so multi-currency requests work
RATE_LIMIT_BODY = {
    "status": {
        "error_code": 429,
        "error_message": (
            "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing"
            " to subscribe to our API plans for higher rate limits."
        ),
    }
}


dumps = exact_json


@dataclass
class _Coin:
    truth: Decimal  # the "market" price; becomes visible at the next cache refresh
    published: Decimal | None = None
    last_updated_at: int | None = None
    bucket: int | None = None
    pinned: bool = False  # a test fixed last_updated_at: CoinGecko stopped updating this coin


class CoinGeckoSimulator(SimServer):
    name = "coingecko"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        plan: Literal["demo", "pro"] = "demo",
        cache_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        prices: dict[str, str] | None = None,
        random_walk: bool = True,
        retry_after: str | None = None,
        seed: int = 11,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.plan = plan
        self.cache_s = cache_s
        self._clock = clock
        self._initial_prices = prices or DEFAULT_PRICES
        self.default_random_walk = random_walk
        self.retry_after = retry_after
        self.seed = seed
        self._release = asyncio.Event()
        self.reset_state()

    # --- scenario state -------------------------------------------------------------------------

    def reset_state(self) -> None:
        self.offset_s = 0.0
        self.rng = random.Random(self.seed)
        self.random_walk = self.default_random_walk
        self.coins = {cid: _Coin(Decimal(p)) for cid, p in self._initial_prices.items()}
        self._release.set()  # let any held `timeout` answer go
        self._release = asyncio.Event()

    def now(self) -> float:
        """Simulated UNIX time."""
        return self._clock() + self.offset_s

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "now": self.now(),
            "coins": {
                cid: {
                    "truth": str(c.truth),
                    "published": str(c.published) if c.published is not None else None,
                    "last_updated_at": c.last_updated_at,
                    "pinned": c.pinned,
                }
                for cid, c in self.coins.items()
            },
        }

    def _refresh(self) -> None:
        # §3: one value per cache window; last_updated_at is the window's start
        now = self.now()
        bucket = int(now // self.cache_s)
        for coin in self.coins.values():
            if coin.pinned or coin.bucket == bucket:
                continue
            if coin.bucket is not None and self.random_walk:
                step = Decimal(self.rng.randint(-200, 200)) / Decimal(100_000)  # up to ±0.2 %
                coin.truth = (coin.truth * (1 + step)).quantize(Decimal("0.000000001"))
            coin.bucket = bucket
            coin.published = coin.truth
            coin.last_updated_at = int(bucket * self.cache_s)

    # --- routes ---------------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/simple/price", self._simple_price)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_post("/_sim/clock", self._set_clock)
        app.router.add_post("/_sim/prices", self._set_prices)

    async def _set_clock(self, request: web.Request) -> web.Response:
        """`{"advance": seconds}` or `{"set": unix_seconds}`."""
        body = await request.json()
        if "set" in body:
            self.offset_s = float(body["set"]) - self._clock()
        self.offset_s += float(body.get("advance", 0))
        return web.json_response({"now": self.now()})

    async def _set_prices(self, request: web.Request) -> web.Response:
        """`{"prices": {id: "price"}, "last_updated_at": {id: unix}, "publish_now": bool,
        "random_walk": bool}`. A price shows at the next cache refresh unless `publish_now`;
        an explicit `last_updated_at` pins the coin (frozen, as a stale CoinGecko coin is)."""
        body = json.loads(await request.text(), parse_float=Decimal)
        for cid, price in body.get("prices", {}).items():
            coin = self.coins.setdefault(cid, _Coin(Decimal(str(price))))
            coin.truth = Decimal(str(price))
            if body.get("publish_now"):
                self._refresh()
                coin.published, coin.last_updated_at = coin.truth, int(self.now())
        for cid, updated in body.get("last_updated_at", {}).items():
            coin = self.coins[cid]
            coin.pinned = True
            coin.published = coin.truth if coin.published is None or cid in body.get("prices", {}) else coin.published
            coin.last_updated_at = int(updated)
        for cid in body.get("unpin", []):
            self.coins[cid].pinned = False
            self.coins[cid].bucket = None
        for cid in body.get("remove", []):
            self.coins.pop(cid, None)
        if "random_walk" in body:
            self.random_walk = bool(body["random_walk"])
        return web.json_response(self.extra_sim_state())

    async def _ping(self, request: web.Request) -> web.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        return web.json_response({"gecko_says": "(V3) To the Moon!"})

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        other = "pro" if self.plan == "demo" else "demo"
        given = request.headers.get(KEY_HEADERS[self.plan]) or request.query.get(KEY_PARAMS[self.plan])
        if given is None and (request.headers.get(KEY_HEADERS[other]) or request.query.get(KEY_PARAMS[other])):
            # §1: a key for the other plan's host
            code, msg = (
                (10010, "If using a Pro key, your root URL must be pro-api.coingecko.com")
                if other == "pro"
                else (10011, "If using a Demo key, your root URL must be api.coingecko.com")
            )
            return web.json_response({"status": {"error_code": code, "error_message": msg}}, status=401)
        if given is None:
            return web.json_response({"status": {"error_code": 10002, "error_message": "API Key Missing"}}, status=401)
        if given != self.api_key:
            return web.json_response({"status": {"error_code": 401, "error_message": "Invalid API Key"}}, status=401)
        return None

    def _rate_limit_headers(self) -> dict[str, str]:
        value = self.faults.value("rate_limit")
        headers: dict[str, str] = {}
        if isinstance(value, dict):
            if value.get("retry_after") is not None:
                headers["retry-after"] = str(value["retry_after"])
            if value.get("x_ratelimit_reset") is not None:
                headers["x-ratelimit-reset"] = str(value["x_ratelimit_reset"])
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            headers["retry-after"] = str(value)
        elif self.retry_after is not None:
            headers["retry-after"] = self.retry_after
        return headers

    async def _simple_price(self, request: web.Request) -> web.StreamResponse:
        query = {k: v for k, v in request.query.items() if k not in KEY_PARAMS.values()}
        key_header = next((h for h in KEY_HEADERS.values() if h in request.headers), None)
        seen = {"path": request.path, "query": query, "key_header": key_header}

        if self.faults.take("timeout"):
            self.record("request", **seen, outcome="timeout")
            hold = self.faults.value("timeout")
            seconds = float(hold) if isinstance(hold, (int, float)) and not isinstance(hold, bool) else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), seconds)
        if self.faults.take("rate_limit"):
            headers = self._rate_limit_headers()
            self.record("request", **seen, outcome="429", headers=headers)
            return web.Response(
                text=dumps(RATE_LIMIT_BODY), status=429, headers=headers, content_type="application/json"
            )
        if self.faults.take("rate_limit_body"):
            self.record("request", **seen, outcome="429_in_200")
            return web.Response(text=dumps(RATE_LIMIT_BODY), status=200, content_type="application/json")
        if self.faults.take("http_500"):
            self.record("request", **seen, outcome="500")
            return web.json_response({"error": "Internal Server Error"}, status=500)
        if self.faults.take("http_status"):
            status = int(self.faults.value("http_status", 503))
            self.record("request", **seen, outcome=str(status))
            return web.json_response({"status": {"error_code": status, "error_message": "simulated"}}, status=status)
        denied = self._check_key(request)
        if denied is not None:
            self.record("request", **seen, outcome="denied")
            return denied

        vs = [v.strip().lower() for v in query.get("vs_currencies", "").split(",") if v.strip()]
        if not vs:
            self.record("request", **seen, outcome="400")
            return web.json_response({"error": "Missing parameter vs_currencies"}, status=400)
        ids = [i.strip().lower() for i in query.get("ids", "").split(",") if i.strip()]
        with_updated = query.get("include_last_updated_at", "false").lower() == "true"
        precision = query.get("precision")
        self._refresh()
        answer: dict[str, Any] = {}
        for cid in ids:
            coin = self.coins.get(cid)
            if coin is None or coin.published is None:
                continue  # §2: unknown ids are silently left out
            entry: dict[str, Any] = {}
            for currency in vs:
                if currency in VS_RATES:
                    entry[currency] = self._format(coin.published * VS_RATES[currency], precision)
            if with_updated:
                entry["last_updated_at"] = coin.last_updated_at
            answer[cid] = entry
        self.record("request", **seen, outcome="200")
        return web.Response(text=dumps(answer), content_type="application/json")

    @staticmethod
    def _format(value: Decimal, precision: str | None) -> Decimal:
        if precision == "full":
            return value
        if precision is not None and precision.isdigit():
            return value.quantize(Decimal(1).scaleb(-int(precision)))
        # without `precision` CoinGecko rounds for display; two places is close enough here
        return value.quantize(Decimal("0.01")) if value >= 1 else value.quantize(Decimal("0.000001"))

    async def stop(self) -> None:
        self._release.set()  # a held `timeout` answer must not keep the runner from stopping
        await super().stop()


async def _serve(args: argparse.Namespace) -> None:
    sim = CoinGeckoSimulator(
        args.host, args.port, api_key=args.api_key, plan=args.plan, cache_s=args.cache_s, seed=args.seed
    )
    await serve_standalone([sim], lambda u: f"coingecko simulator: {u[0]}/api/v3 (control {u[0]}/_sim/)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CoinGecko API simulator (test infrastructure)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this key (test value; never a real key)")
    parser.add_argument("--plan", choices=("demo", "pro"), default="demo")
    parser.add_argument("--cache-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
