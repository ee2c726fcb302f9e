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
The pure rules are in `treasury.py`, `funding.py` and `withdrawals.py`; this module moves data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from daemons.core.assets import InexactAmount
from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import Envelope, LiquidityAction, LiquidityActionKind, new_event, now_utc
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.liquidity_manager import funding, withdrawals
from daemons.liquidity_manager.bodies import DepositAddressBody, FundingBody, WithdrawalBody
from daemons.liquidity_manager.funding import BridgeDeposit, FundingAttempt
from daemons.liquidity_manager.outbox import OutboxPublisher
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.liquidity_manager.store import DepositAddressRecord, FreezeState, Store
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.liquidity_manager.treasury import RouteRefused, TreasuryConfig, TreasuryFileError, load_treasury
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.near_rpc import NearRpcError, client_from_settings
from daemons.venues.near_intents.nep413 import KeyFileError, SignerKey, datetime_to_ns, load_signer_key
from daemons.venues.near_intents.nonce_outcome import HeaderCache, LookupsSpent, NonceOutcome, nonce_outcome
from daemons.venues.near_intents.relay_rpc import (
    RelayPublishFailed,
    RelayRpcClient,
    RelayRpcClientError,
)
from daemons.venues.poa_bridge import (
    PoaBridgeClient,
    PoaBridgeError,
    PoaBridgeRpcError,
    SupportedToken,
    SupportedTokens,
)

_WARN_STATUSES = frozenset({"delayed", "failed", "duplicate", "refused", "frozen"})
_PAGE = 100  # recent_deposits' maximum page (docs/poa-bridge.md §4)
_PROBE_HASH = "1" * 44  # a well-formed intent hash nobody published: get_status answers NOT_FOUND


class _DatabaseDown(Exception):
    """A state change could not be made durable; nothing was applied."""


def _amounts_as_text(view: dict[str, Any]) -> dict[str, Any]:
    # u128 base units leave /state as decimal strings, as on the wire
    for key in ("amount", "net_amount", "fee", "credited_amount"):
        if isinstance(view.get(key), int):
            view[key] = str(view[key])
    return view


def _funding_view(a: FundingAttempt) -> dict[str, Any]:
    return _amounts_as_text({**dataclasses.asdict(a), "status": a.status})


def _withdrawal_view(w: Withdrawal) -> dict[str, Any]:
    view = dataclasses.asdict(w)
    view.pop("signed_data", None)
    return _amounts_as_text({**view, "amount": w.amount, "status": w.status})


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
        """Make `state` and the events of `payloads` durable together, or raise `_DatabaseDown`."""
        assert self.store is not None
        try:
            await self.store.commit([self._event(p) for p in payloads], **state)
        except DB_ERRORS as exc:
            self._db_failed(exc)
            raise _DatabaseDown(str(exc)) from exc
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
                await self._ensure_addresses(started)
                await self._notify_recorded()
                bridge_ok = await self._follow_funding()
                await self._follow_withdrawals()
                await self._probe_errored_venues()
            except _DatabaseDown:
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

    async def _ensure_addresses(self, now: datetime) -> None:
        assert self.treasury is not None
        retry = timedelta(seconds=max(self.cfg.liquidity_poll_interval_s * 10, 60))
        for route in self.treasury.routes:
            if route.chain in self.addresses:
                continue
            last = self.address_errors.get(route.chain)
            if last is not None and now - last["at"] < retry:
                continue  # do not flood the history with the same failure every poll
            with contextlib.suppress(PoaBridgeError):
                await self._request_address(route, operator=None, reason="kept for the treasury route")

    async def _request_address(
        self, route: TreasuryRoute, operator: str | None, reason: str | None
    ) -> DepositAddressRecord:
        """requested → issued | failed; raises `PoaBridgeError` after recording the failure."""
        assert self.account_id is not None
        action_id = str(uuid.uuid4())
        base = LiquidityAction(
            liquidity_action_id=action_id,
            kind="deposit_address",
            status="requested",
            asset_id=route.asset_id,
            chain=route.chain,
            operator=operator,
            reason=reason,
        )
        await self._commit([base])
        try:
            answer = await self.bridge.deposit_address(self.account_id, route.chain)
        except PoaBridgeError as exc:
            self._venue_failed("poa_bridge", exc)
            self.address_errors[route.chain] = {"error": str(exc), "at": now_utc(), "liquidity_action_id": action_id}
            await self._commit([base.model_copy(update={"status": "failed", "reason": f"deposit_address: {exc}"})])
            raise
        self._venue_ok("poa_bridge")
        record = DepositAddressRecord(route.chain, answer.address, answer.memo, action_id, now_utc())
        await self._commit([base.model_copy(update={"status": "issued", "address": answer.address})], address=record)
        self.addresses[route.chain] = record
        self.address_errors.pop(route.chain, None)
        return record

    async def _notify_recorded(self) -> None:
        for attempt in [a for a in self.funding.values() if a.stage == "recorded"]:
            await self._notify(attempt)

    async def _notify(self, attempt: FundingAttempt) -> None:
        """Tell the bridge about the transfer (an optional speed-up, docs/poa-bridge.md §5); retried
        each poll until accepted or the deposit is seen."""
        address = self.addresses.get(attempt.chain)
        if address is None:
            return
        try:
            await self.bridge.notify_deposit(address.address, attempt.tx_hash, chain=attempt.chain)
        except PoaBridgeError as exc:
            if isinstance(exc, PoaBridgeRpcError):
                self._venue_ok("poa_bridge")  # it answered: the bridge is up, it refused this one
            else:
                self._venue_failed("poa_bridge", exc)
            self.notify_errors[attempt.liquidity_action_id] = str(exc)
            return
        self._venue_ok("poa_bridge")
        self.notify_errors.pop(attempt.liquidity_action_id, None)
        now = now_utc()
        await self._step_funding(
            attempt.liquidity_action_id,
            lambda a: funding.notified(
                dataclasses.replace(a, deposit_address=a.deposit_address or address.address), now
            ),
        )

    async def _recent_deposits(self, chain: str, wanted: set[str]) -> list[BridgeDeposit]:
        """Pages of `recent_deposits` until every wanted tx hash is found or the pages run out."""
        assert self.account_id is not None
        found: list[BridgeDeposit] = []
        for page in range(self.cfg.liquidity_deposit_pages):
            answer = await self.bridge.recent_deposits(self.account_id, chain, limit=_PAGE, offset=page * _PAGE)
            for d in answer.deposits:
                found.append(
                    BridgeDeposit(
                        tx_hash=funding.normalize_tx_hash(d.tx_hash),
                        chain=d.chain or chain,
                        status=d.status,
                        amount=d.amount,
                        asset_id=d.intents_token_id,
                        address=d.address,
                    )
                )
            if len(answer.deposits) < _PAGE or wanted <= {d.tx_hash for d in found}:
                break
        return found

    async def _follow_funding(self) -> bool:
        """Apply the bridge's deposits to every watched attempt; False when the bridge failed."""
        assert self.treasury is not None and self.store is not None
        bound = timedelta(seconds=self.cfg.liquidity_credit_delay_s)
        ok = True
        for chain in self.treasury.chains:
            watched = [a for a in self.funding.values() if a.watched and a.chain == chain]
            try:
                listed = funding.deposits_by_tx(await self._recent_deposits(chain, {a.tx_hash for a in watched}))
            except PoaBridgeError as exc:
                self._venue_failed("poa_bridge", exc)
                ok = False
                listed = None
            else:
                self._venue_ok("poa_bridge")
            now = now_utc()
            for attempt in watched:
                deposit = listed.get((chain, attempt.tx_hash)) if listed is not None else None
                await self._step_funding(
                    attempt.liquidity_action_id,
                    functools.partial(funding.advance, deposit=deposit, now=now, bound=bound),
                )
            if listed is not None:
                await self._note_unmatched(chain, listed)
        return ok

    async def _note_unmatched(self, chain: str, listed: dict[tuple[str, str], BridgeDeposit]) -> None:
        assert self.store is not None
        candidates = funding.unmatched(listed, self.funding.values())
        if candidates:
            try:
                recorded = await self.store.recorded_tx_hashes(chain, [d.tx_hash for d in candidates])
            except DB_ERRORS as exc:
                self._db_failed(exc)
                return
            candidates = [d for d in candidates if d.tx_hash not in recorded]
        self.unmatched[chain] = [
            _amounts_as_text(dataclasses.asdict(d)) for d in candidates[: self.cfg.liquidity_recent]
        ]

    # --- withdrawals: following ------------------------------------------------------------------

    async def _follow_withdrawals(self) -> None:
        for action_id in [w.liquidity_action_id for w in self.withdrawals.values() if w.open]:
            if action_id in self._in_flight:
                continue
            self._in_flight.add(action_id)
            try:
                await self._follow_withdrawal(action_id)
            finally:
                self._in_flight.discard(action_id)

    async def _follow_withdrawal(self, action_id: str) -> None:
        grace = timedelta(seconds=self.cfg.liquidity_withdraw_expiry_grace_s)
        bound = timedelta(seconds=self.cfg.liquidity_withdrawal_delay_s)
        for _ in range(3):  # a fast venue can take it through several stages in one poll
            w = self.withdrawals[action_id]
            before = w.stage
            if w.stage in ("signed", "published"):
                w = await self._check_intent(w)
                if w.stage == "signed" and not withdrawals.past_deadline(w, now_utc(), grace):
                    # a frozen treasury sends nothing, not even a retry; without credentials nothing can be sent
                    if not self.freeze.frozen and self.relay is not None:
                        w = await self._publish(w)
                elif w.stage in ("signed", "published") and withdrawals.past_deadline(w, now_utc(), grace):
                    w = await self._resolve_expired(w)
            elif w.stage == "burned":
                w = await self._check_bridge(w)
            if w.stage == before or not w.open:
                break
        now = now_utc()
        await self._step_withdrawal(action_id, lambda cur: withdrawals.check_delay(cur, now, bound))

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

    async def _check_intent(self, w: Withdrawal) -> Withdrawal:
        if self.relay is None or w.intent_hash is None:
            return w
        try:
            status = await self.relay.get_status(w.intent_hash)
        except RelayRpcClientError as exc:
            self._venue_failed("relay_rpc", exc)
            return w
        self._venue_ok("relay_rpc")
        now = now_utc()
        return await self._step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.on_intent_status(
                cur, status.status.value, now, tx_hash=status.tx_hash, status_details=status.status_details
            ),
        )

    async def _resolve_expired(self, w: Withdrawal) -> Withdrawal:
        """Past the deadline without SETTLED: the on-chain nonce decides whether it executed, read
        at the last block at or before the deadline (`nonce_outcome`: read later, a nonce the
        verifier cleaned up reads as unused, which proves nothing). Undecidable → left as it is,
        never failed."""
        assert self.account_id is not None and w.nonce is not None
        try:
            final = await self.near.block(finality="final")
            outcome = await nonce_outcome(
                self.near, self.account_id, w.nonce, datetime_to_ns(w.deadline), final, self.headers
            )
        except NearRpcError as exc:
            self._venue_failed("near_rpc", exc)
            return w
        except LookupsSpent:
            return w  # the block search goes on at the next poll (its headers are cached)
        self._venue_ok("near_rpc")
        now = now_utc()
        if outcome in (NonceOutcome.NOT_YET, NonceOutcome.UNKNOWN):
            if outcome is NonceOutcome.UNKNOWN and w.liquidity_action_id not in self.undecided:
                self.undecided.add(w.liquidity_action_id)
                self.log.error(
                    "withdrawal_outcome_unknown",
                    liquidity_action_id=w.liquidity_action_id,
                    reason="the block at its deadline is out of this node's reach",
                )
            return w
        if outcome is NonceOutcome.UNUSED:
            return await self._step_withdrawal(
                w.liquidity_action_id, lambda cur: withdrawals.on_expired(cur, False, now)
            )
        try:
            recent = await self.bridge.recent_withdrawals(self.account_id, w.chain)
        except PoaBridgeError as exc:
            self._venue_failed("poa_bridge", exc)
            return w
        known = {x.tx_hash for x in self.withdrawals.values() if x.tx_hash}
        entries = [
            (x.data.tx_hash, x.data.intents_token_id, x.data.amount, x.data.address)
            for x in recent.withdrawals
            if x.data is not None and x.data.tx_hash
        ]
        tx_hash = withdrawals.match_recent_burn(w, entries, known)
        if tx_hash is None:
            return w  # executed, not yet indexed: the delay bound will flag it
        return await self._step_withdrawal(
            w.liquidity_action_id, lambda cur: withdrawals.on_nonce_used(cur, tx_hash, now)
        )

    async def _check_bridge(self, w: Withdrawal) -> Withdrawal:
        assert w.tx_hash is not None
        try:
            answer = await self.bridge.withdrawal_status(w.tx_hash)
        except PoaBridgeRpcError as exc:
            if not exc.withdrawals_not_found:
                self._venue_failed("poa_bridge", exc)
            return w  # "Withdrawals not found": not indexed yet (docs/poa-bridge.md §6)
        except PoaBridgeError as exc:
            self._venue_failed("poa_bridge", exc)
            return w
        self._venue_ok("poa_bridge")
        entry = answer.for_token(w.asset_id) or answer.first
        if entry is None:
            return w
        transfer = entry.data.transfer_tx_hash if entry.data is not None else None
        now = now_utc()
        return await self._step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.on_bridge_status(cur, entry.status, now, transfer_tx_hash=transfer),
        )

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
        except _DatabaseDown:
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

    async def _deposit_address(self, body: DepositAddressBody, caller: Caller) -> dict[str, Any]:
        self._guard()
        assert self.treasury is not None
        try:
            route = self.treasury.route(body.asset_id, body.chain)
        except RouteRefused as exc:
            raise await self._refuse("deposit_address", body, caller, 422, exc.code, exc.reason) from None
        held = self.addresses.get(route.chain)
        if held is not None and not body.renew:
            return {
                "asset_id": route.asset_id,
                "chain": route.chain,
                "address": held.address,
                "memo": held.memo,
                "issued_at": held.issued_at,
                "liquidity_action_id": held.liquidity_action_id,
                "existing": True,
            }
        try:
            record = await self._request_address(route, caller.operator, caller.reason)
        except PoaBridgeError as exc:
            raise ControlError(502, f"the POA bridge did not issue an address for {route.chain}: {exc}") from None
        except _DatabaseDown:
            raise ControlError(503, "database unavailable: the request could not be recorded") from None
        self.audit.record("deposit_address", caller, "issued", {"chain": route.chain, "address": record.address})
        return {
            "asset_id": route.asset_id,
            "chain": route.chain,
            "address": record.address,
            "memo": record.memo,
            "issued_at": record.issued_at,
            "liquidity_action_id": record.liquidity_action_id,
            "existing": False,
        }

    async def _record_funding(self, body: FundingBody, caller: Caller) -> dict[str, Any]:
        self._guard()
        assert self.treasury is not None and self.store is not None and self.account_id is not None
        if body.liquidity_action_id is not None:
            replay = self.funding.get(body.liquidity_action_id) or await self._db(
                self.store.funding_by_id(body.liquidity_action_id)
            )
            if replay is not None:
                if replay.chain != (body.chain or replay.chain) or replay.tx_hash != funding.normalize_tx_hash(
                    body.tx_hash
                ):
                    raise ControlError(409, f"liquidity_action_id {body.liquidity_action_id} names another transfer")
                return {**_funding_view(self.funding.get(replay.liquidity_action_id, replay)), "replayed": True}
        try:
            route = self.treasury.route(body.asset_id, body.chain)
            source = self.treasury.funding_source(route, body.wallet_label)
            if not funding.tx_hash_fits_chain(route.chain, body.tx_hash):
                raise RouteRefused("invalid_tx_hash", f"{body.tx_hash!r} is not a transaction hash on {route.chain}")
        except RouteRefused as exc:
            raise await self._refuse(
                "funding",
                body,
                caller,
                422,
                exc.code,
                exc.reason,
                tx_hash=body.tx_hash,
                wallet_label=body.wallet_label,
                amount=body.amount,
            ) from None
        amount = self._base_units(body, route)
        action_id = body.liquidity_action_id or str(uuid.uuid4())
        held = self.addresses.get(route.chain)
        warning = None
        with contextlib.suppress(PoaBridgeError):  # a hint only: the transfer is recorded regardless
            token = await self._bridge_token(route)
            if token is not None and amount < token.min_deposit_amount:
                warning = (
                    f"below the bridge's minimum deposit of {token.min_deposit_amount}: "
                    "it will not be swept until more arrives"
                )
        attempt = funding.record(
            liquidity_action_id=action_id,
            account_id=self.account_id,
            asset_id=route.asset_id,
            chain=route.chain,
            amount=amount,
            tx_hash=body.tx_hash,
            now=now_utc(),
            deposit_address=held.address if held else None,
            wallet_label=source.label if source else None,
            operator=caller.operator,
            note=caller.reason,
        )
        if warning is not None:
            attempt = dataclasses.replace(attempt, reason="; ".join(filter(None, [caller.reason, warning])))
        async with self._state_lock:
            event = attempt.event()
            try:
                original = await self.store.insert_funding(attempt, [self._event(event)])
            except asyncpg.UniqueViolationError:
                raise ControlError(409, f"liquidity_action_id {action_id} is already in use") from None
            except DB_ERRORS as exc:
                self._db_failed(exc)
                raise ControlError(503, "database unavailable: the funding action could not be recorded") from None
            self._db_ok()
            if original is None:
                self.funding[action_id] = attempt
                self._wake_outbox()
                self._log_transition(event)
        if original is not None:
            raise await self._refuse_duplicate(attempt, original, caller)
        self.audit.record(
            "record_funding",
            caller,
            "requested",
            {"liquidity_action_id": action_id, "chain": route.chain, "tx_hash": attempt.tx_hash},
        )
        if held is None:
            with contextlib.suppress(PoaBridgeError, _DatabaseDown):
                await self._request_address(route, caller.operator, "needed to notify a funding transfer")
        with contextlib.suppress(_DatabaseDown):
            await self._notify(self.funding[action_id])
        self._wake.set()
        return _funding_view(self.funding[action_id])

    async def _refuse_duplicate(self, attempt: FundingAttempt, original: str, caller: Caller) -> ControlError:
        action_id = str(uuid.uuid4())
        payload = (
            dataclasses.replace(attempt, liquidity_action_id=action_id)
            .event()
            .model_copy(
                update={
                    "status": "duplicate",
                    "duplicate_of": original,
                    "reason": f"{attempt.chain} transaction {attempt.tx_hash} is already recorded as {original}",
                }
            )
        )
        try:
            await self._emit(payload)
        except _DatabaseDown:
            return ControlError(503, "duplicate funding, and the refusal could not be recorded: database unavailable")
        self.refusals.appendleft({**payload.model_dump(mode="json"), "at": now_utc()})
        return ControlError(409, f"duplicate: {payload.reason} [liquidity_action_id {action_id}]")

    async def _request_withdrawal(self, body: WithdrawalBody, caller: Caller) -> dict[str, Any]:
        self._guard()
        assert self.treasury is not None and self.store is not None and self.account_id is not None
        if body.liquidity_action_id is not None:
            replay = self.withdrawals.get(body.liquidity_action_id) or await self._db(
                self.store.withdrawal_by_id(body.liquidity_action_id)
            )
            if replay is not None:
                return {**_withdrawal_view(self.withdrawals.get(replay.liquidity_action_id, replay)), "replayed": True}
        if self.freeze.frozen:
            raise await self._refuse(
                "withdrawal",
                body,
                caller,
                409,
                "frozen",
                self._frozen_text(),
                amount=body.amount,
                wallet_label=body.wallet_label,
                address=body.address,
            )
        undecided = sorted(a for a in self.undecided if a in self.withdrawals and self.withdrawals[a].open)
        if undecided and not body.confirm_unknown:
            raise await self._refuse(
                "withdrawal",
                body,
                caller,
                409,
                "outcome_unknown",
                f"withdrawal(s) {', '.join(undecided)} may have executed (the chain could not tell); re-issuing "
                "could send the money twice. Check the destination chain, then confirm with confirm_unknown "
                "and a reason",
                amount=body.amount,
            )
        if undecided:
            self.audit.record("withdrawal_despite_unknown", caller, "confirmed", {"undecided": undecided})
        if self.withdrawals_blocked or self.signer is None or self.relay is None:
            raise await self._refuse(
                "withdrawal",
                body,
                caller,
                503,
                "withdrawals_blocked",
                self.withdrawals_blocked or "no signer",
                amount=body.amount,
            )
        try:
            route = self.treasury.route(body.asset_id)
            wallet = self.treasury.destination(route, body.wallet_label, body.address)
        except RouteRefused as exc:
            raise await self._refuse(
                "withdrawal",
                body,
                caller,
                422,
                exc.code,
                exc.reason,
                amount=body.amount,
                wallet_label=body.wallet_label,
                address=body.address,
            ) from None
        net = self._base_units(body, route)
        action_id = body.liquidity_action_id or str(uuid.uuid4())
        if action_id in self._in_flight:
            raise ControlError(409, f"withdrawal {action_id} is already being requested")
        self._in_flight.add(action_id)
        try:
            return await self._withdraw(action_id, route, wallet.label, wallet.address, net, caller)
        finally:
            self._in_flight.discard(action_id)

    async def _withdraw(
        self, action_id: str, route: TreasuryRoute, label: str, address: str, net: int, caller: Caller
    ) -> dict[str, Any]:
        assert self.signer is not None and self.account_id is not None
        failed = LiquidityAction(
            liquidity_action_id=action_id,
            kind="withdrawal",
            status="failed",
            asset_id=route.asset_id,
            chain=route.chain,
            net_amount=net,
            address=address,
            wallet_label=label,
            operator=caller.operator,
        )
        try:
            token = await self._bridge_token(route)
            if token is not None and net < token.min_withdrawal_amount:
                raise await self._refuse(
                    "withdrawal",
                    None,
                    caller,
                    422,
                    "below_minimum",
                    f"{net} is below the bridge's minimum withdrawal of {token.min_withdrawal_amount}",
                    asset_id=route.asset_id,
                    chain=route.chain,
                    amount=net,
                    address=address,
                )
            estimate = await self.bridge.withdrawal_estimate(route.chain, route.asset.near_token_id, address)
        except PoaBridgeError as exc:
            self._venue_failed("poa_bridge", exc)
            await self._emit_quietly(failed.model_copy(update={"reason": f"no fee estimate from the bridge: {exc}"}))
            raise ControlError(
                502, f"the POA bridge gave no withdrawal estimate: {exc} [liquidity_action_id {action_id}]"
            ) from None
        self._venue_ok("poa_bridge")
        try:
            salt = await self.near.current_salt()
        except NearRpcError as exc:
            self._venue_failed("near_rpc", exc)
            await self._emit_quietly(failed.model_copy(update={"reason": f"no current_salt from NEAR RPC: {exc}"}))
            raise ControlError(502, f"NEAR RPC gave no current_salt: {exc} [liquidity_action_id {action_id}]") from None
        self._venue_ok("near_rpc")
        if self.freeze.frozen:  # frozen while we were asking the venues: nothing is signed
            raise await self._refuse(
                "withdrawal",
                None,
                caller,
                409,
                "frozen",
                self._frozen_text(),
                asset_id=route.asset_id,
                chain=route.chain,
                amount=net,
                address=address,
            )
        now = now_utc()
        deadline = now + timedelta(seconds=self.cfg.liquidity_withdraw_deadline_s)
        deadline = deadline.replace(microsecond=deadline.microsecond // 1000 * 1000)  # the nonce's ms precision
        fee = estimate.withdrawal_fee
        intent = withdrawals.ft_withdraw_intent(
            route.asset, net + fee, address, self.cfg.liquidity_withdraw_min_gas or None
        )
        signed_intent = withdrawals.sign_withdrawal(
            self.signer, self.account_id, intent, salt_hex=salt, deadline=deadline, recipient=self.cfg.verifier_contract
        )
        w = withdrawals.signed(
            liquidity_action_id=action_id,
            account_id=self.account_id,
            asset=route.asset,
            chain=route.chain,
            net_amount=net,
            fee=fee,
            address=address,
            now=now,
            deadline=deadline,
            signed_intent=signed_intent,
            wallet_label=label,
            operator=caller.operator,
            note=caller.reason,
        )
        async with self._state_lock:  # written before it is sent anywhere
            try:
                await self._commit([w.event()], withdrawal=w)
            except _DatabaseDown:
                raise ControlError(503, "database unavailable: the withdrawal was not signed into the ledger") from None
            self.withdrawals[action_id] = w
        self.audit.record(
            "request_withdrawal",
            caller,
            "requested",
            {
                "liquidity_action_id": action_id,
                "asset_id": route.asset_id,
                "net_amount": str(net),
                "fee": str(fee),
                "wallet_label": label,
            },
        )
        if self.freeze.frozen:  # frozen while it was being written: it is never sent
            now = now_utc()
            try:
                w = await self._step_withdrawal(
                    action_id,
                    lambda cur: withdrawals.withheld(cur, "withdrawals were frozen before it was published", now),
                )
            except _DatabaseDown:
                raise ControlError(503, "frozen before it was sent; the outcome could not be recorded") from None
            raise ControlError(409, f"{self._frozen_text()}; {w.reason} [liquidity_action_id {action_id}]")
        try:
            w = await self._publish(w)
        except _DatabaseDown:
            raise ControlError(503, "published, but the outcome could not be recorded: database unavailable") from None
        if w.stage == "failed":
            raise ControlError(502, f"{w.reason} [liquidity_action_id {action_id}]")
        if w.stage == "signed":
            return {
                **_withdrawal_view(w),
                "note": "the relay gave no usable answer: the same signed intent is "
                "published again on the next poll, never re-signed",
            }
        return _withdrawal_view(w)

    async def _emit_quietly(self, payload: LiquidityAction) -> None:
        with contextlib.suppress(_DatabaseDown):
            await self._emit(payload)

    async def _db(self, coro: Any) -> Any:
        try:
            result = await coro
        except DB_ERRORS as exc:
            self._db_failed(exc)
            raise ControlError(503, "database unavailable") from None
        self._db_ok()
        return result

    def _frozen_text(self) -> str:
        f = self.freeze
        why = f": {f.reason}" if f.reason else ""
        return f"withdrawals are frozen since {f.changed_at} by {f.changed_by}{why}"

    async def _set_frozen(self, frozen: bool, caller: Caller) -> dict[str, Any]:
        if self.blocked:
            raise ControlError(503, f"liquidity-manager is blocked: {self.blocked}")
        if not self.ready.is_set():
            raise ControlError(503, "liquidity-manager is not ready: the freeze could not be recorded")
        action = "freeze_withdrawals" if frozen else "unfreeze_withdrawals"
        async with self._state_lock:
            if self.freeze.frozen == frozen:
                self.audit.record(action, caller, "unchanged")
                return {"withdrawals_frozen": frozen, "changed": False, **self._freeze_view()}
            action_id = str(uuid.uuid4())
            state = FreezeState(frozen, caller.operator, now_utc(), caller.reason, action_id)
            payload = LiquidityAction(
                liquidity_action_id=action_id,
                kind="freeze" if frozen else "unfreeze",
                status="frozen" if frozen else "unfrozen",
                reason=caller.reason,
                operator=caller.operator,
            )
            try:
                await self._commit([payload], freeze=state)
            except _DatabaseDown:
                raise ControlError(503, "database unavailable: the freeze was not changed") from None
            self.freeze = state
        self.audit.record(action, caller, "frozen" if frozen else "unfrozen", {"liquidity_action_id": action_id})
        self.notify_status()
        return {"withdrawals_frozen": frozen, "changed": True, **self._freeze_view()}

    def _freeze_view(self) -> dict[str, Any]:
        f = self.freeze
        return {
            "frozen_by" if f.frozen else "changed_by": f.changed_by,
            "changed_at": f.changed_at,
            "reason": f.reason,
            "liquidity_action_id": f.liquidity_action_id,
        }

    def routes(self) -> list[Route]:
        async def refresh(_r: Any, _b: Any, caller: Caller) -> Any:
            self._guard()
            self.audit.record("refresh", caller, "polled")
            return await self.poll_once()

        async def freeze(_r: Any, _b: Any, caller: Caller) -> Any:
            return await self._set_frozen(True, caller)

        async def unfreeze(_r: Any, _b: Any, caller: Caller) -> Any:
            return await self._set_frozen(False, caller)

        async def deposit_address(_r: Any, body: DepositAddressBody, caller: Caller) -> Any:
            return await self._deposit_address(body, caller)

        async def record_funding(_r: Any, body: FundingBody, caller: Caller) -> Any:
            return await self._record_funding(body, caller)

        async def request_withdrawal(_r: Any, body: WithdrawalBody, caller: Caller) -> Any:
            return await self._request_withdrawal(body, caller)

        return [
            Route(
                "POST", "/refresh", refresh, "Poll the bridge and the relay now for every open action", OperatorAction
            ),
            Route(
                "POST",
                "/freeze-withdrawals",
                freeze,
                "Refuse every new withdrawal (409) until unfrozen; survives restarts",
                OperatorAction,
            ),
            Route("POST", "/unfreeze-withdrawals", unfreeze, "Accept withdrawals again", OperatorAction),
            Route(
                "POST",
                "/deposit-address",
                deposit_address,
                "The POA deposit address for an asset (requested from the bridge unless held)",
                DepositAddressBody,
                body_optional=False,
            ),
            Route(
                "POST",
                "/funding",
                record_funding,
                "Record an external transfer into the deposit address and follow it to credited",
                FundingBody,
                body_optional=False,
            ),
            Route(
                "POST",
                "/withdrawals",
                request_withdrawal,
                "Withdraw to a labelled treasury wallet through the POA bridge (fee added)",
                WithdrawalBody,
                body_optional=False,
            ),
        ]

    # --- state -------------------------------------------------------------------------------

    def _stale(self) -> bool:
        if self.last_poll_ok_at is None:
            return True
        return (now_utc() - self.last_poll_ok_at).total_seconds() > self.cfg.liquidity_stale_after_s

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

    def state(self) -> dict[str, Any]:
        recent = self.cfg.liquidity_recent
        attempts = sorted(self.funding.values(), key=lambda a: a.recorded_at, reverse=True)
        outs = sorted(self.withdrawals.values(), key=lambda w: w.requested_at, reverse=True)
        pending_in = funding.pending_by_asset(attempts)
        pending_out = withdrawals.pending_by_asset(outs)
        blocked_reason = self.blocked
        if blocked_reason is None and self.db_error is not None:
            blocked_reason = f"database unavailable: {self.db_error}"
        return {
            "connected": {
                "database": self.ready.is_set() and self.db_error is None,
                "kafka": self.outbox is not None and self.outbox.connected,
                "poa_bridge": self.last_poll_at is not None and "poa_bridge" not in self.venue_errors,
                "relay_rpc": None if self.relay is None else "relay_rpc" not in self.venue_errors,
                "near_rpc": "near_rpc" not in self.venue_errors,
            },
            "authoritative": self.ready.is_set() and not self._stale() and self.db_error is None,
            "stale": self._stale(),
            "blocked_reason": blocked_reason,
            "account_id": self.account_id,
            "last_poll_at": self.last_poll_at,
            "last_successful_poll_at": self.last_poll_ok_at,
            "poll_interval_s": self.cfg.liquidity_poll_interval_s,
            "venue_errors": self.venue_errors,
            "treasury": self.treasury.view() if self.treasury else None,
            "deposit_addresses": [
                {
                    "chain": chain,
                    "asset_ids": [r.asset_id for r in self.treasury.routes if r.chain == chain]
                    if self.treasury
                    else [],
                    "address": r.address,
                    "memo": r.memo,
                    "issued_at": r.issued_at,
                    "liquidity_action_id": r.liquidity_action_id,
                }
                for chain, r in sorted(self.addresses.items())
            ],
            "deposit_address_errors": self.address_errors,
            "funding": {
                "recent": [_funding_view(a) for a in attempts[:recent]],
                "pending": [_funding_view(a) for a in attempts if a.pending],
                "delayed": [a.liquidity_action_id for a in attempts if a.status == "delayed"],
                "notify_errors": self.notify_errors,
                "unmatched_deposits": self.unmatched,
            },
            "pending_credits": {k: str(v) for k, v in pending_in.items()},
            "withdrawals": {
                "frozen": self.freeze.frozen,
                **self._freeze_view(),
                "blocked_reason": self.withdrawals_blocked,
                "recent": [_withdrawal_view(w) for w in outs[:recent]],
                "in_flight": [_withdrawal_view(w) for w in outs if w.open],
                # past the deadline, outcome not decidable by the node: never marked failed
                "undecided": sorted(self.undecided),
            },
            "near_rpc": self.near.usage().model_dump(mode="json"),
            "withdrawals_frozen": self.freeze.frozen,
            "pending_withdrawals": {k: str(v) for k, v in pending_out.items()},
            "rebalance": {
                # No automatic rebalancing: treasury moves are operator acts, off the trade path.
                "mode": "manual",
                "automatic": False,
                "pending_in": {k: str(v) for k, v in pending_in.items()},
                "pending_out": {k: str(v) for k, v in pending_out.items()},
            },
            "recent_refusals": list(self.refusals),
            "outbox": {
                "backlog": self.outbox.backlog if self.outbox else None,
                "last_published_at": self.outbox.last_published_at if self.outbox else None,
            },
            "counts": dict(self.counts),
            "thresholds": {
                "credit_delay_s": self.cfg.liquidity_credit_delay_s,
                "withdrawal_delay_s": self.cfg.liquidity_withdrawal_delay_s,
                "stale_after_s": self.cfg.liquidity_stale_after_s,
                "withdraw_deadline_s": self.cfg.liquidity_withdraw_deadline_s,
            },
        }
