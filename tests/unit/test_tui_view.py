"""The TUI's pure core: display rows from daemon states, and the plans behind the control keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE_ID, NBTC_ID, to_base_units
from qlctl.client import SERVICES
from qlctl.tui import view
from qlctl.tui.plans import Plan, Refusal, missing_input, plan, request_body

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def iso(delta_ms: int) -> str:
    return (NOW + timedelta(milliseconds=delta_ms)).isoformat()


def texts(cells: list[Any]) -> list[str]:
    return [c.plain for c in cells]


def running(**extra: Any) -> dict[str, Any]:
    return {"running": True, "healthy": True, "reasons": [], "paused": False, "draining": False, **extra}


# --- scalars --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (999, "999 ms"),
        (1000, "1.0 s"),
        (12_345, "12.3 s"),
        (59_999, "59.9 s"),
        (60_000, "1 min"),
        (3_599_999, "59 min"),
        (3_600_000, "1 h 0 min"),
        (7_500_000, "2 h 5 min"),
        (-1500, "-1.5 s"),
        (None, "-"),
        ("12", "-"),
        (True, "-"),
        (1.5, "1 ms"),
    ],
)
def test_durations(ms: Any, text: str) -> None:
    assert view.fmt_ms(ms) == text


def test_ages_and_deadlines() -> None:
    assert view.ago(iso(-2500), NOW) == "2.5 s ago"
    assert view.until(iso(30_000), NOW) == "in 30.0 s"
    assert view.until(iso(-1000), NOW) == "passed 1.0 s ago"
    assert view.ago("not a time", NOW) == "-" and view.ago(None, NOW) == "-"
    assert view.ago("2026-11-24T12:00:00", NOW) == "-"  # naive: no guessing the zone
    assert view.clock("2026-11-24T10:11:12.345678Z") == "10:11:12.345"


@pytest.mark.parametrize(
    ("base", "asset", "decimals", "text"),
    [
        ("1", NBTC_ID, None, "0.00000001 BTC"),
        (5000, NBTC_ID, None, "0.00005 BTC"),
        (str(3 * 10**18), EURE_ID, None, "3 EURe"),
        ("1234500000000000000000", EURE_ID, None, "1234.5 EURe"),
        ("0", EURE_ID, None, "0 EURe"),
        ("340282366920938463463374607431768211455", EURE_ID, None, "340282366920938463463.374607431768211455 EURe"),
        ("150", "nep141:other.near", 2, "1.5 other.near"),
        ("150", "nep141:other.near", None, "150 base units"),
        (None, EURE_ID, None, "-"),
        ("abc", EURE_ID, None, "-"),
        ("1.5", EURE_ID, None, "1.5 (base units?)"),
    ],
)
def test_amounts_are_exact_units(base: Any, asset: str, decimals: int | None, text: str) -> None:
    assert view.amount(base, asset, decimals) == text


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_amount_round_trips_exactly(base: int) -> None:
    shown = view.amount(str(base), EURE_ID).removesuffix(" EURe")
    assert to_base_units(Decimal(shown), 18) == base  # exact: no decimal context in the way


# --- daemon table and alerts ---------------------------------------------------------------------


def test_daemon_rows_cover_every_service_in_order_and_absent_ones_say_so() -> None:
    rows = view.daemon_rows({"history-writer": running()}, NOW)
    assert [s for s, _ in rows] == list(SERVICES)
    by = {s: texts(cells) for s, cells in rows}
    assert by["strategy-engine"][1] == "NOT RUNNING" and by["strategy-engine"][-1] == ""
    assert by["history-writer"][1:4] == ["yes", "ok", "running"]
    assert all(len(c) == len(view.DAEMON_COLUMNS) for c in by.values())


def test_daemon_row_details() -> None:
    st = running(
        healthy=False,
        reasons=["no_price", "inventory_stale"],
        paused=True,
        pause_effective=True,
        armed=True,
        connected={"kafka": True, "relay": False, "bridge": {"eth:100": True}},
        authoritative=False,
        last_success_at=iso(-3000),
        blocked_reason="price stale",
    )
    row = texts(view.daemon_row("strategy-engine", st, NOW))
    assert row == [
        "strategy-engine",
        "yes",
        "UNHEALTHY: no_price",
        "paused",
        "ARMED",
        "kafka✓ relay✗ bridge✓",
        "STALE",
        "3.0 s ago",
        "price stale",
    ]
    assert texts(view.daemon_row("history-writer", running(draining=True, paused=True), NOW))[3] == "draining"
    assert texts(view.daemon_row("history-writer", running(), NOW))[4] == ""  # no arm switch
    assert texts(view.daemon_row("trade-executor", running(), NOW))[4] == "-"  # armable, state not reported
    refused = texts(view.daemon_row("x", {"running": False, "error": "permission denied on /s: join quoteloop"}, NOW))
    assert refused[1] == "NOT RUNNING" and refused[-1].startswith("permission denied")


def test_alerts_put_unhealthy_reasons_first_and_name_held_states() -> None:
    states = {
        "history-writer": running(paused=True, dead_letters=2),
        "strategy-engine": running(healthy=False, reasons=["no_price"]),
        "liquidity-manager": running(withdrawals_frozen=True),
        # `results` counts every result ever; only the live answers say what is uncertain now
        "trade-executor": running(
            results={"uncertain": 3}, live_answers=[{"state": "uncertain"}, {"state": "acknowledged"}]
        ),
        "inventory-sync": {"running": False, "error": "inventory-sync did not answer within 2 s on /x"},
    }
    got = [(a.level, a.source, a.text) for a in view.alerts(states, db_error="PostgreSQL is not reachable")]
    assert got[:2] == [
        ("bad", "strategy-engine", "no_price"),
        ("bad", "trade-executor", "1 live answers with an uncertain outcome"),
    ]
    assert ("warn", "history-writer", "paused: taking no new work") in got
    assert ("warn", "history-writer", "2 undecodable deliveries dead-lettered") in got
    assert ("warn", "liquidity-manager", "withdrawals frozen") in got
    assert ("warn", "inventory-sync", "inventory-sync did not answer within 2 s on /x") in got
    assert ("warn", "near-intents-ingest", "not running") in got
    assert got[-1] == ("warn", "postgresql", "PostgreSQL is not reachable")


def test_outcomes_the_chain_cannot_decide_are_alerts_and_marked_in_the_answers() -> None:
    states = {
        "trade-executor": running(
            undecided=["c1"],
            live_answers=[
                {"command_id": "c1", "quote_id": "q1", "state": "uncertain", "asset_id": "x", "reserved": "1"}
            ],
        ),
        "liquidity-manager": running(withdrawals={"undecided": ["w1", "w2"]}),
    }
    got = [(a.level, a.source, a.text) for a in view.alerts(states, db_error=None)]
    assert (
        "bad",
        "trade-executor",
        "1 answers the chain cannot decide: holds kept until `qlctl resolve answer`",
    ) in got
    assert (
        "bad",
        "liquidity-manager",
        "2 withdrawals the chain cannot decide: new ones refused unless confirmed",
    ) in got
    [row] = view.answer_rows(states, NOW)
    assert texts(row)[3] == "undecided"


# --- panels ---------------------------------------------------------------------------------------


def test_prices_show_fair_rates_sources_and_freshness() -> None:
    states = {
        "market-reference-ingest": running(
            decisionable=False,
            blocked_reason="SOURCE_CONFLICT",
            source="kraken",
            fallback_in_use=False,
            price={"fair_rate_buy_btc": "59990.5", "fair_rate_sell_btc": "60010", "freshness_ms": 250},
            kraken={"latest": {"bid": "59990.5", "ask": "60010", "age_ms": 250}, "fresh": True, "state": "ok"},
            coingecko={"latest": {"btc_eur": "60100", "age_ms": 70_000}, "fresh": False, "state": "stale"},
            eure={"rate": "1", "basis": "assumed_1_to_1"},
        ),
        "strategy-engine": running(inputs={"price": {"age_ms": 6000, "stale": True, "decisionable": True}}),
    }
    rows = {r[0]: r[1:] for r in map(texts, view.price_rows(states, NOW))}
    assert rows["fair BUY_BTC (bid)"] == ["59990.5", "STALE 250 ms", "kraken"]
    assert rows["status"][0] == "NOT decisionable: SOURCE_CONFLICT"
    assert rows["Kraken bid / ask"][:2] == ["59990.5 / 60010", "250 ms"]
    assert rows["CoinGecko BTC/EUR"][:2] == ["60100", "STALE 1 min"]
    assert rows["EURe/EUR"] == ["1", "", "assumed_1_to_1"]
    assert rows["strategy sees"][:2] == ["NOT usable", "STALE 6.0 s"]
    absent = texts(view.price_rows({}, NOW)[0])
    assert absent[:2] == ["market-reference-ingest", "not running"]


def test_inventory_joins_the_snapshot_with_both_reservations() -> None:
    states = {
        "inventory-sync": running(
            stale=False,
            age_ms=1200,
            inventory=[
                {
                    "asset_id": NBTC_ID,
                    "decimals": 8,
                    "credited": "100000",
                    "spendable": "90000",
                    "pending_in": "0",
                    "pending_out": "10000",
                },
                {
                    "asset_id": EURE_ID,
                    "decimals": 18,
                    "credited": str(10**20),
                    "spendable": str(10**20),
                    "pending_in": str(5 * 10**18),
                    "pending_out": "0",
                },
            ],
        ),
        "strategy-engine": running(reserved={EURE_ID: str(3 * 10**18)}),
        "trade-executor": running(reserved={EURE_ID: str(2 * 10**18), "nep141:x.near": "7"}),
    }
    rows = [texts(r) for r in view.inventory_rows(states, NOW)]
    assert rows[0] == ["BTC", "0.001 BTC", "0.0009 BTC", "0 BTC", "0.0001 BTC", "0 BTC", "0 BTC"]
    assert rows[1] == ["EURe", "100 EURe", "100 EURe", "5 EURe", "0 EURe", "3 EURe", "2 EURe"]
    assert rows[2][0] == "x.near" and rows[2][6] == "7 base units"
    assert rows[3][:3] == ["snapshot", "fresh", "age 1.2 s"]
    stale = running(stale=True, stale_reason="verifier unreachable", inventory=[])
    assert texts(view.inventory_rows({"inventory-sync": stale}, NOW)[-1])[1] == "STALE: verifier unreachable"


def test_live_answers_and_reservations() -> None:
    states = {
        "trade-executor": running(
            live_answers=[
                {
                    "command_id": "c0ffee00-1111",
                    "quote_id": "q-1234567890abcdef",
                    "state": "uncertain",
                    "asset_id": NBTC_ID,
                    "reserved": "5000",
                    "deadline": iso(45_000),
                    "cancel_requested": False,
                }
            ]
        ),
        "strategy-engine": running(
            reservations=[
                {
                    "command_id": "abcdef01-2222",
                    "quote_id": "q2",
                    "asset_id": EURE_ID,
                    "amount": str(10**18),
                    "expires_at": iso(10_000),
                    "settled_at": None,
                }
            ]
        ),
    }
    rows = [texts(r) for r in view.answer_rows(states, NOW)]
    assert rows == [
        ["executor", "c0ffee00…", "q-1234567890…", "uncertain", "0.00005 BTC", "in 45.0 s"],
        ["strategy", "abcdef01…", "q2", "reserved", "1 EURe", "in 10.0 s"],
    ]
    assert texts(view.answer_rows({}, NOW)[0])[-1] == "(strategy-engine, trade-executor not running)"


def test_funding_live_from_the_manager_or_from_postgresql_when_it_is_away() -> None:
    lm = running(
        deposit_addresses=[{"chain": "eth:100", "asset_ids": [EURE_ID], "address": "0xabc"}],
        funding={
            "pending": [
                {
                    "liquidity_action_id": "la-123456789",
                    "asset_id": EURE_ID,
                    "amount": str(25 * 10**18),
                    "status": "delayed",
                    "recorded_at": iso(-120_000),
                }
            ]
        },
        withdrawals={
            "in_flight": [
                {
                    "liquidity_action_id": "w-1",
                    "asset_id": NBTC_ID,
                    "net_amount": "1000",
                    "status": "burned",
                    "requested_at": iso(-5000),
                }
            ]
        },
        withdrawals_frozen=True,
    )
    rows = [texts(r) for r in view.funding_rows({"liquidity-manager": lm}, NOW)]
    assert rows[0] == ["deposit address", "eth:100", "EURe", "", "", "0xabc"]
    assert rows[1] == ["funding in", "la-12345…", "EURe", "25 EURe", "delayed", "recorded 2 min ago"]
    assert rows[2] == ["withdrawal out", "w-1", "BTC", "0.00001 BTC", "burned", "requested 5.0 s ago"]
    assert rows[3][4] == "FROZEN"
    db = [
        {
            "kind": "funding",
            "liquidity_action_id": "la-9",
            "asset_id": EURE_ID,
            "amount": "10",
            "status": "notified",
            "status_at": NOW - timedelta(seconds=3),
        }
    ]
    away = [texts(r) for r in view.funding_rows({}, NOW, db)]
    assert away[0][4] == "not running" and away[1] == [
        "funding (db)",
        "la-9",
        "EURe",
        "0.00000000000000001 EURe",
        "notified",
        "since 3.0 s ago",
    ]


def test_decision_rows() -> None:
    rows = view.decision_rows(
        [
            {
                "decided_at": NOW,
                "quote_id": "q1",
                "direction": "BUY_BTC",
                "decision": "reject",
                "decision_reason": "PRICE_STALE",
                "decision_detail": "6000 ms > 5000 ms",
                "gross_edge_pct": None,
            },
            {
                "decided_at": NOW,
                "quote_id": "q2",
                "direction": "SELL_BTC",
                "decision": "execute",
                "decision_reason": "EXECUTE",
                "gross_edge_pct": Decimal("2.51"),
                "result_status": "acknowledged",
            },
        ]
    )
    assert [texts(r) for r in rows] == [
        ["12:00:00.000", "BUY_BTC", "reject", "PRICE_STALE (6000 ms > 5000 ms)", "-", "", "q1"],
        ["12:00:00.000", "SELL_BTC", "EXECUTE", "EXECUTE", "2.51", "acknowledged", "q2"],
    ]


@pytest.mark.parametrize(
    ("edge", "text"),
    [
        ("2.5000012345", "2.500"),
        ("2.5", "2.5"),
        (Decimal("-0.0004"), "-0.000"),
        ("12.3456", "12.346"),
        (None, "-"),
        ("NaN", "-"),
        ("Infinity", "-"),
        (1.5, "-"),
    ],
)
def test_edge_is_shown_to_three_places(edge: Any, text: str) -> None:
    assert view.edge_text(edge) == text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from([iso(0), EURE_ID, NBTC_ID]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "running",
                    "healthy",
                    "reasons",
                    "paused",
                    "armed",
                    "connected",
                    "inventory",
                    "reserved",
                    "live_answers",
                    "reservations",
                    "price",
                    "kraken",
                    "latest",
                    "inputs",
                    "funding",
                    "pending",
                    "asset_id",
                    "amount",
                    "deadline",
                    "stale",
                    "deposit_addresses",
                    "withdrawals",
                    "in_flight",
                    "decisionable",
                    "results",
                    "dead_letters",
                    "limits",
                    "signer",
                    "error",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(SERVICES),
        st.dictionaries(st.text(max_size=12), JSON, max_size=6) | JSON.filter(lambda v: isinstance(v, dict)),
        max_size=7,
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(["decision", "decision_reason", "gross_edge_pct", "quote_id", "decided_at"]),
            JSON,
            max_size=5,
        ),
        max_size=3,
    ),
)
def test_any_shape_of_state_renders_without_raising(states: dict[str, Any], decisions: list[dict[str, Any]]) -> None:
    for rows, width in (
        (view.price_rows(states, NOW), len(view.PRICE_COLUMNS)),
        (view.inventory_rows(states, NOW), len(view.INVENTORY_COLUMNS)),
        (view.answer_rows(states, NOW), len(view.ANSWER_COLUMNS)),
        (view.funding_rows(states, NOW), len(view.FUNDING_COLUMNS)),
        (view.decision_rows(decisions), len(view.DECISION_COLUMNS)),
        ([c for _, c in view.daemon_rows(states, NOW)], len(view.DAEMON_COLUMNS)),
    ):
        assert all(len(r) == width for r in rows)
    view.alerts(states)
    for action in ("pause", "resume", "arm", "disarm"):
        for service in SERVICES:
            assert isinstance(plan(action, service, states), Plan | Refusal)  # type: ignore[arg-type]


# --- plans ----------------------------------------------------------------------------------------

LIMITS = {
    "threshold_pct": "2.0",
    "target_edge_pct": "2.5",
    "min_notional_eure": "1",
    "max_notional_eure": "5",
    "answer_window_ms": 2000,
    "price_max_age_ms": 5000,
    "inventory_max_age_ms": 30000,
}


def test_arm_and_disarm_only_where_there_is_an_arm_switch_and_only_when_running() -> None:
    states = {"history-writer": running(), "strategy-engine": {"running": False, "error": "x"}}
    r = plan("arm", "history-writer", states)
    assert isinstance(r, Refusal) and "history-writer has no arm switch" in r.message
    r = plan("disarm", "strategy-engine", states)
    assert isinstance(r, Refusal) and r.message == "strategy-engine is not running: nothing to disarm"
    r = plan("pause", "history-writer", {"history-writer": running(draining=True)})
    assert isinstance(r, Refusal) and "draining" in r.message


def test_arming_the_strategy_shows_caps_the_other_switch_and_needs_a_reason() -> None:
    states = {"strategy-engine": running(armed=False, limits=LIMITS), "trade-executor": running(armed=True)}
    p = plan("arm", "strategy-engine", states)
    assert isinstance(p, Plan) and p.reason_required and p.danger and p.path == "/arm"
    text = "\n".join(p.lines)
    assert "threshold 2.0 %" in text and "priced at 2.5 %" in text and "notional 1 .. 5 EURe" in text
    assert "answer window 2.0 s" in text and "trade-executor is ARMED" in text
    assert "Now: running, healthy, disarmed" in text
    assert missing_input(p, "carol", "  ") == "a reason is required to arm"
    assert missing_input(p, " ", "why") == "an operator name is required"
    assert missing_input(p, "carol", "why") is None
    assert request_body(p, " carol ", " go ", cancel_live=True) == {"operator": "carol", "reason": "go"}


def test_arming_the_executor_names_the_signer() -> None:
    states = {
        "trade-executor": running(
            armed=False,
            live_answers=[],
            signer={"status": "unauthorized", "account_id": "solver.near", "detail": "key not registered"},
        ),
        "strategy-engine": running(armed=False, limits=LIMITS),
    }
    p = plan("arm", "trade-executor", states)
    assert isinstance(p, Plan)
    text = "\n".join(p.lines)
    assert "Signer: solver.near is unauthorized: key not registered" in text and "Live answers now: 0" in text
    assert "strategy-engine is disarmed" in text


def test_disarming_the_executor_offers_to_cancel_live_answers() -> None:
    states = {"trade-executor": running(armed=True, live_answers=[{}, {}])}
    p = plan("disarm", "trade-executor", states)
    assert isinstance(p, Plan) and p.offer_cancel_live and not p.reason_required and not p.danger
    assert "Answers already out (2) stay valid" in "\n".join(p.lines)
    assert request_body(p, "carol", "", cancel_live=True) == {"operator": "carol", "cancel_live": True}
    assert request_body(p, "carol", "", cancel_live=False) == {"operator": "carol"}
    s = plan("disarm", "strategy-engine", {"strategy-engine": running(armed=False)})
    assert isinstance(s, Plan) and not s.offer_cancel_live and "already disarmed" in s.lines[-1]


def test_pause_and_resume_say_when_nothing_changes() -> None:
    p = plan("pause", "history-writer", {"history-writer": running(paused=True)})
    assert isinstance(p, Plan) and "already paused" in p.lines[-1] and p.path == "/pause"
    r = plan("resume", "history-writer", {"history-writer": running()})
    assert isinstance(r, Plan) and "not paused" in r.lines[-1]
    assert request_body(r, "carol", "") == {"operator": "carol"}


def test_the_pnl_line_fits_80_columns_and_says_what_it_covers() -> None:
    from datetime import date

    from qlctl.pnl import Totals

    d = Decimal
    t = Totals(
        day=date(2026, 12, 7),
        trades=1234,
        gave={},
        received={},
        given_value_eure=d("98765.4321"),
        edge_eure=d("2345.678"),
        edge_n=1234,
        fee_eure=d(0),
        net_eure=d("-12345.675"),
        markout_10s_eure=d("1.5"),
        markout_10s_n=1234,
        markout_1m_eure=d("-987.654"),
        markout_1m_n=1200,
        markout_5m_eure=None,
        markout_5m_n=0,
    )
    assert view.pnl_line(t).plain == (
        "P&L today (UTC): 1234 trades · edge +2345.68 · net -12345.68 · 1m markout -987.65 (1200/1234) EURe"
    )
    assert view.pnl_line(t, "PostgreSQL down").plain.endswith("(stale)")
    assert view.pnl_line(None, "PostgreSQL down").plain == "P&L today: PostgreSQL unavailable"
    assert view.pnl_line(None).plain == "P&L today: reading…"
    small = t.model_copy(update={"trades": 3, "markout_1m_n": 3, "edge_eure": d("0.1"), "net_eure": d("0.1")})
    assert view.pnl_line(small).plain == "P&L today (UTC): 3 trades · edge +0.10 · net +0.10 · 1m markout -987.65 EURe"
    assert len(view.pnl_line(small).plain) <= 78  # inside an 80-column terminal with its padding
