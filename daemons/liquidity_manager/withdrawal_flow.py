"""Withdrawals once signed into the ledger: the signed intent published through the relay RPC
(the same payload on every retry, never re-signed), then followed (`get_status`, then the
bridge's `withdrawal_status`); past the deadline the on-chain nonce decides whether it executed.
An outcome is "failed" only on positive evidence; otherwise it stays unknown for an operator.
A request becomes a signed withdrawal in `withdrawal_request.py`; the pure rules are in
`withdrawals.py`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.liquidity_manager import withdrawals
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.near_rpc import NearRpcError
from daemons.venues.near_intents.nep413 import datetime_to_ns
from daemons.venues.near_intents.nonce_outcome import LookupsSpent, NonceOutcome, nonce_outcome
from daemons.venues.near_intents.relay_rpc import RelayPublishFailed, RelayRpcClientError
from daemons.venues.poa_bridge import (
    PoaBridgeError,
    PoaBridgeRpcError,
)

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager


class WithdrawalFlow:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex

    async def follow(self) -> None:
        for action_id in [w.liquidity_action_id for w in self.ex.withdrawals.values() if w.open]:
            if action_id in self.ex._in_flight:
                continue
            self.ex._in_flight.add(action_id)
            try:
                await self._follow_withdrawal(action_id)
            finally:
                self.ex._in_flight.discard(action_id)

    async def _follow_withdrawal(self, action_id: str) -> None:
        grace = timedelta(seconds=self.ex.cfg.liquidity_withdraw_expiry_grace_s)
        bound = timedelta(seconds=self.ex.cfg.liquidity_withdrawal_delay_s)
        for _ in range(3):  # a fast venue can take it through several stages in one poll
            w = self.ex.withdrawals[action_id]
            before = w.stage
            if w.stage in ("signed", "published"):
                w = await self._check_intent(w)
                if w.stage == "signed" and not withdrawals.past_deadline(w, now_utc(), grace):
                    # a frozen treasury sends nothing, not even a retry; without credentials nothing can be sent
                    if not self.ex.freeze.frozen and self.ex.relay is not None:
                        w = await self.publish(w)
                elif w.stage in ("signed", "published") and withdrawals.past_deadline(w, now_utc(), grace):
                    w = await self._resolve_expired(w)
            elif w.stage == "burned":
                w = await self._check_bridge(w)
            if w.stage == before or not w.open:
                break
        now = now_utc()
        await self.ex.journal.step_withdrawal(action_id, lambda cur: withdrawals.check_delay(cur, now, bound))

    async def _check_intent(self, w: Withdrawal) -> Withdrawal:
        if self.ex.relay is None or w.intent_hash is None:
            return w
        try:
            status = await self.ex.relay.get_status(w.intent_hash)
        except RelayRpcClientError as exc:
            self.ex.venues.failed("relay_rpc", exc)
            return w
        self.ex.venues.ok("relay_rpc")
        now = now_utc()
        return await self.ex.journal.step_withdrawal(
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
        assert self.ex.account_id is not None and w.nonce is not None
        try:
            final = await self.ex.near.block(finality="final")
            outcome = await nonce_outcome(
                self.ex.near, self.ex.account_id, w.nonce, datetime_to_ns(w.deadline), final, self.ex.headers
            )
        except NearRpcError as exc:
            self.ex.venues.failed("near_rpc", exc)
            return w
        except LookupsSpent:
            return w  # the block search goes on at the next poll (its headers are cached)
        self.ex.venues.ok("near_rpc")
        now = now_utc()
        if outcome in (NonceOutcome.NOT_YET, NonceOutcome.UNKNOWN):
            if outcome is NonceOutcome.UNKNOWN and w.liquidity_action_id not in self.ex.undecided:
                self.ex.undecided.add(w.liquidity_action_id)
                self.ex.log.error(
                    "withdrawal_outcome_unknown",
                    liquidity_action_id=w.liquidity_action_id,
                    reason="the block at its deadline is out of this node's reach",
                )
            return w
        if outcome is NonceOutcome.UNUSED:
            return await self.ex.journal.step_withdrawal(
                w.liquidity_action_id, lambda cur: withdrawals.on_expired(cur, False, now)
            )
        try:
            recent = await self.ex.bridge.recent_withdrawals(self.ex.account_id, w.chain)
        except PoaBridgeError as exc:
            self.ex.venues.failed("poa_bridge", exc)
            return w
        known = {x.tx_hash for x in self.ex.withdrawals.values() if x.tx_hash}
        entries = [
            (x.data.tx_hash, x.data.intents_token_id, x.data.amount, x.data.address)
            for x in recent.withdrawals
            if x.data is not None and x.data.tx_hash
        ]
        tx_hash = withdrawals.match_recent_burn(w, entries, known)
        if tx_hash is None:
            return w  # executed, not yet indexed: the delay bound will flag it
        return await self.ex.journal.step_withdrawal(
            w.liquidity_action_id, lambda cur: withdrawals.on_nonce_used(cur, tx_hash, now)
        )

    async def _check_bridge(self, w: Withdrawal) -> Withdrawal:
        assert w.tx_hash is not None
        try:
            answer = await self.ex.bridge.withdrawal_status(w.tx_hash)
        except PoaBridgeRpcError as exc:
            if not exc.withdrawals_not_found:
                self.ex.venues.failed("poa_bridge", exc)
            return w  # "Withdrawals not found": not indexed yet (docs/poa-bridge.md §6)
        except PoaBridgeError as exc:
            self.ex.venues.failed("poa_bridge", exc)
            return w
        self.ex.venues.ok("poa_bridge")
        entry = answer.for_token(w.asset_id) or answer.first
        if entry is None:
            return w
        transfer = entry.data.transfer_tx_hash if entry.data is not None else None
        now = now_utc()
        return await self.ex.journal.step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.on_bridge_status(cur, entry.status, now, transfer_tx_hash=transfer),
        )

    async def publish(self, w: Withdrawal) -> Withdrawal:
        """Send the signed intent (the same payload on every retry). Unknown outcome: stays signed."""
        assert self.ex.relay is not None and w.signed_data is not None
        try:
            result = await self.ex.relay.publish_intents([w.signed_data], quote_hashes=[])
        except RelayPublishFailed as exc:
            self.ex.venues.ok("relay_rpc")
            now, reason = now_utc(), exc.reason  # bound here: `exc` is unset once the except block ends
            return await self.ex.journal.step_withdrawal(
                w.liquidity_action_id, lambda cur: withdrawals.publish_refused(cur, reason, now)
            )
        except RelayRpcClientError as exc:
            self.ex.venues.failed("relay_rpc", exc)
            return w
        self.ex.venues.ok("relay_rpc")
        now = now_utc()
        self.ex._wake.set()  # follow it at once
        return await self.ex.journal.step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.published(cur, now, already_processed=result.already_processed),
        )
