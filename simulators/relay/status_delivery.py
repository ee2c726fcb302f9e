"""`quote_status` delivery (`docs/near-intents-relay.md` (§n below) §5, §6): every plain subscriber gets a
status once; every known instance queues it under a per-instance `seq` until acknowledged,
replays the unacknowledged on its next guaranteed subscribe, and gets it again every
`redelivery_s` while it stays unacknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from simulators.base import Faults
from simulators.relay.wire import Connection, InstanceQueue, Pending, event_frame


class StatusDelivery:
    """The guaranteed-delivery queues by instance_id, and the sending of statuses over the
    relay's live connections (`conns`, shared with the relay, which owns them)."""

    def __init__(
        self,
        conns: dict[int, Connection],
        faults: Faults,
        *,
        send_event: Callable[[Connection, str], Awaitable[bool]],
        record: Callable[..., None],
        count: Callable[[str], None],
    ) -> None:
        self.conns = conns
        self.faults = faults
        self._send_event = send_event
        self._record = record
        self._count = count
        self.queues: dict[str, InstanceQueue] = {}

    def queue(self, instance_id: str) -> InstanceQueue:
        return self.queues.setdefault(instance_id, InstanceQueue())

    async def broadcast(self, data: dict[str, Any]) -> None:
        """Send a quote_status to every plain subscriber once, and queue it for every known
        instance (guaranteed delivery, §6). The counted fault `lose_status` loses it entirely
        (not sent, not queued): an outcome only the chain can tell."""
        if self.faults.take("lose_status"):
            self._record("status_lost", quote_hash=data.get("quote_hash"))
            self._count("status_lost")
            return
        for conn in list(self.conns.values()):
            for sid, sub in list(conn.subs.items()):
                if sub.kind == "quote_status" and not sub.guaranteed:
                    await self._send_event(conn, event_frame(sid, data, "event"))
                    self._count("status_sent")
        for instance_id, queue in self.queues.items():
            seq = queue.next_seq
            queue.next_seq += 1
            pending = Pending(data=dict(data))
            queue.unacked[seq] = pending
            for conn, sid in self.guaranteed_subs(instance_id):
                await self.deliver(conn, sid, seq, pending)

    async def replay(self, conn: Connection, sid: str, instance_id: str) -> None:
        """Every unacknowledged status of the instance, to its new guaranteed subscription
        (§6: "events wait while you are offline, then replay when you reconnect")."""
        queue = self.queue(instance_id)
        for seq, pending in list(queue.unacked.items()):
            await self.deliver(conn, sid, seq, pending)
            self._count("status_replayed")

    def acknowledge(self, instance_id: str, seq: int) -> None:
        queue = self.queue(instance_id)
        if queue.unacked.pop(seq, None) is not None:
            queue.acked.append(seq)
            self._count("acks")

    def guaranteed_subs(self, instance_id: str) -> list[tuple[Connection, str]]:
        return [
            (c, sid)
            for c in self.conns.values()
            if c.instance_id == instance_id
            for sid, s in c.subs.items()
            if s.kind == "quote_status" and s.guaranteed
        ]

    async def deliver(self, conn: Connection, sid: str, seq: int, pending: Pending) -> None:
        pending.sent_at = asyncio.get_running_loop().time()
        if self.faults.take("drop_status_frames"):
            # lost on the way: still unacknowledged, so the redelivery (or the next guaranteed
            # subscribe) sends it again
            self._count("status_frames_dropped")
            return
        await self._send_event(conn, event_frame(sid, pending.data, "event", seq=seq))
        self._count("status_sent")

    async def redelivery_loop(self, every_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            for instance_id, queue in list(self.queues.items()):
                for conn, sid in self.guaranteed_subs(instance_id):
                    for seq, pending in list(queue.unacked.items()):
                        if loop.time() - pending.sent_at >= every_s:
                            await self.deliver(conn, sid, seq, pending)
                            self._count("status_redelivered")
