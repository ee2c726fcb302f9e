"""CoinGecko `/simple/price` bodies, 429 headers, key handling and staleness (`docs/coingecko.md` (§n below))."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from daemons.venues.coingecko import (
    DEMO_BASE_URL,
    PRO_BASE_URL,
    CoinGeckoClient,
    CoinGeckoResponseError,
    CoinGeckoUnknownId,
    parse_ratelimit_reset,
    parse_simple_price,
    rate_limit_until,
)

NOW = datetime(2026, 5, 18, 12, 0, 0, tzinfo=UTC)


def test_btc_and_eure_parse_exactly() -> None:
    body = (
        '{"bitcoin": {"eur": 71234.56789012345, "last_updated_at": 1779092258},'
        ' "monerium-eur-money-2": {"eur": 0.998912, "last_updated_at": 1779090000}}'
    )
    prices = parse_simple_price(body, ["bitcoin", "monerium-eur-money-2"], "eur", NOW)
    btc = prices["bitcoin"]
    assert btc.price == Decimal("71234.56789012345") and isinstance(btc.price, Decimal)
    assert btc.last_updated_at == datetime.fromtimestamp(1779092258, UTC)
    assert btc.last_updated_at.tzinfo is not None and btc.received_at == NOW
    assert prices["monerium-eur-money-2"].price == Decimal("0.998912")


def test_integer_price_is_fine() -> None:
    # §2's own example prints BTC without decimals
    prices = parse_simple_price('{"bitcoin": {"eur": 76975, "last_updated_at": 1779092258}}', ["bitcoin"], "eur", NOW)
    assert prices["bitcoin"].price == Decimal(76975)


def test_empty_object_is_unknown_id() -> None:
    with pytest.raises(CoinGeckoUnknownId) as info:
        parse_simple_price("{}", ["bitcoin"], "eur", NOW)
    assert info.value.missing == ("bitcoin",) and info.value.found == {}


def test_partial_answer_names_the_missing_id_and_keeps_the_rest() -> None:
    with pytest.raises(CoinGeckoUnknownId) as info:
        parse_simple_price('{"bitcoin": {"eur": 1, "last_updated_at": 1}}', ["bitcoin", "nope"], "eur", NOW)
    assert info.value.missing == ("nope",)
    assert info.value.found["bitcoin"].price == Decimal(1)


@pytest.mark.parametrize(
    "body",
    [
        '{"bitcoin": {"eur": null, "last_updated_at": 1779092258}}',
        '{"bitcoin": {"eur": 0, "last_updated_at": 1779092258}}',
        '{"bitcoin": {"eur": "70000", "last_updated_at": 1779092258}}',
        '{"bitcoin": {"eur": 70000}}',  # we asked for last_updated_at: without it freshness is unknowable
        '{"bitcoin": 70000}',
        "[]",
        "<html>",
        '{"status": {"error_code": 429, "error_message": "You\'ve exceeded the Rate Limit."}}',
        '{"error": "invalid vs_currency"}',
    ],
)
def test_bad_bodies(body: str) -> None:
    with pytest.raises(CoinGeckoResponseError):
        parse_simple_price(body, ["bitcoin"], "eur", NOW)


def test_coin_without_the_vs_currency_counts_as_missing() -> None:
    with pytest.raises(CoinGeckoUnknownId):
        parse_simple_price('{"bitcoin": {}}', ["bitcoin"], "eur", NOW)


@pytest.mark.parametrize(
    ("value", "until"),
    [
        ("119", NOW + timedelta(seconds=119)),
        ("Mon, 18 May 2026 12:02:00 GMT", NOW + timedelta(minutes=2)),
        ("86400", NOW + timedelta(hours=1)),  # capped (daemons/core/http.py)
        # no moment ahead: the next signal (here none, so the default wait) decides
        ("Mon, 18 May 2026 11:00:00 GMT", None),
        ("0", None),
        ("soon", None),
        ("1.5", None),
        (None, None),
    ],
)
def test_retry_after_seconds_and_http_date(value: str | None, until: datetime | None) -> None:
    headers = {} if value is None else {"retry-after": value}
    if until is None:
        assert rate_limit_until(headers, NOW) == (NOW + timedelta(seconds=60), "default")
    else:
        assert rate_limit_until(headers, NOW) == (until, "retry-after")


def test_ratelimit_reset_as_observed() -> None:
    assert parse_ratelimit_reset("2026-05-18 12:01:00 +0000", NOW) == NOW + timedelta(minutes=1)
    in_30s = NOW + timedelta(seconds=30)
    assert parse_ratelimit_reset(str(int(in_30s.timestamp())), NOW) == in_30s
    for nonsense in ("99999999999999", "9" * 30, "9" * 5000, "²", "2026-05-18", "soon"):
        assert parse_ratelimit_reset(nonsense, NOW) is None


def test_rate_limit_until_prefers_retry_after_then_reset_then_60s() -> None:
    assert rate_limit_until({"retry-after": "7", "x-ratelimit-reset": "2026-05-18 12:30:00 +0000"}, NOW) == (
        NOW + timedelta(seconds=7),
        "retry-after",
    )
    assert rate_limit_until({"x-ratelimit-reset": "2026-05-18 12:30:00 +0000"}, NOW) == (
        NOW + timedelta(minutes=30),
        "x-ratelimit-reset",
    )
    until, source = rate_limit_until({}, NOW)
    assert source == "default" and until - NOW >= timedelta(seconds=60)


def test_plan_and_key_header_follow_host(tmp_path: Path) -> None:
    key_file = tmp_path / "cg.key"
    key_file.write_text("CG-test-secret-123\n")
    demo = CoinGeckoClient(DEMO_BASE_URL, api_key_file=key_file)
    assert demo.plan == "demo" and demo._headers()["x-cg-demo-api-key"] == "CG-test-secret-123"
    pro = CoinGeckoClient(PRO_BASE_URL, api_key="CG-pro-secret")
    assert pro.plan == "pro" and "x-cg-pro-api-key" in pro._headers()
    public = CoinGeckoClient(DEMO_BASE_URL)
    assert public.plan == "public" and not any(h.startswith("x-cg-") for h in public._headers())


def test_key_never_in_repr_or_state(tmp_path: Path) -> None:
    key_file = tmp_path / "cg.key"
    key_file.write_text("CG-test-secret-123")
    client = CoinGeckoClient(DEMO_BASE_URL, api_key_file=key_file)
    assert "CG-test-secret-123" not in repr(client)
    assert "CG-test-secret-123" not in str(client.state())
    assert client.state()["key_configured"] is True


def test_empty_key_file_and_both_key_sources_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("  \n")
    with pytest.raises(ValueError):
        CoinGeckoClient(api_key_file=empty)
    with pytest.raises(ValueError):
        CoinGeckoClient(api_key="a", api_key_file=empty)
    with pytest.raises(ValueError):
        CoinGeckoClient(plan="pro")  # a plan that needs a key, without one


def test_staleness_by_last_updated_at_with_eure_bound() -> None:
    client = CoinGeckoClient(stale_after_s=180, eure_stale_after_s=3600, clock=lambda: NOW)
    body = (
        f'{{"bitcoin": {{"eur": 1, "last_updated_at": {int((NOW - timedelta(seconds=200)).timestamp())}}},'
        f' "monerium-eur-money-2": {{"eur": 1, "last_updated_at": {int((NOW - timedelta(seconds=200)).timestamp())}}}}}'
    )
    prices = parse_simple_price(body, ["bitcoin", "monerium-eur-money-2"], "eur", NOW)
    assert client.is_stale(prices["bitcoin"])
    assert not client.is_stale(prices["monerium-eur-money-2"])
    future = parse_simple_price(
        f'{{"bitcoin": {{"eur": 1, "last_updated_at": {int(NOW.timestamp()) + 5}}}}}', ["bitcoin"], "eur", NOW
    )["bitcoin"]
    assert future.age(NOW) == timedelta(0)
