"""Resolving live answers from the venue only, beginning with the relay's events
(`relay_events`): a `quote_status` settles; past deadline + grace the relay's silence on the
guaranteed stream expires (audited on chain as the NEAR RPC budget allows), otherwise the
verifier's nonce read at the last block at or before the deadline decides (`nonce_outcome`); an
answer the node cannot decide stays held and `undecided`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc
from daemons.trade_executor.ledger import (
    LIVE,
    LedgerRow,
    LedgerState,
    resolve_by_nonce,
)
from daemons.trade_executor.settlement import (
    LiveAnswer,
    expiry_reason,
)
from daemons.venues.near_intents.nep413 import datetime_to_ns
from daemons.venues.near_intents.nonce_outcome import NonceOutcome
from daemons.venues.near_intents.relay_ws import (
    Connected,
    Disconnected,
    LateRelayAnswer,
    QuoteStatus,
    Reject,
    RelayWsClient,
)

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class Resolution:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def relay_events(self, relay: RelayWsClient) -> None:
        """The relay connection's events: statuses and late answers resolve, poison frames are
        counted (and acknowledged, so they do not come back forever), connection changes logged.
        Quote requests are near-intents-ingest's business."""
        ex = self.ex
        async for item in relay.events():
            try:
                if isinstance(item, QuoteStatus):
                    await self.on_status(item)
                elif isinstance(item, LateRelayAnswer):
                    await self.on_late_answer(item)
                elif isinstance(item, Reject):
                    ex.errors[f"relay_frame_{item.code}"] += 1
                    if item.guaranteed and item.seq is not None and not relay.config.auto_ack:
                        await relay.ack(item)
                elif isinstance(item, Connected):
                    ex.log.info("relay_connected", venue="near_intents", epoch=item.epoch)
                    ex.notify_status()
                elif isinstance(item, Disconnected):
                    ex.log.warning("relay_disconnected", venue="near_intents", reason=item.reason)
                    ex.notify_status()
            except DB_ERRORS as exc:
                ex.db_lost(exc)
            except Exception:
                ex.errors["internal_error"] += 1
                ex.log.exception("relay_item_failed", kind=getattr(item, "kind", None))

    async def on_status(self, item: QuoteStatus) -> None:
        if not self.ex.db.healthy:
            self.ex.pending_statuses.append(item)  # acknowledged once it is written
            return
        try:
            await self._settle_by_status(item)
        except DB_ERRORS as exc:
            self.ex.db_lost(exc)
            self.ex.pending_statuses.append(item)
            return
        if self.ex.relay is not None and item.guaranteed:
            await self.ex.relay.ack(item)

    async def _settle_by_status(self, item: QuoteStatus) -> bool:
        store = self.ex.ledger()
        cid = self.ex.book.by_hash.get(item.quote_hash)
        if cid is None:
            row = await store.get_by_hash(item.quote_hash)
            if row is None:
                self.ex.errors["status_not_ours"] += 1
                return False
            if row.state not in LIVE and row.state is not S.EXPIRED:
                return False  # a repeat of a status already applied
            if row.state is S.EXPIRED:
                self.ex.log.error("settled_after_expiry", command_id=row.command_id, quote_hash=item.quote_hash)
            cid = row.command_id
        with self.ex.busy.working(cid):
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

            def noted(settled: LedgerRow) -> None:
                self.ex.undecided.discard(cid)  # the relay's word decides it after all
                self.ex.log.info(
                    "answer_settled",
                    command_id=cid,
                    quote_id=settled.quote_id,
                    quote_hash=item.quote_hash,
                    intent_hash=item.intent_hash,
                    tx_hash=item.tx_hash,
                    resolved_by="quote_status",
                )

            settled = await self.ex.publisher.step(
                cid,
                S.SETTLED,
                at,
                noted=noted,
                intent_hash=item.intent_hash,
                tx_hash=item.tx_hash,
                resolved_by="quote_status",
                resolution=resolution,
                reason="the answer settled: quote_status from the relay",
                reason_code=None,
            )
            return settled is not None

    async def on_late_answer(self, item: LateRelayAnswer) -> None:
        self.ex.errors["late_answers"] += 1
        cid = self.ex.book.by_quote.get(item.quote_id)
        if cid is None:
            row = await self.ex.ledger().get_by_quote(item.quote_id)
            cid = row.command_id if row is not None else None
        self.ex.log.warning(
            "late_relay_answer", quote_id=item.quote_id, command_id=cid, ok=item.answer.ok, error=item.answer.error
        )
        if cid is not None:
            await self.ex.ledger().merge_venue_response(
                cid,
                "late_answer",
                {
                    "ok": item.answer.ok,
                    "error": item.answer.error,
                    "raw": item.answer.raw,
                    "received_at": item.received_at,
                },
            )

    async def resolve_due(self, due: list[LiveAnswer]) -> None:
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
        wait = timedelta(milliseconds=self.ex.cfg.executor_status_wait_ms)
        stream_up_since = (
            self.ex.relay.connected_since if self.ex.relay is not None and self.ex.relay.connected else None
        )
        silent_ok = (
            self.ex.relay is not None
            and self.ex.relay.config.guaranteed_status
            and stream_up_since is not None
            and stream_up_since <= now - wait
        )
        chain: list[LiveAnswer] = []
        silent: list[LiveAnswer] = []  # expired together, in one ledger write
        for answer in due:
            if answer.nonce is None or answer.deadline is None or answer.command_id in self.ex.undecided:
                continue  # undecided: beyond what the node keeps for good; an operator's verdict ends it
            if answer.state is S.ACKNOWLEDGED and self.ex.relay is not None and self.ex.relay.config.guaranteed_status:
                if now < answer.deadline + wait:
                    continue  # a replayed status may still come
                if silent_ok:
                    silent.append(answer)
                    continue
            chain.append(answer)
        if silent:
            await self._expire_silent(
                silent,
                {
                    "rule": "no quote_status on the guaranteed-delivery stream",
                    "stream_connected_since": stream_up_since,
                    "status_wait_ms": self.ex.cfg.executor_status_wait_ms,
                    "checked_at": now,
                },
            )
            for answer in silent:
                self._queue_audit(answer)
        if chain:
            await self._resolve_on_chain(chain)

    def _queue_audit(self, answer: LiveAnswer) -> None:
        """An answer expired by the relay's silence is checked on chain as the NEAR RPC budget
        allows (oldest dropped past `executor_audit_queue`, counted): a relay that broke its
        delivery guarantee is caught and the answer corrected to settled."""
        if len(self.ex.audits) >= self.ex.cfg.executor_audit_queue:
            self.ex.audits.popleft()
            self.ex.audit_counts["skipped"] += 1
        self.ex.audits.append(answer)

    async def audit_silence(self) -> None:
        """Check queued silence expiries on chain while the budget lasts; a used nonce means the
        relay lost a fill's status: the row goes expired → settled, its amount held as settled."""
        if not self.ex.audits:
            return
        final = await self.ex.chain.final_block(None)
        while final is not None and self.ex.audits:
            answer = self.ex.audits[0]
            outcome = await self.ex.chain.outcome(answer, final)
            if outcome is None or outcome is NonceOutcome.NOT_YET:
                return  # the budget or the node: the rest wait
            self.ex.audits.popleft()
            self.ex.audit_counts[outcome.value] += 1
            if outcome is NonceOutcome.USED:
                await self._correct_to_settled(answer, final.height)

    async def _correct_to_settled(self, answer: LiveAnswer, height: int) -> None:
        cid = answer.command_id
        with self.ex.busy.working(cid):
            at = now_utc()

            def noted(moved: LedgerRow) -> None:
                self.ex.log.error(
                    "relay_silence_misled",
                    command_id=cid,
                    quote_id=moved.quote_id,
                    reason="expired for want of a quote_status, but its nonce was used: corrected to settled",
                )

            await self.ex.publisher.step(
                cid,
                S.SETTLED,
                at,
                noted=noted,
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

    async def _resolve_on_chain(self, due: list[LiveAnswer]) -> None:
        final = await self.ex.chain.final_block(min(datetime_to_ns(a.deadline) for a in due if a.deadline is not None))
        for answer in due if final is not None else []:
            outcome = await self.ex.chain.outcome(answer, final)  # type: ignore[arg-type]
            if outcome is None:
                return  # the budget or the node: the rest wait for the next sweep
            if outcome is NonceOutcome.NOT_YET:
                continue
            if outcome is NonceOutcome.UNKNOWN:
                if answer.command_id not in self.ex.undecided:
                    self.ex.undecided.add(answer.command_id)
                    self.ex.log.error(
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
                    "account_id": answer.signer_id or self.ex.cfg.signer_account_id,
                    "nonce": answer.nonce,
                    "read_at_block": final.height,
                    "checked_at": now_utc(),
                    "rule": "read at the last block at or before the deadline",
                },
            )

    async def resolve_unsent(self, answer: LiveAnswer, reason: str) -> None:
        """A row the executor stopped in while signing never left the process (its `submitted`
        row is written before the frame): expired now; the nonce read is a cross-check."""
        if answer.nonce is None:
            return
        account = answer.signer_id or self.ex.cfg.signer_account_id or ""
        used = await self.ex.chain.is_nonce_used(account, answer.nonce)
        if used is None:
            return
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
        with self.ex.busy.working(cid):
            target, fields = _verdict(answer, used, reason)
            moved = await self.ex.publisher.step(
                cid,
                target,
                now_utc(),
                noted=self._noted(target, resolved_by),
                resolved_by=resolved_by,
                resolution=resolution,
                reason=fields["reason"],
                reason_code=fields["reason_code"],
            )
            if moved is None:
                await self._not_moved(cid)

    async def _expire_silent(self, answers: list[LiveAnswer], resolution: dict[str, Any]) -> None:
        """Answers the relay's silence expires, in one ledger write; their results published
        together (the producer batches them)."""
        ex = self.ex
        for a in answers:
            ex.busy.take(a.command_id)
        try:
            each = {a.command_id: _verdict(a, False, None)[1] for a in answers}
            moved = await ex.ledger().transition_many(
                S.EXPIRED, now_utc(), each, resolved_by="no_quote_status", resolution=resolution
            )
            noted = self._noted(S.EXPIRED, "no_quote_status")
            await asyncio.gather(*(ex.publisher.written(row, noted=noted) for row in moved))
            for cid in set(each) - {row.command_id for row in moved}:
                await self._not_moved(cid)
        finally:
            for a in answers:
                ex.busy.release(a.command_id)

    def _noted(self, target: LedgerState, resolved_by: str) -> Callable[[LedgerRow], None]:
        def noted(moved: LedgerRow) -> None:
            self.ex.undecided.discard(moved.command_id)
            self.ex.log.info(
                "answer_resolved",
                command_id=moved.command_id,
                quote_id=moved.quote_id,
                state=target.value,
                resolved_by=resolved_by,
            )

        return noted

    async def _not_moved(self, cid: str) -> None:
        """Another path resolved the row first: its own result stands; the book follows the row."""
        self.ex.undecided.discard(cid)
        fresh = await self.ex.ledger().get(cid)
        if fresh is None or fresh.state not in LIVE:
            self.ex.book.release(cid)


def _verdict(answer: LiveAnswer, used: bool, reason: str | None) -> tuple[LedgerState, dict[str, str | None]]:
    """The ledger state and reason columns of a venue verdict on a live answer."""
    target = resolve_by_nonce(used)
    if target is S.SETTLED:
        return target, {
            "reason": "settled: its nonce is used in the verifier (the quote_status was missed)",
            "reason_code": "nonce_used",
        }
    return target, {
        "reason": reason or expiry_reason(answer),
        "reason_code": "cancelled" if answer.cancel_requested else "deadline_passed",
    }
