"""Publishing the decisions and commands, and committing the requests they answer.

The hot path never waits for the broker: `send` hands an event to the producer and returns its
acknowledgement to wait for (`Sent`); the next request is decided meanwhile. The consume loop
commits a batch's offsets through `commit_when_acked`, a chain in batch order that commits only
once every event the batch produced is acknowledged. An event the broker did not acknowledge is
sent again, the same event, until it is (`acked`); a drain meanwhile leaves the batch
uncommitted, so the next start reads those requests again. A command that was not sent, or is
not known to be, keeps its reservation until it expires.

The Kafka link (`StrategyEngine.kafka_link`, shown as `kafka_unavailable` and
`connected.kafka`) fails on any failed send or acknowledgement and recovers when the broker
acknowledges a decision, or an event sent again.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.bus import EventConsumer
from daemons.core.events import Envelope, ExecuteTrade

if TYPE_CHECKING:
    from daemons.strategy_engine.service import StrategyEngine


@dataclass(frozen=True)
class Sent:
    """An event handed to the producer, and the broker's acknowledgement to wait for."""

    ack: asyncio.Future[Any]
    event: Envelope[Any]
    key: str | None


class Publishing:
    def __init__(self, ex: StrategyEngine) -> None:
        self.ex = ex

    async def send(self, event: Envelope[Any], key: str | None = None, command: ExecuteTrade | None = None) -> Sent:
        """Hand `event` over without waiting for the broker; `command`: the command `event`
        carries (its failure is logged with its ids), None for a decision."""
        try:
            ack = await self.ex.producer.send(event, key=key)
        except (KafkaError, OSError) as exc:
            self.failed(exc, command)
            ack = asyncio.get_running_loop().create_future()
            ack.set_exception(exc)
        else:
            if command is None:
                ack.add_done_callback(self._decision_acknowledged)
            else:
                ack.add_done_callback(functools.partial(self._command_acknowledged, command=command))
        return Sent(ack, event, key)

    def _decision_acknowledged(self, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled():
            return
        exc = ack.exception()
        if exc is not None:
            self.failed(exc, None)
        else:
            self.ex.kafka_link.ok()

    def _command_acknowledged(self, ack: asyncio.Future[Any], command: ExecuteTrade) -> None:
        if ack.cancelled():
            return
        exc = ack.exception()
        if exc is not None:
            self.failed(exc, command)

    def failed(self, exc: BaseException, command: ExecuteTrade | None) -> None:
        if command is not None:
            # not sent, or not known to be sent: the reservation stays until it expires
            self.ex.log.error(
                "command_publish_failed", quote_id=command.quote_id, command_id=command.command_id, error=str(exc)
            )
        self.ex.kafka_link.fail(exc)

    async def commit_when_acked(
        self,
        consumer: EventConsumer,
        offsets: dict[TopicPartition, int],
        sent: list[Sent],
        before: asyncio.Task[None] | None,
    ) -> None:
        """Commit `offsets` once the batch before has been and every event in `sent` is
        acknowledged; not at all when a drain comes first."""
        if before is not None:
            await before
        for item in sent:
            if not await self.acked(item):
                return  # draining with it unacknowledged: uncommitted, read again at the next start
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            self.ex.log.warning("kafka_commit_failed", error=str(exc))

    async def acked(self, item: Sent) -> bool:
        """Wait for the broker's acknowledgement of `item`, sending it again until there is one
        (the same event: history-writer keeps one row per event id; a late command is refused by
        the executor as past its answer_by, with a result). False: a drain came first."""
        ack, delay = item.ack, 0.5
        while True:
            try:
                await ack
                if ack is not item.ack:
                    # the broker takes our publishes again: healthy now, not at the next decision
                    self.ex.kafka_link.ok(event_id=str(item.event.event_id))
                return True
            except (KafkaError, OSError) as exc:
                self.ex.kafka_link.fail(exc)
                self.ex.log.warning(
                    "publish_unacknowledged_resending",
                    event_id=str(item.event.event_id),
                    event_type=item.event.event_type,
                    error=str(exc),
                )
            while True:
                if self.ex.drain_requested.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    ack = await self.ex.producer.send(item.event, key=item.key)
                    break
                except (KafkaError, OSError) as exc:
                    self.ex.kafka_link.fail(exc)
