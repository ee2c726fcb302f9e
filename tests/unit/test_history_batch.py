"""history-writer batches: rows built as they are decoded, and the collector's threshold sized
above what two batches in flight hold (one being written, the next being decoded)."""

from __future__ import annotations

import gc

from daemons.core.bus import Delivery
from daemons.core.events import TOPICS, Producer, encode, new_event
from daemons.history_writer.fastdecode import decode_for_history
from daemons.history_writer.service import HistoryWriterSettings
from daemons.history_writer.store import Batch, _row
from tests.samples import sample_payloads

TOPIC_NAMES = sorted(TOPICS)


def _raw(i: int) -> tuple[str, bytes]:
    topic = TOPIC_NAMES[i % len(TOPIC_NAMES)]
    event = new_event(
        sample_payloads()[topic], producer=Producer(service="t", instance="t1"), pair="BTC/EURe", correlation_id=str(i)
    )
    return topic, encode(event)


def _delivery(i: int, topic: str, raw: bytes) -> Delivery:
    return Delivery(topic, 0, i, None, raw, decode_for_history(topic, raw), None)


def test_batch_groups_rows_by_table_and_keeps_undecodable_apart() -> None:
    raws = [_raw(i) for i in range(len(TOPIC_NAMES) * 2)]
    good = [_delivery(i, t, r) for i, (t, r) in enumerate(raws)]
    bad = Delivery(TOPIC_NAMES[0], 0, 99, None, b"{", None, "invalid json")
    batch = Batch()
    batch.add(good[:5])
    batch.add([bad, *good[5:]])
    assert batch.deliveries == [*good[:5], bad, *good[5:]]
    assert batch.bad == [bad]
    assert batch.row_count == len(good)
    assert set(batch.rows) == set(TOPIC_NAMES)
    for topic in TOPIC_NAMES:
        assert batch.rows[topic] == [_row(d) for d in good if d.topic == topic]
    assert Batch.of(good).rows == batch.rows


def test_young_generation_threshold_exceeds_two_batches_in_flight() -> None:
    """Below it, every batch held by the writer is walked by the collector at least once more
    (it was a fifth of the writer's CPU at the shared default)."""
    settings = HistoryWriterSettings()
    sample = [_raw(i) for i in range(400)]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        batch = Batch.of([_delivery(i, t, r) for i, (t, r) in enumerate(sample)])
        per_event = (gc.get_count()[0] - before) / len(sample)
    finally:
        if was_enabled:
            gc.enable()
    assert batch.row_count == len(sample)
    assert per_event > 1  # the count measured something: events and rows are tracked objects
    assert 2 * settings.history_batch_max * per_event < settings.gc_young_threshold
