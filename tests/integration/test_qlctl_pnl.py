"""`qlctl report pnl` over events stored the history-writer's way in the real PostgreSQL: four
settled trades at known fair prices on two days, prices after each fill for the markouts, and
inventory snapshots; every figure of the JSON checked exactly, then the table and the CSV.

The trades sit on a random day in the past (their own window for `--since`/`--until`), so the
rows earlier tests and earlier runs left in the shared database cannot mix in.

Timeline (seconds after T0; fair rates EURe per BTC, bid = BUY_BTC, ask = SELL_BTC):

    price p0 t=0     60000 / 60010       decision price of A and B; mid 60005
    A     t=2        SELL_BTC: gives 5000 sat, receives 3.075 EURe
    price p1 t=12    60090 / 60100       A + 10 s
    B     t=20       BUY_BTC: receives 4000 sat, gives 2.34 EURe
    price p2 t=31    59950 / 59960       B + 10 s (A's 10 s window [12, 22) is already taken)
    price p3 t=65    59890 / 59900       A + 1 min
    price p4 t=85    60200 / 60210       B + 1 min
    price p5 t=310   60490 / 60500       A + 5 min
    price p6 t=330   60300 / 60310       B + 5 min; decision price of C
    C     t=400      SELL_BTC: gives 2500 sat, receives 1.6 EURe; no price after it: no markouts
    price p7 T0+1d-1 59000 / 59010       decision price of D
    D     T0+1d      BUY_BTC: receives 5000 sat, gives 2.9 EURe
    price p8 T0+1d+10 58000 / 58010      D + 10 s; nothing after for 1 min and 5 min
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.events import (
    AssetInventory,
    ExecuteTrade,
    IntentInventory,
    MarketPrice,
    Producer,
    TradeDecision,
    TradeResult,
    new_event,
)
from qlctl import pnl
from tests.conftest import Stack
from tests.integration.test_qlctl import qlctl
from tests.integration.test_qlctl_reports import store

SRC = Producer(service="pnl-test", instance="t")
PAIR = "BTC/EURe"
D = Decimal


def at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)


def price(bid: str, ask: str, mid: str | None = None) -> MarketPrice:
    return MarketPrice(
        source="kraken",
        fallback_used=False,
        fair_rate_buy_btc=D(bid),
        fair_rate_sell_btc=D(ask),
        fair_rate_mid=None if mid is None else D(mid),
        source_time=None,
        freshness_ms=100,
        eure_eur_rate=D(1),
        eure_basis="assumed_1_to_1",
        bid=D(bid),
        ask=D(ask),
        mid=None,
        decisionable=True,
    )


def trade(
    t0: datetime, *, direction: str, btc: int, eure: int, fill_s: float, price_event: Any, extra_results: int = 0
) -> tuple[list[Any], str]:
    """Decision (naming its price event), command and result(s) of one settled trade."""
    qid = f"pnl-{uuid.uuid4()}"
    asset_in, asset_out, amount_in, amount_out = (
        (EURE_ID, NBTC_ID, eure, btc) if direction == "SELL_BTC" else (NBTC_ID, EURE_ID, btc, eure)
    )
    decided = at(t0, fill_s - 1.5)
    decision = TradeDecision(
        decision_id=str(uuid.uuid4()),
        quote_id=qid,
        pair=PAIR,
        direction=direction,  # type: ignore[arg-type]
        decision="execute",
        decision_reason="EXECUTE",
        threshold_pct=D("2.0"),
        armed=True,
        price_event_id=price_event.event_id,
        protocol_fee_pips=100,
        amount_in=amount_in,
        amount_out=amount_out,
        reference_rate=D("1"),  # deliberately wrong: the stored price event is what values the trade
        decided_at=decided,
    )
    command = ExecuteTrade(
        command_id=str(uuid.uuid4()),
        decision_id=decision.decision_id,
        quote_id=qid,
        direction=direction,
        asset_in=asset_in,
        asset_out=asset_out,  # type: ignore[arg-type]
        amount_in=amount_in,
        amount_out=amount_out,
        fixed_side="exact_amount_in",
        min_deadline_ms=60_000,
        answer_by=at(t0, fill_s),
    )
    execution = str(uuid.uuid4())
    ack = TradeResult(
        execution_id=execution,
        command_id=command.command_id,
        quote_id=qid,
        status="acknowledged",
        decision_id=decision.decision_id,
        direction=direction,  # type: ignore[arg-type]
        asset_in=asset_in,
        asset_out=asset_out,
        amount_in=amount_in,
        amount_out=amount_out,
    )
    settled = ack.model_copy(update={"status": "settled", "resolved_at": at(t0, fill_s), "resolved_by": "quote_status"})
    events = [
        new_event(decision, producer=SRC, pair=PAIR, occurred_at=decided),
        new_event(command, producer=SRC, pair=PAIR, occurred_at=decided),
        new_event(ack, producer=SRC, pair=PAIR, occurred_at=at(t0, fill_s - 1)),
        *(
            new_event(settled, producer=SRC, pair=PAIR, occurred_at=at(t0, fill_s + 0.1 + i))
            for i in range(1 + extra_results)
        ),
    ]  # a republished result is still one trade
    return events, qid


def snapshot(t0: datetime, seconds: float, sats: int, eure_wei: int) -> Any:
    inv = IntentInventory(
        inventory_id=str(uuid.uuid4()),
        account_id="solver.near",
        assets=[
            AssetInventory(asset_id=NBTC_ID, decimals=8, spendable=sats, credited=sats),
            AssetInventory(
                asset_id=EURE_ID, decimals=18, spendable=eure_wei - 10**18, credited=None, reserved_out=10**18
            ),
        ],
        synced_at=at(t0, seconds),
        age_ms=10,
        stale=False,
    )
    return new_event(inv, producer=SRC, pair=PAIR, occurred_at=at(t0, seconds))


async def scenario(pool: asyncpg.Pool) -> tuple[datetime, dict[str, str]]:
    # a random day in the past at 10:00 UTC, for this run alone
    t0 = datetime(2001, 1, 1, 10, tzinfo=UTC) + timedelta(days=random.randrange(0, 8000))
    day = 86_400
    prices = {
        name: new_event(p, producer=SRC, pair=PAIR, occurred_at=at(t0, s))
        for name, s, p in (
            ("p0", 0, price("60000", "60010", "60005")),
            ("p1", 12, price("60090", "60100")),
            ("p2", 31, price("59950", "59960")),
            ("p3", 65, price("59890", "59900")),
            ("p4", 85, price("60200", "60210")),
            ("p5", 310, price("60490", "60500")),
            ("p6", 330, price("60300", "60310")),
            ("p7", day - 1, price("59000", "59010")),
            ("p8", day + 10, price("58000", "58010")),
            ("p9", 3600 + 590, price("61000", "61010", "61005")),
        )
    }
    a, qa = trade(
        t0, direction="SELL_BTC", btc=5000, eure=3075 * 10**15, fill_s=2, price_event=prices["p0"], extra_results=1
    )
    b, qb = trade(t0, direction="BUY_BTC", btc=4000, eure=234 * 10**16, fill_s=20, price_event=prices["p0"])
    c, qc = trade(t0, direction="SELL_BTC", btc=2500, eure=16 * 10**17, fill_s=400, price_event=prices["p6"])
    d, qd = trade(t0, direction="BUY_BTC", btc=5000, eure=29 * 10**17, fill_s=day, price_event=prices["p7"])
    # inventory: two snapshots in the first hour (the later one counts), one in the second with a
    # price 10 s before it, one in the third with no price in the 5 minutes before it
    snapshots = [
        snapshot(t0, 5, 5_000_000, 100 * 10**18),
        snapshot(t0, 50, 4_995_000, 103_075 * 10**15),
        snapshot(t0, 3600 + 600, 4_992_500, 104_675 * 10**15),
        snapshot(t0, 7200 + 60, 4_992_500, 104_675 * 10**15),
    ]
    # an answer that never settled is no trade
    unsettled, _ = trade(t0, direction="SELL_BTC", btc=7000, eure=5 * 10**18, fill_s=40, price_event=prices["p0"])
    await store(pool, [*prices.values(), *a, *b, *c, *d, *snapshots, *unsettled[:3]])
    return t0, {
        "A": qa,
        "B": qb,
        "C": qc,
        "D": qd,
        "p0": str(prices["p0"].event_id),
        "p6": str(prices["p6"].event_id),
        "p7": str(prices["p7"].event_id),
    }


def money(value: Any) -> Decimal | None:
    assert value is None or (isinstance(value, str) and "e" not in value.lower()), value  # plain strings
    return None if value is None else D(value)


def exact_pct(edge: str, given: str) -> Decimal:
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = 80
        return D(edge) / D(given) * 100


# what each trade must show: given and received, fair rate, values, edge, markouts (EURe)
EXPECTED: dict[str, dict[str, Any]] = {
    # 0.00005 BTC at the ask 60010 = 3.0005 given, 3.075 received; later asks 60100, 59900, 60500
    "A": dict(
        direction="SELL_BTC",
        gave_asset="BTC",
        gave_amount="0.00005",
        received_asset="EURe",
        received_amount="3.075",
        fair_rate="60010",
        given_value_eure="3.0005",
        received_value_eure="3.075",
        edge_eure="0.0745",
        markout_10s_eure="0.07",
        markout_10s_rate="60100",
        markout_1m_eure="0.08",
        markout_1m_rate="59900",
        markout_5m_eure="0.05",
        markout_5m_rate="60500",
    ),
    # 0.00004 BTC at the bid 60000 = 2.4 received for 2.34 given; later bids 59950, 60200, 60300
    "B": dict(
        direction="BUY_BTC",
        gave_asset="EURe",
        gave_amount="2.34",
        received_asset="BTC",
        received_amount="0.00004",
        fair_rate="60000",
        given_value_eure="2.34",
        received_value_eure="2.4",
        edge_eure="0.06",
        markout_10s_eure="0.058",
        markout_10s_rate="59950",
        markout_1m_eure="0.068",
        markout_1m_rate="60200",
        markout_5m_eure="0.072",
        markout_5m_rate="60300",
    ),
    # 0.000025 BTC at the ask 60310 = 1.50775 given for 1.6; no price after the fill
    "C": dict(
        direction="SELL_BTC",
        gave_asset="BTC",
        gave_amount="0.000025",
        received_asset="EURe",
        received_amount="1.6",
        fair_rate="60310",
        given_value_eure="1.50775",
        received_value_eure="1.6",
        edge_eure="0.09225",
        markout_10s_eure=None,
        markout_10s_rate=None,
        markout_1m_eure=None,
        markout_1m_rate=None,
        markout_5m_eure=None,
        markout_5m_rate=None,
    ),
    # 0.00005 BTC at the bid 59000 = 2.95 received for 2.9; 10 s later the bid is 58000: worth 0
    "D": dict(
        direction="BUY_BTC",
        gave_asset="EURe",
        gave_amount="2.9",
        received_asset="BTC",
        received_amount="0.00005",
        fair_rate="59000",
        given_value_eure="2.9",
        received_value_eure="2.95",
        edge_eure="0.05",
        markout_10s_eure="0",
        markout_10s_rate="58000",
        markout_1m_eure=None,
        markout_1m_rate=None,
        markout_5m_eure=None,
        markout_5m_rate=None,
    ),
}
FILLED = {"A": 2, "B": 20, "C": 400, "D": 86_400}
PRICE_OF = {"A": "p0", "B": "p0", "C": "p6", "D": "p7"}


async def test_pnl_of_settled_trades_every_figure(
    stack: Stack, control_dir: Path, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    t0, ids = await scenario(pool)
    window = ("--since", t0.isoformat(), "--until", (t0 + timedelta(days=2)).isoformat())
    code, out, err = await qlctl(stack, control_dir, "report", "pnl", *window, "--json")
    assert code == 0, err
    report = orjson.loads(out)
    trades = {t["quote_id"]: t for t in report["trades"]}
    assert list(trades) == [ids["A"], ids["B"], ids["C"], ids["D"]]  # by fill time; unsettled left out

    for name, want in EXPECTED.items():
        t = trades[ids[name]]
        assert t["filled_at"].startswith(at(t0, FILLED[name]).strftime("%Y-%m-%dT%H:%M:%S")), name
        assert t["price_event_id"] == ids[PRICE_OF[name]]
        for key, value in want.items():
            if key in ("direction", "gave_asset", "received_asset"):
                assert t[key] == value, (name, key)
            else:
                assert money(t[key]) == (None if value is None else D(value)), (name, key, t[key], value)
        assert money(t["edge_pct"]) == exact_pct(want["edge_eure"], want["given_value_eure"]), name
        # the fee quoteloop pays is 0 by the venue's rules; the verifier's rate is shown beside it
        assert t["fee_pips"] == 100 and money(t["fee_eure"]) == 0 and money(t["net_eure"]) == D(want["edge_eure"])

    day0, day1 = t0.date().isoformat(), (t0 + timedelta(days=1)).date().isoformat()
    totals = {(r["day"], r["direction"]): r for r in report["totals"]}
    assert list(totals) == [(day0, "BUY_BTC"), (day0, "SELL_BTC"), (day1, "BUY_BTC")]
    sell = totals[(day0, "SELL_BTC")]
    assert sell["trades"] == 2 and sell["edge_n"] == 2
    assert {k: D(v) for k, v in sell["gave"].items()} == {"BTC": D("0.000075")}
    assert {k: D(v) for k, v in sell["received"].items()} == {"EURe": D("4.675")}
    assert (
        money(sell["given_value_eure"]),
        money(sell["edge_eure"]),
        money(sell["fee_eure"]),
        money(sell["net_eure"]),
    ) == (D("4.50825"), D("0.16675"), 0, D("0.16675"))
    # C has no markouts yet: each sum covers A alone, and says so
    assert [(money(sell[f"markout_{h}_eure"]), sell[f"markout_{h}_n"]) for h in ("10s", "1m", "5m")] == [
        (D("0.07"), 1),
        (D("0.08"), 1),
        (D("0.05"), 1),
    ]
    buy0 = totals[(day0, "BUY_BTC")]
    assert buy0["trades"] == 1 and {k: D(v) for k, v in buy0["gave"].items()} == {"EURe": D("2.34")}
    assert {k: D(v) for k, v in buy0["received"].items()} == {"BTC": D("0.00004")}
    assert money(buy0["edge_eure"]) == D("0.06")
    assert [money(buy0[f"markout_{h}_eure"]) for h in ("10s", "1m", "5m")] == [D("0.058"), D("0.068"), D("0.072")]
    buy1 = totals[(day1, "BUY_BTC")]
    assert buy1["trades"] == 1 and money(buy1["edge_eure"]) == D("0.05")
    assert [(money(buy1[f"markout_{h}_eure"]), buy1[f"markout_{h}_n"]) for h in ("10s", "1m", "5m")] == [
        (D(0), 1),
        (None, 0),
        (None, 0),
    ]
    total = report["total"]
    assert total["day"] is None and total["direction"] is None and total["trades"] == 4
    assert money(total["edge_eure"]) == D("0.27675") and money(total["net_eure"]) == D("0.27675")
    assert money(total["given_value_eure"]) == D("9.74825")
    assert [(money(total[f"markout_{h}_eure"]), total[f"markout_{h}_n"]) for h in ("10s", "1m", "5m")] == [
        (D("0.128"), 3),
        (D("0.148"), 2),
        (D("0.122"), 2),
    ]

    # the monitor's line (qlctl tui): the trades settled since midnight UTC, D alone on day 1
    today = await pnl.today(pool, t0 + timedelta(days=1, hours=1))
    assert (today.day, today.trades, today.edge_eure, today.net_eure) == (
        (t0 + timedelta(days=1)).date(),
        1,
        D("0.05"),
        D("0.05"),
    )
    assert (today.markout_10s_eure, today.markout_10s_n, today.markout_1m_eure) == (D(0), 1, None)

    # inventory: one line per hour, the hour's last snapshot at the fair mid of the time
    inventory = report["inventory"]
    assert [
        (money(v["btc"]), money(v["eure"]), money(v["mid_rate"]), money(v["value_eure"]), money(v["change_eure"]))
        for v in inventory
    ] == [
        # 0.04995 BTC at (59950 + 59960) / 2 = 59955 (p2, the latest before t=50) + 103.075 EURe
        (D("0.04995"), D("103.075"), D("59955"), D("3097.82725"), None),
        # 0.049925 BTC at the stated mid 61005 (p9) + 104.675 EURe
        (D("0.049925"), D("104.675"), D("61005"), D("3150.349625"), D("52.522375")),
        # no price in the 5 minutes before it: not valued
        (D("0.049925"), D("104.675"), None, None, None),
    ]
    assert [v["at"][11:19] for v in inventory] == ["10:00:50", "11:10:00", "12:01:00"]

    # the table: the same figures for people, and the CSV: the same rows, exact
    target = tmp_path / "pnl.csv"
    code, table, err = await qlctl(stack, control_dir, "report", "pnl", *window, "--csv", str(target))
    assert code == 0, err
    assert ids["A"] in table and "0.0745" in table and "0.1668" in table and "3097.8273" in table
    assert "docs/verifier.md §8" in table and f"wrote 4 trades to {target}" in table
    with target.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["quote_id"] for r in rows] == [ids["A"], ids["B"], ids["C"], ids["D"]]
    for r in rows:
        t = trades[r["quote_id"]]
        assert {k: ("" if v is None else str(v)) for k, v in t.items()} == r


async def test_bad_arguments_are_one_line_errors(stack: Stack, control_dir: Path) -> None:
    code, _, err = await qlctl(stack, control_dir, "report", "pnl", "--since", "yesterday")
    assert code == 2 and "bad time 'yesterday'" in err
    code, _, err = await qlctl(stack, control_dir, "report", "pnl", "--since", "2026-01-02", "--until", "2026-01-01")
    assert code == 2 and "must be after --since" in err
    code, _, err = await qlctl(stack, control_dir, "report", "pnl", "--every", "0h")
    assert code == 2 and "--every" in err
    code, out, err = await qlctl(stack, control_dir, "report", "pnl", "--since", "1h", "--json")
    assert code == 0, err
    assert orjson.loads(out)["fee_rule"].startswith("protocol fee paid by quoteloop: 0")
