"""The executor's periodic sweep, every `executor_resolve_interval_s`.

In order: PostgreSQL reconnected (and recovery run) if it was lost; the ledger notes of published
results written; statuses that arrived while the ledger was away applied; what answering needs
from the NEAR RPC budget first (the signer's key check, the salt); then live answers past their
deadline resolved on chain, silence expiries audited, results behind Kafka republished and
recovered settled holds placed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc
from daemons.venues.near_intents.near_rpc import NearRpcError, NearRpcRateLimited

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor


class Sweep:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex
        self.salt_retry_at = float("-inf")  # after a failed salt read, not before this loop time
        self.signer_retry_at = float("-inf")  # after a signer check that could not decide, likewise

    async def run(self, stop: asyncio.Event) -> None:
        ex = self.ex
        while not stop.is_set():
            await ex.nap(ex.cfg.executor_resolve_interval_s, stop)
            if stop.is_set():
                return
            try:
                await self.once()
            except DB_ERRORS as exc:
                ex.db_lost(exc)
            except Exception:
                ex.errors["internal_error"] += 1
                ex.log.exception("sweep_failed")

    async def once(self) -> None:
        ex = self.ex
        if not ex.db.healthy:
            await ex.connect_db()
            if not ex.db.healthy:
                return
        await ex.publisher.note_published()
        pending, ex.pending_statuses = ex.pending_statuses, []
        for item in pending:
            await ex.resolution.on_status(item)
        loop = asyncio.get_running_loop()
        if ex.key is not None and ex.signer.status == "unverified" and loop.time() >= self.signer_retry_at:
            await ex.controls.authorize_signer()
        if ex.key is not None and ex.salt.wants_refresh(now_utc()) and loop.time() >= self.salt_retry_at:
            await self.refresh_salt()
        now = now_utc()
        ex.book.release_withheld(now, ex.cfg.executor_settle_grace_ms)
        await ex.resolution.resolve_due(ex.book.due(now, ex.cfg.executor_settle_grace_ms, skip=ex.busy.ids()))
        await ex.resolution.audit_silence()
        await ex.recovery.publish_backlog()
        await ex.recovery.place_recovered()
        ex.notify_status()

    async def refresh_salt(self) -> None:
        salt = await self.ex.chain.current_salt(refresh=True)
        if isinstance(salt, NearRpcError):
            # not again before the budget or the node allows (never every sweep)
            wait = salt.retry_after_s if isinstance(salt, NearRpcRateLimited) else 1.0
            self.salt_retry_at = asyncio.get_running_loop().time() + max(0.5, wait)
