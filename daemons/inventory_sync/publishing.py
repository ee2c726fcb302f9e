"""`state.intent_inventory`: the snapshot of the last reading, and the staleness it carries.

A snapshot is published after every successful reading, and once more when inventory goes stale
(the last reading again, marked stale, `trigger` `staleness_change`); nothing is published
before the first successful reading. Entering and leaving staleness is logged once each; the
verdict also shows in `/healthz` and `/state`. The producer's health link is `kafka_error` in
`/state` and `kafka_unavailable` in `/healthz`. Heights never go back: the highest block
published is kept, and a reading from a node behind it is refused.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from daemons.core.events import Envelope, IntentInventory, Reconciliation, new_event, now_utc
from daemons.core.health import Link
from daemons.inventory_sync.reconcile import summary_status
from daemons.inventory_sync.snapshot import freshness, stale_at, stale_reason
from daemons.inventory_sync.triggers import Trigger

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync

SNAPSHOT_TOPIC = "state.intent_inventory"


class Publishing:
    def __init__(self, ex: InventorySync) -> None:
        self.ex = ex
        self.link = Link(ex.log, down="kafka_publish_failed", up="kafka_publish_recovered", topic=SNAPSHOT_TOPIC)
        self.published_height: int | None = None
        self.last_snapshot: dict[str, Any] | None = None
        # None until the first reading was attempted: the first verdict is always published
        self.stale: bool | None = None
        self.stale_since: datetime | None = ex.started_at

    # --- the snapshot ---------------------------------------------------------------------

    def snapshot(self, trigger: str, now: datetime) -> IntentInventory:
        """The last reading as of `now`; only once there has been one."""
        ex = self.ex
        assert ex.account_id is not None and ex.synced is not None
        s = ex.synced
        f = freshness(s.synced_at, now, ex.bound_ms)
        assert f.age_ms is not None
        return IntentInventory(
            inventory_id=str(uuid.uuid4()),
            account_id=ex.account_id,
            assets=s.assets,
            synced_at=s.synced_at,
            block_height=s.block_height,
            block_hash=s.block_hash,
            results_through=s.results_through,
            age_ms=f.age_ms,
            stale=f.stale,
            stale_since=stale_at(s.synced_at, ex.bound_ms) if f.stale else None,
            stale_reason=self.stale_reason(now) if f.stale else None,
            freshness_bound_ms=ex.bound_ms,
            sync_id=s.sync_id,
            trigger=trigger,  # type: ignore[arg-type]
            pending_complete=s.pending_complete,
            pending=s.pending,
            reconciliation_status=summary_status(s.reconciliation),
            reconciliation=s.reconciliation,
            fee_pips=s.fee_pips,
        )

    async def publish(self, trigger: Trigger, now: datetime) -> str | None:
        """Publish the snapshot as of `now`; its `inventory_id`, or None when Kafka refused it."""
        ex = self.ex
        payload = self.snapshot(trigger.reason, now)
        event: Envelope[IntentInventory] = new_event(
            payload,
            producer=ex.producer_id,
            pair=ex.cfg.pair,
            occurred_at=payload.synced_at if trigger.reason != "staleness_change" else now,
            correlation_id=trigger.correlation_id,
            causation_id=trigger.causation_id,
        )
        try:
            await ex.producer.publish(event)
        except (KafkaError, OSError) as exc:
            ex.counts["publish_failures"] += 1
            self.link.fail(exc, inventory_id=payload.inventory_id)
            ex.notify_status()
            return None
        self.link.ok()
        ex.counts["snapshots"] += 1
        if payload.block_height is not None:
            self.published_height = max(self.published_height or 0, payload.block_height)
        self.last_snapshot = {
            "inventory_id": payload.inventory_id,
            "event_id": str(event.event_id),
            "published_at": event.observed_at,
            "trigger": trigger.reason,
            "stale": payload.stale,
        }
        return payload.inventory_id

    def log_reconciliation(self, r: Reconciliation) -> None:
        log = self.ex.log
        fields = {
            "liquidity_action_id": r.liquidity_action_id,
            "asset_id": r.asset_id,
            "tx_hash": r.tx_hash,
            "expected": str(r.expected) if r.expected is not None else None,
            "credited": str(r.credited) if r.credited is not None else None,
        }
        if r.status == "credited_lower_than_expected":
            log.warning("credited_lower_than_expected", shortfall=str(r.shortfall), **fields)
        elif r.status == "inconclusive":
            log.warning("reconciliation_inconclusive", reason=r.reason, **fields)
        else:
            log.info("funding_reconciled", **fields)

    # --- staleness ------------------------------------------------------------------------

    def set_fresh(self, at: datetime) -> None:
        if self.stale is not False:
            since = self.stale_since
            self.ex.log.info(
                "inventory_fresh",
                account_id=self.ex.account_id,
                stale_for_ms=None if since is None else (at - since) // timedelta(milliseconds=1),
            )
            self.ex.notify_status()
        self.stale = False
        self.stale_since = None

    def stale_reason(self, now: datetime) -> str:
        ex = self.ex
        return stale_reason(
            ex.synced.synced_at if ex.synced else None,
            now,
            ex.bound_ms,
            error=ex.readings.verifier.error,
            paused=ex.paused,
        )

    async def publish_staleness_change(self) -> None:
        """Log and publish the moment inventory goes stale (recovery is the reading's own
        snapshot). The first verdict after start counts as a change; with no reading yet there
        is nothing to re-publish, so only the log and the control API say it."""
        ex = self.ex
        now = now_utc()
        f = freshness(ex.synced.synced_at if ex.synced else None, now, ex.bound_ms)
        if not f.stale:
            return
        if self.stale is None and ex.readings.last_attempt_at is None:
            return  # the first reading has not been tried yet
        if self.stale is True:
            return
        self.stale = True
        self.stale_since = stale_at(ex.synced.synced_at, ex.bound_ms) if ex.synced else ex.started_at
        ex.log.warning(
            "inventory_stale",
            account_id=ex.account_id,
            since=self.stale_since,
            reason=self.stale_reason(now),
            age_ms=f.age_ms,
        )
        ex.notify_status()
        if ex.synced is not None:
            await self.publish(Trigger("staleness_change"), now)
