"""The asset registry: the three known assets, the active pair built from the BTC setting, visible
refusals for unknown assets and unsupported funding routes, and exact unit conversion."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, ROUND_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from daemons.core.amounts import U128_MAX
from daemons.core.assets import (
    DEFAULT_BTC_ASSET_ID,
    EURE,
    EURE_ID,
    NBTC,
    NBTC_ID,
    POA_BTC_ID,
    REGISTRY,
    ActivePair,
    Asset,
    AssetError,
    InexactAmount,
    UnknownAsset,
    UnsupportedFundingRoute,
    lookup,
    to_base_units,
    to_units,
)

WBTC_ID = "nep141:eth-0x2260fac5e5542a773aa44fbcfedf7c193bc2c599.omft.near"


def test_registry_holds_the_documented_assets() -> None:
    assert set(REGISTRY) == {EURE_ID, NBTC_ID, POA_BTC_ID}
    eure, nbtc, poa_btc = lookup(EURE_ID), lookup(NBTC_ID), lookup(POA_BTC_ID)
    assert (eure.symbol, eure.decimals, eure.poa_chain) == ("EURe", 18, "eth:100")
    assert (nbtc.symbol, nbtc.decimals, nbtc.poa_chain, nbtc.bridge) == ("BTC", 8, None, "omni")
    assert (poa_btc.symbol, poa_btc.decimals, poa_btc.poa_chain) == ("BTC", 8, "btc:mainnet")
    assert poa_btc.legacy and not nbtc.legacy
    assert eure.near_token_id == "gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
    assert DEFAULT_BTC_ASSET_ID == NBTC_ID


def test_assets_are_frozen_and_must_answer_the_route_question_once() -> None:
    with pytest.raises(ValidationError):
        EURE.decimals = 6
    with pytest.raises(ValidationError, match="either a poa_chain or an unsupported_reason"):
        Asset(symbol="BTC", asset_id="nep141:x.near", decimals=8, name="x", bridge="poa")
    with pytest.raises(ValidationError, match="either a poa_chain or an unsupported_reason"):
        Asset(
            symbol="BTC",
            asset_id="nep141:x.near",
            decimals=8,
            name="x",
            bridge="poa",
            poa_chain="btc:mainnet",
            unsupported_reason="no",
        )


def test_unknown_asset_is_refused_by_name() -> None:
    with pytest.raises(UnknownAsset, match="2260fac5") as exc:
        lookup(WBTC_ID)
    assert exc.value.asset_id == WBTC_ID
    assert isinstance(exc.value, AssetError)


@pytest.mark.parametrize("btc_id", [NBTC_ID, POA_BTC_ID])
def test_active_pair_exposes_both_assets(btc_id: str) -> None:
    pair = ActivePair(btc_id)
    assert pair.btc.asset_id == btc_id
    assert pair.eure == EURE
    assert pair.token_ids == (btc_id, EURE_ID)
    assert pair.decimals(btc_id) == 8
    assert pair.decimals(EURE_ID) == 18
    assert pair == ActivePair(btc_asset_id=btc_id)


def test_active_pair_defaults_to_nbtc_and_refuses_a_non_btc_setting() -> None:
    assert ActivePair().btc == NBTC
    for bad in (EURE_ID, WBTC_ID, "btc.omft.near"):
        with pytest.raises(UnknownAsset, match="not a BTC asset"):
            ActivePair(bad)


def test_direction_is_named_from_quoteloops_side() -> None:
    pair = ActivePair(NBTC_ID)
    # The user offers EURe and wants BTC: quoteloop gives BTC.
    assert pair.direction_of(asset_in=EURE_ID, asset_out=NBTC_ID) == "SELL_BTC"
    assert pair.direction_of(asset_in=NBTC_ID, asset_out=EURE_ID) == "BUY_BTC"
    assert pair.source_asset("SELL_BTC") == pair.btc
    assert pair.received_asset("SELL_BTC") == pair.eure
    assert pair.source_asset("BUY_BTC") == pair.eure
    assert pair.received_asset("BUY_BTC") == pair.btc


@pytest.mark.parametrize(
    ("asset_in", "asset_out"),
    [
        (EURE_ID, POA_BTC_ID),  # the inactive BTC is not the pair
        (POA_BTC_ID, EURE_ID),
        (EURE_ID, EURE_ID),
        (NBTC_ID, NBTC_ID),
        (WBTC_ID, EURE_ID),
        (EURE_ID, WBTC_ID),
    ],
)
def test_anything_else_has_no_direction(asset_in: str, asset_out: str) -> None:
    assert ActivePair(NBTC_ID).direction_of(asset_in, asset_out) is None


def test_pair_lookup_refuses_assets_outside_the_pair() -> None:
    pair = ActivePair(NBTC_ID)
    with pytest.raises(UnknownAsset, match="not in the active pair"):
        pair.decimals(POA_BTC_ID)
    with pytest.raises(UnknownAsset, match="not in the asset registry"):
        pair.decimals(WBTC_ID)


def test_funding_routes() -> None:
    nbtc_pair = ActivePair(NBTC_ID)
    assert nbtc_pair.funding_chain(EURE_ID) == "eth:100"
    assert nbtc_pair.asset_for_chain("eth:100") == EURE
    with pytest.raises(UnsupportedFundingRoute, match="no funding route supported yet") as exc:
        nbtc_pair.funding_chain(NBTC_ID)
    assert exc.value.asset_id == NBTC_ID
    assert "Omni" in exc.value.reason

    poa_pair = ActivePair(POA_BTC_ID)
    assert poa_pair.funding_chain(POA_BTC_ID) == "btc:mainnet"
    assert poa_pair.asset_for_chain("btc:mainnet").asset_id == POA_BTC_ID


def test_funding_by_chain_refuses_unknown_chains_and_unsupported_btc() -> None:
    with pytest.raises(UnsupportedFundingRoute, match="no funding route supported yet") as exc:
        ActivePair(NBTC_ID).asset_for_chain("btc:mainnet")
    assert exc.value.chain == "btc:mainnet"
    with pytest.raises(UnsupportedFundingRoute, match="'eth:1'") as exc2:
        ActivePair(POA_BTC_ID).asset_for_chain("eth:1")
    assert exc2.value.chain == "eth:1"
    with pytest.raises(UnknownAsset):
        ActivePair(NBTC_ID).funding_chain(WBTC_ID)


# --- units ----------------------------------------------------------------------------------


def test_to_units_is_exact_at_u128_scale() -> None:
    assert to_units(150_000_000, 8) == Decimal("1.5")
    assert str(to_units(150_000_000, 8)) == "1.50000000"
    assert to_units(0, 18) == 0
    assert to_units(-5, 2) == Decimal("-0.05")
    # 39 digits: the default decimal context (28 digits) would round this.
    assert to_units(U128_MAX, 18) == Decimal("340282366920938463463.374607431768211455")
    assert EURE.to_units(10**18) == 1


def test_to_base_units_is_exact_or_refuses() -> None:
    assert to_base_units(Decimal("1.5"), 8) == 150_000_000
    assert to_base_units(Decimal("340282366920938463463.374607431768211455"), 18) == U128_MAX
    assert to_base_units(Decimal("1E+3"), 8) == 100_000_000_000
    assert to_base_units(2, 8) == 200_000_000
    assert to_base_units(Decimal("0.100000000000"), 8) == 10_000_000  # trailing zeros are not precision
    with pytest.raises(InexactAmount):
        to_base_units(Decimal("0.000000001"), 8)
    with pytest.raises(TypeError):
        to_base_units(1.5, 8)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_units(1.5, 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_base_units(Decimal("NaN"), 8)


@pytest.mark.parametrize(
    ("value", "rounding", "expected"),
    [
        ("0.123456789", ROUND_FLOOR, 12_345_678),
        ("0.123456789", ROUND_CEILING, 12_345_679),
        ("0.123456789", ROUND_DOWN, 12_345_678),
        ("0.123456789", ROUND_UP, 12_345_679),
        ("-0.123456789", ROUND_FLOOR, -12_345_679),
        ("-0.123456789", ROUND_CEILING, -12_345_678),
        ("-0.123456789", ROUND_DOWN, -12_345_678),
        ("-0.123456789", ROUND_UP, -12_345_679),
        ("0.12345678", ROUND_CEILING, 12_345_678),  # exact values are never nudged
    ],
)
def test_directed_rounding(value: str, rounding: str, expected: int) -> None:
    assert to_base_units(Decimal(value), 8, rounding=rounding) == expected


def test_only_directed_rounding_is_accepted() -> None:
    with pytest.raises(ValueError, match="rounding"):
        to_base_units(Decimal("0.5"), 0, rounding=ROUND_HALF_UP)


@given(st.integers(min_value=-U128_MAX, max_value=U128_MAX), st.integers(min_value=0, max_value=38))
def test_round_trip(base_units: int, decimals: int) -> None:
    assert to_base_units(to_units(base_units, decimals), decimals) == base_units


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**9), max_value=10**9),
    st.integers(min_value=0, max_value=18),
)
def test_floor_and_ceiling_bracket_the_value(units: Decimal, decimals: int) -> None:
    low = to_base_units(units, decimals, rounding=ROUND_FLOOR)
    high = to_base_units(units, decimals, rounding=ROUND_CEILING)
    assert to_units(low, decimals) <= units <= to_units(high, decimals)
    assert high - low in (0, 1)
