"""inventory-sync's control socket: `POST /refresh` (read the verifier now and answer with the
resulting inventory), `/healthz`'s reasons and `/state`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.events import now_utc
from daemons.core.state_models import InventorySyncFields, conform
from daemons.inventory_sync.reconcile import summary_status
from daemons.inventory_sync.snapshot import freshness, stale_at
from daemons.inventory_sync.triggers import Trigger

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync

Waiter = asyncio.Future[dict[str, Any]]


class Controls:
    def __init__(self, ex: InventorySync) -> None:
        self.ex = ex
        # `POST /refresh` calls waiting for the next reading's answer
        self.refresh_waiters: list[Waiter] = []

    # --- POST /refresh --------------------------------------------------------------------

    def take_waiters(self) -> list[Waiter]:
        """The refresh calls a reading starting now answers (later ones wait for the next)."""
        waiters, self.refresh_waiters = self.refresh_waiters, []
        return waiters

    def finish_waiters(self, answer: dict[str, Any], waiters: list[Waiter] | None = None) -> None:
        if waiters is None:
            waiters = self.take_waiters()
        for w in waiters:
            if not w.done():
                w.set_result(answer)

    def refresh_answer(self, inventory_id: str | None) -> dict[str, Any]:
        s = self.ex.synced
        assert s is not None
        return {
            "synced": True,
            "published": inventory_id is not None,
            "inventory_id": inventory_id,
            "sync_id": s.sync_id,
            "synced_at": s.synced_at,
            "block_height": s.block_height,
            "stale": False,
            "assets": [a.model_dump(mode="json") for a in s.assets],
            "reconciliation_status": summary_status(s.reconciliation),
        }

    def routes(self) -> list[Route]:
        ex = self.ex

        async def refresh(_r: Any, _b: Any, caller: Caller) -> Any:
            if ex.blocked:
                raise ControlError(409, f"blocked: {ex.blocked}")
            if ex.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            if ex.paused:
                raise ControlError(409, "readings are paused; POST /resume first")
            answer: Waiter = asyncio.get_running_loop().create_future()
            self.refresh_waiters.append(answer)
            ex.request(Trigger("refresh"))
            try:
                result = await asyncio.wait_for(asyncio.shield(answer), ex.cfg.inventory_refresh_timeout_s)
            except TimeoutError:
                ex.audit.record("refresh", caller, "timed out")
                raise ControlError(504, "the reading did not finish in time; see GET /state") from None
            if not result["synced"]:
                ex.audit.record("refresh", caller, f"failed: {result['error']}")
                if result.get("paused"):
                    raise ControlError(409, "readings are paused; POST /resume first")
                if result.get("retry_after_s") is not None:  # our own NEAR RPC budget said no
                    raise ControlError(
                        429, f"NEAR RPC budget spent; retry in {result['retry_after_s']:.1f} s ({result['error']})"
                    )
                raise ControlError(502, f"verifier reading failed: {result['error']}")
            ex.audit.record("refresh", caller, "synced", {"sync_id": result["sync_id"]})
            return result

        return [
            Route(
                "POST",
                "/refresh",
                refresh,
                "Read the verifier now; answers with the resulting inventory",
                OperatorAction,
            ),
        ]

    # --- /healthz and /state --------------------------------------------------------------

    def health_reasons(self) -> list[str]:
        ex = self.ex
        reasons = []
        if ex.blocked:
            reasons.append(f"blocked: {ex.blocked}")
        else:
            f = freshness(ex.synced.synced_at if ex.synced else None, now_utc(), ex.bound_ms)
            if f.stale:
                reasons.append(f"inventory_stale: {ex.publishing.stale_reason(now_utc())}")
        reasons += ex.publishing.link.reason("kafka_unavailable")
        reasons += ex.inputs.link.reason("kafka_consume_failing")
        return reasons

    def state(self) -> dict[str, Any]:
        ex = self.ex
        now = now_utc()
        s = ex.synced
        f = freshness(s.synced_at if s else None, now, ex.bound_ms)
        next_in = max(0, (ex.next_due - now) // timedelta(milliseconds=1))
        reconciliation = s.reconciliation if s else []
        readings, finality, coverage = ex.readings, ex.finality, ex.finality.coverage
        kafka_error, consumer_error = ex.publishing.link.error, ex.inputs.link.error
        return conform(
            InventorySyncFields,
            {
                "connected": {
                    "verifier": readings.connected,
                    "bridge": {c: ex.pipeline.connected(c) for c in ex.chains},
                    "kafka": kafka_error is None and consumer_error is None,
                },
                "authoritative": not f.stale and kafka_error is None and bool(s and s.pending_complete),
                "blocked_reason": ex.blocked,
                "account_id": ex.account_id,
                "active_pair": {"btc": ex.pair.btc.asset_id, "eure": ex.pair.eure.asset_id},
                "stale": f.stale,
                "stale_since": (stale_at(s.synced_at, ex.bound_ms) if s else ex.started_at) if f.stale else None,
                "stale_reason": ex.publishing.stale_reason(now) if f.stale else None,
                "age_ms": f.age_ms,
                "freshness_bound_ms": ex.bound_ms,
                "last_sync": None
                if s is None
                else {
                    "sync_id": s.sync_id,
                    "synced_at": s.synced_at,
                    "block_height": s.block_height,
                    "block_hash": s.block_hash,
                    "trigger": s.trigger,
                    "duration_ms": s.duration_ms,
                },
                "finality": {
                    "covering_wanted": finality.owed,
                    "covered_head_height": coverage.head_height if coverage else None,
                    "results_through": coverage.results_through if coverage else None,
                    "liquidity_seq": coverage.liquidity_seq if coverage else None,
                    "wait_ms": ex.cfg.inventory_finality_wait_ms,
                },
                "fee": {
                    "pips": readings.fee_pips,
                    "read_at": readings.fee_read_at,
                    "interval_s": ex.cfg.inventory_fee_interval_s,
                },
                "near_rpc": ex.rpc.usage().model_dump(mode="json"),
                "last_attempt_at": readings.last_attempt_at,
                "verifier_error": readings.verifier.error,
                "verifier_down_since": readings.verifier.since,
                "consecutive_failures": readings.consecutive_failures,
                "next_reading_in_ms": None if ex.paused or ex.blocked else next_in,
                "interval_s": ex.cfg.inventory_interval_s,
                "inventory": [a.model_dump(mode="json") for a in s.assets] if s else [],
                "pending": [p.model_dump(mode="json") for p in s.pending] if s else [],
                "pending_complete": bool(s and s.pending_complete),
                "reconciliation_status": summary_status(reconciliation),
                "reconciliation": [r.model_dump(mode="json") for r in reconciliation],
                "liquidity_history": {
                    "caught_up": ex.inputs.history_caught_up,
                    "actions": len(ex.ledger),
                    "events_applied": ex.ledger.events_applied,
                    "ignored_actions": ex.ledger.ignored,
                    "since": ex.cfg.inventory_liquidity_since,
                },
                "bridge": ex.pipeline.view(),
                "last_trade_settled_at": ex.inputs.last_trade_settled_at,
                "last_snapshot": ex.publishing.last_snapshot,
                "kafka_error": kafka_error,
                "consumer_error": consumer_error,
                "counts": dict(ex.counts),
                "triggers": dict(ex.triggers),
            },
        )
