"""Fuzz `coingecko.parse_simple_price`: any body raises only `CoinGeckoResponseError` or
`CoinGeckoUnknownId` (both `CoinGeckoError`), and a valid body round-trips to an exact Decimal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.venues.coingecko import CoinGeckoResponseError, CoinGeckoUnknownId, parse_simple_price
from tests.fuzz.strategies import GARBAGE_BYTES, GARBAGE_TEXT, JSON, dumps, mutated

AT = datetime(2026, 1, 1, tzinfo=UTC)
IDS = ["bitcoin", "monerium-eur-money"]


def parse(body: str | bytes) -> object:
    try:
        return parse_simple_price(body, IDS, "eur", AT)
    except (CoinGeckoResponseError, CoinGeckoUnknownId):
        return None


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.one_of(GARBAGE_TEXT, GARBAGE_BYTES))
def test_garbage_raises_only_typed_errors(body: str | bytes) -> None:
    parse(body)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(JSON)
def test_any_json_raises_only_typed_errors(doc: object) -> None:
    parse(dumps(doc))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data())
def test_mutated_valid_bodies_raise_only_typed_errors(data: st.DataObject) -> None:
    valid = {
        "bitcoin": {"eur": 60000, "last_updated_at": 1767225600},
        "monerium-eur-money": {"eur": 1, "last_updated_at": 1767225600},
        "status": {"error_code": 429, "error_message": "x"},
    }
    if data.draw(st.booleans()):
        del valid["status"]
    parse(dumps(data.draw(mutated(valid))))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(["1e400", "-1e400", "99999999999999999999", "-99999999999999999999", "1e20", "253402300800"]))
def test_out_of_range_timestamps_are_typed_errors(updated: str) -> None:
    body = (
        f'{{"bitcoin": {{"eur": 1, "last_updated_at": {updated}}}, '
        '"monerium-eur-money": {"eur": 1, "last_updated_at": 1}}'
    )
    parse(body)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e9"), places=6), st.integers(0, 4_000_000_000))
def test_valid_body_round_trips_exactly(price: Decimal, updated: int) -> None:
    body = (
        f'{{"bitcoin": {{"eur": {price}, "last_updated_at": {updated}}}, '
        f'"monerium-eur-money": {{"eur": 1.0001, "last_updated_at": {updated}}}}}'
    )
    found = parse_simple_price(body, IDS, "eur", AT)
    assert found["bitcoin"].price == price and isinstance(found["bitcoin"].price, Decimal)
    assert found["monerium-eur-money"].price == Decimal("1.0001")
    assert found["bitcoin"].last_updated_at == datetime.fromtimestamp(updated, UTC)
