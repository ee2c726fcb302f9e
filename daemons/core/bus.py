"""The Kafka bus on aiokafka: one producer and one consumer shape for every daemon.

Producer: idempotent, `acks=all`, no linger — an event is published when the broker has it.
Consumer: one group per service, manual commits after processing, short fetch waits. Every
message comes back as a `Delivery` holding either the decoded event or the reason it could not
be decoded, so a malformed message is handed to the caller (to count and dead-letter), never
raised and never dropped. Topic creation lives here too, as idempotent code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import OffsetAndMetadata

from daemons.core.events import TOPICS, Envelope, EventDecodeError, decode, encode
from daemons.core.settings import CoreSettings


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed message: the event, or `error` saying why there is none."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    event: Envelope[Any] | None
    error: str | None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class EventProducer:
    def __init__(self, settings: CoreSettings, client_id: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            request_timeout_ms=10_000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, event: Envelope[Any], key: str | None = None) -> None:
        """Send and wait for the broker's acknowledgement. Key defaults to the pair."""
        await self._producer.send_and_wait(event.event_type, encode(event), key=(key or event.pair).encode())

    async def send(self, event: Envelope[Any], key: str | None = None) -> asyncio.Future[Any]:
        """Hand the event over and return its acknowledgement future without waiting for it.

        For the hot path: the caller goes on with the next message while the broker acknowledges
        this one; the idempotent producer keeps per-partition order, and `stop()` flushes what
        is still in flight. The caller must watch the future (a failure is only known there).
        """
        return await self._producer.send(event.event_type, encode(event), key=(key or event.pair).encode())

    async def publish_many(self, events: list[Envelope[Any]], key: str | None = None) -> None:
        """Send a batch without waiting between messages, then wait for every acknowledgement."""
        futures = [
            await self._producer.send(e.event_type, encode(e), key=(key or e.pair).encode()) for e in events
        ]
        await asyncio.gather(*futures)

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Bytes as they are; for tests and tools that must put malformed messages on a topic."""
        await self._producer.send_and_wait(topic, value, key=key)


OnAssigned = Callable[[set[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: OnAssigned | None) -> None:
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assigned is not None:
            await self._on_assigned(set(assigned))


class EventConsumer:
    """A consumer group member over some of the eight topics; commits only when told."""

    def __init__(
        self,
        settings: CoreSettings,
        group_id: str,
        topics: Sequence[str],
        *,
        client_id: str | None = None,
        on_assigned: OnAssigned | None = None,
        max_partition_fetch_bytes: int = 4 * 1024 * 1024,
        new_group_starts_at: Literal["earliest", "latest"] = "earliest",
    ) -> None:
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topics: {unknown}")
        self.topics = tuple(topics)
        self._on_assigned = on_assigned
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            # where a group with no committed offset starts: a recorder wants everything, a
            # daemon acting on commands wants only what arrives from now on
            auto_offset_reset=new_group_starts_at,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            isolation_level="read_uncommitted",
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(list(self.topics), listener=_Listener(self._on_assigned))

    async def stop(self) -> None:
        await self._consumer.stop()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`, or None when it never committed one."""
        return await self._consumer.committed(tp)

    async def end_offset(self, tp: TopicPartition) -> int:
        return int((await self._consumer.end_offsets([tp]))[tp])

    async def positions(self) -> dict[TopicPartition, int]:
        """Where the consumer reads next, per assigned partition (resolving a pending reset)."""
        return {tp: await self._consumer.position(tp) for tp in self.assignment()}

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def poll(self, timeout_ms: int = 200, max_records: int = 1000) -> list[Delivery]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Delivery] = []
        for tp, records in batches.items():
            for rec in records:
                try:
                    event: Envelope[Any] | None = decode(tp.topic, rec.value)
                    error = None
                except EventDecodeError as exc:
                    event, error = None, exc.reason
                out.append(Delivery(tp.topic, tp.partition, rec.offset, rec.key, rec.value, event, error))
        return out

    async def commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        """Commit the offset of the next message to read, per partition."""
        if next_offsets:
            await self._consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in next_offsets.items()})

    async def lag(self) -> dict[str, int]:
        """Messages behind the log end, per assigned partition ("topic:partition")."""
        assigned = self.assignment()
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(list(assigned))
        out: dict[str, int] = {}
        for tp in assigned:
            try:
                pos = await self._consumer.position(tp)
            except Exception:  # position unknown until the first fetch after assignment
                continue
            out[f"{tp.topic}:{tp.partition}"] = max(0, ends[tp] - pos)
        return out


def next_offsets(deliveries: Iterable[Delivery]) -> dict[TopicPartition, int]:
    """Per partition, one past the highest offset seen: what to commit after processing."""
    out: dict[TopicPartition, int] = {}
    for d in deliveries:
        tp = d.tp
        if d.offset + 1 > out.get(tp, -1):
            out[tp] = d.offset + 1
    return out


@dataclass(frozen=True)
class TopicAction:
    topic: str
    action: str  # created | exists | partitions_increased | config_updated


async def ensure_topics(settings: CoreSettings) -> list[TopicAction]:
    """Create the eight topics if missing and bring partitions and retention up to the settings."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="qlctl-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = list(TOPICS)
        config = {"retention.ms": str(settings.topic_retention_ms)}
        missing = [t for t in wanted if t not in existing]
        actions: list[TopicAction] = []
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name=t,
                        num_partitions=settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                        topic_configs=config,
                    )
                    for t in missing
                ]
            )
            actions += [TopicAction(t, "created") for t in missing]
        present = [t for t in wanted if t in existing]
        if present:
            described = await admin.describe_topics(present)
            grow = {
                d["topic"]: NewPartitions(total_count=settings.topic_partitions)
                for d in described
                if len(d["partitions"]) < settings.topic_partitions
            }
            if grow:
                await admin.create_partitions(grow)
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in present]
            )
            current: dict[str, str | None] = {}
            for response in configs:
                for resource in response.resources:
                    _err, _msg, _type, name, entries = resource[:5]
                    for entry in entries:
                        if entry[0] == "retention.ms":
                            current[name] = entry[1]
            stale = [t for t in present if current.get(t) != config["retention.ms"]]
            if stale:
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, config) for t in stale])
            for t in present:
                if t in grow:
                    actions.append(TopicAction(t, "partitions_increased"))
                elif t in stale:
                    actions.append(TopicAction(t, "config_updated"))
                else:
                    actions.append(TopicAction(t, "exists"))
        return actions
    finally:
        await admin.close()
