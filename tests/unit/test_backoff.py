"""Backoff: capped, jittered, reset by a good connection, and bounded by the budget."""

from __future__ import annotations

import random

from daemons.venues.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_and_cap_with_jitter() -> None:
    b = Backoff(initial_s=1, max_s=8, clock=Clock(), rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_reset_starts_over() -> None:
    b = Backoff(initial_s=1, max_s=60, clock=Clock(), rng=random.Random(2))
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 1


def test_budget_makes_the_caller_wait_for_the_window() -> None:
    clock = Clock()
    b = Backoff(initial_s=0.1, max_s=0.1, budget=3, window_s=100, clock=clock, rng=random.Random(3))
    for _ in range(3):
        assert b.next_delay() <= 0.1
    assert b.budget_exhausted()
    assert b.reconnects_in_window() == 3
    assert b.next_delay() >= 99  # the oldest attempt leaves the window only after ~100 s
    clock.now = 500
    assert not b.budget_exhausted()
