"""Test support: the seven daemons in-process on the simulators, the real Kafka and the real
PostgreSQL, each through the shared runtime. Used by the end-to-end first trade, the control-API
fuzzer and the secrets test. The solver account is the implicit account of a key generated for
the test, funded in both assets in the simulated verifier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

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
from simulators.coingecko import CoinGeckoSimulator
from simulators.kraken import KrakenSimulator
from simulators.near_rpc import NearRpcSimulator
from simulators.poa_bridge import PoaBridgeSimulator
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.conftest import Stack, eventually, start_group_at_end

BTC_FUNDED = 1_000_000  # 0.01 nBTC
EURE_FUNDED = 100 * 10**18


@dataclass
class Seven:
    verifier: VerifierState
    key: SignerKey
    jwt: str
    relay: RelaySimulator
    poa: PoaBridgeSimulator
    control_dir: Path
    run: str
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.key.implicit_account_id

    def ready_to_answer(self) -> bool:
        """A quote emitted now can be answered: strategy-engine has a decisionable price and a
        fresh snapshot of this run's account, the relay is connected, and trade-executor's own
        inventory feed (it checks again, and refuses until then) holds a fresh snapshot of this
        run's account too — not one an earlier test left on the shared topic."""
        strategy, executor = self.services["strategy-engine"], self.services["trade-executor"]
        price, inventory = strategy.price, strategy.inventory  # type: ignore[attr-defined]
        own = executor.inventory.latest  # type: ignore[attr-defined]
        return bool(
            price is not None
            and price.payload.decisionable
            and inventory is not None
            and inventory.payload.account_id == self.account
            and not inventory.payload.stale
            and self.services["near-intents-ingest"].connected  # type: ignore[attr-defined]
            and own is not None
            and own.account_id == self.account
            and not own.stale
        )

    async def call(
        self, service: str, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        sock = socket_path(self.control_dir, service)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            kwargs: dict[str, Any] = (
                {"data": raw, "headers": {"Content-Type": "application/json"}} if raw is not None else {"json": body}
            )
            async with session.request(method, f"http://x{path}", **kwargs) as resp:
                text = await resp.text()
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, text


@asynccontextmanager
async def seven_daemons(
    stack: Stack,
    control_dir: Path,
    tmp_path: Path,
    *,
    jwt: str,
    key: SignerKey | None = None,
    metrics_ports: dict[str, int] | None = None,
) -> AsyncIterator[Seven]:
    """`metrics_ports`: daemon name -> its loopback `GET /metrics` port (`metrics_tcp_port`)."""
    verifier = VerifierState()
    key = key or SignerKey.generate()
    account = key.implicit_account_id
    verifier.deposit(account, NBTC_ID, BTC_FUNDED)
    verifier.deposit(account, EURE_ID, EURE_FUNDED)
    # takers wait ~1 s (docs/near-intents-relay.md §8); all seven daemons share the test's one event loop
    relay = RelaySimulator(verifier, RelaySimConfig(jwt=jwt, collection_window_s=1.0, pick="best"))
    near = NearRpcSimulator(verifier)
    poa = PoaBridgeSimulator(verifier.deposit, chain=verifier.chain)
    kraken = KrakenSimulator(heartbeat_interval_s=0.2, tick_interval_s=0.2)
    coingecko = CoinGeckoSimulator()
    sims = [relay, near, poa, kraken, coingecko]
    for sim in sims:
        await sim.start()
    key_file, jwt_file, treasury = tmp_path / "signer.key", tmp_path / "relay.jwt", tmp_path / "treasury.toml"
    for path, secret in ((key_file, key.secret_for_export()), (jwt_file, jwt)):
        path.write_text(secret)
        path.chmod(0o600)
    treasury.write_text(f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n')
    run = uuid.uuid4().hex[:8]
    common: dict[str, Any] = dict(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        control_dir=control_dir,
        relay_ws_url=relay.ws_url,
        relay_rpc_url=relay.rpc_url,
        relay_jwt_file=jwt_file,
        near_rpc_url=near.base_url,
        poa_bridge_url=f"{poa.base_url}/rpc",
        kraken_ws_url=f"{kraken.base_url.replace('http://', 'ws://')}/v2",
        coingecko_url=f"{coingecko.base_url}/api/v3",
        signer_account_id=account,
        signer_key_file=key_file,
    )

    def port(cls: type[Service]) -> dict[str, Any]:
        return {"metrics_tcp_port": metrics_ports[cls.name]} if metrics_ports else {}

    history_group = f"seven-history-{run}"
    await start_group_at_end(stack, history_group)
    services: list[Service] = [
        HistoryWriter(HistoryWriterSettings(**common, **port(HistoryWriter), history_group=history_group)),
        MarketReferenceIngest(
            MarketReferenceSettings(**common, **port(MarketReferenceIngest), market_startup_grace_s=0.5)
        ),
        InventorySync(
            InventorySyncSettings(
                **common,
                **port(InventorySync),
                inventory_group=f"seven-inventory-{run}",
                inventory_interval_s=3,
                inventory_fresh_ms=10_000,
            )
        ),
        LiquidityManager(
            LiquiditySettings(**common, **port(LiquidityManager), treasury_file=treasury, liquidity_poll_interval_s=0.5)
        ),
        NearIntentsIngest(IngestSettings(**common, **port(NearIntentsIngest))),
        StrategyEngine(StrategySettings(**common, **port(StrategyEngine))),
        # its own group each run, and no look back: other tests' commands on the shared topic are not its
        TradeExecutor(
            ExecutorSettings(
                **common,
                **port(TradeExecutor),
                executor_group=f"seven-executor-{run}",
                executor_new_group_lookback_ms=0,
            )
        ),
    ]
    seven = Seven(verifier, key, jwt, relay, poa, control_dir, run, {s.name: s for s in services})
    tasks = [asyncio.create_task(serve(s, handle_signals=False)) for s in services]
    try:
        await eventually(
            lambda: all(socket_path(control_dir, n).exists() for n in seven.services),
            timeout=30,
            what="every control socket listening",
        )
        # a new executor group starts at the end of cmd.execute_trade: a command published before
        # its consumer is assigned would be skipped, so wait for every consumer group to join
        consumers = [
            getattr(s, attr) for s in services for attr in ("consumer", "results_consumer") if hasattr(s, attr)
        ]
        # assigned and placed: strategy-engine's new group seeks to the end of norm.swap_demand in
        # its assignment callback, and a quote published before that seek would be skipped
        await eventually(
            lambda: all(c.assignment() and c.positioned.is_set() for c in consumers),
            timeout=60,
            what="every consumer group joined and positioned",
        )
        for c in consumers:
            await asyncio.wait_for(c.positions(), timeout=30)  # and knows where it reads from
        yield seven
    finally:
        for s in services:
            s.request_drain()
        codes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
        for sim in sims:
            await sim.stop()
        assert all(c == 0 for c in codes), codes
