"""Remembering quote ids: the ingest marks a repeated request, the strategy refuses one.

A bounded memory (least recently seen forgotten first), so a long-running daemon never grows
without limit; a repeat older than the memory is not reported, which only matters for a quote
far older than any answer window.
"""

from __future__ import annotations

from collections import OrderedDict


class RepeatTracker:
    """Remembers the last `capacity` quote ids; a repeat is marked, never dropped."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen_before(self, quote_id: str) -> bool:
        if quote_id in self._seen:
            self._seen.move_to_end(quote_id)
            return True
        self._seen[quote_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return False
