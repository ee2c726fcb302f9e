"""Withdrawals: refused while frozen; the bridge fee from `withdrawal_estimate`; the
`ft_withdraw` intent signed and written to the ledger before it is published through the relay
RPC, then followed (`get_status`, `withdrawal_status`). An outcome is "failed" only on positive
evidence; otherwise it stays unknown for an operator. Pure rules in `withdrawals.py`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from daemons.core.control import Caller, ControlError
from daemons.core.events import LiquidityAction, now_utc
from daemons.liquidity_manager import withdrawals
from daemons.liquidity_manager.bodies import WithdrawalBody
from daemons.liquidity_manager.store import DatabaseDown
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.liquidity_manager.treasury import RouteRefused
from daemons.liquidity_manager.views import withdrawal_view
from daemons.liquidity_manager.withdrawals import Withdrawal
from daemons.venues.near_intents.near_rpc import NearRpcError
from daemons.venues.near_intents.nep413 import datetime_to_ns, floor_ms
from daemons.venues.near_intents.nonce_outcome import LookupsSpent, NonceOutcome, nonce_outcome
from daemons.venues.near_intents.relay_rpc import (
    RelayRpcClientError,
)
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
                        w = await self.ex._publish(w)
                elif w.stage in ("signed", "published") and withdrawals.past_deadline(w, now_utc(), grace):
                    w = await self._resolve_expired(w)
            elif w.stage == "burned":
                w = await self._check_bridge(w)
            if w.stage == before or not w.open:
                break
        now = now_utc()
        await self.ex._step_withdrawal(action_id, lambda cur: withdrawals.check_delay(cur, now, bound))

    async def _check_intent(self, w: Withdrawal) -> Withdrawal:
        if self.ex.relay is None or w.intent_hash is None:
            return w
        try:
            status = await self.ex.relay.get_status(w.intent_hash)
        except RelayRpcClientError as exc:
            self.ex._venue_failed("relay_rpc", exc)
            return w
        self.ex._venue_ok("relay_rpc")
        now = now_utc()
        return await self.ex._step_withdrawal(
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
            self.ex._venue_failed("near_rpc", exc)
            return w
        except LookupsSpent:
            return w  # the block search goes on at the next poll (its headers are cached)
        self.ex._venue_ok("near_rpc")
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
            return await self.ex._step_withdrawal(
                w.liquidity_action_id, lambda cur: withdrawals.on_expired(cur, False, now)
            )
        try:
            recent = await self.ex.bridge.recent_withdrawals(self.ex.account_id, w.chain)
        except PoaBridgeError as exc:
            self.ex._venue_failed("poa_bridge", exc)
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
        return await self.ex._step_withdrawal(
            w.liquidity_action_id, lambda cur: withdrawals.on_nonce_used(cur, tx_hash, now)
        )

    async def _check_bridge(self, w: Withdrawal) -> Withdrawal:
        assert w.tx_hash is not None
        try:
            answer = await self.ex.bridge.withdrawal_status(w.tx_hash)
        except PoaBridgeRpcError as exc:
            if not exc.withdrawals_not_found:
                self.ex._venue_failed("poa_bridge", exc)
            return w  # "Withdrawals not found": not indexed yet (docs/poa-bridge.md §6)
        except PoaBridgeError as exc:
            self.ex._venue_failed("poa_bridge", exc)
            return w
        self.ex._venue_ok("poa_bridge")
        entry = answer.for_token(w.asset_id) or answer.first
        if entry is None:
            return w
        transfer = entry.data.transfer_tx_hash if entry.data is not None else None
        now = now_utc()
        return await self.ex._step_withdrawal(
            w.liquidity_action_id,
            lambda cur: withdrawals.on_bridge_status(cur, entry.status, now, transfer_tx_hash=transfer),
        )

    async def request_withdrawal(self, body: WithdrawalBody, caller: Caller) -> dict[str, Any]:
        self.ex._guard()
        assert self.ex.treasury is not None and self.ex.store is not None and self.ex.account_id is not None
        if body.liquidity_action_id is not None:
            replay = self.ex.withdrawals.get(body.liquidity_action_id) or await self.ex._db(
                self.ex.store.withdrawal_by_id(body.liquidity_action_id)
            )
            if replay is not None:
                return {
                    **withdrawal_view(self.ex.withdrawals.get(replay.liquidity_action_id, replay)),
                    "replayed": True,
                }
        if self.ex.freeze.frozen:
            raise await self.ex._refuse(
                "withdrawal",
                body,
                caller,
                409,
                "frozen",
                self.ex.controls.frozen_text(),
                amount=body.amount,
                wallet_label=body.wallet_label,
                address=body.address,
            )
        undecided = sorted(a for a in self.ex.undecided if a in self.ex.withdrawals and self.ex.withdrawals[a].open)
        if undecided and not body.confirm_unknown:
            raise await self.ex._refuse(
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
            self.ex.audit.record("withdrawal_despite_unknown", caller, "confirmed", {"undecided": undecided})
        if self.ex.withdrawals_blocked or self.ex.signer is None or self.ex.relay is None:
            raise await self.ex._refuse(
                "withdrawal",
                body,
                caller,
                503,
                "withdrawals_blocked",
                self.ex.withdrawals_blocked or "no signer",
                amount=body.amount,
            )
        try:
            route = self.ex.treasury.route(body.asset_id)
            wallet = self.ex.treasury.destination(route, body.wallet_label, body.address)
        except RouteRefused as exc:
            raise await self.ex._refuse(
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
        net = self.ex._base_units(body, route)
        action_id = body.liquidity_action_id or str(uuid.uuid4())
        if action_id in self.ex._in_flight:
            raise ControlError(409, f"withdrawal {action_id} is already being requested")
        self.ex._in_flight.add(action_id)
        try:
            return await self._withdraw(action_id, route, wallet.label, wallet.address, net, caller)
        finally:
            self.ex._in_flight.discard(action_id)

    async def _withdraw(
        self, action_id: str, route: TreasuryRoute, label: str, address: str, net: int, caller: Caller
    ) -> dict[str, Any]:
        assert self.ex.signer is not None and self.ex.account_id is not None
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
            token = await self.ex._bridge_token(route)
            if token is not None and net < token.min_withdrawal_amount:
                raise await self.ex._refuse(
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
            estimate = await self.ex.bridge.withdrawal_estimate(route.chain, route.asset.near_token_id, address)
        except PoaBridgeError as exc:
            self.ex._venue_failed("poa_bridge", exc)
            await self.ex._emit_quietly(failed.model_copy(update={"reason": f"no fee estimate from the bridge: {exc}"}))
            raise ControlError(
                502, f"the POA bridge gave no withdrawal estimate: {exc} [liquidity_action_id {action_id}]"
            ) from None
        self.ex._venue_ok("poa_bridge")
        try:
            salt = await self.ex.near.current_salt()
        except NearRpcError as exc:
            self.ex._venue_failed("near_rpc", exc)
            await self.ex._emit_quietly(failed.model_copy(update={"reason": f"no current_salt from NEAR RPC: {exc}"}))
            raise ControlError(502, f"NEAR RPC gave no current_salt: {exc} [liquidity_action_id {action_id}]") from None
        self.ex._venue_ok("near_rpc")
        if self.ex.freeze.frozen:  # frozen while we were asking the venues: nothing is signed
            raise await self.ex._refuse(
                "withdrawal",
                None,
                caller,
                409,
                "frozen",
                self.ex.controls.frozen_text(),
                asset_id=route.asset_id,
                chain=route.chain,
                amount=net,
                address=address,
            )
        now = now_utc()
        deadline = floor_ms(now + timedelta(seconds=self.ex.cfg.liquidity_withdraw_deadline_s))
        fee = estimate.withdrawal_fee
        intent = withdrawals.ft_withdraw_intent(
            route.asset, net + fee, address, self.ex.cfg.liquidity_withdraw_min_gas or None
        )
        signed_intent = withdrawals.sign_withdrawal(
            self.ex.signer,
            self.ex.account_id,
            intent,
            salt_hex=salt,
            deadline=deadline,
            recipient=self.ex.cfg.verifier_contract,
        )
        w = withdrawals.signed(
            liquidity_action_id=action_id,
            account_id=self.ex.account_id,
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
        async with self.ex._state_lock:  # written before it is sent anywhere
            try:
                await self.ex._commit([w.event()], withdrawal=w)
            except DatabaseDown:
                raise ControlError(503, "database unavailable: the withdrawal was not signed into the ledger") from None
            self.ex.withdrawals[action_id] = w
        self.ex.audit.record(
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
        if self.ex.freeze.frozen:  # frozen while it was being written: it is never sent
            now = now_utc()
            try:
                w = await self.ex._step_withdrawal(
                    action_id,
                    lambda cur: withdrawals.withheld(cur, "withdrawals were frozen before it was published", now),
                )
            except DatabaseDown:
                raise ControlError(503, "frozen before it was sent; the outcome could not be recorded") from None
            raise ControlError(409, f"{self.ex.controls.frozen_text()}; {w.reason} [liquidity_action_id {action_id}]")
        try:
            w = await self.ex._publish(w)
        except DatabaseDown:
            raise ControlError(503, "published, but the outcome could not be recorded: database unavailable") from None
        if w.stage == "failed":
            raise ControlError(502, f"{w.reason} [liquidity_action_id {action_id}]")
        if w.stage == "signed":
            return {
                **withdrawal_view(w),
                "note": "the relay gave no usable answer: the same signed intent is "
                "published again on the next poll, never re-signed",
            }
        return withdrawal_view(w)
