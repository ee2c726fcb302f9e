"""trade-executor: answer the relay from pre-funded inventory, durably idempotent (docs/design.md
§5, §8).

The loop, per `cmd.execute_trade`:

1. A command already in the ledger (or in hand) is a duplicate delivery: the result already
   recorded is republished, nothing is answered.
2. Check (pure, `gates.py`): draining, paused, disarmed, strict audit, signer, relay connection,
   the command itself, `answer_by`, the deadline asked for, the root-owned ceilings (given per
   answer, EURe notional, live exposure), its own price check against the latest
   `ref.market_price` (edge floor, freshness), and the late inventory check of the asset given
   against the latest snapshot minus what live answers hold. A failure is `refused` (a
   `RefusalCode`): the command's row is written straight in `refused` and published. A pass
   reserves the amount at once, before any await.
3. Nonce and deadline (salt from a ≤ 5 min cache), the NEP-413 `token_diff` signed, then the
   one durable write before the frame: the command's row straight in `submitted` with the signed
   payload and quote_hash (the command's offset is committed only after it). Then, with no await
   between the check and the frame's write, still armed, `answer_by` not passed, price and
   inventory fresh and exposure within its ceiling (else `rejected`, never sent, its hold kept
   until its deadline), send the `quote_response` and await the relay: OK → `acknowledged`, an
   error → `rejected` with the relay's text verbatim, no answer in time → `uncertain`. Each
   outcome is published.
4. A live answer is resolved by the venue only: a matching `quote_status` → `settled` (acked
   after the write when guaranteed delivery is on); past its deadline + grace, `is_nonce_used`
   read at the last block at or before the deadline → settled or `expired` (read later, a nonce
   the verifier cleaned up reads as unused: `nonce_outcome`). An answer the node cannot decide
   keeps its hold and shows in `/state` (`undecided`). Uncertain answers likewise; nothing is
   ever resubmitted.

The start path is the recovery path: every unresolved ledger row is resolved from the venue and
its result published (received → refused, a row an earlier version left; signing → resolved
at once, it was never sent; submitted → uncertain, then resolved; acknowledged/uncertain →
watched). The same recovery runs
when PostgreSQL comes back after an outage; while it is away no command is taken (they wait in
Kafka) and `/state` says why. Results are published at least once: `published_state` in the
ledger says what is known to be on Kafka, and a sweep republishes whatever is behind.

Starts disarmed on every start. `POST /disarm` with `cancel_live: true` also burns the nonces of
live answers through the relay (empty-intent payloads) and records it in the ledger.

Where each part lives: `intake.py` (reading commands, offsets committed past the durable row),
`answering.py` (steps 1-3 up to the stored answer), `sending.py` (step 3's frame and the
venue's answer), `resolution.py` (the relay's events and step 4), `sweep.py` (the
periodic sweep), `recovery.py` (the start path), `publishing.py` (every result-bearing ledger
write end to end: the write, the live book derived from the returned row, the result published;
the in-hand marks), `controls.py` (the control socket and `/state`), `metrics.py` (`/metrics`);
the pure decisions beside them in `gates.py`, `steps.py`, `settlement.py`, `ledger.py`. This
module holds the state they share, the dependencies' health links, the loops and the wiring.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from daemons.core.arming import ArmSwitch
from daemons.core.assets import ActivePair
from daemons.core.bus import EventConsumer, EventProducer
from daemons.core.ceilings import CeilingsError, load_ceilings
from daemons.core.control import AuditWatch, Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.health import Link, describe
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.trade_executor.answer import SaltCache
from daemons.trade_executor.answering import Answering
from daemons.trade_executor.chain_reads import ChainReads
from daemons.trade_executor.controls import Controls
from daemons.trade_executor.gates import (
    GateInputs,
    InventoryView,
)
from daemons.trade_executor.intake import Intake
from daemons.trade_executor.inventory import InventoryFeed
from daemons.trade_executor.ledger import (
    LedgerState,
    LedgerStore,
)
from daemons.trade_executor.metrics import daemon_metrics
from daemons.trade_executor.prices import PriceFeed
from daemons.trade_executor.publishing import InHand, Publisher
from daemons.trade_executor.recovery import Recovery
from daemons.trade_executor.resolution import Resolution
from daemons.trade_executor.sending import Sending
from daemons.trade_executor.settings import ExecutorSettings
from daemons.trade_executor.settlement import (
    LiveAnswer,
    LiveBook,
)
from daemons.trade_executor.signer import SignerStatus, load_key
from daemons.trade_executor.sweep import Sweep
from daemons.venues.backoff import Backoff
from daemons.venues.near_intents.near_rpc import (
    client_from_settings,
)
from daemons.venues.near_intents.nep413 import SignerKey
from daemons.venues.near_intents.relay_rpc import (
    RelayRpcClient,
)
from daemons.venues.near_intents.relay_ws import (
    QuoteFilter,
    QuoteStatus,
    RelayWsClient,
    RelayWsConfig,
)

S = LedgerState


class TradeExecutor(Service):
    kafka_link: Link  # publishes: always has one
    name = "trade-executor"

    def __init__(
        self, settings: ExecutorSettings, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.pair = ActivePair(settings.btc_asset_id)
        # the root-owned ceilings: refused at start if missing, writable by others, or looser
        # than this executor's own settings (daemons/core/ceilings.py)
        self.ceilings = load_ceilings(settings.ceilings_file, self.pair)
        if settings.executor_inventory_max_age_ms > self.ceilings.max_inventory_age_ms:
            raise CeilingsError(
                f"QL_EXECUTOR_INVENTORY_MAX_AGE_MS {settings.executor_inventory_max_age_ms} is over the "
                f"ceiling max_inventory_age_ms {self.ceilings.max_inventory_age_ms}"
            )
        self.arm = ArmSwitch(self.audit, self.log)
        self.audit_watch = AuditWatch(settings.control_dir, self.log)
        self.random_bytes = random_bytes
        self.producer = EventProducer(settings, client_id=self.name)
        # a new group starts a short way back (`_assigned`): a command sent while the executor was
        # joining gets its result; an older one is long past its answer_by
        self.consumer = EventConsumer(
            settings,
            settings.executor_group,
            ["cmd.execute_trade"],
            client_id=self.name,
            new_group_starts_at="latest",
            on_assigned=lambda assigned: self.intake.assigned(assigned),
        )
        self.rpc = client_from_settings(settings, timeout_s=settings.executor_rpc_timeout_s, daemon="trade-executor")
        self.book = LiveBook()
        # answers expired by relay silence, to check on chain as the budget allows
        self.audits: deque[LiveAnswer] = deque()
        self.audit_counts: Counter[str] = Counter()
        # live answers whose outcome the node could not decide (logged once each)
        self.undecided: set[str] = set()
        # settled holds recovered at start, waiting to learn the offsets a snapshot must cover
        self.recovered_unplaced: set[str] = set()
        self.inventory = InventoryFeed(settings, self._on_snapshot)
        self.prices = PriceFeed(settings)
        self.salt = SaltCache(settings.executor_salt_max_age_s)
        self.key: SignerKey | None = None
        self.signer = SignerStatus(status="unverified", detail="not loaded yet")
        self.relay: RelayWsClient | None = None
        self.relay_rpc: RelayRpcClient | None = None
        self.relay_error: str | None = None  # why there is no relay client at all (its JWT)
        self.store: LedgerStore | None = None
        self.db = Link(self.log, down="ledger_unavailable", up="ledger_available", error="not connected yet")
        self.kafka_link = Link(self.log, down="kafka_unavailable", up="kafka_publish_recovered")
        self.near_rpc = Link(self.log, down="near_rpc_failing", up="near_rpc_recovered", level="warning")
        self.recovered_at: datetime | None = None
        # command ids some coroutine is working on: the sweeps leave them alone
        self.busy = InHand()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending_statuses: list[QuoteStatus] = []
        self.errors: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.completed = 0
        self.last_command: dict[str, Any] | None = None
        self.last_request: dict[str, Any] | None = None
        self.last_venue_response: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        # the executor's concerns, each over the state above (service.py: the loops and wiring)
        self.chain = ChainReads(self)
        self.intake = Intake(self)
        self.publisher = Publisher(self)
        self.sweep = Sweep(self)
        self.answering = Answering(self)
        self.sending = Sending(self)
        self.resolution = Resolution(self)
        self.recovery = Recovery(self)
        self.controls = Controls(self)

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        self.key, self.signer = load_key(self.cfg.signer_account_id, self.cfg.signer_key_file)
        await self.controls.authorize_signer()
        if not await self.start_bus(self.producer, self.consumer):
            await self.rpc.close()
            return
        try:
            jwt = read_secret_file(self.cfg.relay_jwt_file, "QL_RELAY_JWT_FILE")
        except SecretFileError as exc:
            self.relay_error = str(exc)
            self.log.error("relay_jwt_unavailable", venue="near_intents", error=self.relay_error)
        else:
            self.relay = self._relay_client(jwt)
            self.relay_rpc = RelayRpcClient(self.cfg.relay_rpc_url, jwt, timeout_s=self.cfg.executor_rpc_timeout_s)
            await self.relay.start()
        await self.connect_db()
        helpers = [
            asyncio.create_task(self.inventory.run(self._stop), name="inventory"),
            asyncio.create_task(self.prices.run(self._stop), name="prices"),
            asyncio.create_task(self.sweep.run(self._stop), name="sweep"),
        ]
        if self.cfg.strict_audit:
            helpers.append(asyncio.create_task(self.audit_watch.run(), name="audit-watch"))
        if self.relay is not None:
            helpers.append(asyncio.create_task(self.resolution.relay_events(self.relay), name="relay-events"))
        self.notify_status()
        try:
            await self.intake.run()
            await self._finish_in_hand()
        finally:
            self._stop.set()
            if self.relay is not None:
                await self.relay.stop()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._close()

    async def _close(self) -> None:
        # Bounded: leaving the consumer group waits for a rebalance in progress (for instance one
        # held by a killed predecessor's session), and a drain must not hang on it.
        for name, closer in (
            ("consumer", self.consumer.stop),
            ("producer", self.producer.stop),
            ("near_rpc", self.rpc.close),
        ):
            try:
                await asyncio.wait_for(closer(), timeout=self.cfg.executor_close_timeout_s)
            except Exception as exc:  # noqa: BLE001 - closing must go on to the next client
                self.log.warning("close_failed", client=name, error=describe(exc))
        if self.relay_rpc is not None:
            await self.relay_rpc.close()
        if self.store is not None:
            if self.publisher.marks and self.db.healthy:
                try:
                    await self.publisher.note_published()
                except DB_ERRORS as exc:  # the next start republishes what was not noted
                    self.log.warning("published_notes_lost", count=len(self.publisher.marks), error=str(exc))
            await self.store.pool.close()

    def _relay_client(self, jwt: str) -> RelayWsClient:
        instance = self.cfg.executor_relay_instance_id
        return RelayWsClient(
            RelayWsConfig(
                url=self.cfg.relay_ws_url,
                jwt=jwt,
                instance_id=instance,
                quote_filter=QuoteFilter(tokens_in=self.pair.token_ids, tokens_out=self.pair.token_ids),
                guaranteed_status=instance is not None,
                # with guaranteed delivery a fill is acknowledged only after its ledger write
                auto_ack=instance is None,
                answer_timeout_s=self.cfg.executor_relay_answer_timeout_s,
                max_frame_bytes=self.cfg.relay_max_frame_bytes,
            ),
            backoff=Backoff(
                initial_s=self.cfg.relay_backoff_initial_s,
                max_s=self.cfg.relay_backoff_max_s,
                budget=self.cfg.relay_reconnect_budget,
                window_s=self.cfg.relay_reconnect_window_s,
            ),
        )

    async def _finish_in_hand(self) -> None:
        """Drain: commands in hand get their relay answer (or time out) and their result."""
        if self.tasks:
            done, pending = await asyncio.wait(set(self.tasks), timeout=self.cfg.executor_drain_timeout_s)
            if pending:
                self.log.error("drain_left_commands_in_hand", count=len(pending))

    def pause(self) -> None:
        super().pause()
        self.parked = True  # takes effect at once: the gate refuses every new command

    def resume(self) -> None:
        super().resume()
        self.parked = False

    # --- PostgreSQL -----------------------------------------------------------------------------

    async def connect_db(self) -> None:
        """Connect (or check) and run recovery; on failure stay down and say so."""
        try:
            if self.store is None:
                pool = await connect_pool(self.cfg.database_url, min_size=1, max_size=4)
                self.store = LedgerStore(pool)
            else:
                await self.store.ping()
            await self.recovery.recover()
        except DB_ERRORS as exc:
            self.db_lost(exc)
            return
        self.db.ok(recovered_at=self.recovered_at)
        self.notify_status()

    def db_lost(self, exc: BaseException) -> None:
        self.db.fail(exc)
        self.errors["ledger_unavailable"] += 1
        self.notify_status()

    def kafka_failed(self, exc: BaseException) -> None:
        self.kafka_link.fail(exc)
        self.errors["kafka_unavailable"] += 1

    def ledger(self) -> LedgerStore:
        if self.store is None:
            raise RuntimeError("ledger store used before PostgreSQL was connected")
        return self.store

    # --- commands -------------------------------------------------------------------------------

    def gate_inputs(self, now: datetime) -> GateInputs:
        return GateInputs(
            now=now,
            paused=self.paused,
            draining=self.drain_requested.is_set(),
            armed=self.arm.armed,
            signer_problem=None
            if self.signer.ready and self.key is not None
            else f"signer {self.signer.status}: {self.signer.detail}",
            relay_connected=self.relay is not None and self.relay.connected,
            max_min_deadline_ms=self.cfg.executor_max_min_deadline_ms,
            audit_impaired=self.audit_watch.impaired if self.cfg.strict_audit else None,
        )

    # --- inventory ------------------------------------------------------------------------------

    def _on_snapshot(self, view: InventoryView, results_through: dict[int, int] | None) -> None:
        # only the signer's own balances prove a settlement of its answers is in them
        signer = self.signer.account_id or self.cfg.signer_account_id
        if view.account_id is not None and signer is not None and view.account_id != signer:
            return
        self.book.forget_covered(results_through)

    # --- control and state ----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return self.controls.routes()

    def state(self) -> dict[str, Any]:
        return self.controls.state()

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        if not self.signer.ready:
            reasons.append(f"signer_{self.signer.status}: {self.signer.detail}")
        reasons += self.db.reason("ledger_unavailable")
        if self.relay_error is not None:
            reasons.append(f"relay_unavailable: {self.relay_error}")
        elif self.relay is None or not self.relay.connected:
            reasons.append("relay_disconnected")
        return reasons + self.kafka_link.reason("kafka_unavailable")

    def gate_status(self) -> str:
        return ("armed; " if self.arm.armed else "disarmed; ") + super().gate_status()

    # --- helpers --------------------------------------------------------------------------------

    async def nap(self, seconds: float, until: asyncio.Event | None = None) -> None:
        event = until or self.drain_requested
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
        except TimeoutError:
            pass
