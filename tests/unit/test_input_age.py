"""An input's age counts from its own timestamp, as an auditor of the stored events counts it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemons.core.events import input_age_ms

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_the_age_counts_from_the_origin_not_from_publication() -> None:
    # read at T0, published 40 ms later saying "age 0": at T0 + 6000.3 ms it is 6001 ms old,
    # however late its envelope was stamped (the published age plus the time since would say 5961)
    observed = T0 + timedelta(milliseconds=40)
    now = T0 + timedelta(microseconds=6_000_300)
    assert input_age_ms(T0, 0, observed, now) == 6001
    assert input_age_ms(T0, 0, observed, T0 + timedelta(milliseconds=6000)) == 6000


def test_without_an_origin_the_published_age_plus_the_time_since() -> None:
    observed = T0
    assert input_age_ms(None, 250, observed, T0 + timedelta(milliseconds=100)) == 350
    assert input_age_ms(None, None, observed, T0) is None
    assert input_age_ms(T0, None, observed, T0 - timedelta(seconds=1)) == 0  # clocks never give a negative age
