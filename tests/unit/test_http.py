"""`retry_after_s`: the one reading of `Retry-After` (daemons/core/http.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.core.http import RETRY_AFTER_MAX_S, retry_after_s

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        (" 2 ", 2.0),
        ("007", 7.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Fri, 01 May 2026 12:01:30 GMT", 90.0),
        ("Friday, 01-May-26 12:01:30 GMT", 90.0),  # the obsolete forms RFC 9110 still reads
        ("Fri May  1 12:01:30 2026", 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("-5", None),
        ("+5", None),
        ("1.5", None),  # delta-seconds is 1*DIGIT
        ("1e3", None),
        ("1_000", None),
        ("0x10", None),
        ("²", None),
        ("١٢", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after_s(value, NOW) == seconds


def test_bounded() -> None:
    assert RETRY_AFTER_MAX_S == 3600.0
    assert retry_after_s("3600", NOW) == 3600.0
    assert retry_after_s("3601", NOW) == 3600.0
    assert retry_after_s("9" * 5000, NOW) == 3600.0  # no int of 5000 digits is built
    assert retry_after_s("Fri, 31 Dec 9999 23:59:59 GMT", NOW) == 3600.0
    assert retry_after_s("Mon, 01 Jan 0001 00:00:00 GMT", NOW) == 0.0
    assert retry_after_s("120", NOW, max_s=60.0) == 60.0


@given(st.text(max_size=60))
def test_any_text_is_none_or_within_bounds(value: str) -> None:
    seconds = retry_after_s(value, NOW)
    assert seconds is None or 0.0 <= seconds <= RETRY_AFTER_MAX_S


@given(st.integers(min_value=0, max_value=10**30))
def test_delta_seconds_are_exact_up_to_the_cap(n: int) -> None:
    assert retry_after_s(str(n), NOW) == min(float(n), RETRY_AFTER_MAX_S)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_http_dates_count_from_now(moment: datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    expected = min(max(0.0, (moment - NOW).total_seconds()), RETRY_AFTER_MAX_S)
    assert retry_after_s(format_datetime(moment, usegmt=True), NOW) == expected
