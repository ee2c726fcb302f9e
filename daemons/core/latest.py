"""Following the newest event of a state topic without a consumer group.

On start every partition is positioned at its last message, so the newest event is known at once
(a group would resume at an old offset, or replay a week of events), then the topic is followed.
Kafka trouble is retried with a capped backoff and shown in `error`; while it lasts what the
follower holds ages, and the gates that read it refuse on staleness, which is the point.
Subclasses keep what they need of each raw message in `take`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.bus import kafka_auth
from daemons.core.events import Envelope, EventDecodeError, decode
from daemons.core.logs import get_logger
from daemons.core.settings import CoreSettings


class LatestFollower(ABC):
    def __init__(self, settings: CoreSettings, topic: str, client_id: str) -> None:
        self.settings = settings
        self.topic = topic
        self.client_id = client_id
        self.error: str | None = None
        self.undecodable = 0
        self.log = get_logger(client_id, topic=topic)

    def take(self, topic: str, raw: bytes | None) -> None:
        """One message of the topic, in order per partition: decoded, or counted and logged."""
        try:
            event = decode(topic, raw)
        except EventDecodeError as exc:
            self.undecodable += 1
            self.log.warning("event_undecodable", reason=exc.reason)
            return
        self.take_event(event)

    @abstractmethod
    def take_event(self, event: Envelope[Any]) -> None:
        """One decoded event of the topic."""

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                group_id=None,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                client_id=self.client_id,
                **kafka_auth(self.settings),
            )
            try:
                await consumer.start()
                tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or {0})]
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                begins = await consumer.beginning_offsets(tps)
                for tp in tps:
                    consumer.seek(tp, max(begins[tp], ends[tp] - 1))
                if self.error is not None:
                    self.log.info("feed_recovered")
                self.error = None
                delay = 0.5
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200)
                    for tp, records in batches.items():
                        for record in records:
                            self.take(tp.topic, record.value)
            except KafkaError as exc:
                if self.error is None:
                    self.log.warning("feed_failed", error=str(exc))
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
