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
`snapshot` and `reconcile` hold the rules; this module is the I/O around them.

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
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import AwareDatetime, Field, model_validator

from daemons.core.assets import ActivePair
from daemons.core.bus import EndOffsets, EventConsumer, EventProducer, next_offsets
from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.events import (
    AssetInventory,
    Envelope,
    IntentInventory,
    LiquidityAction,
    PendingMovement,
    Reconciliation,
    TradeResult,
    held_until_covered,
    new_event,
    now_utc,
)
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.settings import CoreSettings
from daemons.core.state_models import InventorySyncFields, conform
from daemons.inventory_sync.ledger import LiquidityLedger
from daemons.inventory_sync.metrics import daemon_metrics
from daemons.inventory_sync.reconcile import Reading, Reconciler, summary_status
from daemons.inventory_sync.snapshot import BridgeRead, bridge_read, freshness, holdings, stale_at
from daemons.venues.near_intents.near_rpc import NearRpcError, NearRpcRateLimited, client_from_settings
from daemons.venues.poa_bridge import PoaBridgeClient, PoaBridgeError

LIQUIDITY_TOPIC = "ops.liquidity_action"
TRADE_TOPIC = "exec.trade_result"


class InventorySyncSettings(CoreSettings):
    # NEAR RPC budget (requests/min): a covering reading is two calls (head, balances) about
    # every three seconds under load, an idle one a call per interval (see ExecutorSettings)
    near_rpc_budget_per_min: int = Field(default=36, ge=1)
    inventory_group: str = "inventory-sync"
    # a reading at least this often
    inventory_interval_s: float = Field(default=5.0, gt=0)
    # stale when no reading succeeded within this bound
    inventory_fresh_ms: int = Field(default=15_000, ge=1)
    inventory_rpc_timeout_s: float = Field(default=5.0, gt=0)
    inventory_bridge_timeout_s: float = Field(default=5.0, gt=0)
    # deposits asked of the bridge per chain (its maximum is 100)
    inventory_deposits_limit: int = Field(default=100, ge=1, le=100)
    inventory_poll_ms: int = Field(default=200, ge=1)
    # Readings asked for by events start at least this far apart: a burst of settlements (one
    # per answer at 200 answers/s) becomes one reading and one snapshot, not one each; with the
    # finality wait a covering reading costs two RPC calls, at most every 3.5 s (34/min).
    inventory_min_gap_ms: int = Field(default=3_500, ge=0, le=10_000)
    # after reading the chain head, wait this long before reading `final` balances: a `final`
    # read trails the head by ~3 blocks of ~0.6 s (docs/near-rpc.md, "Finality")
    inventory_finality_wait_ms: int = Field(default=2_000, ge=0, le=30_000)
    # the protocol fee changes rarely: read at start and this often
    inventory_fee_interval_s: float = Field(default=300.0, gt=0)
    inventory_kafka_retry_max_s: float = Field(default=5.0, gt=0)
    # liquidity actions first recorded before this instant are ignored (a treasury cut-over)
    inventory_liquidity_since: AwareDatetime | None = None
    inventory_reconciliation_keep: int = Field(default=20, ge=1)
    inventory_reconciliation_baselines: int = Field(default=8, ge=1)
    inventory_reconciliation_max_waits: int = Field(default=5, ge=0)
    # how long POST /refresh waits for its reading before answering 504
    inventory_refresh_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _bound_outlasts_interval(self) -> InventorySyncSettings:
        if self.inventory_fresh_ms <= self.inventory_interval_s * 1000:
            raise ValueError(
                "inventory_fresh_ms must be longer than inventory_interval_s, or inventory would "
                "go stale between two healthy readings"
            )
        return self


@dataclass(frozen=True)
class _Trigger:
    reason: str
    causation_id: uuid.UUID | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class _Coverage:
    """What the last covering reading proved its balances hold: every `exec.trade_result` below
    `results_through`, and every liquidity event folded up to `liquidity_seq`; the head it read."""

    results_through: dict[int, int]
    liquidity_seq: int
    head_height: int
    wanted: int  # `cover_wanted` when it was taken: the causes it answers
    taken_at: datetime  # before the end offsets and the head were read


@dataclass(frozen=True)
class _Synced:
    """The last successful reading and everything computed from it."""

    sync_id: str
    seq: int
    synced_at: datetime
    duration_ms: int
    block_height: int | None
    block_hash: str | None
    results_through: dict[int, int] | None
    trigger: str
    assets: list[AssetInventory]
    pending: list[PendingMovement]
    pending_complete: bool
    reconciliation: list[Reconciliation]
    fee_pips: int | None = None


class _BehindError(Exception):
    """The node answered from a block older than one already published."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
        self.producer = EventProducer(settings, client_id=self.name)
        # batched: a settlement asks for a reading that waits `inventory_min_gap_ms` anyway
        self.consumer = EventConsumer(
            settings,
            settings.inventory_group,
            [LIQUIDITY_TOPIC, TRADE_TOPIC],
            client_id=self.name,
            on_assigned=self._assigned,
            batched=True,
        )
        self.end_offsets = EndOffsets(settings, f"{self.name}-end-offsets")
        self.rpc = client_from_settings(settings, timeout_s=settings.inventory_rpc_timeout_s, daemon="inventory-sync")
        self.bridge = PoaBridgeClient(settings.poa_bridge_url, timeout=settings.inventory_bridge_timeout_s)
        self.ledger = LiquidityLedger(since=settings.inventory_liquidity_since)
        self.reconciler = Reconciler(
            self.pair.token_ids,
            baselines=settings.inventory_reconciliation_baselines,
            keep_results=settings.inventory_reconciliation_keep,
            max_waits=settings.inventory_reconciliation_max_waits,
        )
        self.blocked: str | None = None if self.account_id else "QL_SIGNER_ACCOUNT_ID is not set"
        self.synced: _Synced | None = None
        self.fee_pips: int | None = None
        self.fee_read_at: datetime | None = None
        self.coverage: _Coverage | None = None
        self.cover_pending: _Coverage | None = None  # a head taken that `final` has not reached
        # causes that want a covering reading (settlements, burns) seen, and covered so far
        self.cover_wanted = 1  # the first reading covers what happened before the start
        self.cover_done = 0
        self.published_height: int | None = None
        self.seq = 0
        # None until the first reading was attempted: the first verdict is always published
        self.stale: bool | None = None
        self.stale_since: datetime | None = self.started_at
        self.verifier_error: str | None = None
        self.verifier_down_since: datetime | None = None
        self.consecutive_failures = 0
        self.last_attempt_at: datetime | None = None
        self.bridge_reads: dict[str, BridgeRead] = {}  # the last good read per chain
        self.bridge_errors: dict[str, str | None] = {c: None for c in self.chains}
        self.bridge_read_at: dict[str, datetime] = {}
        self.history_caught_up = False
        self.kafka_error: str | None = None
        self.consumer_error: str | None = None
        self.trades_settled: deque[datetime] = deque(maxlen=10_000)
        self.last_trade_settled_at: datetime | None = None
        self.last_snapshot: dict[str, Any] | None = None
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
        self._trigger: _Trigger | None = None
        self._wake = asyncio.Event()
        self._last_read_at = float("-inf")  # event-loop time the last reading started
        self._next_due = now_utc()
        # a covering reading owed (final short of its head, or a failed attempt): due sooner than
        # the interval, by this many seconds, under this name
        self._owed_in: float | None = None
        self._refresh_waiters: list[asyncio.Future[dict[str, Any]]] = []

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
        consuming = asyncio.create_task(self._consume_loop(), name="inventory-consume")
        try:
            self._request(_Trigger("startup"))
            await self._sync_loop()
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
            self._finish_waiters({"synced": False, "error": "inventory-sync is stopping"})
            await self.consumer.stop()
            await self.producer.stop()
            await self.end_offsets.stop()
            await self.rpc.close()
            await self.bridge.close()

    def _request(self, trigger: _Trigger) -> None:
        """Ask for a reading; the first specific cause since the last reading names it."""
        if self._trigger is None or self._trigger.reason in ("interval", "finality"):
            self._trigger = trigger
        self._wake.set()

    def pause(self) -> None:
        super().pause()
        self._wake.set()  # park now, so /state shows the pause in effect

    def resume(self) -> None:
        super().resume()
        self._request(_Trigger("resume"))

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
                self._finish_waiters({"synced": False, "paused": True, "error": "readings are paused"})
                await self._publish_staleness_change()
                continue
            self.parked = False
            trigger = self._trigger
            if trigger is None and now_utc() >= self._next_due:
                trigger = _Trigger("finality" if self.cover_wanted > self.cover_done else "interval")
            if trigger is not None:
                self._trigger = None
                await self._read(trigger)
            await self._publish_staleness_change()

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
        deadlines = [] if self.paused else [self._next_due]
        if self.stale is False and self.synced is not None:
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

    # --- one reading ----------------------------------------------------------------------

    async def _read(self, trigger: _Trigger) -> None:
        assert self.account_id is not None
        waiters, self._refresh_waiters = self._refresh_waiters, []
        self.triggers[trigger.reason] += 1
        self._last_read_at = asyncio.get_running_loop().time()
        started = now_utc()
        self.last_attempt_at = started
        cover = self.cover_pending
        try:
            if cover is None and self.cover_wanted > self.cover_done:
                cover = await self._take_head()
            balances = await self.rpc.mt_batch_balance_of(self.account_id, self.pair.token_ids)
            height, block_hash = self.rpc.last_block_height, self.rpc.last_block_hash
            if height is not None and self.published_height is not None and height < self.published_height:
                raise _BehindError(
                    f"the node's final block {height} is behind the last published {self.published_height}"
                )
            await self._read_fee_if_due()
        except (NearRpcError, _BehindError, KafkaError) as exc:
            message = exc.message if isinstance(exc, (NearRpcError, _BehindError)) else str(exc)
            if cover is not None or self.cover_wanted > self.cover_done:  # owed: try again soon
                self.cover_pending = cover
                self._owed_in = max(1.0, exc.retry_after_s if isinstance(exc, NearRpcRateLimited) else 0.0)
            self._verifier_failed(f"{exc.__class__.__name__}: {message}")
            self._finish_waiters(
                {
                    "synced": False,
                    "error": self.verifier_error,
                    "retry_after_s": exc.retry_after_s if isinstance(exc, NearRpcRateLimited) else None,
                },
                waiters,
            )
            return
        except Exception as exc:  # a bug or an unforeseen client failure: visible, never fatal
            self.log.exception("verifier_read_failed_unexpectedly")
            self._verifier_failed(f"{exc.__class__.__name__}: {exc}")
            self._finish_waiters({"synced": False, "error": self.verifier_error}, waiters)
            return
        finally:
            owed, self._owed_in = self._owed_in, None
            self._next_due = now_utc() + timedelta(seconds=self.cfg.inventory_interval_s if owed is None else owed)
        finished = now_utc()
        self._verifier_ok(finished)
        self.cover_pending = None
        covers_until: datetime | None = None
        if cover is not None and height is not None and height >= cover.head_height:
            self.coverage, self.cover_done = cover, cover.wanted
            covers_until = cover.taken_at
        elif cover is not None:
            # final has not reached that head yet: read again with the same head, once the
            # blocks between them should be final (~0.6 s each)
            self.counts["finality_short"] += 1
            self.cover_pending = cover
            behind = cover.head_height - (height or cover.head_height)
            self._next_due = now_utc() + timedelta(seconds=max(0.3, 0.6 * behind))
        if self.cover_pending is None and self.cover_wanted > self.cover_done:
            self._request(_Trigger("finality"))  # causes that came after this reading's head
        # the bridge is read after the balances: what it still shows as uncredited was not in them
        reads = await self._read_bridge()
        self.seq += 1
        by_id = dict(zip(self.pair.token_ids, balances, strict=True))
        fundings, withdrawals = self.ledger.fundings(), self.ledger.withdrawals()
        outcome = self.reconciler.observe(
            Reading(
                seq=self.seq,
                started_at=started,
                finished_at=finished,
                balances=by_id,
                bridge=reads,
                bridge_read_at=now_utc(),
                covers_until=covers_until,
            ),
            fundings,
            withdrawals,
            list(self.trades_settled),
            finished,
        )
        self._prune_trades()
        # pending figures fall back to the last good bridge read of a chain that failed just now
        known: dict[str, BridgeRead | None] = {c: reads.get(c) or self.bridge_reads.get(c) for c in self.chains}
        held = holdings(
            self.pair.assets,
            by_id,
            fundings,
            withdrawals,
            known,
            self.coverage.liquidity_seq if self.coverage is not None else None,
        )
        self.synced = _Synced(
            sync_id=str(uuid.uuid4()),
            seq=self.seq,
            synced_at=finished,
            duration_ms=(finished - started) // timedelta(milliseconds=1),
            block_height=height,
            block_hash=block_hash,
            results_through=dict(self.coverage.results_through) if self.coverage is not None else None,
            trigger=trigger.reason,
            assets=held.assets,
            pending=held.pending,
            pending_complete=self.history_caught_up and all(reads.get(c) is not None for c in self.chains),
            reconciliation=outcome.entries,
            fee_pips=self.fee_pips,
        )
        self.counts["readings"] += 1
        self._set_fresh(finished)
        for r in outcome.resolved:
            self._log_reconciliation(r)
        inventory_id = await self._publish(trigger, finished)
        self.mark_success()
        self._finish_waiters(self._refresh_answer(inventory_id), waiters)
        if outcome.wants_reading:  # placed only by a reading whose head comes after the credit was seen
            self.cover_wanted += 1
            self._request(_Trigger("credit_observed"))

    async def _take_head(self) -> _Coverage:
        """What a reading can prove it covers: `exec.trade_result`'s end offsets and the
        liquidity events folded so far, taken before the chain head is read; then the wait for
        `final` to reach that head."""
        wanted, taken_at = self.cover_wanted, now_utc()
        ends = await self.end_offsets.of(TRADE_TOPIC)
        liquidity_seq = self.ledger.events_applied
        head = await self.rpc.block(finality="optimistic")
        wait = self.cfg.inventory_finality_wait_ms / 1000
        if wait > 0:
            try:
                await asyncio.wait_for(self.drain_requested.wait(), timeout=wait)
            except TimeoutError:
                pass
        return _Coverage(
            results_through=ends, liquidity_seq=liquidity_seq, head_height=head.height, wanted=wanted, taken_at=taken_at
        )

    async def _read_fee_if_due(self) -> None:
        """The protocol fee rides on every snapshot, so every decision records the one in force;
        it is read at start and every `inventory_fee_interval_s` (the last known one is kept)."""
        now = now_utc()
        if (
            self.fee_read_at is not None
            and (now - self.fee_read_at).total_seconds() < self.cfg.inventory_fee_interval_s
        ):
            return
        try:
            self.fee_pips = await self.rpc.fee()
            self.fee_read_at = now
        except NearRpcError as exc:
            self.log.warning("verifier_fee_unavailable", error=exc.message)

    async def _read_bridge(self) -> dict[str, BridgeRead | None]:
        assert self.account_id is not None
        account = self.account_id
        limit = self.cfg.inventory_deposits_limit

        async def one(chain: str) -> BridgeRead | None:
            try:
                result = await self.bridge.recent_deposits(account, chain, limit=limit)
            except PoaBridgeError as exc:
                self._bridge_failed(chain, f"{exc.__class__.__name__}: {exc}")
                return None
            read = bridge_read(chain, result, limit)
            self._bridge_ok(chain, read)
            return read

        results = await asyncio.gather(*(one(c) for c in self.chains))
        return dict(zip(self.chains, results, strict=True))

    def _prune_trades(self) -> None:
        oldest = self.reconciler.oldest_reading_at
        while self.trades_settled and oldest is not None and self.trades_settled[0] < oldest:
            self.trades_settled.popleft()

    # --- venue health transitions ----------------------------------------------------------

    def _verifier_failed(self, error: str) -> None:
        self.counts["reading_failures"] += 1
        self.consecutive_failures += 1
        if self.verifier_error is None:
            self.verifier_down_since = now_utc()
            self.log.warning("verifier_unavailable", venue="near_rpc", error=error, account_id=self.account_id)
        self.verifier_error = error
        self.notify_status()

    def _verifier_ok(self, at: datetime) -> None:
        if self.verifier_error is not None and self.verifier_down_since is not None:
            self.log.info(
                "verifier_recovered",
                venue="near_rpc",
                down_ms=(at - self.verifier_down_since) // timedelta(milliseconds=1),
            )
        self.verifier_error = None
        self.verifier_down_since = None
        self.consecutive_failures = 0

    def _bridge_failed(self, chain: str, error: str) -> None:
        self.counts["bridge_failures"] += 1
        if self.bridge_errors.get(chain) is None:
            self.log.warning("bridge_unavailable", venue="poa_bridge", chain=chain, error=error)
        self.bridge_errors[chain] = error

    def _bridge_ok(self, chain: str, read: BridgeRead) -> None:
        if self.bridge_errors.get(chain) is not None:
            self.log.info("bridge_recovered", venue="poa_bridge", chain=chain)
        self.bridge_errors[chain] = None
        self.bridge_reads[chain] = read
        self.bridge_read_at[chain] = now_utc()

    # --- staleness ------------------------------------------------------------------------

    def _set_fresh(self, at: datetime) -> None:
        if self.stale is not False:
            since = self.stale_since
            self.log.info(
                "inventory_fresh",
                account_id=self.account_id,
                stale_for_ms=None if since is None else (at - since) // timedelta(milliseconds=1),
            )
            self.notify_status()
        self.stale = False
        self.stale_since = None

    def _stale_reason(self, now: datetime) -> str:
        if self.synced is None:
            reason = "no successful verifier reading since start"
        else:
            age = (now - self.synced.synced_at) // timedelta(milliseconds=1)
            reason = f"no successful verifier reading for {age} ms (bound {self.bound_ms} ms)"
        if self.verifier_error:
            reason += f"; last error: {self.verifier_error}"
        if self.paused:
            reason += "; readings paused by the operator"
        return reason

    async def _publish_staleness_change(self) -> None:
        """Log and publish the moment inventory goes stale (recovery is the reading's own
        snapshot). The first verdict after start counts as a change; with no reading yet there
        is nothing to re-publish, so only the log and the control API say it."""
        now = now_utc()
        f = freshness(self.synced.synced_at if self.synced else None, now, self.bound_ms)
        if not f.stale:
            return
        if self.stale is None and self.last_attempt_at is None:
            return  # the first reading has not been tried yet
        if self.stale is True:
            return
        self.stale = True
        self.stale_since = stale_at(self.synced.synced_at, self.bound_ms) if self.synced else self.started_at
        self.log.warning(
            "inventory_stale",
            account_id=self.account_id,
            since=self.stale_since,
            reason=self._stale_reason(now),
            age_ms=f.age_ms,
        )
        self.notify_status()
        if self.synced is not None:
            await self._publish(_Trigger("staleness_change"), now)

    # --- publishing -----------------------------------------------------------------------

    def snapshot(self, trigger: str, now: datetime) -> IntentInventory:
        """The last reading as of `now`; only once there has been one."""
        assert self.account_id is not None and self.synced is not None
        s = self.synced
        f = freshness(s.synced_at, now, self.bound_ms)
        assert f.age_ms is not None
        return IntentInventory(
            inventory_id=str(uuid.uuid4()),
            account_id=self.account_id,
            assets=s.assets,
            synced_at=s.synced_at,
            block_height=s.block_height,
            block_hash=s.block_hash,
            results_through=s.results_through,
            age_ms=f.age_ms,
            stale=f.stale,
            stale_since=stale_at(s.synced_at, self.bound_ms) if f.stale else None,
            stale_reason=self._stale_reason(now) if f.stale else None,
            freshness_bound_ms=self.bound_ms,
            sync_id=s.sync_id,
            trigger=trigger,  # type: ignore[arg-type]
            pending_complete=s.pending_complete,
            pending=s.pending,
            reconciliation_status=summary_status(s.reconciliation),
            reconciliation=s.reconciliation,
            fee_pips=s.fee_pips,
        )

    async def _publish(self, trigger: _Trigger, now: datetime) -> str | None:
        """Publish the snapshot as of `now`; its `inventory_id`, or None when Kafka refused it."""
        payload = self.snapshot(trigger.reason, now)
        event: Envelope[IntentInventory] = new_event(
            payload,
            producer=self.producer_id,
            pair=self.cfg.pair,
            occurred_at=payload.synced_at if trigger.reason != "staleness_change" else now,
            correlation_id=trigger.correlation_id,
            causation_id=trigger.causation_id,
        )
        try:
            await self.producer.publish(event)
        except (KafkaError, OSError) as exc:
            self.counts["publish_failures"] += 1
            if self.kafka_error is None:
                self.log.error(
                    "kafka_publish_failed",
                    topic="state.intent_inventory",
                    error=str(exc),
                    inventory_id=payload.inventory_id,
                )
            self.kafka_error = f"{exc.__class__.__name__}: {exc}"
            self.notify_status()
            return None
        if self.kafka_error is not None:
            self.log.info("kafka_publish_recovered", topic="state.intent_inventory")
            self.kafka_error = None
        self.counts["snapshots"] += 1
        if payload.block_height is not None:
            self.published_height = max(self.published_height or 0, payload.block_height)
        self.last_snapshot = {
            "inventory_id": payload.inventory_id,
            "event_id": str(event.event_id),
            "published_at": event.observed_at,
            "trigger": trigger.reason,
            "stale": payload.stale,
        }
        return payload.inventory_id

    def _log_reconciliation(self, r: Reconciliation) -> None:
        fields = {
            "liquidity_action_id": r.liquidity_action_id,
            "asset_id": r.asset_id,
            "tx_hash": r.tx_hash,
            "expected": str(r.expected) if r.expected is not None else None,
            "credited": str(r.credited) if r.credited is not None else None,
        }
        if r.status == "credited_lower_than_expected":
            self.log.warning("credited_lower_than_expected", shortfall=str(r.shortfall), **fields)
        elif r.status == "inconclusive":
            self.log.warning("reconciliation_inconclusive", reason=r.reason, **fields)
        else:
            self.log.info("funding_reconciled", **fields)

    # --- Kafka input ----------------------------------------------------------------------

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        # the pending pipeline is rebuilt from the whole liquidity history on every assignment;
        # the fold ignores what it has already seen
        for tp in assigned:
            if tp.topic == LIQUIDITY_TOPIC:
                self.consumer.seek(tp, 0)

    async def _consume_loop(self) -> None:
        delay = 0.1
        while not self.drain_requested.is_set():
            try:
                deliveries = await self.consumer.poll(self.cfg.inventory_poll_ms)
                for d in self.dead_letters.screen(deliveries):
                    assert d.event is not None
                    self._on_event(d.event)
                if deliveries:
                    await self.consumer.commit(next_offsets(deliveries))
                if not self.history_caught_up:
                    await self._check_caught_up()
            except KafkaError as exc:
                if self.consumer_error is None:
                    self.log.error("kafka_consume_failed", error=str(exc))
                self.consumer_error = f"{exc.__class__.__name__}: {exc}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.inventory_kafka_retry_max_s)
                continue
            if self.consumer_error is not None:
                self.log.info("kafka_consume_recovered")
                self.consumer_error = None
            delay = 0.1

    def _on_event(self, event: Envelope[Any]) -> None:
        payload = event.payload
        if isinstance(payload, LiquidityAction):
            view = self.ledger.apply(event.event_id, payload, event.occurred_at)
            if view is None:
                return
            self.counts["liquidity_events"] += 1
            if view.burned and view.pending:
                self.cover_wanted += 1
            if self.history_caught_up:
                self._request(_Trigger("liquidity_action", event.event_id, payload.liquidity_action_id))
        elif isinstance(payload, TradeResult) and payload.status == "settled":
            if event.occurred_at < self.started_at:
                # published before this process started: the first reading covers it (it takes
                # the topic's end offsets before its head block)
                self.counts["trades_settled_before_start"] += 1
                return
            self.counts["trades_settled"] += 1
            self.cover_wanted += 1
            self.trades_settled.append(event.occurred_at)
            self.last_trade_settled_at = event.occurred_at
            self._request(_Trigger("trade_settled", event.event_id, payload.quote_id))
        elif isinstance(payload, TradeResult) and held_until_covered(payload.status, payload.resolved_by):
            # expired by the relay's silence: its hold waits for a covering reading, and the next
            # reading (at the latest the interval's) becomes one; no reading of its own (one per
            # unpicked answer would spend the NEAR RPC budget), nothing moved that we know of
            if event.occurred_at >= self.started_at:
                self.counts["silent_expiries"] += 1
                self.cover_wanted += 1

    async def _check_caught_up(self) -> None:
        """The liquidity history is read once the consumer stands at its end on every partition."""
        mine = {tp for tp in self.consumer.assignment() if tp.topic == LIQUIDITY_TOPIC}
        if not mine:
            return
        lag = await self.consumer.lag()
        if all(lag.get(f"{tp.topic}:{tp.partition}") == 0 for tp in mine):
            self.history_caught_up = True
            self.log.info("liquidity_history_read", actions=len(self.ledger), ignored=self.ledger.ignored)
            self._request(_Trigger("history_caught_up"))

    # --- control --------------------------------------------------------------------------

    def _finish_waiters(
        self, answer: dict[str, Any], waiters: list[asyncio.Future[dict[str, Any]]] | None = None
    ) -> None:
        if waiters is None:
            waiters, self._refresh_waiters = self._refresh_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(answer)

    def _refresh_answer(self, inventory_id: str | None) -> dict[str, Any]:
        s = self.synced
        assert s is not None
        return {
            "synced": True,
            "published": inventory_id is not None,
            "inventory_id": inventory_id,
            "sync_id": s.sync_id,
            "synced_at": s.synced_at,
            "block_height": s.block_height,
            "stale": False,
            "assets": [a.model_dump(mode="json") for a in s.assets],
            "reconciliation_status": summary_status(s.reconciliation),
        }

    def routes(self) -> list[Route]:
        async def refresh(_r: Any, _b: Any, caller: Caller) -> Any:
            if self.blocked:
                raise ControlError(409, f"blocked: {self.blocked}")
            if self.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            if self.paused:
                raise ControlError(409, "readings are paused; POST /resume first")
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._refresh_waiters.append(answer)
            self._request(_Trigger("refresh"))
            try:
                result = await asyncio.wait_for(asyncio.shield(answer), self.cfg.inventory_refresh_timeout_s)
            except TimeoutError:
                self.audit.record("refresh", caller, "timed out")
                raise ControlError(504, "the reading did not finish in time; see GET /state") from None
            if not result["synced"]:
                self.audit.record("refresh", caller, f"failed: {result['error']}")
                if result.get("paused"):
                    raise ControlError(409, "readings are paused; POST /resume first")
                if result.get("retry_after_s") is not None:  # our own NEAR RPC budget said no
                    raise ControlError(
                        429, f"NEAR RPC budget spent; retry in {result['retry_after_s']:.1f} s ({result['error']})"
                    )
                raise ControlError(502, f"verifier reading failed: {result['error']}")
            self.audit.record("refresh", caller, "synced", {"sync_id": result["sync_id"]})
            return result

        return [
            Route(
                "POST",
                "/refresh",
                refresh,
                "Read the verifier now; answers with the resulting inventory",
                OperatorAction,
            ),
        ]

    # --- state ----------------------------------------------------------------------------

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.blocked:
            reasons.append(f"blocked: {self.blocked}")
        else:
            f = freshness(self.synced.synced_at if self.synced else None, now_utc(), self.bound_ms)
            if f.stale:
                reasons.append(f"inventory_stale: {self._stale_reason(now_utc())}")
        if self.kafka_error:
            reasons.append(f"kafka_unavailable: {self.kafka_error}")
        if self.consumer_error:
            reasons.append(f"kafka_consume_failing: {self.consumer_error}")
        return reasons

    def state(self) -> dict[str, Any]:
        now = now_utc()
        s = self.synced
        f = freshness(s.synced_at if s else None, now, self.bound_ms)
        next_in = max(0, (self._next_due - now) // timedelta(milliseconds=1))
        reconciliation = s.reconciliation if s else []
        return conform(
            InventorySyncFields,
            {
                "connected": {
                    "verifier": self.last_attempt_at is not None and self.verifier_error is None,
                    "bridge": {c: c in self.bridge_reads and self.bridge_errors.get(c) is None for c in self.chains},
                    "kafka": self.kafka_error is None and self.consumer_error is None,
                },
                "authoritative": not f.stale and self.kafka_error is None and bool(s and s.pending_complete),
                "blocked_reason": self.blocked,
                "account_id": self.account_id,
                "active_pair": {"btc": self.pair.btc.asset_id, "eure": self.pair.eure.asset_id},
                "stale": f.stale,
                "stale_since": (stale_at(s.synced_at, self.bound_ms) if s else self.started_at) if f.stale else None,
                "stale_reason": self._stale_reason(now) if f.stale else None,
                "age_ms": f.age_ms,
                "freshness_bound_ms": self.bound_ms,
                "last_sync": None
                if s is None
                else {
                    "sync_id": s.sync_id,
                    "synced_at": s.synced_at,
                    "block_height": s.block_height,
                    "block_hash": s.block_hash,
                    "trigger": s.trigger,
                    "duration_ms": s.duration_ms,
                },
                "finality": {
                    "covering_wanted": self.cover_wanted > self.cover_done,
                    "covered_head_height": self.coverage.head_height if self.coverage else None,
                    "results_through": self.coverage.results_through if self.coverage else None,
                    "liquidity_seq": self.coverage.liquidity_seq if self.coverage else None,
                    "wait_ms": self.cfg.inventory_finality_wait_ms,
                },
                "fee": {
                    "pips": self.fee_pips,
                    "read_at": self.fee_read_at,
                    "interval_s": self.cfg.inventory_fee_interval_s,
                },
                "near_rpc": self.rpc.usage().model_dump(mode="json"),
                "last_attempt_at": self.last_attempt_at,
                "verifier_error": self.verifier_error,
                "verifier_down_since": self.verifier_down_since,
                "consecutive_failures": self.consecutive_failures,
                "next_reading_in_ms": None if self.paused or self.blocked else next_in,
                "interval_s": self.cfg.inventory_interval_s,
                "inventory": [a.model_dump(mode="json") for a in s.assets] if s else [],
                "pending": [p.model_dump(mode="json") for p in s.pending] if s else [],
                "pending_complete": bool(s and s.pending_complete),
                "reconciliation_status": summary_status(reconciliation),
                "reconciliation": [r.model_dump(mode="json") for r in reconciliation],
                "liquidity_history": {
                    "caught_up": self.history_caught_up,
                    "actions": len(self.ledger),
                    "events_applied": self.ledger.events_applied,
                    "ignored_actions": self.ledger.ignored,
                    "since": self.cfg.inventory_liquidity_since,
                },
                "bridge": {
                    c: {
                        "error": self.bridge_errors.get(c),
                        "read_at": self.bridge_read_at.get(c),
                        "deposits": len(self.bridge_reads[c].deposits) if c in self.bridge_reads else None,
                    }
                    for c in self.chains
                },
                "last_trade_settled_at": self.last_trade_settled_at,
                "last_snapshot": self.last_snapshot,
                "kafka_error": self.kafka_error,
                "consumer_error": self.consumer_error,
                "counts": dict(self.counts),
                "triggers": dict(self.triggers),
            },
        )
