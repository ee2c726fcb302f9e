"""liquidity-manager: deposit addresses, funding actions and withdrawals for the treasury, off the
trade path (docs/design.md §1; docs/poa-bridge.md). Every transition is an `ops.liquidity_action` event.

- Deposit addresses come from the POA bridge per treasury route and are kept; an asset without
  a supported route (nBTC today) or an unknown chain is refused with the reason.
- Funding: the operator records an external transfer (`POST /funding`); it is checked against
  the treasury file, refused as a duplicate when its (chain, tx hash) was recorded before, told
  to the bridge (`notify_deposit`) and followed in `recent_deposits` until credited; past the
  bound it is `delayed` and logged.
- Withdrawals (`POST /withdrawals`): refused while frozen; the bridge fee comes from
  `withdrawal_estimate`; the `ft_withdraw` intent is signed, written to the ledger, then
  published through the relay RPC and followed (`get_status`, then `withdrawal_status`).
  `POST /freeze-withdrawals` latches (it survives restarts) until `POST /unfreeze-withdrawals`.

State lives in PostgreSQL (`store.py`), each change committed with its event into an outbox that
a task publishes to Kafka, so a transition is never lost or published without being durable.
The pure rules are in `treasury.py`, `funding.py` and `withdrawals.py`; the flows that move data
in `funding_flow.py` and `withdrawal_flow.py`, the control socket and `/state` in `controls.py`,
`GET /metrics` in `metrics.py`. This module holds the state they share, the durable step
(`_commit`: state and events together), the poll loop and the wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from daemons.core.assets import InexactAmount
from daemons.core.control import Caller, ControlError, Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import Envelope, LiquidityAction, LiquidityActionKind, new_event, now_utc
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.liquidity_manager import withdrawals
from daemons.liquidity_manager.controls import Controls
from daemons.liquidity_manager.funding import FundingAttempt
from daemons.liquidity_manager.funding_flow import FundingFlow
from daemons.liquidity_manager.metrics import daemon_metrics
from daemons.liquidity_manager.outbox import OutboxPublisher
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.liquidity_manager.store import DatabaseDown, DepositAddressRecord, FreezeState, Store
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.liquidity_manager.treasury import TreasuryConfig, TreasuryFileError, load_treasury
from daemons.liquidity_manager.withdrawal_flow import WithdrawalFlow
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.near_rpc import NearRpcError, client_from_settings
from daemons.venues.near_intents.nep413 import KeyFileError, SignerKey, load_signer_key
from daemons.venues.near_intents.nonce_outcome import HeaderCache
from daemons.venues.near_intents.relay_rpc import (
    RelayPublishFailed,
    RelayRpcClient,
    RelayRpcClientError,
)
from daemons.venues.poa_bridge import (
    PoaBridgeClient,
    SupportedToken,
    SupportedTokens,
)

_WARN_STATUSES = frozenset({"delayed", "failed", "duplicate", "refused", "frozen"})
_PROBE_HASH = "1" * 44  # a well-formed intent hash nobody published: get_status answers NOT_FOUND


class LiquidityManager(Service):
    name = "liquidity-manager"

    def __init__(self, settings: LiquiditySettings) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.treasury: TreasuryConfig | None = None
        self.account_id: str | None = None
        self.blocked: str | None = None
        self.signer: SignerKey | None = None
        self.withdrawals_blocked: str | None = None
        self.pool: asyncpg.Pool | None = None
        self.store: Store | None = None
        self.ready = asyncio.Event()
        self.bridge = PoaBridgeClient(settings.poa_bridge_url, timeout=settings.liquidity_venue_timeout_s)
        self.near = client_from_settings(
            settings, timeout_s=settings.liquidity_venue_timeout_s, daemon="liquidity-manager"
        )
        self.relay: RelayRpcClient | None = None
        self.outbox: OutboxPublisher | None = None

        self.funding: dict[str, FundingAttempt] = {}
        self.withdrawals: dict[str, Withdrawal] = {}
        self.headers = HeaderCache()
        # withdrawals whose outcome the node could not decide (logged once each; never failed)
        self.undecided: set[str] = set()
        self.addresses: dict[str, DepositAddressRecord] = {}
        self.address_errors: dict[str, dict[str, Any]] = {}
        self.freeze = FreezeState(frozen=False)
        self.refusals: deque[dict[str, Any]] = deque(maxlen=settings.liquidity_recent)
        self.unmatched: dict[str, list[dict[str, Any]]] = {}
        self.notify_errors: dict[str, str] = {}
        self.venue_errors: dict[str, dict[str, Any]] = {}
        self.db_error: str | None = None
        self.poll_error: str | None = None
        self.last_poll_at: datetime | None = None
        self.last_poll_ok_at: datetime | None = None
        self.counts: Counter[str] = Counter()

        self._state_lock = asyncio.Lock()
        self._poll_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._tokens: dict[str, tuple[datetime, SupportedTokens]] = {}
        # the daemon's concerns, each over the state above (service.py: the loops and wiring)
        self.funding_flow = FundingFlow(self)
        self.withdrawal_flow = WithdrawalFlow(self)
        self.controls = Controls(self)

    # --- start ------------------------------------------------------------------------------

    def _configure(self) -> None:
        """Treasury file, account and withdrawal credentials; problems become blocked reasons."""
        try:
            self.treasury = load_treasury(self.cfg.treasury_file)
        except TreasuryFileError as exc:
            self.blocked = str(exc)
        if self.cfg.signer_key_file is None:
            self.withdrawals_blocked = "QL_SIGNER_KEY_FILE is not set"
        else:
            try:
                self.signer = load_signer_key(self.cfg.signer_key_file)
            except KeyFileError as exc:
                self.withdrawals_blocked = str(exc)
        self.account_id = self.cfg.signer_account_id or (self.signer.implicit_account_id if self.signer else None)
        if self.account_id is None and self.blocked is None:
            self.blocked = "QL_SIGNER_ACCOUNT_ID is not set and there is no signer key to derive the implicit account"
        if self.withdrawals_blocked is None:
            try:
                jwt = read_secret_file(self.cfg.relay_jwt_file, "QL_RELAY_JWT_FILE")
            except SecretFileError as exc:
                self.withdrawals_blocked = str(exc)
            else:
                self.relay = RelayRpcClient(self.cfg.relay_rpc_url, jwt, timeout_s=self.cfg.liquidity_venue_timeout_s)
        if self.blocked:
            self.log.error("liquidity_blocked", error=self.blocked)
        if self.withdrawals_blocked:
            self.log.warning("withdrawals_blocked", error=self.withdrawals_blocked)

    async def _connect(self) -> bool:
        """Connect to PostgreSQL and load the working state; retries until drained."""
        assert self.account_id is not None
        while not self.drain_requested.is_set():
            try:
                self.pool = await connect_pool(self.cfg.database_url, min_size=1, max_size=4)
                self.store = Store(self.pool, self.account_id)
                recent = self.cfg.liquidity_recent
                self.funding = {a.liquidity_action_id: a for a in await self.store.funding(recent)}
                self.withdrawals = {w.liquidity_action_id: w for w in await self.store.withdrawals(recent)}
                self.addresses = await self.store.deposit_addresses()
                self.freeze = await self.store.freeze_state()
                self._db_ok()
                return True
            except DB_ERRORS as exc:
                if self.pool is not None:
                    await self.pool.close()
                    self.pool = None
                self._db_failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.drain_requested.wait(), self.cfg.liquidity_db_retry_s)
        return False

    async def run(self) -> None:
        self._configure()
        if self.blocked or not await self._connect():
            await self.drain_requested.wait()  # stay observable; nothing to do
            await self._close_clients()
            return
        assert self.store is not None
        self.outbox = OutboxPublisher(
            self.store,
            self.cfg,
            self.name,
            self.log,
            on_db_error=self._db_failed,
            on_db_ok=self._db_ok,
            on_change=self.notify_status,
        )
        outbox = asyncio.create_task(self.outbox.run(), name="outbox")
        self.ready.set()
        self.log.info(
            "liquidity_ready",
            account_id=self.account_id,
            frozen=self.freeze.frozen,
            open_funding=sum(a.watched for a in self.funding.values()),
            open_withdrawals=sum(w.open for w in self.withdrawals.values()),
        )
        poller = asyncio.create_task(self._poll_loop(), name="poll")
        await self.drain_requested.wait()
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        for _ in range(300):  # let requests already being served finish (bounded)
            if not self._in_flight:
                break
            await asyncio.sleep(0.1)
        self.outbox.stop()
        await asyncio.wait([outbox], timeout=5.0)  # the batch in hand; one stuck on Kafka is cut short
        outbox.cancel()
        await asyncio.gather(outbox, return_exceptions=True)
        await self.outbox.flush()
        await self._close_clients()

    def _wake_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()

    async def _close_clients(self) -> None:
        await self.bridge.close()
        await self.near.close()
        if self.relay is not None:
            await self.relay.close()
        if self.pool is not None:
            await self.pool.close()

    # --- database health ---------------------------------------------------------------------

    def _db_ok(self) -> None:
        if self.db_error is not None:
            self.log.info("database_recovered")
            self.db_error = None
            self.notify_status()

    def _db_failed(self, exc: BaseException) -> None:
        if self.db_error is None:
            self.log.error("database_unavailable", error=f"{exc.__class__.__name__}: {exc}")
        self.db_error = f"{exc.__class__.__name__}: {exc}"
        self.notify_status()

    def _venue_ok(self, venue: str) -> None:
        if self.venue_errors.pop(venue, None) is not None:
            self.log.info("venue_recovered", venue=venue)

    def _venue_failed(self, venue: str, exc: BaseException) -> None:
        error = str(exc) or exc.__class__.__name__
        if venue not in self.venue_errors:
            self.log.warning("venue_unavailable", venue=venue, error=error)
            self.venue_errors[venue] = {"error": error, "since": now_utc()}
        else:
            self.venue_errors[venue]["error"] = error

    # --- events and durable transitions --------------------------------------------------------

    def _event(self, payload: LiquidityAction) -> tuple[Envelope[Any], str]:
        event = new_event(
            payload, producer=self.producer_id, pair=self.cfg.pair, correlation_id=payload.liquidity_action_id
        )
        return event, payload.liquidity_action_id  # keyed by the action: its transitions stay in order

    def _log_transition(self, payload: LiquidityAction) -> None:
        level = self.log.warning if payload.status in _WARN_STATUSES else self.log.info
        level(
            f"{payload.kind}_{payload.status}",
            liquidity_action_id=payload.liquidity_action_id,
            asset_id=payload.asset_id,
            chain=payload.chain,
            amount=None if payload.amount is None else str(payload.amount),
            tx_hash=payload.tx_hash,
            intent_hash=payload.intent_hash,
            reason=payload.reason,
            operator=payload.operator,
        )
        self.counts[f"{payload.kind}_{payload.status}"] += 1

    async def _commit(self, payloads: list[LiquidityAction], **state: Any) -> None:
        """Make `state` and the events of `payloads` durable together, or raise `DatabaseDown`."""
        assert self.store is not None
        try:
            await self.store.commit([self._event(p) for p in payloads], **state)
        except DB_ERRORS as exc:
            self._db_failed(exc)
            raise DatabaseDown(str(exc)) from exc
        self._db_ok()
        self._wake_outbox()
        for payload in payloads:
            self._log_transition(payload)

    async def _emit(self, payload: LiquidityAction) -> None:
        """An event with no working state behind it (a refusal, a duplicate)."""
        await self._commit([payload])

    async def _step_funding(self, action_id: str, step: Callable[[FundingAttempt], FundingAttempt | None]) -> None:
        async with self._state_lock:
            current = self.funding.get(action_id)
            new = step(current) if current is not None else None
            if new is None or new == current:
                return
            await self._commit([new.event()], funding=new)
            self.funding[action_id] = new

    async def _step_withdrawal(self, action_id: str, step: Callable[[Withdrawal], Withdrawal | None]) -> Withdrawal:
        async with self._state_lock:
            current = self.withdrawals[action_id]
            new = step(current)
            if new is None or new == current:
                return current
            await self._commit([new.event()], withdrawal=new)
            self.withdrawals[action_id] = new
            return new

    # --- polling -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while await self.wait_runnable():
            self._wake.clear()  # before the pass: a wake during it brings the next one forward
            try:
                await self.poll_once()
            except Exception as exc:  # a bug must not silently stop the following of money
                if self.poll_error is None:
                    self.log.exception("poll_failed")
                self.poll_error = f"{exc.__class__.__name__}: {exc}"
            else:
                if self.poll_error is not None:
                    self.log.info("poll_recovered")
                self.poll_error = None
            # a published withdrawal whose intent is only broadcast yet is asked again soon
            in_flight = any(w.stage == "published" for w in self.withdrawals.values())
            interval = (
                min(self.cfg.liquidity_poll_interval_s, self.cfg.liquidity_in_flight_poll_s)
                if in_flight
                else self.cfg.liquidity_poll_interval_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def poll_once(self) -> dict[str, Any]:
        """One pass over deposit addresses, open funding and open withdrawals."""
        async with self._poll_lock:
            started = now_utc()
            errors_before = set(self.venue_errors)
            try:
                await self.funding_flow.ensure_addresses(started)
                await self.funding_flow.notify_recorded()
                bridge_ok = await self.funding_flow.follow()
                await self.withdrawal_flow.follow()
                await self._probe_errored_venues()
            except DatabaseDown:
                bridge_ok = False
            self._trim()
            self.last_poll_at = now_utc()
            if bridge_ok and self.db_error is None:
                self.last_poll_ok_at = self.last_poll_at
                self.mark_success()
            if set(self.venue_errors) != errors_before:
                self.notify_status()
            return {
                "polled_at": self.last_poll_at,
                "bridge_ok": bridge_ok,
                "venue_errors": self.venue_errors,
                "database_error": self.db_error,
            }

    def _trim(self) -> None:
        """Keep every open action in memory and only the latest finished ones (all stay in PostgreSQL)."""
        keep = self.cfg.liquidity_recent
        done = sorted((a for a in self.funding.values() if not a.watched), key=lambda a: a.recorded_at)
        for a in done[:-keep]:
            del self.funding[a.liquidity_action_id]
        finished = sorted((w for w in self.withdrawals.values() if not w.open), key=lambda w: w.requested_at)
        for w in finished[:-keep]:
            del self.withdrawals[w.liquidity_action_id]

    # --- withdrawals: following ------------------------------------------------------------------

    async def _probe_errored_venues(self) -> None:
        """A relay or NEAR RPC error with no withdrawal left to retry it would stay up forever:
        ask a read-only question so the error clears when the venue is back."""
        if "relay_rpc" in self.venue_errors and self.relay is not None:
            try:
                await self.relay.get_status(_PROBE_HASH)
            except RelayRpcClientError as exc:
                self._venue_failed("relay_rpc", exc)
            else:
                self._venue_ok("relay_rpc")
        if "near_rpc" in self.venue_errors:
            try:
                await self.near.current_salt()
            except NearRpcError as exc:
                self._venue_failed("near_rpc", exc)
            else:
                self._venue_ok("near_rpc")

    async def _publish(self, w: Withdrawal) -> Withdrawal:
        """Send the signed intent (the same payload on every retry). Unknown outcome: stays signed."""
        assert self.relay is not None and w.signed_data is not None
        try:
            result = await self.relay.publish_intents([w.signed_data], quote_hashes=[])
        except RelayPublishFailed as exc:
            self._venue_ok("relay_rpc")
            now, reason = now_utc(), exc.reason  # bound here: `exc` is unset once the except block ends
            return await self._step_withdrawal(
                w.liquidity_action_id, lambda cur: withdrawals.publish_refused(cur, reason, now)
            )
        except RelayRpcClientError as exc:
            self._venue_failed("relay_rpc", exc)
            return w
        self._venue_ok("relay_rpc")
        now = now_utc()
        self._wake.set()  # follow it at once
        return await self._step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.published(cur, now, already_processed=result.already_processed),
        )

    # --- control: common guards ----------------------------------------------------------------

    def _guard(self) -> None:
        if self.blocked:
            raise ControlError(503, f"liquidity-manager is blocked: {self.blocked}")
        if not self.ready.is_set():
            raise ControlError(503, f"liquidity-manager is not ready: {self.db_error or 'starting'}")
        if self.drain_requested.is_set():
            raise ControlError(409, "liquidity-manager is draining")
        if self.paused:
            raise ControlError(409, "liquidity-manager is paused: no new funding or withdrawal work (POST /resume)")

    async def _refuse(
        self, kind: LiquidityActionKind, body: Any, caller: Caller, status: int, code: str, reason: str, **fields: Any
    ) -> ControlError:
        """Record a refusal as an event and build the answer for the operator."""
        action_id = str(uuid.uuid4())
        subject = {"asset_id": getattr(body, "asset_id", None), "chain": getattr(body, "chain", None), **fields}
        payload = LiquidityAction(
            liquidity_action_id=action_id,
            kind=kind,
            status="refused",
            reason=f"{code}: {reason}",
            operator=caller.operator,
            **subject,
        )
        try:
            await self._emit(payload)
        except DatabaseDown:
            return ControlError(
                503, f"refused ({code}): {reason}; the refusal could not be recorded: database unavailable"
            )
        self.refusals.appendleft({**payload.model_dump(mode="json"), "at": now_utc()})
        return ControlError(status, f"refused ({code}): {reason} [liquidity_action_id {action_id}]")

    async def _bridge_token(self, route: TreasuryRoute) -> SupportedToken | None:
        """The bridge's record of the route's token (minimums, fee), cached for a few minutes;
        raises `PoaBridgeError` when the bridge cannot say."""
        cached = self._tokens.get(route.chain)
        if cached is None or now_utc() - cached[0] > timedelta(minutes=5):
            cached = (now_utc(), await self.bridge.supported_tokens([route.chain]))
            self._tokens[route.chain] = cached
        return cached[1].by_intents_id(route.asset_id)

    def _base_units(self, body: Any, route: TreasuryRoute) -> int:
        if body.amount is not None:
            return int(body.amount)
        try:
            return route.asset.to_base_units(body.amount_units)
        except InexactAmount as exc:
            raise ControlError(422, f"amount_units: {exc} ({route.asset.symbol} has {route.asset.decimals})") from None

    # --- control: handlers ----------------------------------------------------------------------

    async def _emit_quietly(self, payload: LiquidityAction) -> None:
        with contextlib.suppress(DatabaseDown):
            await self._emit(payload)

    async def _db(self, coro: Any) -> Any:
        try:
            result = await coro
        except DB_ERRORS as exc:
            self._db_failed(exc)
            raise ControlError(503, "database unavailable") from None
        self._db_ok()
        return result

    # --- state -------------------------------------------------------------------------------

    def _stale(self) -> bool:
        if self.last_poll_ok_at is None:
            return True
        return (now_utc() - self.last_poll_ok_at).total_seconds() > self.cfg.liquidity_stale_after_s

    def routes(self) -> list[Route]:
        return self.controls.routes()

    def state(self) -> dict[str, Any]:
        return self.controls.state()

    def kafka_problem(self) -> str | None:
        return self.kafka_unreachable or (self.outbox.kafka_error if self.outbox is not None else None)

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.blocked:
            reasons.append(f"blocked: {self.blocked}")
        if self.db_error:
            reasons.append(f"database_unavailable: {self.db_error}")
        if self.outbox is not None and self.outbox.kafka_error:
            reasons.append(f"kafka_unavailable: {self.outbox.kafka_error}")
        if self.poll_error:
            reasons.append(f"poll_failed: {self.poll_error}")
        for venue, error in sorted(self.venue_errors.items()):
            reasons.append(f"{venue}_unavailable: {error['error']}")
        if self.ready.is_set() and self.last_poll_at is not None and self._stale():
            reasons.append(f"stale: no successful bridge poll within {self.cfg.liquidity_stale_after_s:g} s")
        return reasons

    def gate_status(self) -> str:
        frozen = "withdrawals frozen" if self.freeze.frozen else "withdrawals open"
        return f"{super().gate_status()}; {frozen}"
