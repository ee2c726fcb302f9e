"""The Kafka bus on aiokafka: one producer and one consumer shape for every daemon.

Producer: idempotent, `acks=all`, no linger — an event is published when the broker has it.
Consumer: one group per service, manual commits after processing, coalesced to one offset commit
per `kafka_commit_interval_ms` (what a crash replays is bounded by it; every consumer here is
idempotent on replay), flushed on revocation and on stop. Every
message comes back as a `Delivery` holding either the decoded event or the reason it could not
be decoded, so a malformed message is handed to the caller (to count and dead-letter), never
raised and never dropped. Beside the group consumer, readers with no group (nothing joined or
committed): `EndOffsets` / `topic_end_offsets` (where each partition ends) and `read_since` (the
events of some topics from a point in time up to their end, e.g. to rebuild state at start).
Topic creation lives here too, as idempotent code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.structs import OffsetAndMetadata

from daemons.core.events import TOPICS, Envelope, EventDecodeError, decode, encode
from daemons.core.logs import get_logger
from daemons.core.secrets import read_secret_file
from daemons.core.settings import CoreSettings

_log = get_logger("bus")


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


def _sender_dead(producer: AIOKafkaProducer) -> bool:
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is not None and task.done() and not getattr(producer, "_closed", False)


_FLUSH_TIMEOUT_S = 5.0  # bounds a background offset flush and the close of a broken producer

# Answers after which an idempotent producer's sequence state is broken for good: every later
# batch to the partition would fail the same way (found by the fault matrix: batches that expired
# while the restarted broker had no leader left a sequence gap, and aiokafka kept its sender).
_SEQUENCE_BROKEN = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerIdMapping,
    InvalidProducerEpoch,
    ProducerFenced,
)


class EventProducer:
    def __init__(self, settings: CoreSettings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer = self._new()
        self._restart_lock = asyncio.Lock()
        self._replacing = False  # the sender died and no new producer has started yet
        self._broken: AIOKafkaProducer | None = None  # a producer whose sequence state is broken
        self._broken_by: BaseException | None = None
        self.restarts = 0  # how often a dead producer was replaced (shown by owners that care)
        self.failures = 0  # sends that failed: not handed over, or not acknowledged by the broker

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            request_timeout_ms=10_000,
            **kafka_auth(self._settings),
        )

    async def start(self) -> None:
        """Connect; raises `KafkaConnectionError` when no broker answers, after which `start`
        may be called again (see `start_clients`)."""
        try:
            await self._producer.start()
        except BaseException:
            await _close_unstarted(self._producer)
            self._producer = self._new()
            raise

    async def stop(self) -> None:
        await self._producer.stop()

    async def _live(self) -> AIOKafkaProducer:
        """The producer, replaced first if it can no longer deliver.

        Two ways an idempotent aiokafka producer breaks for good: its sender task ends (it does
        on OutOfOrderSequenceNumber raised inside it), after which every send waits forever; or
        the broker answers a batch with a sequence error (`_SEQUENCE_BROKEN`) and the sender
        lives on, after which every batch to that partition fails the same way. Either way a new
        producer gets a new producer id and starts clean; what the old one had in flight has
        already failed to its callers, who retry or count it as they do for any Kafka failure.
        """
        if not self._replacing and self._broken is not self._producer and not _sender_dead(self._producer):
            return self._producer
        async with self._restart_lock:
            current = self._producer
            if self._broken is current or _sender_dead(current):  # not already handled by a concurrent caller
                task = current._sender.sender_task
                reason = (
                    self._broken_by
                    if self._broken is current
                    else None
                    if task is None or task.cancelled()
                    else task.exception()
                )
                self._broken, self._replacing = None, True
                _log.warning(
                    "kafka_producer_replaced",
                    client_id=self._client_id,
                    error=f"{reason.__class__.__name__}: {reason}" if reason else "sender stopped",
                )
                try:  # bounded: its batches fail at once, but nothing here may hang on a broken producer
                    await asyncio.wait_for(current.stop(), _FLUSH_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - it is broken already; closing is best effort
                    pass
            if self._replacing:
                fresh = self._new()
                try:
                    await fresh.start()  # raises while Kafka is away: the next send tries again
                except BaseException:
                    try:
                        await fresh.stop()
                    except Exception:  # noqa: BLE001 - never started; nothing to close
                        pass
                    raise
                self._producer, self._replacing = fresh, False
                self.restarts += 1
        return self._producer

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> asyncio.Future[Any]:
        try:
            producer = await self._live()
            # aiokafka is untyped: send() resolves to the future of the broker's acknowledgement
            ack: asyncio.Future[Any] = await producer.send(topic, value, key=key)
        except (KafkaError, OSError):
            self.failures += 1
            raise

        def watch(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is None:
                return
            self.failures += 1
            if isinstance(done.exception(), _SEQUENCE_BROKEN):
                self._broken, self._broken_by = producer, done.exception()

        ack.add_done_callback(watch)
        return ack

    async def publish(self, event: Envelope[Any], key: str | None = None) -> Placed:
        """Send and wait for the broker's acknowledgement; where the event landed. Key defaults
        to the pair."""
        metadata = await (await self._send(event.event_type, encode(event), (key or event.pair).encode()))
        return Placed(metadata.partition, metadata.offset)

    async def send(self, event: Envelope[Any], key: str | None = None) -> asyncio.Future[Any]:
        """Hand the event over and return its acknowledgement future without waiting for it.

        For the hot path: the caller goes on with the next message while the broker acknowledges
        this one; the idempotent producer keeps per-partition order, and `stop()` flushes what
        is still in flight. The caller must watch the future (a failure is only known there).
        """
        return await self._send(event.event_type, encode(event), (key or event.pair).encode())

    async def publish_many(self, events: list[Envelope[Any]], key: str | None = None) -> None:
        """Send a batch without waiting between messages, then wait for every acknowledgement."""
        futures = [await self._send(e.event_type, encode(e), (key or e.pair).encode()) for e in events]
        await asyncio.gather(*futures)

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Bytes as they are; for tests and tools that must put malformed messages on a topic."""
        await (await self._send(topic, value, key))


OnAssigned = Callable[[set[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped: the base is Any
    def __init__(self, owner: EventConsumer, on_assigned: OnAssigned | None) -> None:
        self._owner = owner
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._owner.positioned.clear()
        # the next owner of these partitions starts where we got to, not at the last flush
        await self._owner.flush_commits(swallow=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assigned is not None:
            await self._on_assigned(set(assigned))
        self._owner.positioned.set()


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
        batched: bool = False,
    ) -> None:
        """`batched`: for a consumer off the hot path (the recorder, inventory bookkeeping) — the
        broker holds its fetch until 256 KiB or `kafka_batch_wait_ms` have gathered, instead of
        answering it for every single message; each answered fetch costs the broker and us CPU."""
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topics: {unknown}")
        self.topics = tuple(topics)
        self._on_assigned = on_assigned
        self._commit_interval_s = settings.kafka_commit_interval_ms / 1000
        self._pending: dict[TopicPartition, int] = {}
        self._next_commit_at = 0.0
        self._commit_lock = asyncio.Lock()
        # why the last background flush failed (None once one succeeds): shown by the owner's /state
        self.commit_error: str | None = None
        # set once partitions are assigned and the owner's `on_assigned` has placed them (its seeks
        # done): from then on nothing published is skipped; cleared while a rebalance is under way
        self.positioned = asyncio.Event()
        self._options: dict[str, Any] = dict(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            # where a group with no committed offset starts: a recorder wants everything, a
            # daemon acting on commands wants only what arrives from now on
            auto_offset_reset=new_group_starts_at,
            fetch_max_wait_ms=settings.kafka_batch_wait_ms if batched else settings.kafka_fetch_max_wait_ms,
            fetch_min_bytes=256 * 1024 if batched else 1,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            isolation_level="read_uncommitted",
            **kafka_auth(settings),
        )
        self._consumer = AIOKafkaConsumer(**self._options)

    async def start(self) -> None:
        """Connect and subscribe; raises `KafkaConnectionError` when no broker answers, after
        which `start` may be called again (see `start_clients`)."""
        try:
            await self._consumer.start()
        except BaseException:
            await _close_unstarted(self._consumer)
            self._consumer = AIOKafkaConsumer(**self._options)
            raise
        self._consumer.subscribe(list(self.topics), listener=_Listener(self, self._on_assigned))

    async def stop(self) -> None:
        try:
            await self.flush_commits(swallow=True)
        finally:
            await self._consumer.stop()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`, or None when it never committed one."""
        offset: int | None = await self._consumer.committed(tp)
        return offset

    async def end_offset(self, tp: TopicPartition) -> int:
        return int((await self._consumer.end_offsets([tp]))[tp])

    async def offset_at(self, tp: TopicPartition, at_ms: int) -> int:
        """The first offset whose record time is at or after `at_ms` (epoch ms), else the end."""
        found = (await _offsets_at(self._consumer, [tp], at_ms))[tp]
        return found if found is not None else await self.end_offset(tp)

    async def positions(self) -> dict[TopicPartition, int]:
        """Where the consumer reads next, per assigned partition (resolving a pending reset)."""
        return {tp: await self._consumer.position(tp) for tp in self.assignment()}

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def poll(self, timeout_ms: int = 200, max_records: int = 1000) -> list[Delivery]:
        if self._pending and asyncio.get_running_loop().time() >= self._next_commit_at:
            await self.flush_commits(swallow=True)
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

    async def poll_records(
        self, timeout_ms: int = 200, max_records: int = 1000
    ) -> list[tuple[TopicPartition, list[Any]]]:
        """Like `poll`, but the records undecoded, per partition in offset order.

        For a caller that decodes a large batch in slices (see `decode_records`) so that other tasks
        on the loop get a turn in between; `poll` decodes everything in one go.
        """
        if self._pending and asyncio.get_running_loop().time() >= self._next_commit_at:
            await self.flush_commits(swallow=True)
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [(tp, records) for tp, records in batches.items() if records]

    async def commit(self, next_offsets: dict[TopicPartition, int], *, now: bool = False) -> None:
        """Record the offset of the next message to read, per partition, as processed.

        The broker is told at most once per commit interval (here, or from the next `poll`),
        at once with `now=True`, and always on revocation and `stop()`: one offset commit per
        message cost the broker and each daemon more CPU than the messages themselves.
        """
        for tp, off in next_offsets.items():
            if off > self._pending.get(tp, -1):
                self._pending[tp] = off
        if self._pending and (now or asyncio.get_running_loop().time() >= self._next_commit_at):
            await self.flush_commits()

    async def flush_commits(self, *, swallow: bool = False) -> None:
        """Send the recorded offsets now. `swallow`: keep them for the next try on a Kafka error."""
        async with self._commit_lock:  # one commit at a time, so offsets reach the broker in order
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            self._next_commit_at = asyncio.get_running_loop().time() + self._commit_interval_s
            try:
                commit = self._consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in pending.items()})
                # a background flush must not hold a rebalance or a stop while the coordinator is away
                await (asyncio.wait_for(commit, _FLUSH_TIMEOUT_S) if swallow else commit)
            except (KafkaError, TimeoutError) as exc:
                self._keep(pending, exc)
                if not swallow:
                    raise
            else:
                self.commit_error = None

    def _keep(self, pending: dict[TopicPartition, int], exc: BaseException) -> None:
        for tp, off in pending.items():  # a newer record may have arrived meanwhile
            self._pending[tp] = max(off, self._pending.get(tp, -1))
        self.commit_error = f"{exc.__class__.__name__}: {exc}"

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


def decode_records(
    tp: TopicPartition, records: Iterable[Any], decoder: Callable[[str, bytes | None], Any] = decode
) -> list[Delivery]:
    """Records of one partition (from `EventConsumer.poll_records`) decoded as `poll` does.

    `decoder`: `decode` or a stand-in that raises `EventDecodeError` exactly when it does.
    """
    topic, partition = tp.topic, tp.partition
    out: list[Delivery] = []
    for rec in records:
        try:
            event: Envelope[Any] | None = decoder(topic, rec.value)
            error = None
        except EventDecodeError as exc:
            event, error = None, exc.reason
        out.append(Delivery(topic, partition, rec.offset, rec.key, rec.value, event, error))
    return out


def kafka_auth(settings: CoreSettings) -> dict[str, Any]:
    """The connection options every Kafka client of this process passes: how it logs in
    (SASL/SCRAM-SHA-512 as `kafka_username`, the password read from its secret file, never
    logged), or nothing when no principal is configured."""
    if not settings.kafka_username:
        return {}
    password = read_secret_file(settings.kafka_password_file, "QL_KAFKA_PASSWORD_FILE")
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": password,
    }


@dataclass(frozen=True, slots=True)
class Placed:
    """Where the broker stored a published event."""

    partition: int
    offset: int


class EndOffsets:
    """Per partition of a topic, the offset the next record will get, from a consumer of its own
    with no group (nothing joined or committed; a group consumer busy fetching in another task
    is not asked). Started on first use; `stop()` closes it."""

    def __init__(self, settings: CoreSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None

    async def of(self, topic: str) -> dict[int, int]:
        if self._consumer is None:
            self._consumer = await _groupless_consumer(self.settings, self.client_id)
        # a consumer with no subscription holds no metadata of the topic (and `topics()` does not
        # fill it): without it, the partitions are the count the topics are created with
        partitions = self._consumer.partitions_for_topic(topic) or set(range(self.settings.topic_partitions))
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: int(ends[tp]) for tp in tps}

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


async def topic_end_offsets(settings: CoreSettings, topic: str, client_id: str) -> dict[int, int]:
    """`EndOffsets.of` once, with a consumer opened and closed for it."""
    reader = EndOffsets(settings, client_id)
    try:
        return await reader.of(topic)
    finally:
        await reader.stop()


@dataclass(frozen=True, slots=True)
class Tail:
    """What `read_since` read.

    `events`: each decoded event with where it stands on its topic, `(partition, offset)` (the
    topic is the envelope's `event_type`), in time order: by the envelope's `observed_at`,
    records of the same instant in the order read. `undecodable`: records skipped because they
    are not valid events of their topic (`decode` raised `EventDecodeError`).
    """

    events: list[tuple[Envelope[Any], tuple[int, int]]]
    undecodable: int


async def read_since(settings: CoreSettings, topics: Sequence[str], since_ms: int, client_id: str) -> Tail:
    """Every event of `topics` whose record time is at or after `since_ms` (epoch ms; Kafka's
    default record time is when its producer sent it), up to each partition's end as it is when
    called; see `Tail` for the order.

    From a consumer of its own with no group (nothing joined or committed), opened and closed
    here. The partitions read are `0 .. topic_partitions - 1` of each topic: the topics are the
    bus's, created from the settings by `ensure_topics`. A partition with nothing at or after
    `since_ms` is not read at all, so an empty topic costs only the offset lookups. Raises what
    aiokafka raises when the broker cannot be reached or refuses the read.
    """
    reader = await _groupless_consumer(settings, client_id)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        reader.assign(tps)
        ends = {tp: int(off) for tp, off in (await reader.end_offsets(tps)).items()}
        starts = await _offsets_at(reader, tps, since_ms)
        remaining: list[TopicPartition] = []
        for tp in tps:
            start = starts[tp]
            reader.seek(tp, start if start is not None else ends[tp])
            if start is not None and start < ends[tp]:
                remaining.append(tp)
        read: list[tuple[Envelope[Any], tuple[int, int]]] = []
        undecodable = 0
        while remaining:
            for tp, records in (await reader.getmany(*remaining, timeout_ms=200)).items():
                for d in decode_records(tp, (rec for rec in records if rec.offset < ends[tp])):
                    if d.event is None:
                        undecodable += 1
                    else:
                        read.append((d.event, (d.partition, d.offset)))
            remaining = [tp for tp in remaining if await reader.position(tp) < ends[tp]]
        read.sort(key=lambda item: item[0].observed_at)
        return Tail(read, undecodable)
    finally:
        await reader.stop()


async def _groupless_consumer(settings: CoreSettings, client_id: str) -> AIOKafkaConsumer:
    """A started consumer with no group: it reads only the partitions it is given, from where it
    is told, and never joins, rebalances or commits."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        client_id=client_id,
        **kafka_auth(settings),
    )
    try:
        await consumer.start()
    except BaseException:
        await _close_unstarted(consumer)
        raise
    return consumer


async def _offsets_at(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], at_ms: int
) -> dict[TopicPartition, int | None]:
    """Per partition, the first offset whose record time is at or after `at_ms` (epoch ms); None
    when no record is that recent."""
    found = await consumer.offsets_for_times({tp: at_ms for tp in tps})
    return {tp: None if found.get(tp) is None else int(found[tp].offset) for tp in tps}


def next_offsets(deliveries: Iterable[Delivery]) -> dict[TopicPartition, int]:
    """Per partition, one past the highest offset seen: what to commit after processing."""
    out: dict[TopicPartition, int] = {}
    for d in deliveries:
        tp = d.tp
        if d.offset + 1 > out.get(tp, -1):
            out[tp] = d.offset + 1
    return out


class BusClient(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _close_unstarted(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    try:  # its bootstrap failed: nothing was started but the client's connections
        await asyncio.wait_for(client.stop(), _FLUSH_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - best effort; a fresh client replaces it
        pass


async def start_clients(
    clients: Sequence[BusClient],
    until: asyncio.Event,
    on_unreachable: Callable[[str, float], None],
    *,
    initial_s: float = 0.5,
    max_s: float = 10.0,
) -> bool:
    """Start `clients` in order, retrying each while no broker can be reached (backoff from
    `initial_s` doubling to `max_s`; `on_unreachable(error, retry_in_s)` before each wait).

    True once all are started; False, with those already started stopped again, when `until`
    is set first (a drain while Kafka is away). Any other error is raised as it is.
    """
    started: list[BusClient] = []
    delay = initial_s
    for client in clients:
        while True:
            try:
                await client.start()
                break
            except KafkaConnectionError as exc:
                on_unreachable(str(exc), delay)
            try:
                await asyncio.wait_for(until.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, max_s)
                continue
            for done in reversed(started):
                await done.stop()
            return False
        started.append(client)
    return True


@dataclass(frozen=True)
class TopicAction:
    topic: str
    action: str  # created | exists | partitions_increased | config_updated


async def ensure_topics(settings: CoreSettings) -> list[TopicAction]:
    """Create the eight topics if missing and bring partitions and retention up to the settings."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="qlctl-topics", **kafka_auth(settings)
    )
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
            configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in present])
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
