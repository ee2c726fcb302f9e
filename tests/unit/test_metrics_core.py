"""`oldest_age_s`: the age the unknown-outcome alert compares with ten minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemons.core.metrics import oldest_age_s

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_the_oldest_counts_and_none_is_zero() -> None:
    since = [NOW - timedelta(minutes=3), None, NOW - timedelta(minutes=11, seconds=30), NOW]
    assert oldest_age_s(since, NOW) == 690.0
    assert oldest_age_s([], NOW) == 0.0 and oldest_age_s([None], NOW) == 0.0
    assert oldest_age_s([NOW + timedelta(seconds=5)], NOW) == 0.0  # a deadline still ahead is no age
