"""Inventory reserved for live answers, so several requests in flight can never over-commit.

Unique nonces mean several live answers can settle (architecture, "Venue facts"), so every
command the strategy sends reserves the amount it gives until its result says it is over:

- `rejected`, `refused`, `expired`: released at once;
- `settled`: kept until an inventory snapshot synced after the settlement arrives (until then
  the credited balance still includes what was just given away: releasing early would count
  it twice);
- no result at all: released when the answer can no longer settle (its latest possible
  deadline has passed), never before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime


@dataclass
class Reservation:
    command_id: str
    quote_id: str
    asset_id: str
    amount: int
    expires_at: datetime  # after this the answer cannot settle
    settled_at: datetime | None = None


OVER = frozenset({"rejected", "refused", "expired"})


class Reservations:
    def __init__(self) -> None:
        self.live: dict[str, Reservation] = {}

    def reserve(self, command_id: str, quote_id: str, asset_id: str, amount: int, expires_at: datetime) -> None:
        if amount <= 0:
            raise ValueError("a reservation must be positive")
        self.live[command_id] = Reservation(command_id, quote_id, asset_id, amount, expires_at)

    def on_result(self, command_id: str, status: str, at: datetime, deadline: datetime | None = None) -> None:
        r = self.live.get(command_id)
        if r is None:
            return
        if status in OVER:
            del self.live[command_id]
        elif status == "settled":
            r.settled_at = at
        elif deadline is not None:  # acknowledged / uncertain: the answer lives until its deadline
            r.expires_at = max(r.expires_at, deadline)

    def on_inventory(self, synced_at: datetime | None) -> None:
        """A snapshot synced after a settlement already shows the balance it moved."""
        if synced_at is None:
            return
        for cid in [cid for cid, r in self.live.items() if r.settled_at is not None and synced_at > r.settled_at]:
            del self.live[cid]

    def expire(self, now: datetime) -> None:
        for cid in [cid for cid, r in self.live.items() if r.settled_at is None and now > r.expires_at]:
            del self.live[cid]

    def reserved(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.live.values():
            out[r.asset_id] += r.amount
        return dict(out)

    def view(self) -> list[dict[str, object]]:
        return [
            {"command_id": r.command_id, "quote_id": r.quote_id, "asset_id": r.asset_id, "amount": str(r.amount),
             "expires_at": r.expires_at, "settled_at": r.settled_at}
            for r in self.live.values()
        ]
