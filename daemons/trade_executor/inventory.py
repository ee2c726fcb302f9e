"""The latest `state.intent_inventory` snapshot, as the executor's late inventory check needs it
(followed without a consumer group: `daemons/core/latest.py`). Only the newest snapshot is kept;
one read at an older block than the one held is set aside.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from daemons.core.events import Envelope, IntentInventory, read_behind
from daemons.core.inventory import InventoryView, view_of
from daemons.core.latest import LatestFollower
from daemons.core.settings import CoreSettings

TOPIC = "state.intent_inventory"


class InventoryFeed(LatestFollower):
    def __init__(
        self, settings: CoreSettings, on_snapshot: Callable[[InventoryView, dict[int, int] | None], None]
    ) -> None:
        super().__init__(settings, TOPIC, "trade-executor-inventory")
        self.on_snapshot = on_snapshot
        self.latest: InventoryView | None = None
        self.snapshots = 0
        self.behind = 0  # snapshots ignored for a block behind the one held

    def take_event(self, event: Envelope[Any]) -> None:
        if not isinstance(event.payload, IntentInventory):
            return
        view = view_of(event.payload, event.observed_at)
        if self.latest is not None and view.observed_at < self.latest.observed_at:
            return  # an older snapshot from another partition
        if self.latest is not None and read_behind(
            view.account_id, view.block_height, self.latest.account_id, self.latest.block_height
        ):
            self.behind += 1
            self.log.warning(
                "inventory_snapshot_behind",
                inventory_id=view.inventory_id,
                block_height=view.block_height,
                held_block_height=self.latest.block_height,
            )
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
            "latest": None
            if v is None
            else {
                "inventory_id": v.inventory_id,
                "account_id": v.account_id,
                "stale": v.stale,
                "stale_reason": v.stale_reason,
                "age_ms": v.age_ms_at(now),
                "spendable": {k: str(a) for k, a in v.spendable.items()},
            },
        }
