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
a task publishes to Kafka (`outbox.py`), so a transition is never lost or published without
being durable. The pure rules are in `treasury.py`, `funding.py` and `withdrawals.py`. The
concerns, each an object over the state held here: the durable step (`journal.py`: state and
events together), the venues' health and the bridge's token records (`venues.py`), funding
(`funding_flow.py`), withdrawal requests (`withdrawal_request.py`) and following withdrawals
(`withdrawal_flow.py`), the control socket and `/state` (`controls.py`); `GET /metrics` is
`metrics.py`. This module holds the shared state, the database's and the poll's health, the
start, the poll loop and the wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from datetime import datetime
from typing import Any

import asyncpg

from daemons.core.control import Route
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import now_utc
from daemons.core.health import Link
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.liquidity_manager.controls import Controls
from daemons.liquidity_manager.funding import FundingAttempt
from daemons.liquidity_manager.funding_flow import FundingFlow
from daemons.liquidity_manager.journal import Journal
from daemons.liquidity_manager.metrics import daemon_metrics
from daemons.liquidity_manager.outbox import OutboxPublisher
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.liquidity_manager.store import DatabaseDown, DepositAddressRecord, FreezeState, Store
from daemons.liquidity_manager.treasury import TreasuryConfig, TreasuryFileError, load_treasury
from daemons.liquidity_manager.venues import Venues
from daemons.liquidity_manager.withdrawal_flow import WithdrawalFlow
from daemons.liquidity_manager.withdrawal_request import WithdrawalRequests
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.near_rpc import client_from_settings
from daemons.venues.near_intents.nep413 import KeyFileError, SignerKey, load_signer_key
from daemons.venues.near_intents.nonce_outcome import HeaderCache
from daemons.venues.near_intents.relay_rpc import RelayRpcClient
from daemons.venues.poa_bridge import PoaBridgeClient


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
        self.db_link = Link(self.log, down="database_unavailable", up="database_recovered")
        # an unexpected error in a poll pass (a bug): logged with its traceback, once per run of failures
        self.poll_link = Link(self.log, down="poll_failed", up="poll_recovered")
        self.last_poll_at: datetime | None = None
        self.last_poll_ok_at: datetime | None = None
        self.counts: Counter[str] = Counter()

        self._state_lock = asyncio.Lock()
        self._poll_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        # the daemon's concerns, each an object over the state above
        self.journal = Journal(self)
        self.venues = Venues(self)
        self.funding_flow = FundingFlow(self)
        self.withdrawal_requests = WithdrawalRequests(self)
        self.withdrawal_flow = WithdrawalFlow(self)
        self.controls = Controls(self)

    @property
    def db_error(self) -> str | None:
        return self.db_link.error

    @property
    def venue_errors(self) -> dict[str, dict[str, Any]]:
        """Each failing venue's error and since when (`/state`'s `venue_errors`)."""
        return self.venues.errors()

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
        if self.db_link.ok():
            self.notify_status()

    def _db_failed(self, exc: BaseException) -> None:
        self.db_link.fail(exc)
        self.notify_status()

    # --- polling -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while await self.wait_runnable():
            self._wake.clear()  # before the pass: a wake during it brings the next one forward
            try:
                await self.poll_once()
            except Exception as exc:  # a bug must not silently stop the following of money
                self.poll_link.fail(exc, exc_info=True)
            else:
                self.poll_link.ok()
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
            errors_before = set(self.venues.errors())
            try:
                await self.funding_flow.ensure_addresses(started)
                await self.funding_flow.notify_recorded()
                bridge_ok = await self.funding_flow.follow()
                await self.withdrawal_flow.follow()
                await self.venues.probe()
            except DatabaseDown:
                bridge_ok = False
            self._trim()
            self.last_poll_at = now_utc()
            if bridge_ok and self.db_link.healthy:
                self.last_poll_ok_at = self.last_poll_at
                self.mark_success()
            venue_errors = self.venues.errors()
            if set(venue_errors) != errors_before:
                self.notify_status()
            return {
                "polled_at": self.last_poll_at,
                "bridge_ok": bridge_ok,
                "venue_errors": venue_errors,
                "database_error": self.db_link.error,
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
        return self.kafka_unreachable or (self.outbox.kafka_link.error if self.outbox is not None else None)

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.blocked:
            reasons.append(f"blocked: {self.blocked}")
        reasons += self.db_link.reason("database_unavailable")
        if self.outbox is not None:
            reasons += self.outbox.kafka_link.reason("kafka_unavailable")
        reasons += self.poll_link.reason("poll_failed")
        reasons += self.venues.health_reasons()
        if self.ready.is_set() and self.last_poll_at is not None and self._stale():
            reasons.append(f"stale: no successful bridge poll within {self.cfg.liquidity_stale_after_s:g} s")
        return reasons

    def gate_status(self) -> str:
        frozen = "withdrawals frozen" if self.freeze.frozen else "withdrawals open"
        return f"{super().gate_status()}; {frozen}"
