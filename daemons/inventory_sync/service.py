"""inventory-sync: read the signer account's credited balances from the `intents.near` verifier,
keep them apart from pending treasury movements, and publish `state.intent_inventory`
(docs/design.md §1, §7).

When it reads: at start, every `QL_INVENTORY_INTERVAL_S`, on `POST /refresh`, right after one of
our own answers settles (`exec.trade_result` with status `settled`; an answer expired by the
relay's silence makes the next reading a covering one, see "Finality"), when liquidity-manager
records a transition (`ops.liquidity_action`), and once more right after a credit is seen, so the
credit is reconciled at once. Several causes arriving together make one reading.

A reading is `mt_batch_balance_of` for the pair's two assets at `final` (the block height and
hash come with it), then the POA bridge's `recent_deposits` for each pair asset with a POA route,
in that order (see `reconcile`). The protocol fee is read at start and every
`QL_INVENTORY_FEE_INTERVAL_S`, not with every reading: NEAR RPC is metered (docs/near-rpc.md).

Finality: a `final` read trails the chain head by a few blocks, so a reading made right after a
settlement can predate it. When settlements or withdrawal burns were reported since the last
covering reading (and at start), a reading first takes `exec.trade_result`'s end offsets, then
the chain head (`block` at `optimistic`), waits `QL_INVENTORY_FINALITY_WAIT_MS`, and reads the
balances at `final`: if that block is at or past the head, the snapshot's `results_through`
carries those offsets (every settlement published below them is in the balances) and burns
folded before the head count as gone. If `final` has not reached the head yet, the snapshot
keeps the last coverage and another reading follows. Heights never go back: a reading from a
node behind the last published block is refused as a failed reading. Pending movements come
from the liquidity actions, folded from the whole topic at every start (the history is re-read
from the beginning, so pending funding survives a restart), and from the bridge's list.

Freshness: inventory is stale when no reading succeeded within `QL_INVENTORY_FRESH_MS`. A
snapshot is published after every successful reading and whenever staleness changes (a timer
fires at the moment the bound passes, whether or not the verifier answers), each carrying its
`age_ms` and `stale`. While stale, `/healthz` answers 503 (not fit for decisioning) and `/state`
says since when and why; entering and leaving staleness is logged. When the verifier does not
answer, the last reading is kept and re-published marked stale: balances are never invented, and
nothing is published before the first successful reading (staleness then shows in `/healthz`,
`/state` and the log).

Pause stops the readings (nothing new is asked of the venues); the liquidity history is still
followed, and staleness is still published, so consumers are never misled by silence. Causes
that arrive while paused are served by one reading on resume.

Where each part lives: `readings.py` (one reading, start to end, and the verifier's health),
`pending.py` (the bridge reads, the reconciliation and the holdings of a reading), `inputs.py`
(the Kafka input), `publishing.py` (the snapshots and staleness), `controls.py` (`POST /refresh`,
`/healthz`, `/state`), `metrics.py` (`GET /metrics`); the pure rules beside them in `snapshot.py`,
`reconcile.py`, `ledger.py`, `finality.py` and `triggers.py`; the settings in `settings.py`. This
module holds the state they share, the loops and the wiring.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from daemons.core.assets import ActivePair
from daemons.core.bus import EndOffsets, EventConsumer, EventProducer
from daemons.core.control import Route
from daemons.core.events import now_utc
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.inventory_sync.controls import Controls
from daemons.inventory_sync.finality import Coverage, Finality
from daemons.inventory_sync.inputs import LIQUIDITY_TOPIC, TRADE_TOPIC, Inputs
from daemons.inventory_sync.ledger import LiquidityLedger
from daemons.inventory_sync.metrics import daemon_metrics
from daemons.inventory_sync.pending import PendingPipeline
from daemons.inventory_sync.publishing import Publishing
from daemons.inventory_sync.readings import Readings
from daemons.inventory_sync.settings import InventorySyncSettings
from daemons.inventory_sync.snapshot import Synced, stale_at
from daemons.inventory_sync.triggers import Trigger, first_cause, timer_trigger
from daemons.venues.near_intents.near_rpc import client_from_settings
from daemons.venues.poa_bridge import PoaBridgeClient

__all__ = ["InventorySync", "InventorySyncSettings"]


class InventorySync(Service):
    name = "inventory-sync"

    def __init__(self, settings: InventorySyncSettings) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.pair = ActivePair(settings.btc_asset_id)
        self.account_id = settings.signer_account_id
        self.bound_ms = settings.inventory_fresh_ms
        # the chains the bridge can show deposits on for our assets (nBTC has none)
        self.chains = sorted({a.poa_chain for a in self.pair.assets if a.poa_chain})
        self.blocked: str | None = None if self.account_id else "QL_SIGNER_ACCOUNT_ID is not set"
        self.ledger = LiquidityLedger(since=settings.inventory_liquidity_since)
        self.finality = Finality()
        self.synced: Synced | None = None
        self.counts: Counter[str] = Counter(
            {
                k: 0
                for k in (
                    "readings",
                    "reading_failures",
                    "snapshots",
                    "publish_failures",
                    "trades_settled",
                    "trades_settled_before_start",
                    "silent_expiries",
                    "liquidity_events",
                    "bridge_failures",
                    "finality_short",
                )
            }
        )
        self.triggers: Counter[str] = Counter()
        # the daemon's concerns: each keeps its own state and works over the shared state above
        self.inputs = Inputs(self)
        self.readings = Readings(self)
        self.pipeline = PendingPipeline(self)
        self.publishing = Publishing(self)
        self.kafka_link = self.publishing.link  # the producer's health (`kafka_problem`)
        self.controls = Controls(self)
        self.producer = EventProducer(settings, client_id=self.name)
        # batched: a settlement asks for a reading that waits `inventory_min_gap_ms` anyway
        self.consumer = EventConsumer(
            settings,
            settings.inventory_group,
            [LIQUIDITY_TOPIC, TRADE_TOPIC],
            client_id=self.name,
            on_assigned=self.inputs.assigned,
            batched=True,
        )
        self.end_offsets = EndOffsets(settings, f"{self.name}-end-offsets")
        self.rpc = client_from_settings(settings, timeout_s=settings.inventory_rpc_timeout_s, daemon="inventory-sync")
        self.bridge = PoaBridgeClient(settings.poa_bridge_url, timeout=settings.inventory_bridge_timeout_s)
        # the reading asked for and not started yet, named by its first specific cause
        self._trigger: Trigger | None = None
        self._wake = asyncio.Event()
        self._last_read_at = float("-inf")  # event-loop time the last reading started
        self.next_due = now_utc()  # when the timer's reading falls due

    # --- the concerns' state, read through the service ------------------------------------

    @property
    def stale(self) -> bool | None:
        return self.publishing.stale

    @property
    def consecutive_failures(self) -> int:
        return self.readings.consecutive_failures

    @property
    def cover_pending(self) -> Coverage | None:
        return self.finality.pending

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if self.blocked:
            self.log.error("inventory_sync_blocked", reason=self.blocked)
            await self.drain_requested.wait()  # stay observable: nothing to read without the account
            return
        if not await self.start_bus(self.producer, self.consumer):
            await self.rpc.close()
            await self.bridge.close()
            return
        consuming = asyncio.create_task(self.inputs.consume_loop(), name="inventory-consume")
        try:
            self.request(Trigger("startup"))
            await self._sync_loop()
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
            self.controls.finish_waiters({"synced": False, "error": "inventory-sync is stopping"})
            await self.consumer.stop()
            await self.producer.stop()
            await self.end_offsets.stop()
            await self.rpc.close()
            await self.bridge.close()

    def request(self, trigger: Trigger) -> None:
        """Ask for a reading; the first specific cause since the last reading names it."""
        self._trigger = first_cause(self._trigger, trigger)
        self._wake.set()

    def pause(self) -> None:
        super().pause()
        self._wake.set()  # park now, so /state shows the pause in effect

    def resume(self) -> None:
        super().resume()
        self.request(Trigger("resume"))

    async def _sync_loop(self) -> None:
        while not self.drain_requested.is_set():
            await self._wait_for_work()
            # cleared after the wait, before the state is read: a wake set while the last pass
            # awaited (a pause during a reading) is not lost, and every cause set before it is seen
            self._wake.clear()
            if self.drain_requested.is_set():
                break
            if self.paused:
                self.parked = True
                # a refresh asked just before the pause is answered now, not at its timeout
                self.controls.finish_waiters({"synced": False, "paused": True, "error": "readings are paused"})
                await self.publishing.publish_staleness_change()
                continue
            self.parked = False
            trigger = self._trigger
            if trigger is None and now_utc() >= self.next_due:
                trigger = timer_trigger(self.finality.owed)
            if trigger is not None:
                self._trigger = None
                self._last_read_at = asyncio.get_running_loop().time()
                await self.readings.read(trigger)
            await self.publishing.publish_staleness_change()

    async def _wait_for_work(self) -> None:
        if self._trigger is not None and not self.paused:
            gap = self._last_read_at + self.cfg.inventory_min_gap_ms / 1000 - asyncio.get_running_loop().time()
            if gap > 0:  # what arrives meanwhile joins this reading
                try:
                    await asyncio.wait_for(self.drain_requested.wait(), timeout=gap)
                except TimeoutError:
                    pass
            return
        now = now_utc()
        deadlines = [] if self.paused else [self.next_due]
        if self.publishing.stale is False and self.synced is not None:
            turns_stale = stale_at(self.synced.synced_at, self.bound_ms)
            if turns_stale is not None:
                deadlines.append(turns_stale)
        timeout = max(0.0, (min(deadlines) - now).total_seconds()) if deadlines else None
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.drain_requested.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # --- control socket, health, metrics --------------------------------------------------

    def routes(self) -> list[Route]:
        return self.controls.routes()

    def state(self) -> dict[str, Any]:
        return self.controls.state()

    def health_reasons(self) -> list[str]:
        return self.controls.health_reasons()

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)
