"""The durable step of every liquidity transition: the working state and the
`ops.liquidity_action` events that describe it are committed together (the outbox then
publishes the events), and only then is the change logged, counted and held in memory.

A step on one funding attempt or withdrawal runs under the manager's state lock, so two paths
(a poll and an operator's request) never both move the same action.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemons.core.db import DB_ERRORS
from daemons.core.events import Envelope, LiquidityAction, new_event
from daemons.liquidity_manager.funding import FundingAttempt
from daemons.liquidity_manager.store import DatabaseDown
from daemons.liquidity_manager.withdrawals import Withdrawal

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager

_WARN_STATUSES = frozenset({"delayed", "failed", "duplicate", "refused", "frozen"})


class Journal:
    def __init__(self, ex: LiquidityManager) -> None:
        self.ex = ex

    def event(self, payload: LiquidityAction) -> tuple[Envelope[Any], str]:
        event = new_event(
            payload, producer=self.ex.producer_id, pair=self.ex.cfg.pair, correlation_id=payload.liquidity_action_id
        )
        return event, payload.liquidity_action_id  # keyed by the action: its transitions stay in order

    def log(self, payload: LiquidityAction) -> None:
        """The transition's log line (a warning for the statuses an operator should look at) and count."""
        level = self.ex.log.warning if payload.status in _WARN_STATUSES else self.ex.log.info
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
        self.ex.counts[f"{payload.kind}_{payload.status}"] += 1

    async def commit(self, payloads: list[LiquidityAction], **state: Any) -> None:
        """Make `state` and the events of `payloads` durable together, or raise `DatabaseDown`."""
        assert self.ex.store is not None
        try:
            await self.ex.store.commit([self.event(p) for p in payloads], **state)
        except DB_ERRORS as exc:
            self.ex._db_failed(exc)
            raise DatabaseDown(str(exc)) from exc
        self.ex._db_ok()
        self.ex._wake_outbox()
        for payload in payloads:
            self.log(payload)

    async def emit(self, payload: LiquidityAction) -> None:
        """An event with no working state behind it (a refusal, a duplicate)."""
        await self.commit([payload])

    async def emit_quietly(self, payload: LiquidityAction) -> None:
        """`emit`, for an event whose loss while PostgreSQL is down is acceptable (the operator
        gets the answer anyway)."""
        with contextlib.suppress(DatabaseDown):
            await self.emit(payload)

    async def step_funding(self, action_id: str, step: Callable[[FundingAttempt], FundingAttempt | None]) -> None:
        async with self.ex._state_lock:
            current = self.ex.funding.get(action_id)
            new = step(current) if current is not None else None
            if new is None or new == current:
                return
            await self.commit([new.event()], funding=new)
            self.ex.funding[action_id] = new

    async def step_withdrawal(self, action_id: str, step: Callable[[Withdrawal], Withdrawal | None]) -> Withdrawal:
        async with self.ex._state_lock:
            current = self.ex.withdrawals[action_id]
            new = step(current)
            if new is None or new == current:
                return current
            await self.commit([new.event()], withdrawal=new)
            self.ex.withdrawals[action_id] = new
            return new
