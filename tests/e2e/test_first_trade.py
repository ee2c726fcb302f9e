"""The seed's validation target, end to end on the simulators, the real Kafka and PostgreSQL:
one active-pair quote is priced, checked against credited inventory, decided, gated, answered
with a signed NEP-413 intent, settled by the simulated taker, and the whole chain is in
PostgreSQL. All seven daemons run, each through the shared runtime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.control import socket_path
from daemons.core.runtime import Service, serve
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings
from daemons.inventory_sync.service import InventorySync, InventorySyncSettings
from daemons.liquidity_manager.service import LiquidityManager
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.market_reference_ingest.service import MarketReferenceIngest
from daemons.market_reference_ingest.settings import MarketReferenceSettings
from daemons.near_intents_ingest.service import IngestSettings, NearIntentsIngest
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from daemons.trade_executor.service import TradeExecutor
from daemons.trade_executor.settings import ExecutorSettings
from daemons.venues.near_intents.nep413 import SignerKey
from qlctl.reports import Reports
from simulators.coingecko import CoinGeckoSimulator
from simulators.kraken import KrakenSimulator
from simulators.near_rpc import NearRpcSimulator
from simulators.poa_bridge import PoaBridgeSimulator
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.conftest import Stack, eventually, start_group_at_end

JWT = "jwt-generated-for-this-test"
BTC_FUNDED = 1_000_000  # 0.01 nBTC
EURE_FUNDED = 100 * 10**18


@dataclass
class Loop:
    verifier: VerifierState
    key: SignerKey
    relay: RelaySimulator
    poa: PoaBridgeSimulator
    control_dir: Path
    services: dict[str, Service] = field(default_factory=dict)
    tasks: list[asyncio.Task[int]] = field(default_factory=list)

    @property
    def account(self) -> str:
        return self.key.implicit_account_id

    async def call(self, service: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        sock = socket_path(self.control_dir, service)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            async with session.request(method, f"http://x{path}", json=body) as resp:
                return resp.status, await resp.json()


@pytest.fixture
async def loop(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[Loop]:
    verifier = VerifierState()
    key = SignerKey.generate()
    account = key.implicit_account_id  # an implicit account owns its key: no add_public_key needed
    verifier.deposit(account, NBTC_ID, BTC_FUNDED)
    verifier.deposit(account, EURE_ID, EURE_FUNDED)
    # takers wait ~1 s (protocol doc §1.8); all seven daemons share this test's one event loop
    relay = RelaySimulator(verifier, RelaySimConfig(jwt=JWT, collection_window_s=1.0, pick="best"))
    near = NearRpcSimulator(verifier)
    poa = PoaBridgeSimulator(verifier.deposit)
    kraken = KrakenSimulator(heartbeat_interval_s=0.2, tick_interval_s=0.2)
    coingecko = CoinGeckoSimulator()
    sims = [relay, near, poa, kraken, coingecko]
    for sim in sims:
        await sim.start()

    key_file, jwt_file, treasury = tmp_path / "signer.key", tmp_path / "relay.jwt", tmp_path / "treasury.toml"
    for path, secret in ((key_file, key.secret_for_export()), (jwt_file, JWT)):
        path.write_text(secret)
        path.chmod(0o600)
    treasury.write_text(f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n')
    run = uuid.uuid4().hex[:8]
    common: dict[str, Any] = dict(
        kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url, control_dir=control_dir,
        relay_ws_url=relay.ws_url, relay_rpc_url=relay.rpc_url, relay_jwt_file=jwt_file,
        near_rpc_url=near.base_url, poa_bridge_url=f"{poa.base_url}/rpc",
        kraken_ws_url=f"{kraken.base_url.replace('http://', 'ws://')}/v2",
        coingecko_url=f"{coingecko.base_url}/api/v3", signer_account_id=account, signer_key_file=key_file,
    )
    history_group = f"e2e-history-{run}"
    await start_group_at_end(stack, history_group)
    services: list[Service] = [
        HistoryWriter(HistoryWriterSettings(**common, history_group=history_group)),
        MarketReferenceIngest(MarketReferenceSettings(**common, market_startup_grace_s=0.5)),
        InventorySync(InventorySyncSettings(**common, inventory_group=f"e2e-inventory-{run}",
                                            inventory_interval_s=0.5, inventory_fresh_ms=5000)),
        LiquidityManager(LiquiditySettings(**common, treasury_file=treasury, liquidity_poll_interval_s=0.5)),
        NearIntentsIngest(IngestSettings(**common)),
        StrategyEngine(StrategySettings(**common)),
        TradeExecutor(ExecutorSettings(**common, executor_group=f"e2e-executor-{run}")),
    ]
    state = Loop(verifier, key, relay, poa, control_dir, {s.name: s for s in services})
    state.tasks = [asyncio.create_task(serve(s, handle_signals=False)) for s in services]
    try:
        yield state
    finally:
        for s in services:
            s.request_drain()
        codes = await asyncio.wait_for(asyncio.gather(*state.tasks, return_exceptions=True), timeout=60)
        for sim in sims:
            await sim.stop()
        assert all(c == 0 for c in codes), codes


async def test_one_quote_from_request_to_settlement_with_the_chain_in_postgres(
    loop: Loop, stack: Stack, pool: asyncpg.Pool
) -> None:
    strategy = loop.services["strategy-engine"]
    assert isinstance(strategy, StrategyEngine)

    def inputs_ready() -> bool:
        if strategy.price is None or strategy.inventory is None:
            return False
        inv = strategy.inventory.payload
        return (inv.account_id == loop.account and not inv.stale and strategy.price.payload.decisionable
                and loop.services["near-intents-ingest"].connected)  # type: ignore[attr-defined]

    await eventually(inputs_ready, timeout=60, what="fresh price, our inventory and the relay connection")
    for service in ("strategy-engine", "trade-executor"):
        status, body = await loop.call(service, "POST", "/arm", {"operator": "e2e", "reason": "first trade"})
        assert status == 200 and body["armed"] is True, body

    # a taker pays 3 EURe for nBTC: quoteloop gives BTC (SELL_BTC)
    quote = await loop.relay.emit_quote(asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=3 * 10**18,
                                        min_deadline_ms=60_000)
    qid = quote["quote_id"]

    async def statuses() -> list[str] | None:
        rows = await pool.fetch("SELECT status FROM trade_execution_results WHERE quote_id = $1"
                                " ORDER BY observed_at", qid)
        found = [r["status"] for r in rows]
        return found if "settled" in found else None

    found = await eventually(statuses, timeout=60, what="settled result stored in PostgreSQL")
    assert found[0] == "acknowledged" and found[-1] == "settled"

    async with Reports(stack.database_url) as reports:
        chain = await reports.chain(qid)
    [decision] = chain["decisions"]
    assert decision["decision"] == "execute" and decision["decision_reason"] == "EXECUTE"
    assert decision["price_event_id"] is not None and decision["inventory_snapshot_id"] is not None
    assert decision["event"]["payload"]["protocol_fee_pips"] == loop.verifier.fee()  # recorded beside the edge
    assert len(chain["request"]) == 1 and len(chain["demand"]) == 1 and len(chain["commands"]) == 1
    command = chain["commands"][0]["payload"]
    settled = chain["results"][-1]["payload"]
    assert settled["quote_hash"] and settled["tx_hash"] and settled["intent_hash"]
    stages = [s["stage"] for s in chain["stages"]]
    assert stages[:2] == ["request received", "decided"] and "sent to relay" in stages

    # the simulated verifier moved exactly the answer's amounts
    assert loop.verifier.balance(loop.account, NBTC_ID) == BTC_FUNDED - int(command["amount_out"])
    assert loop.verifier.balance(loop.account, EURE_ID) == EURE_FUNDED + int(command["amount_in"])
    # and exactly one answer reached the relay
    answers = [s for s in loop.relay.seen if s["kind"] == "ws_in" and '"quote_response"' in s.get("text", "")]
    assert len(answers) == 1


async def test_the_first_trade_walk_of_make_run(loop: Loop, stack: Stack) -> None:
    """The same checklist `make run` walks (simulators/first_trade.py), step by step."""
    from simulators.first_trade import Walk

    lines: list[str] = []
    walk = Walk(loop.control_dir, stack.database_url, loop.relay.base_url, loop.poa.base_url, loop.account,
                say=lines.append, timeout_s=60)
    quote_id = await walk.run()
    text = "\n".join(lines)
    for step in ("disarmed", "decisionable price", "inventory fresh", "requested to credited",
                 "rejected while disarmed (reason DISARMED)", "armed", "command emitted", "settled",
                 "chain is in PostgreSQL", "disarmed again"):
        assert step in text, (step, text)
    assert quote_id in text
    strategy = loop.services["strategy-engine"]
    assert isinstance(strategy, StrategyEngine) and strategy.arm.armed is False
