"""Withdrawal requests (`POST /withdrawals`): replayed by `liquidity_action_id`; refused while
frozen, while an earlier withdrawal's outcome is unknown (unless confirmed), without signing
credentials, off the treasury file's routes and wallets, or below the bridge's minimum; the
bridge fee from `withdrawal_estimate` and the salt from NEAR RPC; the `ft_withdraw` intent
signed and written to the ledger before it is published. A freeze that lands while the venues
are asked or the withdrawal is written stops it before anything is sent. Publishing and
following it are in `withdrawal_flow.py`; the pure rules in `withdrawals.py`.
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
from daemons.venues.near_intents.near_rpc import NearRpcError
from daemons.venues.near_intents.nep413 import floor_ms
from daemons.venues.poa_bridge import PoaBridgeError

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager


class WithdrawalRequests:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex

    async def request_withdrawal(self, body: WithdrawalBody, caller: Caller) -> dict[str, Any]:
        self.ex.controls.guard()
        assert self.ex.treasury is not None and self.ex.store is not None and self.ex.account_id is not None
        if body.liquidity_action_id is not None:
            replay = self.ex.withdrawals.get(body.liquidity_action_id) or await self.ex.controls.db(
                self.ex.store.withdrawal_by_id(body.liquidity_action_id)
            )
            if replay is not None:
                return {
                    **withdrawal_view(self.ex.withdrawals.get(replay.liquidity_action_id, replay)),
                    "replayed": True,
                }
        if self.ex.freeze.frozen:
            raise await self.ex.controls.refuse(
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
            raise await self.ex.controls.refuse(
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
            raise await self.ex.controls.refuse(
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
            raise await self.ex.controls.refuse(
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
        net = self.ex.controls.base_units(body, route)
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
            token = await self.ex.venues.bridge_token(route)
            if token is not None and net < token.min_withdrawal_amount:
                raise await self.ex.controls.refuse(
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
            self.ex.venues.failed("poa_bridge", exc)
            await self.ex.journal.emit_quietly(
                failed.model_copy(update={"reason": f"no fee estimate from the bridge: {exc}"})
            )
            raise ControlError(
                502, f"the POA bridge gave no withdrawal estimate: {exc} [liquidity_action_id {action_id}]"
            ) from None
        self.ex.venues.ok("poa_bridge")
        try:
            salt = await self.ex.near.current_salt()
        except NearRpcError as exc:
            self.ex.venues.failed("near_rpc", exc)
            await self.ex.journal.emit_quietly(
                failed.model_copy(update={"reason": f"no current_salt from NEAR RPC: {exc}"})
            )
            raise ControlError(502, f"NEAR RPC gave no current_salt: {exc} [liquidity_action_id {action_id}]") from None
        self.ex.venues.ok("near_rpc")
        if self.ex.freeze.frozen:  # frozen while we were asking the venues: nothing is signed
            raise await self.ex.controls.refuse(
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
                await self.ex.journal.commit([w.event()], withdrawal=w)
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
                w = await self.ex.journal.step_withdrawal(
                    action_id,
                    lambda cur: withdrawals.withheld(cur, "withdrawals were frozen before it was published", now),
                )
            except DatabaseDown:
                raise ControlError(503, "frozen before it was sent; the outcome could not be recorded") from None
            raise ControlError(409, f"{self.ex.controls.frozen_text()}; {w.reason} [liquidity_action_id {action_id}]")
        try:
            w = await self.ex.withdrawal_flow.publish(w)
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
