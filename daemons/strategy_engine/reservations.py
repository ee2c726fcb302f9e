"""Inventory reserved for live answers, so several requests in flight can never over-commit.

Unique nonces mean several live answers can settle (docs/design.md §7), so every
command the strategy sends reserves the amount it gives until its result says it is over:

- `rejected`, `refused`, `expired`: released at once;
- `settled`, and `expired` for want of a `quote_status` (it may have executed unseen): kept until
  an inventory snapshot proves it holds the outcome: its `results_through` passes the offset of
  that result (a `final` read trails the chain, so a snapshot read after a settlement can still
  predate it; releasing early would count what was just given away twice). The rule is
  `held_until_covered` (daemons/core/events.py), shared with the executor;
- no result at all: released when the answer can no longer settle (its latest possible
  deadline has passed), never before.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemons.core.events import ExecuteTrade, held_until_covered, results_cover


@dataclass
class Reservation:
    command_id: str
    quote_id: str
    asset_id: str
    amount: int
    expires_at: datetime  # after this the answer cannot settle
    # held until covered: (partition, offset) of its result on exec.trade_result
    settled_at: tuple[int, int] | None = None


OVER = frozenset({"rejected", "refused", "expired"})


def answer_expiry(cmd: ExecuteTrade, answer_margin_ms: int, answer_window_ms: int) -> datetime:
    """The latest an answer to `cmd` can settle: its request's receipt (else its `answer_by`) plus
    the deadline asked for, the executor's margin and the answer window."""
    received = cmd.request_received_at or cmd.answer_by
    return received + timedelta(milliseconds=cmd.min_deadline_ms + answer_margin_ms + answer_window_ms)


def needs(placed: tuple[int, int] | None) -> dict[int, int] | None:
    """What a snapshot must have read past to hold a settled result placed at `placed`."""
    return None if placed is None else {placed[0]: placed[1] + 1}


class Reservations:
    """Per-request work is independent of how many answers are live: totals are kept per asset
    and expiries in a heap (thousands of acknowledged answers can wait for their deadlines)."""

    def __init__(self) -> None:
        self.live: dict[str, Reservation] = {}
        self._totals: dict[str, int] = defaultdict(int)
        self._expiries: list[tuple[datetime, str]] = []  # may hold stale entries: checked on pop
        self._settled: set[str] = set()

    def reserve(self, command_id: str, quote_id: str, asset_id: str, amount: int, expires_at: datetime) -> None:
        if amount <= 0:
            raise ValueError("a reservation must be positive")
        self._drop(command_id)
        self.live[command_id] = Reservation(command_id, quote_id, asset_id, amount, expires_at)
        self._totals[asset_id] += amount
        heapq.heappush(self._expiries, (expires_at, command_id))

    def on_result(
        self,
        command_id: str,
        status: str,
        placed: tuple[int, int],
        deadline: datetime | None = None,
        resolved_by: str | None = None,
    ) -> None:
        """A result for a command; `placed` is where it stands on exec.trade_result."""
        r = self.live.get(command_id)
        if r is None:
            return
        if held_until_covered(status, resolved_by):
            r.settled_at = placed
            self._settled.add(command_id)
        elif status in OVER:
            self._drop(command_id)
        elif deadline is not None and deadline > r.expires_at:  # acknowledged / uncertain: lives until its deadline
            r.expires_at = deadline
            heapq.heappush(self._expiries, (deadline, command_id))

    def on_inventory(self, results_through: dict[int, int] | None) -> None:
        """A snapshot whose `results_through` passes a settled result holds its settlement."""
        if results_through is None:
            return
        for cid in [cid for cid in self._settled if results_cover(results_through, needs(self.live[cid].settled_at))]:
            self._drop(cid)

    def expire(self, now: datetime) -> None:
        while self._expiries and self._expiries[0][0] < now:
            at, cid = heapq.heappop(self._expiries)
            r = self.live.get(cid)
            # a settled answer waits for its snapshot; a later deadline has its own entry
            if r is not None and r.settled_at is None and r.expires_at == at:
                self._drop(cid)

    def reserved(self) -> dict[str, int]:
        return {asset: total for asset, total in self._totals.items() if total}

    def clear(self) -> None:
        self.live.clear()
        self._totals.clear()
        self._expiries.clear()
        self._settled.clear()

    def _drop(self, command_id: str) -> None:
        r = self.live.pop(command_id, None)
        if r is not None:
            self._totals[r.asset_id] -= r.amount
            self._settled.discard(command_id)

    def view(self) -> list[dict[str, object]]:
        return [
            {
                "command_id": r.command_id,
                "quote_id": r.quote_id,
                "asset_id": r.asset_id,
                "amount": str(r.amount),
                "expires_at": r.expires_at,
                "settled_at": r.settled_at,
            }
            for r in self.live.values()
        ]
