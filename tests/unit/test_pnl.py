"""The P&L computation of `qlctl report pnl` (qlctl/pnl.py), pure: settled trades and inventory
points in, exact Decimal figures out. tests/integration/test_qlctl_pnl.py runs the same through
PostgreSQL and the command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID
from daemons.core.edge import gross_edge_pct
from qlctl import pnl

D = Decimal
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def mark(seconds: float, bid: str, ask: str, mid: str | None = None) -> pnl.PriceMark:
    return pnl.PriceMark(
        at=T0 + timedelta(seconds=seconds),
        fair_rate_buy_btc=D(bid),
        fair_rate_sell_btc=D(ask),
        fair_rate_mid=None if mid is None else D(mid),
    )


def sell(**kw: object) -> pnl.SettledTrade:
    """quoteloop gives 5000 sat for 3.075 EURe at an ask of 60010."""
    fields: dict[str, object] = dict(
        quote_id="qa",
        command_id="ca",
        direction="SELL_BTC",
        asset_in=EURE_ID,
        amount_in=3075 * 10**15,
        asset_out=NBTC_ID,
        amount_out=5000,
        filled_at=T0,
        price_event_id="p0",
        decision_price=mark(-1, "60000", "60010"),
        fee_pips=100,
        later={"10s": mark(10, "60090", "60100"), "1m": mark(61, "59890", "59900"), "5m": None},
    )
    fields.update(kw)
    return pnl.SettledTrade(**fields)  # type: ignore[arg-type]


def buy(**kw: object) -> pnl.SettledTrade:
    """quoteloop gives 2.34 EURe for 4000 sat at a bid of 60000."""
    fields: dict[str, object] = dict(
        quote_id="qb",
        command_id="cb",
        direction="BUY_BTC",
        asset_in=NBTC_ID,
        amount_in=4000,
        asset_out=EURE_ID,
        amount_out=234 * 10**16,
        filled_at=T0 + timedelta(seconds=20),
        decision_price=mark(-1, "60000", "60010"),
        later={"10s": mark(30, "59950", "59960"), "1m": mark(85, "60200", "60210"), "5m": mark(330, "60300", "0")},
    )
    fields.update(kw)
    return pnl.SettledTrade(**fields)  # type: ignore[arg-type]


def test_a_sell_valued_at_the_ask_with_markouts_and_no_fee() -> None:
    t = pnl.trade_pnl(sell())
    assert (t.gave_asset, t.gave_amount, t.received_asset, t.received_amount) == (
        "BTC",
        D("0.00005"),
        "EURe",
        D("3.075"),
    )
    assert (t.fair_rate, t.given_value_eure, t.received_value_eure, t.edge_eure) == (
        D("60010"),
        D("3.0005"),
        D("3.075"),
        D("0.0745"),
    )
    # the edge in percent is the strategy's own definition (daemons/core/edge.py)
    assert t.edge_pct == gross_edge_pct("SELL_BTC", 5000, 3075 * 10**15, D("60010"), 8, 18)
    assert (t.fee_pips, t.fee_eure, t.net_eure) == (100, 0, D("0.0745"))
    # 10 s: ask 60100 -> 3.075 - 3.005; 1 min: ask 59900 -> 3.075 - 2.995; 5 min: no price yet
    assert (t.markout_10s_eure, t.markout_1m_eure, t.markout_5m_eure) == (D("0.07"), D("0.08"), None)
    assert (t.markout_10s_rate, t.markout_1m_rate, t.markout_5m_rate) == (D("60100"), D("59900"), None)


def test_a_buy_valued_at_the_bid() -> None:
    t = pnl.trade_pnl(buy())
    assert (t.gave_amount, t.received_amount, t.fair_rate) == (D("2.34"), D("0.00004"), D("60000"))
    assert (t.given_value_eure, t.received_value_eure, t.edge_eure) == (D("2.34"), D("2.4"), D("0.06"))
    # the bids later: 59950, 60200, 60300 (the ask of 0 in the 5 min price is not the one used)
    assert (t.markout_10s_eure, t.markout_1m_eure, t.markout_5m_eure) == (D("0.058"), D("0.068"), D("0.072"))


def test_without_its_price_event_the_decisions_reference_rate_values_it() -> None:
    t = pnl.trade_pnl(sell(decision_price=None, reference_rate=D("60000")))
    assert (t.fair_rate, t.edge_eure) == (D("60000"), D("0.075"))
    blank = pnl.trade_pnl(sell(decision_price=None, reference_rate=None, later=None))
    assert (blank.edge_eure, blank.edge_pct, blank.net_eure, blank.markout_10s_eure) == (None, None, None, None)
    assert blank.fee_eure == 0 and blank.gave_amount == D("0.00005")


def test_poa_btc_is_btc_and_an_unknown_asset_is_not_valued() -> None:
    assert pnl.trade_pnl(sell(asset_out=POA_BTC_ID)).edge_eure == D("0.0745")
    other = pnl.trade_pnl(sell(asset_in="nep141:usdt.tether-token.near"))
    assert other.received_amount is None and other.edge_eure is None and other.markout_10s_eure is None


def test_totals_per_day_and_direction_say_what_each_sum_covers() -> None:
    late = sell(
        quote_id="qc",
        command_id="cc",
        amount_out=2500,
        amount_in=16 * 10**17,
        filled_at=T0 + timedelta(minutes=7),
        decision_price=mark(300, "60300", "60310"),
        later=None,
    )
    next_day = buy(quote_id="qd", command_id="cd", filled_at=T0 + timedelta(days=1), later=None)
    report = pnl.report([next_day, late, buy(), sell()], [], T0, T0 + timedelta(days=2))
    assert [t.quote_id for t in report.trades] == ["qa", "qb", "qc", "qd"]
    assert [(t.day, t.direction, t.trades) for t in report.totals] == [
        (T0.date(), "BUY_BTC", 1),
        (T0.date(), "SELL_BTC", 2),
        ((T0 + timedelta(days=1)).date(), "BUY_BTC", 1),
    ]
    s = report.totals[1]
    assert s.gave == {"BTC": D("0.000075")} and s.received == {"EURe": D("4.675")}
    # 0.0745 + (1.6 - 0.000025 * 60310 = 0.09225)
    assert (s.given_value_eure, s.edge_eure, s.edge_n, s.net_eure) == (D("4.50825"), D("0.16675"), 2, D("0.16675"))
    assert (s.markout_10s_eure, s.markout_10s_n, s.markout_5m_eure, s.markout_5m_n) == (D("0.07"), 1, None, 0)
    assert report.total.trades == 4 and report.total.edge_eure == D("0.0745") + D("0.06") + D("0.09225") + D("0.06")
    assert (report.total.markout_10s_eure, report.total.markout_10s_n) == (D("0.128"), 2)
    assert report.fee_rule.startswith("protocol fee paid by quoteloop: 0") and "docs/verifier.md §8" in report.fee_rule


def test_inventory_value_at_the_mid_of_the_time() -> None:
    points = [
        pnl.InventoryPoint(
            at=T0,
            inventory_id="i1",
            balances={NBTC_ID: 4_995_000, EURE_ID: 103_075 * 10**15},
            price=mark(-19, "59950", "59960"),
        ),
        pnl.InventoryPoint(
            at=T0 + timedelta(hours=1),
            inventory_id="i2",
            balances={NBTC_ID: 4_992_500, EURE_ID: 104_675 * 10**15, "nep141:other.near": 7},
            price=mark(3590, "61000", "61010", "61005"),
        ),
        pnl.InventoryPoint(at=T0 + timedelta(hours=2), inventory_id="i3", balances={}, stale=True),
    ]
    values = pnl.inventory_values(list(reversed(points)))
    assert [(v.inventory_id, v.btc, v.eure, v.mid_rate, v.value_eure, v.change_eure, v.stale) for v in values] == [
        ("i1", D("0.04995"), D("103.075"), D("59955"), D("3097.82725"), None, False),
        ("i2", D("0.049925"), D("104.675"), D("61005"), D("3150.349625"), D("52.522375"), False),
        ("i3", 0, 0, None, None, None, True),
    ]


def test_json_money_is_plain_exact_strings() -> None:
    assert [pnl.plain(D(x)) for x in ("0.000050", "5E-8", "3.0005000", "100", "-0.0700", "0E-10")] == [
        "0.00005",
        "0.00000005",
        "3.0005",
        "100",
        "-0.07",
        "0",
    ]
    data = pnl.trade_pnl(sell()).model_dump(mode="json")
    assert data["gave_amount"] == "0.00005" and data["edge_eure"] == "0.0745" and data["markout_5m_eure"] is None
    assert data["fee_eure"] == "0" and data["fee_pips"] == 100


def test_settled_trade_from_a_row_takes_the_results_amounts_then_the_commands() -> None:
    row = {
        "quote_id": "q",
        "command_id": "c",
        "filled_at": T0,
        "price_event_id": None,
        "result": {"status": "settled", "direction": "SELL_BTC", "amount_in": "3075000000000000000"},
        "command": {
            "direction": "SELL_BTC",
            "asset_in": EURE_ID,
            "asset_out": NBTC_ID,
            "amount_in": "1",
            "amount_out": "5000",
            "decision_id": "d",
        },
        "decision": {"protocol_fee_pips": 100, "reference_rate": "60010"},
        "price_at": None,
        "price": None,
        **{f"m{h}_at": None for h, _ in pnl.HORIZONS},
        **{f"m{h}": None for h, _ in pnl.HORIZONS},
    }
    t = pnl.settled_trade(row)
    assert t is not None and (t.amount_in, t.amount_out, t.decision_id, t.fee_pips) == (3075 * 10**15, 5000, "d", 100)
    assert pnl.trade_pnl(t).edge_eure == D("0.0745")
    assert pnl.settled_trade({**row, "result": {}, "command": {}}) is None


@pytest.mark.parametrize("label", [label for label, _ in pnl.HORIZONS])
def test_a_markout_at_the_decisions_own_price_is_the_edge(label: str) -> None:
    for t in (sell(), buy()):
        same = pnl.trade_pnl(t.__class__(**{**t.__dict__, "later": {label: t.decision_price}}))
        assert same.markout(label) == same.edge_eure
