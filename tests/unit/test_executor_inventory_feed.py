"""The executor's inventory feed keeps the newest snapshot, and never steps back to one read at
an older block (a restarted inventory-sync on a lagging node): that one may predate fills whose
holds the newer snapshot already released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemons.core.events import IntentInventory, Producer, encode, new_event
from daemons.core.settings import CoreSettings
from daemons.trade_executor.inventory import TOPIC, InventoryFeed
from tests.samples import sample_payloads

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _raw(height: int, at: datetime, inventory_id: str) -> bytes:
    sample = sample_payloads()[TOPIC]
    assert isinstance(sample, IntentInventory)
    payload = sample.model_copy(update={"inventory_id": inventory_id, "block_height": height, "account_id": "a.near"})
    event = new_event(payload, producer=Producer(service="test", instance="test"), pair="BTC/EURe")
    return encode(event.model_copy(update={"observed_at": at}))


def test_a_snapshot_from_an_older_block_is_ignored() -> None:
    seen: list[str] = []
    feed = InventoryFeed(CoreSettings(), lambda view, _through: seen.append(view.inventory_id))
    feed.take(TOPIC, _raw(100, T0, "first"))
    feed.take(TOPIC, _raw(97, T0 + timedelta(seconds=1), "behind"))  # published later, read earlier
    feed.take(TOPIC, _raw(101, T0 + timedelta(seconds=2), "next"))
    assert seen == ["first", "next"] and feed.behind == 1
    assert feed.latest is not None and feed.latest.inventory_id == "next"
