"""The Kafka wrapper against the real broker: coalesced offset commits (flushed by interval, by
`now=True` and on stop), a producer whose sender died being replaced on the next send,
`Service.start_bus` waiting for a broker that is not there yet at start (and giving up on a drain),
and `read_since` reading some topics from a point in time up to their end."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from daemons.core.bus import EventConsumer, EventProducer, Placed, next_offsets, read_since, topic_end_offsets
from daemons.core.events import Envelope, Producer, new_event, now_utc
from daemons.core.runtime import Service
from daemons.core.settings import CoreSettings
from tests.conftest import Stack, TcpForwarder, closed_port, eventually, kafka_options, start_group_at_end
from tests.samples import sample_payloads

TOPIC = "norm.swap_demand"


def _event() -> object:
    return new_event(sample_payloads()[TOPIC], producer=Producer(service="t", instance="t"), pair="BTC/EURe")


async def _consume_one(stack: Stack) -> tuple[CoreSettings, str, EventConsumer, TopicPartition, int]:
    """A fresh group with a long commit interval that has consumed one event: its settings,
    group, consumer, partition and the offset to commit."""
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap, kafka_commit_interval_ms=60_000)
    group = f"bus-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    consumer = EventConsumer(settings, group, [TOPIC])
    await consumer.start()
    producer = EventProducer(settings, client_id="bus-test")
    await producer.start()
    try:
        await consumer.poll(timeout_ms=100)  # joined, positioned at the end
        sent = _event()
        await producer.publish(sent)  # type: ignore[arg-type]
        got: list = []

        async def arrived() -> bool:
            got.extend(await consumer.poll(timeout_ms=100))
            return any(d.event is not None and d.event.event_id == sent.event_id for d in got)  # type: ignore[attr-defined]

        await eventually(arrived, what="event consumed")
    finally:
        await producer.stop()
    ((tp, offset),) = next_offsets(got).items()
    return settings, group, consumer, tp, offset


async def test_commits_wait_for_the_interval_and_stop_flushes_them(stack: Stack) -> None:
    settings, group, consumer, tp, offset = await _consume_one(stack)
    try:
        await consumer.commit({tp: offset})  # the first commit goes out at once (no earlier flush)
        assert await consumer.committed(tp) == offset
        await consumer.commit({tp: offset + 5})  # inside the interval: recorded, not sent
        assert await consumer.committed(tp) == offset
        await consumer.commit({tp: offset + 3})  # never moves an offset back
    finally:
        await consumer.stop()  # flushes what was recorded
    reader = EventConsumer(settings, group, [TOPIC])
    await reader.start()
    try:
        assert await reader.committed(TopicPartition(tp.topic, tp.partition)) == offset + 5
    finally:
        await reader.stop()


async def test_commit_now_is_sent_at_once(stack: Stack) -> None:
    _, _, consumer, tp, offset = await _consume_one(stack)
    try:
        await consumer.commit({tp: offset})
        await consumer.commit({tp: offset + 1}, now=True)
        assert await consumer.committed(tp) == offset + 1
        assert consumer.commit_error is None
    finally:
        await consumer.stop()


async def test_a_producer_whose_sender_died_is_replaced_on_the_next_send(stack: Stack) -> None:
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap)
    producer = EventProducer(settings, client_id="bus-test-replace")
    await producer.start()
    try:
        await producer.publish(_event())  # type: ignore[arg-type]
        # what aiokafka does on OutOfOrderSequenceNumber: the sender task ends for good
        sender = producer._producer._sender.sender_task
        sender.cancel()
        try:
            await sender
        except BaseException:  # noqa: BLE001 - the cancellation we caused
            pass
        assert producer.restarts == 0
        # the broker unreachable at that moment: the send fails, and the next one tries again
        new = producer._new
        producer._new = lambda: AIOKafkaProducer(
            bootstrap_servers=f"127.0.0.1:{closed_port()}",  # type: ignore[method-assign]
            request_timeout_ms=1000,
        )
        with pytest.raises(KafkaError):
            await producer.publish(_event())  # type: ignore[arg-type]
        assert producer.restarts == 0 and producer.failures == 1  # not handed over: counted
        producer._new = new  # type: ignore[method-assign]
        await producer.publish(_event())  # type: ignore[arg-type]
        assert producer.restarts == 1
        await producer.publish(_event())  # type: ignore[arg-type]
        assert producer.restarts == 1
    finally:
        await producer.stop()


async def test_a_producer_the_broker_answers_with_a_sequence_error_is_replaced(stack: Stack) -> None:
    """The sender lives on but every batch to the partition would fail: found by the fault
    matrix after a broker restart (batches expired without a leader left a sequence gap)."""
    producer = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="bus-test-sequence")
    await producer.start()
    try:
        await producer.publish(_event())  # type: ignore[arg-type]
        broken = producer._producer

        async def answered_out_of_order(topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
            ack = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(ack.set_exception, OutOfOrderSequenceNumber())
            return ack

        broken.send = answered_out_of_order  # type: ignore[method-assign]
        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.publish(_event())  # type: ignore[arg-type]
        await producer.publish(_event())  # type: ignore[arg-type]
        assert producer.restarts == 1 and producer._producer is not broken
        assert producer.failures == 1  # the broker's refusal counted once, the good sends not at all
    finally:
        await producer.stop()


async def test_positioned_is_set_only_after_the_assignment_callback_has_placed_the_partitions(stack: Stack) -> None:
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap)
    placed: list[set[TopicPartition]] = []

    async def on_assigned(assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            consumer.seek(tp, await consumer.end_offset(tp))
        placed.append(assigned)

    consumer = EventConsumer(settings, f"bus-{uuid.uuid4()}", [TOPIC], on_assigned=on_assigned)
    await consumer.start()
    try:
        assert not consumer.positioned.is_set()

        async def positioned() -> bool:
            await consumer.poll(timeout_ms=100)
            return consumer.positioned.is_set()

        await eventually(positioned, what="positioned")
        assert placed and placed[-1] == consumer.assignment()
    finally:
        await consumer.stop()


async def test_a_daemon_waits_for_kafka_at_start_unhealthy_and_goes_on_when_it_arrives(stack: Stack) -> None:
    port = closed_port()
    settings = CoreSettings(kafka_bootstrap=f"127.0.0.1:{port}")
    service = Service(settings)
    producer = EventProducer(settings, client_id="late-kafka")
    consumer = EventConsumer(settings, f"late-kafka-{uuid.uuid4()}", [TOPIC])
    forwarder = TcpForwarder(port, stack.kafka_bootstrap)
    starting = asyncio.create_task(service.start_bus(producer, consumer))
    try:
        await eventually(lambda: service.kafka_unreachable is not None, what="kafka_unreachable reported")
        assert not starting.done()
        [reason] = service.reasons()
        assert reason.startswith("kafka_unreachable: ") and service.base_state()["healthy"] is False
        await forwarder.open()
        assert await asyncio.wait_for(starting, 30) is True
        assert service.kafka_unreachable is None and service.reasons() == []
        await producer.publish(_event())  # type: ignore[arg-type]  # the retried producer works
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await forwarder.close()


async def test_a_drain_while_kafka_is_away_ends_the_wait_and_stops_what_started(stack: Stack) -> None:
    service = Service(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap))
    producer = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="drained")
    consumer = EventConsumer(CoreSettings(kafka_bootstrap=f"127.0.0.1:{closed_port()}"), "drained", [TOPIC])
    starting = asyncio.create_task(service.start_bus(producer, consumer))
    await eventually(lambda: service.kafka_unreachable is not None, what="kafka_unreachable reported")
    service.request_drain()
    assert await asyncio.wait_for(starting, 10) is False
    assert producer._producer._closed  # the producer that had started is stopped again
    await consumer.stop()  # never started: closing it is harmless


# --- read_since --------------------------------------------------------------------------------

TAIL_TOPICS = ("cmd.execute_trade", "exec.trade_result")


def _tail_event(topic: str) -> Envelope[Any]:
    return new_event(sample_payloads()[topic], producer=Producer(service="t", instance="t"), pair="BTC/EURe")


def _epoch_ms() -> int:
    return int(now_utc().timestamp() * 1000)


async def test_read_since_returns_the_events_from_a_time_up_to_the_end_in_time_order(stack: Stack) -> None:
    """Records stored before `since_ms` are left out, every valid event stored since up to the
    end is returned once with where it stands, in `observed_at` order across topics and within
    one (an event observed first but stored last comes first), and a malformed record is counted."""
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap)
    cmd, result = TAIL_TOPICS
    producer = EventProducer(settings, client_id="bus-test-tail")
    await producer.start()
    try:
        before = _tail_event(cmd)
        await producer.publish(before)
        await asyncio.sleep(0.01)
        since_ms = _epoch_ms() + 1
        await asyncio.sleep(0.01)
        early = _tail_event(result)  # observed now, stored after the others
        ordered = [_tail_event(cmd), _tail_event(result), _tail_event(cmd)]
        placed: dict[uuid.UUID, Placed] = {}
        for event in ordered:
            placed[event.event_id] = await producer.publish(event)
        await producer.publish_raw(result, b"not an event")
        placed[early.event_id] = await producer.publish(early)
        tail = await read_since(settings, TAIL_TOPICS, since_ms, "bus-test-tail")
    finally:
        await producer.stop()
    ours = {before.event_id, early.event_id, *(e.event_id for e in ordered)}
    got = [(e.event_id, where) for e, where in tail.events if e.event_id in ours]
    assert [event_id for event_id, _ in got] == [early.event_id, *(e.event_id for e in ordered)]
    assert all(where == (placed[event_id].partition, placed[event_id].offset) for event_id, where in got)
    assert [e.observed_at for e, _ in tail.events] == sorted(e.observed_at for e, _ in tail.events)
    assert {e.event_type for e, _ in tail.events} <= set(TAIL_TOPICS)
    assert tail.undecodable >= 1


async def test_read_since_returns_nothing_promptly_when_nothing_is_that_recent_or_the_topic_is_empty(
    stack: Stack,
) -> None:
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap)
    loop = asyncio.get_running_loop()
    started = loop.time()
    tail = await asyncio.wait_for(read_since(settings, TAIL_TOPICS, _epoch_ms() + 3_600_000, "bus-test-tail"), 10)
    assert (tail.events, tail.undecodable) == ([], 0)
    assert loop.time() - started < 5

    empty = f"bus-empty-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="bus-test", **kafka_options())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=empty, num_partitions=settings.topic_partitions, replication_factor=1)]
        )
        await eventually(lambda: topic_end_offsets(settings, empty, "bus-test-tail"), what="the new topic has a leader")
        started = loop.time()
        tail = await asyncio.wait_for(read_since(settings, [empty], 0, "bus-test-tail"), 10)
        assert (tail.events, tail.undecodable) == ([], 0)
        assert loop.time() - started < 5
    finally:
        await admin.delete_topics([empty])
        await admin.close()


async def test_end_offsets_cover_every_partition_of_the_topic(stack: Stack) -> None:
    """A snapshot's `results_through` and the executor's recovered holds are per partition: a
    topic of three partitions reports all three ends, a record on the last one counted there."""
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap, topic_partitions=3)
    topic = f"bus-parts-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="bus-test", **kafka_options())
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, **kafka_options())
    await producer.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])
        await eventually(lambda: topic_end_offsets(settings, topic, "bus-test-ends"), what="the new topic has a leader")
        await producer.send_and_wait(topic, b"x", partition=2)
        assert await topic_end_offsets(settings, topic, "bus-test-ends") == {0: 0, 1: 0, 2: 1}
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
