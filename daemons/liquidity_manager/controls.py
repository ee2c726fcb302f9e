"""liquidity-manager's control socket: funding, withdrawals, the withdrawal freeze (it latches
across restarts) and `/state`; and what every request shares: the guard (blocked, not ready,
draining, paused), refusals recorded as events, amounts in base units, database reads that
answer 503 while PostgreSQL is away.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from daemons.core.assets import InexactAmount
from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.db import DB_ERRORS
from daemons.core.events import LiquidityAction, LiquidityActionKind, now_utc
from daemons.core.state_models import LiquidityManagerFields, conform
from daemons.liquidity_manager import funding, withdrawals
from daemons.liquidity_manager.bodies import DepositAddressBody, FundingBody, WithdrawalBody
from daemons.liquidity_manager.store import DatabaseDown, FreezeState
from daemons.liquidity_manager.treasury import Route as TreasuryRoute
from daemons.liquidity_manager.views import funding_view, withdrawal_view

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager

T = TypeVar("T")


class Controls:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex

    # --- what every request shares ---------------------------------------------------------------

    def guard(self) -> None:
        if self.ex.blocked:
            raise ControlError(503, f"liquidity-manager is blocked: {self.ex.blocked}")
        if not self.ex.ready.is_set():
            raise ControlError(503, f"liquidity-manager is not ready: {self.ex.db_link.error or 'starting'}")
        if self.ex.drain_requested.is_set():
            raise ControlError(409, "liquidity-manager is draining")
        if self.ex.paused:
            raise ControlError(409, "liquidity-manager is paused: no new funding or withdrawal work (POST /resume)")

    async def refuse(
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
            await self.ex.journal.emit(payload)
        except DatabaseDown:
            return ControlError(
                503, f"refused ({code}): {reason}; the refusal could not be recorded: database unavailable"
            )
        self.ex.refusals.appendleft({**payload.model_dump(mode="json"), "at": now_utc()})
        return ControlError(status, f"refused ({code}): {reason} [liquidity_action_id {action_id}]")

    def base_units(self, body: Any, route: TreasuryRoute) -> int:
        if body.amount is not None:
            return int(body.amount)
        try:
            return route.asset.to_base_units(body.amount_units)
        except InexactAmount as exc:
            raise ControlError(422, f"amount_units: {exc} ({route.asset.symbol} has {route.asset.decimals})") from None

    async def db(self, read: Awaitable[T]) -> T:
        """A database read for a request: 503 while PostgreSQL is unavailable."""
        try:
            result = await read
        except DB_ERRORS as exc:
            self.ex._db_failed(exc)
            raise ControlError(503, "database unavailable") from None
        self.ex._db_ok()
        return result

    # --- the withdrawal freeze --------------------------------------------------------------------

    def frozen_text(self) -> str:
        f = self.ex.freeze
        why = f": {f.reason}" if f.reason else ""
        return f"withdrawals are frozen since {f.changed_at} by {f.changed_by}{why}"

    async def _set_frozen(self, frozen: bool, caller: Caller) -> dict[str, Any]:
        if self.ex.blocked:
            raise ControlError(503, f"liquidity-manager is blocked: {self.ex.blocked}")
        if not self.ex.ready.is_set():
            raise ControlError(503, "liquidity-manager is not ready: the freeze could not be recorded")
        action = "freeze_withdrawals" if frozen else "unfreeze_withdrawals"
        async with self.ex._state_lock:
            if self.ex.freeze.frozen == frozen:
                self.ex.audit.record(action, caller, "unchanged")
                return {"withdrawals_frozen": frozen, "changed": False, **self.freeze_view()}
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
                await self.ex.journal.commit([payload], freeze=state)
            except DatabaseDown:
                raise ControlError(503, "database unavailable: the freeze was not changed") from None
            self.ex.freeze = state
        self.ex.audit.record(action, caller, "frozen" if frozen else "unfrozen", {"liquidity_action_id": action_id})
        self.ex.notify_status()
        return {"withdrawals_frozen": frozen, "changed": True, **self.freeze_view()}

    def freeze_view(self) -> dict[str, Any]:
        f = self.ex.freeze
        return {
            "frozen_by" if f.frozen else "changed_by": f.changed_by,
            "changed_at": f.changed_at,
            "reason": f.reason,
            "liquidity_action_id": f.liquidity_action_id,
        }

    # --- routes and /state ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def refresh(_r: Any, _b: Any, caller: Caller) -> Any:
            self.guard()
            self.ex.audit.record("refresh", caller, "polled")
            return await self.ex.poll_once()

        async def freeze(_r: Any, _b: Any, caller: Caller) -> Any:
            return await self._set_frozen(True, caller)

        async def unfreeze(_r: Any, _b: Any, caller: Caller) -> Any:
            return await self._set_frozen(False, caller)

        async def deposit_address(_r: Any, body: DepositAddressBody, caller: Caller) -> Any:
            return await self.ex.funding_flow.deposit_address(body, caller)

        async def record_funding(_r: Any, body: FundingBody, caller: Caller) -> Any:
            return await self.ex.funding_flow.record_funding(body, caller)

        async def request_withdrawal(_r: Any, body: WithdrawalBody, caller: Caller) -> Any:
            return await self.ex.withdrawal_requests.request_withdrawal(body, caller)

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

    def state(self) -> dict[str, Any]:
        recent = self.ex.cfg.liquidity_recent
        attempts = sorted(self.ex.funding.values(), key=lambda a: a.recorded_at, reverse=True)
        outs = sorted(self.ex.withdrawals.values(), key=lambda w: w.requested_at, reverse=True)
        pending_in = funding.pending_by_asset(attempts)
        pending_out = withdrawals.pending_by_asset(outs)
        db_error = self.ex.db_link.error
        blocked_reason = self.ex.blocked
        if blocked_reason is None and db_error is not None:
            blocked_reason = f"database unavailable: {db_error}"
        return conform(
            LiquidityManagerFields,
            {
                "connected": {
                    "database": self.ex.ready.is_set() and db_error is None,
                    "kafka": self.ex.outbox is not None and self.ex.outbox.connected,
                    "poa_bridge": self.ex.last_poll_at is not None and self.ex.venues.up("poa_bridge"),
                    "relay_rpc": None if self.ex.relay is None else self.ex.venues.up("relay_rpc"),
                    "near_rpc": self.ex.venues.up("near_rpc"),
                },
                "authoritative": self.ex.ready.is_set() and not self.ex._stale() and db_error is None,
                "stale": self.ex._stale(),
                "blocked_reason": blocked_reason,
                "account_id": self.ex.account_id,
                "last_poll_at": self.ex.last_poll_at,
                "last_successful_poll_at": self.ex.last_poll_ok_at,
                "poll_interval_s": self.ex.cfg.liquidity_poll_interval_s,
                "venue_errors": self.ex.venues.errors(),
                "treasury": self.ex.treasury.view() if self.ex.treasury else None,
                "deposit_addresses": [
                    {
                        "chain": chain,
                        "asset_ids": [r.asset_id for r in self.ex.treasury.routes if r.chain == chain]
                        if self.ex.treasury
                        else [],
                        "address": r.address,
                        "memo": r.memo,
                        "issued_at": r.issued_at,
                        "liquidity_action_id": r.liquidity_action_id,
                    }
                    for chain, r in sorted(self.ex.addresses.items())
                ],
                "deposit_address_errors": self.ex.address_errors,
                "funding": {
                    "recent": [funding_view(a) for a in attempts[:recent]],
                    "pending": [funding_view(a) for a in attempts if a.pending],
                    "delayed": [a.liquidity_action_id for a in attempts if a.status == "delayed"],
                    "notify_errors": self.ex.notify_errors,
                    "unmatched_deposits": self.ex.unmatched,
                },
                "pending_credits": {k: str(v) for k, v in pending_in.items()},
                "withdrawals": {
                    "frozen": self.ex.freeze.frozen,
                    **self.freeze_view(),
                    "blocked_reason": self.ex.withdrawals_blocked,
                    "recent": [withdrawal_view(w) for w in outs[:recent]],
                    "in_flight": [withdrawal_view(w) for w in outs if w.open],
                    # past the deadline, outcome not decidable by the node: never marked failed
                    "undecided": sorted(self.ex.undecided),
                },
                "near_rpc": self.ex.near.usage().model_dump(mode="json"),
                "withdrawals_frozen": self.ex.freeze.frozen,
                "pending_withdrawals": {k: str(v) for k, v in pending_out.items()},
                "rebalance": {
                    # No automatic rebalancing: treasury moves are operator acts, off the trade path.
                    "mode": "manual",
                    "automatic": False,
                    "pending_in": {k: str(v) for k, v in pending_in.items()},
                    "pending_out": {k: str(v) for k, v in pending_out.items()},
                },
                "recent_refusals": list(self.ex.refusals),
                "outbox": {
                    "backlog": self.ex.outbox.backlog if self.ex.outbox else None,
                    "last_published_at": self.ex.outbox.last_published_at if self.ex.outbox else None,
                },
                "counts": dict(self.ex.counts),
                "thresholds": {
                    "credit_delay_s": self.ex.cfg.liquidity_credit_delay_s,
                    "withdrawal_delay_s": self.ex.cfg.liquidity_withdrawal_delay_s,
                    "stale_after_s": self.ex.cfg.liquidity_stale_after_s,
                    "withdraw_deadline_s": self.ex.cfg.liquidity_withdraw_deadline_s,
                },
            },
        )
