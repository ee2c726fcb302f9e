"""Answering a command up to the stored answer: duplicates, the gates, the hold, the salt, the
nonce and the NEP-413 signature, and the command's first ledger row — the executor's hot path.

Order, and why: every check and the hold run with no await between them, so commands taken
concurrently cannot over-commit; the command's first row is written once, straight in its state
(`refused`, or `submitted` with nonce, deadline and signature: signing is local and may come
first), so an answer costs one durable write before its frame, and a second delivery finds the
row and republishes its result. The stored answer then goes to `sending.py` (the last check and
the frame). The command loop commits a command's offset only once its row is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from daemons.core.db import DB_ERRORS
from daemons.core.events import Envelope, ExecuteTrade, RefusalCode, TradeResult, now_utc
from daemons.trade_executor.answer import SignedAnswer, plan_nonce, sign_answer
from daemons.trade_executor.gates import (
    InventoryCheck,
    Refusal,
    check_ceilings,
    check_inventory,
    check_price,
    command_refusal,
)
from daemons.trade_executor.ledger import (
    RESULT_STATUS,
    LedgerRow,
    LedgerState,
    execution_id_for,
)
from daemons.trade_executor.settlement import (
    LiveAnswer,
)
from daemons.venues.near_intents.near_rpc import (
    NearRpcError,
)

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class Answering:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def take(self, event: Envelope[ExecuteTrade]) -> None:
        """Returns once the command's first ledger row is durable (`submitted` with its signature,
        or `refused`), or it is found a duplicate: the command loop commits its offset after
        that. The frame and the venue's answer follow in a task."""
        cmd = event.payload
        cid = cmd.command_id
        now = now_utc()
        self.ex.last_command = {
            "command_id": cid,
            "quote_id": cmd.quote_id,
            "decision_id": cmd.decision_id,
            "received_at": now,
            "answer_by": cmd.answer_by,
        }
        if cid in self.ex.busy:
            # delivered again while the first delivery is in hand: its result comes from that one
            self.ex.errors["duplicate_commands"] += 1
            self.ex.log.info("duplicate_command", command_id=cid, quote_id=cmd.quote_id, state="in hand")
            return
        if cid in self.ex.book.answers or cmd.quote_id in self.ex.book.by_quote:
            await self._duplicate(event, now)  # its row (or the quote's) is stored: republish, refuse
            return
        refusal = (
            command_refusal(cmd, self.ex.pair, self.ex.gate_inputs(now))
            or check_ceilings(cmd, self.ex.pair, self.ex.ceilings, self.ex.book.live_exposure(cmd.asset_out))
            or check_price(cmd, self.ex.pair, self.ex.prices.latest, now, self.ex.ceilings)
        )
        if refusal is not None:
            await self.refuse_new(event, refusal, now)
            return
        check = check_inventory(
            self.ex.inventory.latest,
            cmd.asset_out,
            cmd.amount_out,
            self.ex.book.reserved(cmd.asset_out),
            now,
            self.ex.cfg.executor_inventory_max_age_ms,
            self.ex.signer.account_id,
        )
        if check.refusal is not None:
            await self.refuse_new(event, check.refusal, now)
            return
        # reserve now, with no await since the check: the next command already sees this hold
        self.ex.book.hold(
            LiveAnswer(
                command_id=cid,
                quote_id=cmd.quote_id,
                asset_out=cmd.asset_out,
                amount_out=cmd.amount_out,
                state=S.RECEIVED,
            )
        )
        self.ex.busy.take(cid)
        try:
            stored = await self._sign_and_store(event, check, now)
        except BaseException:
            self.ex.book.release(cid)  # nothing durable, nothing sent: the command is read again
            self.ex.busy.release(cid)
            raise
        if stored is None:
            self.ex.busy.release(cid)
            return
        task = asyncio.create_task(self.ex.sending.send(stored, cmd), name=f"answer-{cid}")
        self.ex.tasks.add(task)
        task.add_done_callback(self.ex.tasks.discard)

    async def _sign_and_store(
        self, event: Envelope[ExecuteTrade], check: InventoryCheck, received_at: datetime
    ) -> tuple[LedgerRow, SignedAnswer] | None:
        """Salt, the command's checks once more (after that await), the nonce and the NEP-413
        signature, then the one durable write before the frame: the row straight in `submitted`
        with nonce, deadline and signature. None: refused late, or a duplicate (handled)."""
        cmd = event.payload
        cid = cmd.command_id
        try:
            salt = await self.ex.chain.current_salt()
            now = now_utc()
            late = command_refusal(cmd, self.ex.pair, self.ex.gate_inputs(now))  # again, after the await
            if isinstance(salt, NearRpcError) and late is None:
                late = Refusal(RefusalCode.SALT_UNAVAILABLE, f"current_salt could not be read: {salt.message}")
            if late is not None:
                await self.refuse_new(event, late, now)
                return None
            assert isinstance(salt, str) and self.ex.key is not None
            signer_id = self.ex.signer.account_id or ""
            plan = plan_nonce(
                salt, now, cmd.min_deadline_ms, self.ex.cfg.executor_answer_margin_ms, self.ex.random_bytes
            )
            self.ex.book.update(cid, state=S.SIGNING, signer_id=signer_id, nonce=plan.nonce_b64, deadline=plan.deadline)
            answer = sign_answer(self.ex.key, signer_id, cmd, plan, self.ex.cfg.verifier_contract)
        except DB_ERRORS:
            raise
        except Exception:
            self.ex.errors["internal_error"] += 1
            self.ex.log.exception("answer_failed", command_id=cid, quote_id=cmd.quote_id)
            await self.refuse_new(
                event, Refusal(RefusalCode.INTERNAL_ERROR, "the executor failed before signing"), now_utc()
            )
            return None
        signed_at = now_utc()
        submitted = await self.ex.ledger().insert(
            event,
            received_at,
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
            self.ex.book.release(cid)  # signed, never stored nor sent: the stored row stands
            await self._duplicate(event, received_at)
            return None
        return submitted, answer

    async def _duplicate(self, event: Envelope[ExecuteTrade], now: datetime) -> None:
        cmd = event.payload
        store = self.ex.ledger()
        existing = await store.get(cmd.command_id)
        if existing is not None:
            self.ex.errors["duplicate_commands"] += 1
            self.ex.log.info(
                "duplicate_command", command_id=cmd.command_id, quote_id=cmd.quote_id, state=existing.state.value
            )
            if RESULT_STATUS[existing.state] is None:
                return  # in hand (or left for recovery): its result is on the way
            await self.ex.publisher.publish(existing, republish=True)
            return
        other = await store.get_by_quote(cmd.quote_id)
        holder = f"command {other.command_id} ({other.state.value})" if other is not None else "another command"
        # Not stored (the quote's row belongs to the other command), but deterministic: a
        # redelivery gets the same refusal with the same execution_id.
        self.ex.errors["duplicate_quotes"] += 1
        self.ex.refusals["quote_already_answered"] += 1
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
        self.ex.log.warning(
            "command_refused", command_id=cmd.command_id, quote_id=cmd.quote_id, reason_code="quote_already_answered"
        )
        await self.ex.publisher.send_result(result, now, causation=event.event_id)

    async def refuse_new(self, event: Envelope[ExecuteTrade], refusal: Refusal, now: datetime) -> None:
        """A command refused before anything was signed: its first row written straight in
        `refused` (its hold, if it took one, released), the result published."""
        cmd = event.payload
        row = await self.ex.ledger().insert(
            event,
            now,
            S.REFUSED,
            now,
            reason=refusal.reason,
            reason_code=refusal.code,
            inventory_id=refusal.inventory_id,
            spendable_at_check=refusal.spendable,
            reserved_at_check=refusal.reserved,
        )
        if row is None:
            self.ex.book.release(cmd.command_id)
            await self._duplicate(event, now)
            return
        with self.ex.busy.working(row.command_id):
            await self.ex.publisher.written(row, noted=self._refusal_noted(row, refusal))

    def _refusal_noted(self, row: LedgerRow, refusal: Refusal) -> Callable[[LedgerRow], None]:
        def noted(_moved: LedgerRow) -> None:
            self.ex.refusals[refusal.code] += 1
            self.ex.log.info(
                "command_refused",
                command_id=row.command_id,
                quote_id=row.quote_id,
                reason_code=refusal.code,
                reason=refusal.reason,
            )
            self.ex.completed += 1

        return noted

    async def refuse(self, row: LedgerRow, refusal: Refusal, now: datetime) -> None:
        """A `received` row refused (one a start finds left from before it)."""

        with self.ex.busy.working(row.command_id):
            # None: past `received` already, not a refusal any more
            await self.ex.publisher.step(
                row.command_id,
                S.REFUSED,
                now,
                noted=self._refusal_noted(row, refusal),
                reason=refusal.reason,
                reason_code=refusal.code,
                inventory_id=refusal.inventory_id,
                spendable_at_check=refusal.spendable,
                reserved_at_check=refusal.reserved,
            )
