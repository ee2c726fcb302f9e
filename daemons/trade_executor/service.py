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

Where each part lives: `answering.py` (steps 1-3), `resolution.py` (step 4), `recovery.py` (the
start path), `controls.py` (the control socket and `/state`); the pure decisions beside them in
`gates.py`, `steps.py`, `settlement.py`, `ledger.py`. This module holds the state they share, the
loops and the wiring, and `step`: every result-bearing ledger transition goes through it (the
write, then `written`: the live book derived from the returned row, the publication); a
command's first row, written straight in its state, goes through `written` too. `metrics.py`
holds what `/metrics` reads.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.arming import ArmSwitch
from daemons.core.assets import ActivePair
from daemons.core.bus import Delivery, EventConsumer, EventProducer, Placed, next_offsets
from daemons.core.ceilings import CeilingsError, load_ceilings
from daemons.core.control import AuditWatch, Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import TradeResult, held_until_covered, new_event, now_utc
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.trade_executor.answer import SaltCache
from daemons.trade_executor.answering import Answering
from daemons.trade_executor.controls import Controls
from daemons.trade_executor.gates import (
    GateInputs,
    InventoryView,
    price_problem,
)
from daemons.trade_executor.inventory import InventoryFeed
from daemons.trade_executor.ledger import (
    RESULT_STATUS,
    LedgerRow,
    LedgerState,
    LedgerStore,
    result_from_row,
)
from daemons.trade_executor.metrics import daemon_metrics
from daemons.trade_executor.prices import PriceFeed
from daemons.trade_executor.recovery import Recovery
from daemons.trade_executor.resolution import Resolution
from daemons.trade_executor.settings import ExecutorSettings
from daemons.trade_executor.settlement import (
    LiveAnswer,
    LiveBook,
)
from daemons.trade_executor.signer import SignerStatus, load_key
from daemons.venues.backoff import Backoff
from daemons.venues.near_intents.near_rpc import (
    BlockHeader,
    NearRpcError,
    NearRpcRateLimited,
    client_from_settings,
)
from daemons.venues.near_intents.nep413 import SignerKey
from daemons.venues.near_intents.nonce_outcome import HeaderCache
from daemons.venues.near_intents.relay_rpc import (
    RelayRpcClient,
)
from daemons.venues.near_intents.relay_ws import (
    Connected,
    Disconnected,
    LateRelayAnswer,
    QuoteFilter,
    QuoteStatus,
    Reject,
    RelayWsClient,
    RelayWsConfig,
)

S = LedgerState


class TradeExecutor(Service):
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
            on_assigned=self._assigned,
        )
        self.rpc = client_from_settings(settings, timeout_s=settings.executor_rpc_timeout_s, daemon="trade-executor")
        self.book = LiveBook()
        self.headers = HeaderCache()
        self.final_block: BlockHeader | None = None  # read at most every executor_final_block_interval_s
        self.final_block_read_at = float("-inf")
        self.salt_retry_at = float("-inf")  # after a failed salt read, not before this loop time
        self.signer_retry_at = float("-inf")  # after a signer check that could not decide, likewise
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
        self.relay_error: str | None = None
        self.store: LedgerStore | None = None
        self.db_error: str | None = "not connected yet"
        self.kafka_error: str | None = None
        self.rpc_error: str | None = None
        self.recovered_at: datetime | None = None
        # command ids some coroutine is working on (refcounted): the sweeps leave them alone
        self.busy: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending_statuses: list[QuoteStatus] = []
        # results on Kafka whose ledger note (`published_state`) is not written yet
        self.published_marks: dict[str, LedgerState] = {}
        self.errors: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.completed = 0
        self.last_command: dict[str, Any] | None = None
        self.last_request: dict[str, Any] | None = None
        self.last_venue_response: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        # the executor's concerns, each over the state above (service.py: the loops and wiring)
        self.answering = Answering(self)
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
        await self._connect_db()
        helpers = [
            asyncio.create_task(self.inventory.run(self._stop), name="inventory"),
            asyncio.create_task(self.prices.run(self._stop), name="prices"),
            asyncio.create_task(self._sweep_loop(), name="sweep"),
        ]
        if self.cfg.strict_audit:
            helpers.append(asyncio.create_task(self.audit_watch.run(), name="audit-watch"))
        if self.relay is not None:
            helpers.append(asyncio.create_task(self._relay_loop(), name="relay-events"))
        self.notify_status()
        try:
            await self._command_loop()
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
                self.log.warning("close_failed", client=name, error=f"{exc.__class__.__name__}: {exc}")
        if self.relay_rpc is not None:
            await self.relay_rpc.close()
        if self.store is not None:
            if self.published_marks and self.db_error is None:
                try:
                    await self._note_published()
                except DB_ERRORS as exc:  # the next start republishes what was not noted
                    self.log.warning("published_notes_lost", count=len(self.published_marks), error=str(exc))
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

    async def _connect_db(self) -> None:
        """Connect (or check) and run recovery; on failure stay down and say so."""
        try:
            if self.store is None:
                pool = await connect_pool(self.cfg.database_url, min_size=1, max_size=4)
                self.store = LedgerStore(pool)
            else:
                await self.store.ping()
            await self.recovery.recover()
        except DB_ERRORS as exc:
            self._db_lost(exc)
            return
        if self.db_error is not None:
            self.log.info("ledger_available", recovered_at=self.recovered_at)
        self.db_error = None
        self.notify_status()

    def _db_lost(self, exc: BaseException) -> None:
        if self.db_error is None:
            self.log.error("ledger_unavailable", error=f"{exc.__class__.__name__}: {exc}")
        self.db_error = f"{exc.__class__.__name__}: {exc}"
        self.errors["ledger_unavailable"] += 1
        self.notify_status()

    def _store(self) -> LedgerStore:
        if self.store is None:
            raise RuntimeError("ledger store used before PostgreSQL was connected")
        return self.store

    # --- commands -------------------------------------------------------------------------------

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions this group never committed on start `executor_new_group_lookback_ms` back."""
        since_ms = int(now_utc().timestamp() * 1000) - self.cfg.executor_new_group_lookback_ms
        for tp in assigned:
            if await self.consumer.committed(tp) is None:
                self.consumer.seek(tp, await self.consumer.offset_at(tp, since_ms))

    async def _command_loop(self) -> None:
        while not self.drain_requested.is_set():
            if self.db_error is not None:
                # without the ledger nothing is answered: commands wait in Kafka
                await self._nap(self.cfg.executor_poll_ms / 1000)
                continue
            try:
                deliveries = await self._poll()
            except KafkaError as exc:
                self._kafka_failed(exc)
                await self._nap(0.5)
                continue
            if deliveries:
                await self._take(deliveries)

    async def _poll(self) -> list[Delivery]:
        """One poll that a drain can interrupt: during a group rebalance aiokafka waits for the
        new assignment whatever the poll timeout says (a killed predecessor holds the group until
        its session times out), and a drain must not wait for that."""
        poll = asyncio.ensure_future(self.consumer.poll(timeout_ms=self.cfg.executor_poll_ms))
        drain = asyncio.ensure_future(self.drain_requested.wait())
        try:
            await asyncio.wait({poll, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
        if poll.done():
            return poll.result()
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        return []

    async def _take(self, deliveries: list[Delivery]) -> None:
        good = self.dead_letters.screen(deliveries)
        # Accepted concurrently: a command's inventory check and its hold run with no await
        # between them (see `_accept`), so interleaving at the ledger writes cannot over-commit.
        outcomes = await asyncio.gather(
            *(self.answering.take(d.event) for d in good),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        failed: list[Delivery] = []
        for d, outcome in zip(good, outcomes, strict=True):
            if isinstance(outcome, DB_ERRORS):
                failed.append(d)
                self._db_lost(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        done = deliveries
        if failed:
            self._rewind(failed)
            first = {d.tp: d.offset for d in sorted(failed, key=lambda d: d.offset, reverse=True)}
            # what lies at or past a rewound position is read again; a command already stored is
            # then a duplicate, which republishes its result and never answers twice
            done = [d for d in deliveries if d.tp not in first or d.offset < first[d.tp]]
        try:
            await self.consumer.commit(next_offsets(done))
        except KafkaError as exc:
            self._kafka_failed(exc)

    def _rewind(self, rest: list[Delivery]) -> None:
        """Read these again once PostgreSQL is back (a ledger row is the only proof of receipt)."""
        first: dict[TopicPartition, int] = {}
        for d in rest:
            first[d.tp] = min(first.get(d.tp, d.offset), d.offset)
        for tp, offset in first.items():
            self.consumer.seek(tp, offset)

    def _gate_inputs(self, now: datetime) -> GateInputs:
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

    def _unbusy(self, cid: str) -> None:
        self.busy[cid] -= 1
        if self.busy[cid] <= 0:
            del self.busy[cid]

    @contextmanager
    def _working(self, cid: str) -> Iterator[None]:
        """Mark a command as in someone's hands for a transition and its publication: the
        backlog sweep leaves it alone, so no result goes out twice from two paths."""
        self.busy[cid] += 1
        try:
            yield
        finally:
            self._unbusy(cid)

    # --- results --------------------------------------------------------------------------------

    async def step(
        self,
        cid: str,
        target: LedgerState,
        at: datetime,
        *,
        settled_hold: bool = True,
        noted: Callable[[LedgerRow], None] | None = None,
        **fields: Any,
    ) -> LedgerRow | None:
        """One ledger transition end to end: the durable write, the live book derived from the row
        it returns (`LiveBook.apply`), `noted` (the caller's counts and log line, so they are in
        place before anyone can read the result), and the row's result published (a failed publish
        is retried by the sweep). None: the row was not in a state this transition leaves from —
        another path moved it first, and its own result stands."""
        moved = await self._store().transition(cid, target, at, **fields)
        if moved is None:
            return None
        await self.written(moved, settled_hold=settled_hold, noted=noted)
        return moved

    async def written(
        self, row: LedgerRow, *, settled_hold: bool = True, noted: Callable[[LedgerRow], None] | None = None
    ) -> None:
        """What follows a durable ledger write (`step`, or a command's first row written straight
        in its state): the live book derived from the row, `noted`, the result published."""
        self.book.apply(row, settled_hold=settled_hold)
        if noted is not None:
            noted(row)
        if RESULT_STATUS[row.state] is not None:
            await self._publish(row)

    async def _publish(self, row: LedgerRow, *, republish: bool = False) -> bool:
        """Publish the row's result, then note it in the ledger; on failure the sweep retries."""
        result = result_from_row(row)
        at = getattr(row, f"{row.state.value}_at") or now_utc()
        placed = await self._send_result(result, at, causation=row.command_event_id, key=row.command_id)
        if placed is None:
            return False
        if held_until_covered(result.status, result.resolved_by):
            self.book.place_settled(row.command_id, {placed.partition: placed.offset + 1})
            self.recovered_unplaced.discard(row.command_id)
        if not republish:
            self.results[result.status] += 1
        # noted in the ledger by the next sweep, many rows in one write; until then the backlog
        # sweep leaves the row alone, and a crash before the note republishes it once more
        self.published_marks[row.command_id] = row.state
        return True

    async def _note_published(self) -> None:
        marks, self.published_marks = self.published_marks, {}
        try:
            await self._store().mark_published_many(marks)
        except BaseException:
            for cid, state in marks.items():  # a newer publication of the row wins
                self.published_marks.setdefault(cid, state)
            raise

    async def _send_result(
        self, result: TradeResult, at: datetime, *, causation: Any = None, key: str | None = None
    ) -> Placed | None:
        """Publish a result; where it landed, or None when Kafka refused it (the sweep retries)."""
        event = new_event(
            result,
            producer=self.producer_id,
            pair=self.cfg.pair,
            occurred_at=at,
            correlation_id=result.quote_id,
            causation_id=causation,
        )
        try:
            placed = await self.producer.publish(event, key=key or result.command_id)
        except (KafkaError, OSError) as exc:
            self._kafka_failed(exc)
            return None
        if self.kafka_error is not None:
            self.log.info("kafka_publish_recovered")
            self.kafka_error = None
        self.mark_success()
        return placed

    def _kafka_failed(self, exc: BaseException) -> None:
        if self.kafka_error is None:
            self.log.error("kafka_unavailable", error=str(exc))
        self.kafka_error = f"{exc.__class__.__name__}: {exc}"
        self.errors["kafka_unavailable"] += 1

    # --- the relay: statuses, late answers ------------------------------------------------------

    async def _relay_loop(self) -> None:
        assert self.relay is not None
        async for item in self.relay.events():
            try:
                if isinstance(item, QuoteStatus):
                    await self.resolution.on_status(item)
                elif isinstance(item, LateRelayAnswer):
                    await self.resolution.on_late_answer(item)
                elif isinstance(item, Reject):
                    self.errors[f"relay_frame_{item.code}"] += 1
                    if item.guaranteed and item.seq is not None and not self.relay.config.auto_ack:
                        await self.relay.ack(item)  # a poison status must not come back forever
                elif isinstance(item, Connected):
                    self.log.info("relay_connected", venue="near_intents", epoch=item.epoch)
                    self.notify_status()
                elif isinstance(item, Disconnected):
                    self.log.warning("relay_disconnected", venue="near_intents", reason=item.reason)
                    self.notify_status()
                # quote requests are near-intents-ingest's business
            except DB_ERRORS as exc:
                self._db_lost(exc)
            except Exception:
                self.errors["internal_error"] += 1
                self.log.exception("relay_item_failed", kind=getattr(item, "kind", None))

    # --- the sweep: deadlines, backlog, salt, PostgreSQL ----------------------------------------

    async def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            await self._nap(self.cfg.executor_resolve_interval_s, self._stop)
            if self._stop.is_set():
                return
            try:
                await self._sweep()
            except DB_ERRORS as exc:
                self._db_lost(exc)
            except Exception:
                self.errors["internal_error"] += 1
                self.log.exception("sweep_failed")

    async def _sweep(self) -> None:
        if self.db_error is not None:
            await self._connect_db()
            if self.db_error is not None:
                return
        await self._note_published()
        pending, self.pending_statuses = self.pending_statuses, []
        for item in pending:
            await self.resolution.on_status(item)
        # what answering needs comes first from the NEAR RPC budget: the signer and the salt
        if (
            self.key is not None
            and self.signer.status == "unverified"
            and asyncio.get_running_loop().time() >= self.signer_retry_at
        ):
            await self.controls.authorize_signer()
        if (
            self.key is not None
            and self.salt.wants_refresh(now_utc())
            and asyncio.get_running_loop().time() >= self.salt_retry_at
        ):
            await self._refresh_salt()
        now = now_utc()
        self.book.release_withheld(now, self.cfg.executor_settle_grace_ms)
        await self.resolution.resolve_due(self.book.due(now, self.cfg.executor_settle_grace_ms, skip=set(self.busy)))
        await self.resolution.audit_silence()
        await self.recovery.publish_backlog()
        await self.recovery.place_recovered()
        self.notify_status()

    async def _refresh_salt(self) -> None:
        try:
            salt = await self.rpc.current_salt()
        except NearRpcError as exc:
            self.errors["rpc_current_salt"] += 1
            self.rpc_error = exc.message
            # not again before the budget or the node allows (never every sweep)
            wait = exc.retry_after_s if isinstance(exc, NearRpcRateLimited) else 1.0
            self.salt_retry_at = asyncio.get_running_loop().time() + max(0.5, wait)
            return
        self.rpc_error = None
        self.salt.put(salt, now_utc())

    # --- recovery (the start path) --------------------------------------------------------------

    # --- signer ---------------------------------------------------------------------------------

    # --- cancel live answers --------------------------------------------------------------------

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
        if self.db_error is not None:
            reasons.append(f"ledger_unavailable: {self.db_error}")
        if self.relay_error is not None:
            reasons.append(f"relay_unavailable: {self.relay_error}")
        elif self.relay is None or not self.relay.connected:
            reasons.append("relay_disconnected")
        if self.kafka_error is not None:
            reasons.append(f"kafka_unavailable: {self.kafka_error}")
        return reasons

    def gate_status(self) -> str:
        return ("armed; " if self.arm.armed else "disarmed; ") + super().gate_status()

    def blocked_reason(self, now: datetime) -> str | None:
        """Why a command arriving now would not be answered, or None."""
        if self.db_error is not None:
            return f"ledger unavailable (commands wait in Kafka): {self.db_error}"
        g = self._gate_inputs(now)
        for problem, why in (
            (g.draining, "draining"),
            (g.paused, "paused"),
            (not g.armed, "disarmed"),
            (g.audit_impaired is not None, f"audit history impaired: {g.audit_impaired}"),
            (g.signer_problem is not None, g.signer_problem),
            (not g.relay_connected, "relay disconnected"),
        ):
            if problem:
                return why
        stale_price = price_problem(self.prices.latest, now, self.ceilings.max_price_age_ms)
        if stale_price is not None:
            return stale_price.reason
        inv = self.inventory.latest
        if inv is None:
            return "no inventory snapshot yet"
        if inv.stale or inv.age_ms_at(now) > self.cfg.executor_inventory_max_age_ms:
            return f"inventory snapshot {inv.inventory_id} is stale"
        return None

    # --- helpers --------------------------------------------------------------------------------

    async def _nap(self, seconds: float, until: asyncio.Event | None = None) -> None:
        event = until or self.drain_requested
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
        except TimeoutError:
            pass
