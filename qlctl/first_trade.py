"""`python -m qlctl.first_trade`: the first-trade checklist (runbooks/first-trade.md), walked
automatically on the local stack by `make run`.

Every step prints what it checked; a failed step stops with the reason (exit 1). The walk:
strategy and executor start disarmed → prices live → inventory live → fund EURe through the POA
bridge simulator and liquidity-manager until credited → a quote while disarmed is rejected
(`DISARMED`) → tiny cap, arm both → a quote is commanded, answered, accepted by the relay
simulator and settled → the chain of custody from PostgreSQL → disarm. The stack stays up.
It talks to the daemons only through their control sockets and to PostgreSQL through the
reports layer, as an operator would; the simulators' `/_sim/` routes stand in for the takers
and the treasury wallet, so it walks a stack on the simulators (`make run`), never a host's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from daemons.core.assets import EURE_ID, NBTC_ID
from qlctl.client import ClientError, ControlClient
from qlctl.reports import Reports


class StepFailed(Exception):
    pass


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    while loop.time() < deadline:
        try:
            last = await check()
        except ClientError as exc:
            last = str(exc)
            result = None
        else:
            result = last
        if result:
            return result
        await asyncio.sleep(0.25)
    raise StepFailed(f"{what}: not seen within {timeout_s:.0f} s (last: {last!r})")


class Walk:
    def __init__(
        self,
        control_dir: Path,
        database_url: str,
        relay_base: str,
        poa_base: str,
        account: str,
        say: Callable[[str], None] = print,
        timeout_s: float = 60.0,
    ) -> None:
        self.ctl = ControlClient(control_dir)
        self.database_url = database_url
        self.relay_base = relay_base
        self.poa_base = poa_base
        self.account = account
        self.say = say
        self.timeout_s = timeout_s

    async def state(self, service: str) -> dict[str, Any]:
        reply = await self.ctl.request(service, "GET", "/state")
        return reply.body if isinstance(reply.body, dict) else {}

    async def post(self, service: str, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
        reply = await self.ctl.request(service, method, path, body)
        if not reply.ok:
            raise StepFailed(f"{service} refused {path}: {reply.body}")
        return reply.body

    async def sim(self, base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}{path}", json=body) as resp:
                if resp.status >= 400:
                    raise StepFailed(f"simulator {path}: HTTP {resp.status} {await resp.text()}")
                return await resp.json()

    async def decision_of(self, reports: Reports, quote_id: str) -> str | None:
        return await reports.pool.fetchval(
            "SELECT decision_reason FROM trade_decisions WHERE quote_id = $1 LIMIT 1", quote_id
        )

    async def results_of(self, reports: Reports, quote_id: str) -> list[str]:
        rows = await reports.pool.fetch(
            "SELECT status FROM trade_execution_results WHERE quote_id = $1 ORDER BY observed_at", quote_id
        )
        return [r["status"] for r in rows]

    def ok(self, text: str) -> None:
        self.say(f"  ok  {text}")

    async def quote(self) -> str:
        """A taker pays 3 EURe for nBTC: inside the default caps, quoteloop would give BTC."""
        sent = await self.sim(
            self.relay_base,
            "/_sim/quote",
            {"asset_in": EURE_ID, "asset_out": NBTC_ID, "exact_amount_in": str(3 * 10**18), "min_deadline_ms": 60_000},
        )
        return str(sent["quote_id"])

    async def run(self) -> str:
        t = self.timeout_s
        self.say("first-trade checklist (runbooks/first-trade.md)")
        for service in ("strategy-engine", "trade-executor"):
            st = await _until(f"{service} running", functools.partial(self.state, service), t)
            if st.get("armed"):
                raise StepFailed(f"{service} is armed at start: it must start disarmed")
        self.ok("strategy-engine and trade-executor are running and disarmed")

        async def price() -> dict[str, Any] | None:
            st = await self.state("market-reference-ingest")
            return st if st.get("healthy") else None

        await _until("a decisionable reference price", price, t)
        self.ok("market-reference-ingest publishes a decisionable price")

        async def inventory() -> dict[str, Any] | None:
            st = await self.state("inventory-sync")
            return st if st.get("healthy") and not st.get("stale") else None

        await _until("fresh inventory", inventory, t)
        self.ok("inventory-sync reads the verifier: inventory fresh")

        await _until("liquidity-manager deposit address", lambda: self._address(), t)
        tx_hash = "0x" + secrets.token_hex(32)
        amount = 1000 * 10**18
        await self.sim(
            self.poa_base,
            "/_sim/deposit",
            {
                "account_id": self.account,
                "chain": "eth:100",
                "asset": EURE_ID,
                "amount": str(amount),
                "tx_hash": tx_hash,
                "outcome": "credit",
                "credit_after_s": 2,
            },
        )
        recorded = await self.post(
            "liquidity-manager",
            "/funding",
            {
                "asset_id": EURE_ID,
                "chain": "eth:100",
                "tx_hash": tx_hash,
                "amount": str(amount),
                "operator": "first-trade-walk",
                "reason": "fund the account",
            },
        )
        action = recorded.get("liquidity_action_id")
        self.say(f"      funding {action}: 1000 EURe recorded (tx {tx_hash[:18]}…)")

        async def credited() -> bool:
            st = await self.state("liquidity-manager")
            recent = st.get("funding", {}).get("recent", [])
            return any(f.get("liquidity_action_id") == action and f.get("stage") == "credited" for f in recent)

        await _until("the funding credited", credited, max(t, 90))
        self.ok("funding went from requested to credited through the bridge simulator")

        async with Reports(self.database_url) as reports:
            quote_id = await self.quote()
            reason = await _until("a decision while disarmed", lambda: self.decision_of(reports, quote_id), t)
            if reason != "DISARMED":
                raise StepFailed(f"expected a DISARMED rejection, got {reason}")
            self.ok(f"quote {quote_id} rejected while disarmed (reason DISARMED)")

            await self.post(
                "strategy-engine",
                "/limits",
                {"max_notional_eure": "5", "operator": "first-trade-walk", "reason": "tiny first cap"},
                method="PUT",
            )
            for service in ("strategy-engine", "trade-executor"):
                await self.post(service, "/arm", {"operator": "first-trade-walk", "reason": "first trade"})
            self.ok("cap 5 EURe; strategy-engine and trade-executor armed")

            quote_id = await self.quote()
            reason = await _until("the decision", lambda: self.decision_of(reports, quote_id), t)
            if reason != "EXECUTE":
                raise StepFailed(f"quote {quote_id} was not commanded: {reason}")
            self.ok(f"quote {quote_id}: every gate passed, command emitted")

            async def settled() -> list[str] | None:
                found = await self.results_of(reports, quote_id)
                if "rejected" in found or "expired" in found:
                    raise StepFailed(f"the answer ended {found[-1]}: see `qlctl report chain {quote_id}`")
                return found if "settled" in found else None

            found = await _until("the answer settled", settled, t)
            self.ok(f"answer accepted by the relay and settled ({' -> '.join(found)})")
            chain = await reports.chain(quote_id)
            for stage in chain["stages"]:
                gap = stage["ms_since_previous"]
                self.say(f"      {stage['stage']:<30} {stage['at']}" + (f"  +{gap:.1f} ms" if gap is not None else ""))
            self.ok("the whole chain is in PostgreSQL (qlctl report chain " + quote_id + ")")
        for service in ("strategy-engine", "trade-executor"):
            await self.post(service, "/disarm", {"operator": "first-trade-walk", "reason": "first trade done"})
        self.ok("disarmed again; the stack stays up for qlctl status and qlctl tui")
        return quote_id

    async def _address(self) -> bool:
        st = await self.state("liquidity-manager")
        return bool(st.get("deposit_addresses"))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qlctl.first_trade",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per step")
    args = parser.parse_args()
    relay = os.environ["QL_RELAY_WS_URL"].replace("ws://", "http://").removesuffix("/ws")
    walk = Walk(
        Path(os.environ.get("QL_CONTROL_DIR", "/run/quoteloop")),
        os.environ["QL_DATABASE_URL"],
        relay,
        os.environ["QL_POA_BRIDGE_URL"].removesuffix("/rpc"),
        os.environ["QL_SIGNER_ACCOUNT_ID"],
        timeout_s=args.timeout,
    )
    try:
        asyncio.run(walk.run())
    except (StepFailed, ClientError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
