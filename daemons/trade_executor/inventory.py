"""The latest `state.intent_inventory` snapshot, as the executor's late inventory check needs it.

Not a consumer group: on start it seeks every partition to its last message, so the newest
snapshot is known at once (a group would resume at an old offset, or replay a week of
snapshots), then follows the topic. Only the newest snapshot is kept. Kafka trouble is retried
with a capped backoff and shown in `state()`; while it lasts the snapshot ages and the gate
refuses on staleness, which is the point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.events import EventDecodeError, IntentInventory, decode
from daemons.core.logs import get_logger
from daemons.core.settings import CoreSettings
from daemons.trade_executor.gates import InventoryView

TOPIC = "state.intent_inventory"


def view_of(payload: IntentInventory, observed_at: datetime) -> InventoryView:
    return InventoryView(
        inventory_id=payload.inventory_id,
        spendable={a.asset_id: a.spendable for a in payload.assets},
        stale=payload.stale,
        stale_reason=getattr(payload, "stale_reason", None),
        age_ms=payload.age_ms,
        observed_at=observed_at,
        account_id=getattr(payload, "account_id", None),
        block_height=payload.block_height,
    )


class InventoryFeed:
    def __init__(self, settings: CoreSettings,
                 on_snapshot: Callable[[InventoryView, dict[int, int] | None], None]) -> None:
        self.settings = settings
        self.on_snapshot = on_snapshot
        self.latest: InventoryView | None = None
        self.error: str | None = None
        self.snapshots = 0
        self.undecodable = 0
        self.behind = 0  # snapshots ignored for a block behind the one held
        self.log = get_logger("inventory_feed", topic=TOPIC)

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                                        group_id=None, fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                                        client_id="trade-executor-inventory")
            try:
                await consumer.start()
                tps = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or {0})]
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                begins = await consumer.beginning_offsets(tps)
                for tp in tps:
                    consumer.seek(tp, max(begins[tp], ends[tp] - 1))
                if self.error is not None:
                    self.log.info("inventory_feed_recovered")
                self.error = None
                delay = 0.5
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200)
                    for tp, records in batches.items():
                        for record in records:
                            self._take(tp.topic, record.value)
            except KafkaError as exc:
                if self.error is None:
                    self.log.warning("inventory_feed_failed", error=str(exc))
                self.error = f"{exc.__class__.__name__}: {exc}"
            finally:
                try:
                    await consumer.stop()
                except Exception:  # noqa: BLE001 - a consumer that never started has nothing to stop
                    pass
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 10.0)

    def _take(self, topic: str, raw: bytes | None) -> None:
        try:
            event = decode(topic, raw)
        except EventDecodeError as exc:
            self.undecodable += 1
            self.log.warning("inventory_snapshot_undecodable", reason=exc.reason)
            return
        view = view_of(event.payload, event.observed_at)
        if self.latest is not None and view.observed_at < self.latest.observed_at:
            return  # an older snapshot from another partition
        if self.latest is not None and view.block_height is not None and self.latest.block_height is not None \
                and view.account_id == self.latest.account_id and view.block_height < self.latest.block_height:
            # read from a block behind one already held (a lagging node after a restart): it may
            # predate fills whose holds were released on the newer one; the held one ages instead
            self.behind += 1
            self.log.warning("inventory_snapshot_behind", inventory_id=view.inventory_id,
                             block_height=view.block_height, held_block_height=self.latest.block_height)
            return
        self.latest = view
        self.snapshots += 1
        self.on_snapshot(view, event.payload.results_through)

    def state(self, now: datetime) -> dict[str, Any]:
        v = self.latest
        return {
            "connected": self.error is None,
            "error": self.error,
            "snapshots_seen": self.snapshots,
            "undecodable": self.undecodable,
            "behind": self.behind,
            "latest": None if v is None else {
                "inventory_id": v.inventory_id, "account_id": v.account_id, "stale": v.stale,
                "stale_reason": v.stale_reason,
                "age_ms": v.age_ms_at(now), "spendable": {k: str(a) for k, a in v.spendable.items()},
            },
        }
