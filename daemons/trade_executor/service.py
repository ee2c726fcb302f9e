"""trade-executor: answer the relay from pre-funded inventory, durably idempotent (docs/design.md
§5, §8).

The loop, per `cmd.execute_trade`:

1. Write the command's ledger row (`received`) before anything else. A row that already exists
   means a duplicate delivery: the result already recorded is republished, nothing is answered.
2. Check (pure, `gates.py`): draining, paused, disarmed, strict audit, signer, relay connection,
   the command itself, `answer_by`, the deadline asked for, the root-owned ceilings (given per
   answer, EURe notional, live exposure), its own price check against the latest
   `ref.market_price` (edge floor, freshness), and the late inventory check of the asset given
   against the latest snapshot minus what live answers hold. A failure is `refused` (a
   `RefusalCode`), recorded and published. A pass reserves the amount at once, before any await.
3. Nonce and deadline (salt from a ≤ 5 min cache) → ledger `signing`; sign the NEP-413
   `token_diff` → ledger `submitted` with the signed payload and quote_hash; then, with no await
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
its result published (received → refused; signing → resolved at once, it was never sent;
submitted → uncertain, then resolved; acknowledged/uncertain → watched). The same recovery runs
when PostgreSQL comes back after an outage; while it is away no command is taken (they wait in
Kafka) and `/state` says why. Results are published at least once: `published_state` in the
ledger says what is known to be on Kafka, and a sweep republishes whatever is behind.

Starts disarmed on every start. `POST /disarm` with `cancel_live: true` also burns the nonces of
live answers through the relay (empty-intent payloads) and records it in the ledger.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import Field

from daemons.core.arming import ArmSwitch, DisarmBody
from daemons.core.assets import ActivePair
from daemons.core.bus import Delivery, EventConsumer, EventProducer, Placed, next_offsets, topic_end_offsets
from daemons.core.ceilings import CeilingsError, load_ceilings
from daemons.core.control import AuditWatch, Caller, ControlError, OperatorAction, Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import Envelope, ExecuteTrade, RefusalCode, TradeResult, new_event, now_utc
from daemons.core.failpoints import failpoint
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.trade_executor.answer import SaltCache, cancel_payload, plan_nonce, sign_answer
from daemons.trade_executor.gates import (
    GateInputs,
    InventoryCheck,
    InventoryView,
    Refusal,
    SendInputs,
    check_ceilings,
    check_inventory,
    check_price,
    command_refusal,
    price_problem,
    send_refusal,
)
from daemons.trade_executor.inventory import InventoryFeed
from daemons.trade_executor.ledger import (
    LIVE,
    RESULT_STATUS,
    LedgerRow,
    LedgerState,
    LedgerStore,
    execution_id_for,
    resolve_by_nonce,
    result_from_row,
)
from daemons.trade_executor.prices import PriceFeed
from daemons.trade_executor.settings import ExecutorSettings
from daemons.trade_executor.settlement import (
    LiveAnswer,
    LiveBook,
    RecoveryStep,
    cancel_succeeded,
    expiry_reason,
    recovery_step,
)
from daemons.trade_executor.signer import SignerStatus, authorize, load_key
from daemons.venues.backoff import Backoff
from daemons.venues.near_intents.near_rpc import (
    BlockHeader,
    NearRpcError,
    NearRpcRateLimited,
    client_from_settings,
)
from daemons.venues.near_intents.nep413 import SignerKey, datetime_to_ns
from daemons.venues.near_intents.nonce_outcome import HeaderCache, LookupsSpent, NonceOutcome, nonce_outcome
from daemons.venues.near_intents.relay_rpc import (
    RelayPublishFailed,
    RelayRpcClient,
    RelayRpcClientError,
    reason_code,
)
from daemons.venues.near_intents.relay_ws import (
    Connected,
    Disconnected,
    LateRelayAnswer,
    QuoteFilter,
    QuoteStatus,
    Reject,
    RelayAnswer,
    RelayConnectionLost,
    RelayNotConnected,
    RelayTimeout,
    RelayWsClient,
    RelayWsConfig,
)

S = LedgerState


class ResolveBody(OperatorAction):
    """An operator's verdict on an undecided answer, with the evidence as the reason."""

    command_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["settled", "expired"]
    reason: str = Field(min_length=1, max_length=2000)


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
        # a new group starts at the end: a command from before the executor's first start is stale
        self.consumer = EventConsumer(
            settings, settings.executor_group, ["cmd.execute_trade"], client_id=self.name, new_group_starts_at="latest"
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

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        self.key, self.signer = load_key(self.cfg.signer_account_id, self.cfg.signer_key_file)
        await self._authorize_signer()
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
            await self._recover()
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
            *(self._accept(d.event) for d in good),  # type: ignore[arg-type]
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

    async def _accept(self, event: Envelope[ExecuteTrade]) -> None:
        cmd = event.payload
        now = now_utc()
        self.last_command = {
            "command_id": cmd.command_id,
            "quote_id": cmd.quote_id,
            "decision_id": cmd.decision_id,
            "received_at": now,
            "answer_by": cmd.answer_by,
        }
        row = await self._store().insert_received(event, now)
        if row is None:
            await self._duplicate(event, now)
            return
        refusal = (
            command_refusal(cmd, self.pair, self._gate_inputs(now))
            or check_ceilings(cmd, self.pair, self.ceilings, self.book.live_exposure(cmd.asset_out))
            or check_price(cmd, self.pair, self.prices.latest, now, self.ceilings)
        )
        if refusal is not None:
            await self._refuse(row, refusal, now)
            return
        check = check_inventory(
            self.inventory.latest,
            cmd.asset_out,
            cmd.amount_out,
            self.book.reserved(cmd.asset_out),
            now,
            self.cfg.executor_inventory_max_age_ms,
            self.signer.account_id,
        )
        if check.refusal is not None:
            await self._refuse(row, check.refusal, now)
            return
        # reserve now, with no await since the check: the next command already sees this hold
        self.book.hold(
            LiveAnswer(
                command_id=cmd.command_id,
                quote_id=cmd.quote_id,
                asset_out=cmd.asset_out,
                amount_out=cmd.amount_out,
                state=S.RECEIVED,
            )
        )
        self.busy[cmd.command_id] += 1
        task = asyncio.create_task(self._answer(row, cmd, check), name=f"answer-{cmd.command_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _duplicate(self, event: Envelope[ExecuteTrade], now: datetime) -> None:
        cmd = event.payload
        store = self._store()
        existing = await store.get(cmd.command_id)
        if existing is not None:
            self.errors["duplicate_commands"] += 1
            self.log.info(
                "duplicate_command", command_id=cmd.command_id, quote_id=cmd.quote_id, state=existing.state.value
            )
            if RESULT_STATUS[existing.state] is None:
                return  # in hand (or left for recovery): its result is on the way
            await self._publish(existing, republish=True)
            return
        other = await store.get_by_quote(cmd.quote_id)
        holder = f"command {other.command_id} ({other.state.value})" if other is not None else "another command"
        # Not stored (the quote's row belongs to the other command), but deterministic: a
        # redelivery gets the same refusal with the same execution_id.
        self.errors["duplicate_quotes"] += 1
        self.refusals["quote_already_answered"] += 1
        result = TradeResult(
            execution_id=execution_id_for(cmd.command_id),
            command_id=cmd.command_id,
            quote_id=cmd.quote_id,
            decision_id=cmd.decision_id,
            status="refused",
            reason_code="quote_already_answered",
            reason=f"quote {cmd.quote_id} already belongs to {holder}: a quote is never answered twice",
            direction=cmd.direction,
            asset_in=cmd.asset_in,
            asset_out=cmd.asset_out,
            amount_in=cmd.amount_in,
            amount_out=cmd.amount_out,
            command_received_at=now,
        )
        self.log.warning(
            "command_refused", command_id=cmd.command_id, quote_id=cmd.quote_id, reason_code="quote_already_answered"
        )
        await self._send_result(result, now, causation=event.event_id)

    async def _refuse(self, row: LedgerRow, refusal: Refusal, now: datetime) -> None:
        with self._working(row.command_id):
            refused = await self._store().transition(
                row.command_id,
                S.REFUSED,
                now,
                reason=refusal.reason,
                reason_code=refusal.code,
                inventory_id=refusal.inventory_id,
                spendable_at_check=refusal.spendable,
                reserved_at_check=refusal.reserved,
            )
            if refused is None:
                return  # past `received` already: not a refusal any more
            self.refusals[refusal.code] += 1
            self.book.release(row.command_id)
            self.log.info(
                "command_refused",
                command_id=row.command_id,
                quote_id=row.quote_id,
                reason_code=refusal.code,
                reason=refusal.reason,
            )
            self.completed += 1
            await self._publish(refused)

    async def _answer(self, row: LedgerRow, cmd: ExecuteTrade, check: InventoryCheck) -> None:
        cid = cmd.command_id
        store = self._store()
        try:
            salt = await self._current_salt()
            now = now_utc()
            late = command_refusal(cmd, self.pair, self._gate_inputs(now))  # again, after the await
            if salt is None and late is None:
                late = Refusal(RefusalCode.SALT_UNAVAILABLE, f"current_salt could not be read: {self.rpc_error}")
            if late is not None:
                await self._refuse(row, late, now)
                return
            assert salt is not None and self.key is not None and self.relay is not None
            signer_id = self.signer.account_id or ""
            plan = plan_nonce(salt, now, cmd.min_deadline_ms, self.cfg.executor_answer_margin_ms, self.random_bytes)
            self.book.update(cid, state=S.SIGNING, signer_id=signer_id, nonce=plan.nonce_b64, deadline=plan.deadline)
            answer = sign_answer(self.key, signer_id, cmd, plan, self.cfg.verifier_contract)
            signed_at = now_utc()
            # one durable write before the answer leaves: nonce, deadline and signature together
            submitted = await store.transition(
                cid,
                S.SUBMITTED,
                signed_at,
                signer_id=signer_id,
                salt=plan.salt,
                nonce=plan.nonce_b64,
                deadline=plan.deadline,
                inventory_id=check.inventory_id,
                spendable_at_check=check.spendable,
                reserved_at_check=check.reserved,
                signed_data=answer.signed_data,
                quote_hash=answer.quote_hash,
                quote_output=answer.quote_output_wire(),
                signed_at=signed_at,
            )
            if submitted is None:
                raise RuntimeError(f"ledger row {cid} left `received` under the executor's feet")
            failpoint("trade-executor.after_submitted")  # signed and durable, not yet sent
            self.book.update(cid, state=S.SUBMITTED, quote_hash=answer.quote_hash)
            sent_at = now_utc()
            # the last check, with no await between it and the frame's write: once /disarm has
            # answered nothing leaves, nor anything late, on inputs gone stale, or over a ceiling
            withheld = send_refusal(
                cmd,
                self.pair,
                self.ceilings,
                SendInputs(
                    now=sent_at,
                    armed=self.arm.armed,
                    price=self.prices.latest,
                    inventory=self.inventory.latest,
                    inventory_max_age_ms=self.cfg.executor_inventory_max_age_ms,
                    live_exposure=self.book.live_exposure(cmd.asset_out),
                ),
            )
            if withheld is not None:
                await self._withhold(submitted, withheld)
                return
            self.last_request = {
                "command_id": cid,
                "quote_id": cmd.quote_id,
                "quote_hash": answer.quote_hash,
                "deadline": plan.deadline,
                "sent_at": sent_at,
            }
            self.log.info(
                "answer_submitted",
                command_id=cid,
                quote_id=cmd.quote_id,
                quote_hash=answer.quote_hash,
                deadline=plan.deadline.isoformat(),
            )
            outcome: RelayAnswer | RelayTimeout | RelayNotConnected
            try:
                outcome = await self.relay.send_quote_response(
                    cmd.quote_id,
                    answer.quote_output,
                    answer.signed_data,
                    timeout_s=self.cfg.executor_relay_answer_timeout_s,
                )
            except (RelayTimeout, RelayNotConnected) as exc:
                outcome = exc
            await self._apply_answer(submitted, outcome, sent_at, now_utc())
        except DB_ERRORS as exc:
            # the row stays where it is; recovery resolves it once PostgreSQL is back
            self._db_lost(exc)
        except Exception:
            self.errors["internal_error"] += 1
            self.log.exception("answer_failed", command_id=cid, quote_id=cmd.quote_id)
            try:
                await self._refuse(
                    row, Refusal(RefusalCode.INTERNAL_ERROR, "the executor failed before signing"), now_utc()
                )
            except Exception:  # noqa: BLE001 - the row may be past `received`: the sweeps resolve it
                pass
        finally:
            self._unbusy(cid)

    async def _withhold(self, row: LedgerRow, refusal: Refusal) -> None:
        """A stored answer that must not leave any more: rejected without being sent. Its hold
        stays until its deadline passes (its signature is valid until then)."""
        self.book.withhold(row.command_id)  # before the await: no other command sees it released
        moved = await self._store().transition(
            row.command_id,
            S.REJECTED,
            now_utc(),
            reason=refusal.reason,
            reason_code=refusal.code,
            venue_response={"not_sent": refusal.reason},
        )
        if moved is None:
            return  # resolved by another path meanwhile: it keeps its own result
        self.errors["not_sent"] += 1
        self.refusals[refusal.code] += 1
        self.log.warning(
            "answer_withheld",
            command_id=row.command_id,
            quote_id=row.quote_id,
            reason_code=refusal.code,
            deadline=row.deadline,
        )
        self.completed += 1
        await self._publish(moved)

    async def _apply_answer(
        self,
        row: LedgerRow,
        outcome: RelayAnswer | RelayTimeout | RelayNotConnected,
        sent_at: datetime,
        answered_at: datetime,
    ) -> None:
        cid = row.command_id
        store = self._store()
        fields: dict[str, Any]  # the ledger columns set with the new state
        if isinstance(outcome, RelayAnswer):
            venue = {
                "ok": outcome.ok,
                "error": outcome.error,
                "error_code": outcome.error_code,
                "error_data": outcome.error_data,
                "raw": outcome.raw,
            }
            self.last_venue_response = {
                "command_id": cid,
                "quote_id": row.quote_id,
                "ok": outcome.ok,
                "error": outcome.error,
                "at": answered_at,
            }
            if outcome.ok:
                target, fields = S.ACKNOWLEDGED, {"reason": None, "reason_code": None}
            else:
                error = outcome.error or ""
                code = reason_code(error)
                self.errors[f"venue_rejected:{code}"] += 1
                if "invalid salt" in error:
                    self.salt.invalidate()  # the next answer reads current_salt again
                self.log.warning(
                    "venue_rejected",
                    command_id=cid,
                    quote_id=row.quote_id,
                    venue="near_intents",
                    reason=error,
                    reason_code=code,
                )
                target, fields = S.REJECTED, {"reason": error, "reason_code": code}
            fields["venue_response"] = venue
        elif isinstance(outcome, RelayTimeout):
            lost = isinstance(outcome, RelayConnectionLost)
            code = "relay_connection_lost" if lost else "relay_timeout"
            self.errors[code] += 1
            reason = (
                f"no answer from the relay ({outcome}); the outcome is unknown: resolved by quote_status or "
                "is_nonce_used, never by resubmitting"
            )
            self.log.warning(
                "venue_timeout", command_id=cid, quote_id=row.quote_id, venue="near_intents", error=str(outcome)
            )
            target, fields = (
                S.UNCERTAIN,
                {"reason": reason, "reason_code": code, "venue_response": {"timeout": str(outcome)}},
            )
        else:
            self.errors["not_sent"] += 1
            target, fields = (
                S.REJECTED,
                {
                    "reason": f"not sent: {outcome}",
                    "reason_code": "not_sent",
                    "venue_response": {"not_sent": str(outcome)},
                },
            )
        answered = isinstance(outcome, RelayAnswer)
        moved = await store.transition(
            cid,
            target,
            answered_at,
            sent_at=None if isinstance(outcome, RelayNotConnected) else sent_at,
            venue_answered_at=answered_at if answered else None,
            **fields,
        )
        if moved is None:
            # a quote_status settled it first: keep the venue's answer beside the settlement
            await store.merge_venue_response(cid, "answer", fields.get("venue_response"))
            return
        if target is S.REJECTED:
            self.book.release(cid)
        else:
            self.book.update(cid, state=target)
            if target is S.ACKNOWLEDGED:
                self.log.info("answer_acknowledged", command_id=cid, quote_id=row.quote_id, quote_hash=row.quote_hash)
        self.completed += 1
        await self._publish(moved)

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

    async def _current_salt(self) -> str | None:
        salt = self.salt.get(now_utc())
        if salt is not None:
            return salt
        try:
            salt = await self.rpc.current_salt()
        except NearRpcError as exc:
            self.errors["rpc_current_salt"] += 1
            self.rpc_error = exc.message
            return None
        self.rpc_error = None
        self.salt.put(salt, now_utc())
        return salt

    # --- results --------------------------------------------------------------------------------

    async def _publish(self, row: LedgerRow, *, republish: bool = False) -> bool:
        """Publish the row's result, then note it in the ledger; on failure the sweep retries."""
        result = result_from_row(row)
        at = getattr(row, f"{row.state.value}_at") or now_utc()
        placed = await self._send_result(result, at, causation=row.command_event_id, key=row.command_id)
        if placed is None:
            return False
        if row.state is S.SETTLED:
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
                    await self._on_status(item)
                elif isinstance(item, LateRelayAnswer):
                    await self._on_late_answer(item)
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

    async def _on_status(self, item: QuoteStatus) -> None:
        if self.db_error is not None:
            self.pending_statuses.append(item)  # acknowledged once it is written
            return
        try:
            await self._settle_by_status(item)
        except DB_ERRORS as exc:
            self._db_lost(exc)
            self.pending_statuses.append(item)
            return
        if self.relay is not None and item.guaranteed:
            await self.relay.ack(item)

    async def _settle_by_status(self, item: QuoteStatus) -> bool:
        store = self._store()
        cid = self.book.by_hash.get(item.quote_hash)
        if cid is None:
            row = await store.get_by_hash(item.quote_hash)
            if row is None:
                self.errors["status_not_ours"] += 1
                return False
            if row.state not in LIVE and row.state is not S.EXPIRED:
                return False  # a repeat of a status already applied
            if row.state is S.EXPIRED:
                self.log.error("settled_after_expiry", command_id=row.command_id, quote_hash=item.quote_hash)
            cid = row.command_id
        with self._working(cid):
            at = now_utc()
            resolution = {
                "quote_status": {
                    "quote_hash": item.quote_hash,
                    "intent_hash": item.intent_hash,
                    "tx_hash": item.tx_hash,
                    "seq": item.seq,
                    "received_at": item.received_at,
                }
            }
            settled = await store.transition(
                cid,
                S.SETTLED,
                at,
                intent_hash=item.intent_hash,
                tx_hash=item.tx_hash,
                resolved_by="quote_status",
                resolution=resolution,
                reason="the answer settled: quote_status from the relay",
                reason_code=None,
            )
            if settled is None:
                return False
            self.undecided.discard(cid)  # the relay's word decides it after all
            if self.book.release(cid, settled=True) is None:
                self.book.note_settled(cid, settled.asset_out, settled.amount_out)
            self.log.info(
                "answer_settled",
                command_id=cid,
                quote_id=settled.quote_id,
                quote_hash=item.quote_hash,
                intent_hash=item.intent_hash,
                tx_hash=item.tx_hash,
                resolved_by="quote_status",
            )
            await self._publish(settled)
            return True

    async def _on_late_answer(self, item: LateRelayAnswer) -> None:
        self.errors["late_answers"] += 1
        cid = self.book.by_quote.get(item.quote_id)
        if cid is None:
            row = await self._store().get_by_quote(item.quote_id)
            cid = row.command_id if row is not None else None
        self.log.warning(
            "late_relay_answer", quote_id=item.quote_id, command_id=cid, ok=item.answer.ok, error=item.answer.error
        )
        if cid is not None:
            await self._store().merge_venue_response(
                cid,
                "late_answer",
                {
                    "ok": item.answer.ok,
                    "error": item.answer.error,
                    "raw": item.answer.raw,
                    "received_at": item.received_at,
                },
            )

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
            await self._on_status(item)
        # what answering needs comes first from the NEAR RPC budget: the signer and the salt
        if (
            self.key is not None
            and self.signer.status == "unverified"
            and asyncio.get_running_loop().time() >= self.signer_retry_at
        ):
            await self._authorize_signer()
        if (
            self.key is not None
            and self.salt.wants_refresh(now_utc())
            and asyncio.get_running_loop().time() >= self.salt_retry_at
        ):
            await self._refresh_salt()
        now = now_utc()
        self.book.release_withheld(now, self.cfg.executor_settle_grace_ms)
        await self._resolve_due(self.book.due(now, self.cfg.executor_settle_grace_ms, skip=set(self.busy)))
        await self._audit_silence()
        await self._publish_backlog()
        await self._place_recovered()
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

    def _rpc_spare_count(self) -> int | None:
        """NEAR RPC requests that chain reads that can wait (deciding expired answers, audits) may
        spend now: what the budget holds beyond `executor_rpc_reserve`, kept for the salt and the
        signer (checked again at every arm). None: no client-side limit."""
        usage = self.rpc.usage()
        current = next((e for e in usage.endpoints if e.in_use), usage.endpoints[0] if usage.endpoints else None)
        if current is None or current.tokens_available is None:
            return None
        return max(0, current.tokens_available - self.cfg.executor_rpc_reserve)

    def _rpc_spare(self) -> bool:
        spare = self._rpc_spare_count()
        return spare is None or spare > 0

    async def _resolve_due(self, due: list[LiveAnswer]) -> None:
        """Answers past deadline + grace with no quote_status.

        - Acknowledged, with guaranteed delivery: the relay queues every status for its instance
          and replays what a disconnect missed, so once the stream has been connected for
          `executor_status_wait_ms` and that long has passed since the deadline, no status means
          the answer was not used: `expired`, resolved by `no_quote_status` (no RPC call; a status
          arriving after all still corrects it to settled).
        - Otherwise (uncertain, plain delivery, a stream not up long enough) the verifier decides,
          read at the last block at or before the deadline (`nonce_outcome`: read later, a nonce
          it cleaned up reads as unused). The final block is read again only when it can have
          passed the earliest deadline waiting; an answer the node cannot decide keeps its hold.
        """
        if not due:
            return
        now = now_utc()
        wait = timedelta(milliseconds=self.cfg.executor_status_wait_ms)
        stream_up_since = self.relay.connected_since if self.relay is not None and self.relay.connected else None
        silent_ok = (
            self.relay is not None
            and self.relay.config.guaranteed_status
            and stream_up_since is not None
            and stream_up_since <= now - wait
        )
        chain: list[LiveAnswer] = []
        for answer in due:
            if answer.nonce is None or answer.deadline is None or answer.command_id in self.undecided:
                continue  # undecided: beyond what the node keeps for good; an operator's verdict ends it
            if answer.state is S.ACKNOWLEDGED and self.relay is not None and self.relay.config.guaranteed_status:
                if now < answer.deadline + wait:
                    continue  # a replayed status may still come
                if silent_ok:
                    await self._resolve(
                        answer,
                        False,
                        {
                            "rule": "no quote_status on the guaranteed-delivery stream",
                            "stream_connected_since": stream_up_since,
                            "status_wait_ms": self.cfg.executor_status_wait_ms,
                            "checked_at": now,
                        },
                        resolved_by="no_quote_status",
                    )
                    self._queue_audit(answer)
                    continue
            chain.append(answer)
        if chain:
            await self._resolve_on_chain(chain)

    def _queue_audit(self, answer: LiveAnswer) -> None:
        """An answer expired by the relay's silence is checked on chain as the NEAR RPC budget
        allows (oldest dropped past `executor_audit_queue`, counted): a relay that broke its
        delivery guarantee is caught and the answer corrected to settled."""
        if len(self.audits) >= self.cfg.executor_audit_queue:
            self.audits.popleft()
            self.audit_counts["skipped"] += 1
        self.audits.append(answer)

    async def _audit_silence(self) -> None:
        """Check queued silence expiries on chain while the budget lasts; a used nonce means the
        relay lost a fill's status: the row goes expired → settled, its amount held as settled."""
        if not self.audits:
            return
        final = await self._final_block(None)
        while final is not None and self.audits:
            answer = self.audits[0]
            outcome = await self._chain_outcome(answer, final)
            if outcome is None or outcome is NonceOutcome.NOT_YET:
                return  # the budget or the node: the rest wait
            self.audits.popleft()
            self.audit_counts[outcome.value] += 1
            if outcome is NonceOutcome.USED:
                await self._correct_to_settled(answer, final.height)

    async def _final_block(self, before_ns: int | None) -> BlockHeader | None:
        """The latest final block, read again at most every `executor_final_block_interval_s`,
        and (with `before_ns`) only while the one in hand is not yet past that instant."""
        loop_now = asyncio.get_running_loop().time()
        final = self.final_block
        due = loop_now - self.final_block_read_at >= self.cfg.executor_final_block_interval_s
        if final is None or (due and (before_ns is None or final.timestamp_ns <= before_ns)):
            if not self._rpc_spare():
                return final
            try:
                final = await self.rpc.block(finality="final")
            except NearRpcError as exc:
                self.errors["rpc_block"] += 1
                self.rpc_error = exc.message
                return None
            self.final_block, self.final_block_read_at = final, loop_now
        return final

    async def _chain_outcome(self, answer: LiveAnswer, final: BlockHeader) -> NonceOutcome | None:
        """`nonce_outcome` for a live answer; None when NEAR RPC did not answer (counted) or the
        budget has only the reserve left."""
        assert answer.nonce is not None and answer.deadline is not None
        spare = self._rpc_spare_count()
        if spare is not None and spare < 2:
            return None
        account = answer.signer_id or self.cfg.signer_account_id or ""
        try:
            # the block search takes at most what is spare, less the is_nonce_used read itself
            outcome = await nonce_outcome(
                self.rpc,
                account,
                answer.nonce,
                datetime_to_ns(answer.deadline),
                final,
                self.headers,
                max_calls=24 if spare is None else min(24, spare - 1),
            )
        except LookupsSpent:
            return None  # the headers read are cached: the next sweep goes on from there
        except NearRpcError as exc:
            self.errors["rpc_is_nonce_used"] += 1
            self.rpc_error = exc.message
            return None
        self.rpc_error = None
        return outcome

    async def _correct_to_settled(self, answer: LiveAnswer, height: int) -> None:
        cid = answer.command_id
        with self._working(cid):
            at = now_utc()
            moved = await self._store().transition(
                cid,
                S.SETTLED,
                at,
                resolved_by="is_nonce_used",
                resolution={
                    "is_nonce_used": True,
                    "read_at_block": height,
                    "checked_at": at,
                    "rule": "audit of an expiry by relay silence",
                },
                reason="settled: its nonce is used in the verifier although the relay sent no quote_status",
                reason_code="nonce_used",
            )
            if moved is None:
                return
            self.book.note_settled(cid, moved.asset_out, moved.amount_out)
            self.log.error(
                "relay_silence_misled",
                command_id=cid,
                quote_id=moved.quote_id,
                reason="expired for want of a quote_status, but its nonce was used: corrected to settled",
            )
            await self._publish(moved)

    async def _resolve_on_chain(self, due: list[LiveAnswer]) -> None:
        final = await self._final_block(min(datetime_to_ns(a.deadline) for a in due if a.deadline is not None))
        for answer in due if final is not None else []:
            outcome = await self._chain_outcome(answer, final)  # type: ignore[arg-type]
            if outcome is None:
                return  # the budget or the node: the rest wait for the next sweep
            if outcome is NonceOutcome.NOT_YET:
                continue
            if outcome is NonceOutcome.UNKNOWN:
                if answer.command_id not in self.undecided:
                    self.undecided.add(answer.command_id)
                    self.log.error(
                        "answer_outcome_unknown",
                        command_id=answer.command_id,
                        quote_id=answer.quote_id,
                        reason="the block at its deadline is out of this node's reach; hold kept",
                    )
                continue
            assert final is not None
            await self._resolve(
                answer,
                outcome is NonceOutcome.USED,
                {
                    "is_nonce_used": outcome is NonceOutcome.USED,
                    "account_id": answer.signer_id or self.cfg.signer_account_id,
                    "nonce": answer.nonce,
                    "read_at_block": final.height,
                    "checked_at": now_utc(),
                    "rule": "read at the last block at or before the deadline",
                },
            )

    async def _resolve_unsent(self, answer: LiveAnswer, reason: str) -> None:
        """A row the executor stopped in while signing never left the process (its `submitted`
        row is written before the frame): expired now; the nonce read is a cross-check."""
        if answer.nonce is None:
            return
        account = answer.signer_id or self.cfg.signer_account_id or ""
        try:
            used = await self.rpc.is_nonce_used(account, answer.nonce)
        except NearRpcError as exc:
            self.errors["rpc_is_nonce_used"] += 1
            self.rpc_error = exc.message
            return
        self.rpc_error = None
        await self._resolve(
            answer,
            used,
            {"is_nonce_used": used, "account_id": account, "nonce": answer.nonce, "checked_at": now_utc()},
            reason=reason,
        )

    async def _resolve(
        self,
        answer: LiveAnswer,
        used: bool,
        resolution: dict[str, Any],
        reason: str | None = None,
        resolved_by: str = "is_nonce_used",
    ) -> None:
        """The venue's verdict on a live answer: used → settled, unused → expired."""
        cid = answer.command_id
        with self._working(cid):
            at = now_utc()
            target = resolve_by_nonce(used)
            if used:
                fields: dict[str, Any] = {
                    "reason": "settled: its nonce is used in the verifier (the quote_status was missed)",
                    "reason_code": "nonce_used",
                }
            else:
                fields = {
                    "reason": reason or expiry_reason(answer),
                    "reason_code": "cancelled" if answer.cancel_requested else "deadline_passed",
                }
            moved = await self._store().transition(
                cid, target, at, resolved_by=resolved_by, resolution=resolution, **fields
            )
            self.undecided.discard(cid)
            if moved is None:
                fresh = await self._store().get(cid)
                if fresh is None or fresh.state not in LIVE:
                    self.book.release(cid)
                return
            self.book.release(cid, settled=used)
            self.log.info(
                "answer_resolved", command_id=cid, quote_id=moved.quote_id, state=target.value, resolved_by=resolved_by
            )
            await self._publish(moved)

    async def _publish_backlog(self) -> None:
        store = self._store()
        for stale in await store.unpublished():
            cid = stale.command_id
            if self.busy[cid] or cid in self.published_marks:
                continue
            with self._working(cid):
                # read again under the marker: the list may be older than another path's publication
                row = await store.get(cid)
                if row is None or not row.needs_publishing:
                    continue
                if not await self._publish(row):
                    return  # Kafka is away: try again next sweep

    # --- recovery (the start path) --------------------------------------------------------------

    async def _recover(self) -> None:
        store = self._store()
        rows = await store.unresolved()
        steps: Counter[str] = Counter()
        for row in rows:
            if self.busy[row.command_id]:
                continue
            step = recovery_step(row.state)
            steps[row.state.value] += 1
            now = now_utc()
            if step is RecoveryStep.REFUSE:
                await self._refuse(
                    row,
                    Refusal(
                        RefusalCode.EXECUTOR_RESTARTED,
                        "the executor stopped (or lost its ledger) before signing: nothing was signed or sent",
                    ),
                    now,
                )
            elif step is RecoveryStep.RESOLVE_NOW:
                answer = LiveAnswer.from_row(row)
                self.book.hold(answer)
                await self._resolve_unsent(
                    answer, reason="not sent: the executor stopped while signing, before the signed answer was stored"
                )
            elif step is RecoveryStep.MARK_UNCERTAIN:
                with self._working(row.command_id):
                    moved = await store.transition(
                        row.command_id,
                        S.UNCERTAIN,
                        now,
                        reason_code="restarted_after_submit",
                        reason="the executor stopped after storing the signed answer: whether the relay received it "
                        "is unknown; resolved by quote_status or is_nonce_used, never by resubmitting",
                    )
                    if moved is not None:
                        self.book.hold(LiveAnswer.from_row(moved))
                        await self._publish(moved)
            elif step is RecoveryStep.WATCH:
                self.book.hold(LiveAnswer.from_row(row))
        # settled answers the inventory snapshot may not hold yet keep holding their amount, until
        # a snapshot covers every result published before this start (placed by the sweep)
        since = now_utc() - timedelta(milliseconds=self.cfg.executor_inventory_max_age_ms)
        for row in await store.settled_since(since):
            if row.settled_at is not None and row.command_id not in self.book.answers:
                self.book.note_settled(row.command_id, row.asset_out, row.amount_out)
                self.recovered_unplaced.add(row.command_id)
        # signed answers withheld before the stop hold until their deadlines, as they did
        for row in await store.withheld_until(now_utc()):
            if row.command_id not in self.book.answers:
                self.book.note_withheld(row.command_id, row.deadline, row.asset_out, row.amount_out)
        await self._publish_backlog()
        await self._place_recovered()
        self.recovered_at = now_utc()
        if rows:
            self.log.info("ledger_recovered", unresolved=dict(steps), live=len(self.book.answers))

    # --- signer ---------------------------------------------------------------------------------

    async def _authorize_signer(self) -> None:
        before = self.signer.status
        if self.key is not None and self.cfg.signer_account_id:
            self.signer = await authorize(self.cfg.signer_account_id, self.key, self.rpc, now_utc())
            if self.signer.status == "unverified":  # the node could not say: asked again in a second, not every sweep
                self.signer_retry_at = asyncio.get_running_loop().time() + 1.0
        if self.signer.status != before or not self.signer.ready:
            log = self.log.info if self.signer.ready else self.log.error
            log(
                "signer_status",
                status=self.signer.status,
                detail=self.signer.detail,
                account_id=self.signer.account_id,
                public_key=self.signer.public_key,
            )
        self.notify_status()

    async def _check_arm(self) -> None:
        # read the key file again: the operator may have just fixed it
        self.key, self.signer = load_key(self.cfg.signer_account_id, self.cfg.signer_key_file)
        await self._authorize_signer()
        if not self.signer.ready:
            raise ControlError(409, f"signer {self.signer.status}: {self.signer.detail}")
        if self.db_error is not None:
            raise ControlError(409, f"ledger unavailable: {self.db_error}")
        if self.relay is None:
            raise ControlError(409, f"relay unavailable: {self.relay_error}")

    # --- cancel live answers --------------------------------------------------------------------

    async def _on_disarm(self, body: DisarmBody, caller: Caller) -> dict[str, Any]:
        self.notify_status()
        if not body.cancel_live:
            return {}
        return {"cancel_live": await self._cancel_live(caller)}

    async def _cancel_live(self, caller: Caller) -> dict[str, Any]:
        now = now_utc()
        targets = [
            a for a in self.book.answers.values() if a.nonce is not None and a.deadline is not None and a.deadline > now
        ]
        ids = [a.command_id for a in targets]
        relay: dict[str, Any]
        if not targets:
            relay = {"status": "nothing_live"}
        elif self.key is None or self.relay_rpc is None:
            relay = {
                "status": "error",
                "error": f"cannot sign or publish: signer {self.signer.status}, relay {self.relay_error or 'ok'}",
            }
        else:
            payloads = [
                cancel_payload(
                    self.key,
                    a.signer_id or self.cfg.signer_account_id or "",
                    base64.b64decode(a.nonce or ""),
                    a.deadline or now,
                    self.cfg.verifier_contract,
                ).signed_data
                for a in targets
            ]
            try:
                published = await self.relay_rpc.publish_intents(payloads)
                relay = {
                    "status": "OK",
                    "intent_hashes": published.intent_hashes,
                    "already_processed": published.already_processed,
                }
            except RelayPublishFailed as exc:
                relay = {"status": "FAILED", "reason": exc.reason, "code": exc.code}
            except RelayRpcClientError as exc:
                relay = {"status": "error", "error": str(exc)}
        record = {
            **relay,
            "command_ids": ids,
            "quote_hashes": [a.quote_hash for a in targets],
            "nonces": [a.nonce for a in targets],
            "operator": caller.operator,
        }
        if targets:
            if cancel_succeeded(relay):
                for a in targets:
                    self.book.update(a.command_id, cancel_requested=True)
            try:
                await self._store().record_cancel(ids, now, record)
            except DB_ERRORS as exc:
                self._db_lost(exc)
                record["ledger"] = f"not recorded: {exc}"
        self.audit.record("cancel_live", caller, str(relay["status"]), record)
        self.log.warning("cancel_live", status=relay["status"], answers=len(ids), operator=caller.operator)
        return {"requested": len(ids), "command_ids": ids, "relay": relay}

    # --- inventory ------------------------------------------------------------------------------

    def _on_snapshot(self, view: InventoryView, results_through: dict[int, int] | None) -> None:
        # only the signer's own balances prove a settlement of its answers is in them
        signer = self.signer.account_id or self.cfg.signer_account_id
        if view.account_id is not None and signer is not None and view.account_id != signer:
            return
        self.book.forget_covered(results_through)

    async def _place_recovered(self) -> None:
        """Settled holds recovered from the ledger were published before this start (or are
        republished since, which places them): a snapshot covering the topic's end offsets as
        they are now holds them. Retried by the sweep while Kafka does not answer."""
        if not self.recovered_unplaced:
            return
        try:
            ends = await topic_end_offsets(self.cfg, "exec.trade_result", f"{self.name}-recovery")
        except (KafkaError, OSError) as exc:
            self.log.warning("recovered_holds_unplaced", count=len(self.recovered_unplaced), error=str(exc))
            return
        for cid in self.recovered_unplaced:
            held = self.book.settled.get(cid)
            if held is not None and held[0] is None:
                self.book.place_settled(cid, ends)
        self.recovered_unplaced.clear()

    # --- control and state ----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            *self.arm.routes(check_arm=self._check_arm, on_disarm=self._on_disarm),
            Route(
                "POST",
                "/resolve",
                self._operator_resolve,
                "Record an operator's verdict on an answer the chain could not decide (audited)",
                ResolveBody,
                body_optional=False,
            ),
        ]

    async def _operator_resolve(self, _r: Any, body: ResolveBody, caller: Caller) -> dict[str, Any]:
        """Only an `undecided` answer (past its deadline, beyond what the node can tell) takes a
        verdict; until then its hold is kept. Settled or expired, the hold goes: an answer that
        old is in every snapshot by now."""
        cid = body.command_id
        answer = self.book.answers.get(cid)
        if cid not in self.undecided or answer is None:
            self.audit.record("resolve", caller, "refused: not undecided", {"command_id": cid})
            raise ControlError(
                409,
                f"answer {cid} is not undecided; only an answer the chain could not decide "
                "takes an operator's verdict (see undecided in GET /state)",
            )
        if self.db_error is not None:
            raise ControlError(503, f"ledger unavailable: {self.db_error}")
        with self._working(cid):
            at = now_utc()
            settled = body.outcome == "settled"
            moved = await self._store().transition(
                cid,
                S.SETTLED if settled else S.EXPIRED,
                at,
                resolved_by="operator",
                resolution={"operator": caller.operator, "reason": body.reason, "recorded_at": at},
                reason=f"recorded by the operator: {body.reason}",
                reason_code="operator_settled" if settled else "operator_expired",
            )
            if moved is None:
                raise ControlError(409, f"answer {cid} changed meanwhile; see GET /state")
            self.undecided.discard(cid)
            self.book.release(cid)
            self.audit.record("resolve", caller, body.outcome, {"command_id": cid, "quote_id": moved.quote_id})
            self.log.warning(
                "answer_resolved_by_operator",
                command_id=cid,
                quote_id=moved.quote_id,
                state=body.outcome,
                operator=caller.operator,
            )
            await self._publish(moved)
        return {"command_id": cid, "state": body.outcome}

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

    def state(self) -> dict[str, Any]:
        now = now_utc()
        relay = self.relay.state() if self.relay is not None else {}
        return {
            **self.arm.state(),
            "connected": {
                "relay": self.relay is not None and self.relay.connected,
                "postgres": self.db_error is None,
                "kafka": self.kafka_error is None,
                "inventory_feed": self.inventory.error is None,
                "price_feed": self.prices.error is None,
                "near_rpc": self.rpc_error is None,
            },
            "authoritative": self.db_error is None and self.relay is not None and self.relay.connected,
            "blocked_reason": self.blocked_reason(now),
            "signer": self.signer.model_dump(mode="json"),
            "ledger": {"available": self.db_error is None, "error": self.db_error, "recovered_at": self.recovered_at},
            "relay": {"error": self.relay_error, **relay},
            "near_rpc_error": self.rpc_error,
            "near_rpc": self.rpc.usage().model_dump(mode="json"),
            "inputs": {
                "inventory": self.inventory.state(now),
                "price": self.prices.state(now),
                "salt": {
                    "salt": self.salt.get(now),
                    "age_s": self.salt.age_s(now),
                    "max_age_s": self.salt.max_age_s,
                    "invalidations": self.salt.invalidations,
                },
            },
            "last_command_seen": self.last_command,
            "last_request_sent": self.last_request,
            "last_venue_response": self.last_venue_response,
            "in_flight": len(self.tasks),
            "undecided": sorted(self.undecided),
            "silence_audit": {"queued": len(self.audits), **self.audit_counts},
            "completed": self.completed,
            "live_answers": [a.view() for a in self.book.answers.values()],
            # settled, held until a snapshot's results_through reaches `needs` (None: not yet known)
            "settled_holds": [
                {"command_id": cid, "asset_id": asset, "amount": str(amount), "needs": needs}
                for cid, (needs, asset, amount) in self.book.settled.items()
            ],
            # signed, never sent, held until their deadlines
            "withheld": [
                {"command_id": cid, "asset_id": asset, "amount": str(amount), "deadline": deadline}
                for cid, (deadline, asset, amount) in self.book.withheld.items()
            ],
            "reserved": {k: str(v) for k, v in self.book.reserved_by_asset().items()},
            "live_exposure": {a: str(self.book.live_exposure(a)) for a in self.pair.token_ids},
            "ceilings": self.ceilings.model_dump(mode="json") | {"file": str(self.cfg.ceilings_file)},
            "errors": dict(self.errors),
            "refusals": dict(self.refusals),
            "results": dict(self.results),
            "pending_statuses": len(self.pending_statuses),
            "limits": {
                "answer_margin_ms": self.cfg.executor_answer_margin_ms,
                "relay_answer_timeout_s": self.cfg.executor_relay_answer_timeout_s,
                "inventory_max_age_ms": self.cfg.executor_inventory_max_age_ms,
                "max_min_deadline_ms": self.cfg.executor_max_min_deadline_ms,
                "settle_grace_ms": self.cfg.executor_settle_grace_ms,
            },
        }

    # --- helpers --------------------------------------------------------------------------------

    async def _nap(self, seconds: float, until: asyncio.Event | None = None) -> None:
        event = until or self.drain_requested
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
        except TimeoutError:
            pass
