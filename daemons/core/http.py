"""HTTP response headers that every venue client reads the same way.

`retry_after_s` reads `Retry-After` (RFC 9110 §10.2.3), as NEAR RPC providers
(docs/near-rpc.md) and CoinGecko (docs/coingecko.md §4) send it on a 429: either delta-seconds
(`1*DIGIT`: ASCII digits only, so no sign, fraction or exponent) or an HTTP-date. The result is
seconds from `now`, never negative (a date already past is 0) and never more than `max_s` (an
hour unless the caller says otherwise), so a provider's typo cannot park a client for a day.
None means the header is absent, blank or neither form; what to do then, and whether 0 counts
as a signal at all, is the caller's rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER_MAX_S = 3600.0
# more digits than this is beyond any bound a caller would set: capped without building the int
_DELTA_DIGITS = 12


def retry_after_s(value: str | None, now: datetime, *, max_s: float = RETRY_AFTER_MAX_S) -> float | None:
    """A `Retry-After` header as seconds from `now` (aware), in [0, max_s]; None when absent or
    unparsable (module docstring)."""
    if value is None:
        return None
    text = value.strip()  # whitespace around a field value is not part of it (RFC 9110 §5.5)
    if not text:
        return None
    if text.isascii() and text.isdigit():
        significant = text.lstrip("0")
        return max_s if len(significant) > _DELTA_DIGITS else min(float(int(text)), max_s)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # an HTTP-date is always GMT
    return min(max(0.0, (moment - now).total_seconds()), max_s)
