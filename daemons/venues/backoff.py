"""Reconnect pacing shared by every streaming client: capped exponential backoff with full
jitter, and a reconnect budget over a sliding window.

Kraken's reconnection guide asks for exponential backoff with jitter (1 s doubling to 60 s,
reset on a good connection); its CLI budgets at most 120 reconnects per 600 s. The relay's
solvers use min(5 s * 2^(n-1), 60 s). When the budget is spent the caller waits for the window
to free a slot instead of hammering the venue, and says so in its state.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    budget: int = 120
    window_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0  # consecutive failures since the last good connection
    _recent: deque[float] = field(default_factory=deque)

    def reset(self) -> None:
        """A connection proved good: the next failure starts from the initial delay again."""
        self.attempts = 0

    def _prune(self, now: float) -> None:
        while self._recent and now - self._recent[0] >= self.window_s:
            self._recent.popleft()

    def reconnects_in_window(self) -> int:
        self._prune(self.clock())
        return len(self._recent)

    def budget_exhausted(self) -> bool:
        return self.reconnects_in_window() >= self.budget

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; records the attempt against the budget."""
        now = self.clock()
        self._prune(now)
        ceiling = min(self.max_s, self.initial_s * self.factor**self.attempts)
        delay = self.rng.uniform(ceiling / 2, ceiling)  # "equal jitter": never a hot loop
        if len(self._recent) >= self.budget:
            # out of budget: wait until the oldest reconnect leaves the window
            delay = max(delay, self.window_s - (now - self._recent[0]))
        self.attempts += 1
        self._recent.append(now + delay)
        return delay
