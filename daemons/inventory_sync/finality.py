"""Covering readings: what a reading can prove its balances hold (pure: no I/O, no clock).

A `final` read trails the chain head by a few blocks (docs/near-rpc.md, "Finality"), so a
reading made right after a settlement or a withdrawal burn can predate it. Each such cause asks
for a covering reading (`want`). A covering reading first takes a `Coverage`: the end offsets of
`exec.trade_result` and the count of liquidity events folded, then the chain head. Its balances,
read at `final`, cover those causes once the `final` block is at or past that head (`settle`);
short of it, the same head is kept for the next reading, due once the blocks between them
should be final. A failed reading keeps its head too (`failed`), and the reading owed comes
sooner than the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# how long a block takes to become final, about (docs/near-rpc.md, "Finality")
BLOCK_S = 0.6
# a reading short of its head is tried again no sooner than this
SHORT_RETRY_MIN_S = 0.3
# a failed reading that owed coverage is tried again this soon (or at the node's Retry-After)
OWED_RETRY_MIN_S = 1.0


@dataclass(frozen=True)
class Coverage:
    """What a covering reading proves its balances hold: every `exec.trade_result` below
    `results_through`, and every liquidity event folded up to `liquidity_seq`; the head it read."""

    results_through: dict[int, int]
    liquidity_seq: int
    head_height: int
    wanted: int  # `Finality.wanted` when it was taken: the causes it answers
    taken_at: datetime  # before the end offsets and the head were read


@dataclass(frozen=True)
class Settled:
    """A successful reading's verdict: `covers_until`, the instant before its head was read
    (every change executed before it is in these balances), or None when it proves nothing;
    `short_by`, the blocks its `final` block was short of the head (None when not short)."""

    covers_until: datetime | None
    short_by: int | None


class Finality:
    """Causes wanting a covering reading, the causes covered so far, the last coverage proved
    and a head taken that `final` has not reached yet (`pending`)."""

    def __init__(self) -> None:
        self.wanted = 1  # the first reading covers what happened before the start
        self.done = 0
        self.coverage: Coverage | None = None
        self.pending: Coverage | None = None

    @property
    def owed(self) -> bool:
        """A settlement, burn or credit seen since the last covering reading."""
        return self.wanted > self.done

    def want(self) -> None:
        self.wanted += 1

    def failed(self, cover: Coverage | None) -> bool:
        """A reading failed after taking `cover` (or none): the head is kept for the next one.
        True when a covering reading is still owed (it is then due sooner than the interval)."""
        if cover is None and not self.owed:
            return False
        self.pending = cover
        return True

    def settle(self, cover: Coverage | None, height: int | None) -> Settled:
        """A reading with balances at `final` block `height` succeeded after taking `cover`."""
        self.pending = None
        if cover is None:
            return Settled(covers_until=None, short_by=None)
        if height is not None and height >= cover.head_height:
            self.coverage, self.done = cover, cover.wanted
            return Settled(covers_until=cover.taken_at, short_by=None)
        self.pending = cover
        return Settled(covers_until=None, short_by=cover.head_height - (height or cover.head_height))

    @property
    def results_through(self) -> dict[int, int] | None:
        return dict(self.coverage.results_through) if self.coverage is not None else None

    @property
    def liquidity_seq(self) -> int | None:
        return self.coverage.liquidity_seq if self.coverage is not None else None


def short_retry_s(short_by: int) -> float:
    """When to read again with the same head: once the blocks between should be final."""
    return max(SHORT_RETRY_MIN_S, BLOCK_S * short_by)


def owed_retry_s(retry_after_s: float | None) -> float:
    """When to try a covering reading again after a failure (the node's Retry-After, if later)."""
    return max(OWED_RETRY_MIN_S, retry_after_s or 0.0)
