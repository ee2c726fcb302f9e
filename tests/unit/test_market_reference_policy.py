"""The market-reference source policy as a pure state machine: primary, fallback, both stale,
the conflict latch with hysteresis, the EURe/EUR basis, reason precedence, the transitions it
asks to log, and the invariants of every payload it produces."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.core.events import Producer, decode, encode, new_event
from daemons.market_reference_ingest.policy import (
    CoinGeckoView,
    Evaluation,
    KrakenView,
    PolicyConfig,
    PolicyState,
    evaluate,
    material_change,
)
from daemons.market_reference_ingest.settings import MarketReferenceSettings

NOW = datetime(2026, 5, 18, 12, 0, 0, tzinfo=UTC)
CFG = PolicyConfig()  # the defaults: Kraken 15 s, CoinGecko 180 s, EURe 3600 s / 1 %, conflict 1 % / 0.75 %


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def kraken(
    bid: str = "60000.0", ask: str = "60000.1", age_s: float = 0.5, degraded: str | None = None, connected: bool = True
) -> KrakenView:
    return KrakenView(
        bid=Decimal(bid),
        ask=Decimal(ask),
        received_at=ago(age_s),
        source_time=ago(age_s + 0.01),
        connected=connected,
        degraded=degraded,
    )


def coingecko(
    price: str = "60010.5",
    age_s: float = 30,
    eure: str | None = None,
    eure_age_s: float = 30,
    reachable: bool | None = True,
    error: str | None = None,
) -> CoinGeckoView:
    return CoinGeckoView(
        btc_eur=Decimal(price),
        btc_updated_at=ago(age_s),
        eure_eur=Decimal(eure) if eure is not None else None,
        eure_updated_at=ago(eure_age_s) if eure is not None else None,
        reachable=reachable,
        poll_error=error,
    )


KRAKEN_DOWN = KrakenView()  # never connected, no tick
CG_NEVER = CoinGeckoView()


def run(
    *steps: tuple[KrakenView, CoinGeckoView], cfg: PolicyConfig = CFG, state: PolicyState | None = None
) -> list[Evaluation]:
    state = state or PolicyState()
    out = []
    for k, c in steps:
        result = evaluate(state, k, c, NOW, cfg)
        state = result.state
        out.append(result)
    return out


def last(*steps: tuple[KrakenView, CoinGeckoView], cfg: PolicyConfig = CFG) -> Evaluation:
    return run(*steps, cfg=cfg)[-1]


def events(result: Evaluation) -> list[str]:
    return [t.event for t in result.transitions]


# --- source selection ----------------------------------------------------------------------------


def test_kraken_fresh_is_the_primary() -> None:
    p = last((kraken(), coingecko())).price
    assert (p.source, p.fallback_used, p.decisionable, p.status_reason) == ("kraken", False, True, None)
    assert (p.fair_rate_buy_btc, p.fair_rate_sell_btc, p.fair_rate_mid) == (
        Decimal("60000.0"),
        Decimal("60000.1"),
        Decimal("60000.05"),
    )
    assert (p.bid, p.ask, p.mid) == (Decimal("60000.0"), Decimal("60000.1"), Decimal("60000.05"))
    assert p.freshness_ms == p.kraken_age_ms == 500 and p.source_time == ago(0.51)
    assert p.kraken_fresh and p.kraken_state == "ok" and p.coingecko_fresh and p.coingecko_state == "ok"
    assert p.coingecko_price == Decimal("60010.5") and p.coingecko_age_ms == 30_000
    assert p.cross_check_divergence_pct is not None and p.cross_check_divergence_pct < 1
    assert (p.eure_eur_rate, p.eure_basis, p.eure_state) == (1, "assumed_1_to_1", "no_data")


def test_kraken_without_its_own_timestamp_uses_our_receive_time() -> None:
    view = replace(kraken(), source_time=None)
    p = last((view, CG_NEVER)).price
    assert p.source_time == view.received_at and p.kraken_source_time is None


def test_kraken_alone_prices_while_coingecko_was_never_polled() -> None:
    p = last((kraken(), CG_NEVER)).price
    assert p.decisionable and p.source == "kraken"
    assert p.coingecko_state == "no_data" and p.cross_check_divergence_pct is None


@pytest.mark.parametrize("age_s, fresh", [(15.0, True), (15.001, False), (3600, False)])
def test_kraken_staleness_is_by_age_with_an_inclusive_bound(age_s: float, fresh: bool) -> None:
    p = last((kraken(age_s=age_s), coingecko())).price
    assert p.kraken_fresh is fresh
    assert p.kraken_state == ("ok" if fresh else "stale")
    assert p.source == ("kraken" if fresh else "coingecko")


@pytest.mark.parametrize(
    "degraded",
    ["disconnected", "system_maintenance", "system_cancel_only", "no_data", "data_stale", "subscription_rejected"],
)
def test_any_client_complaint_about_kraken_means_fallback(degraded: str) -> None:
    result = last(
        (kraken(), coingecko()), (kraken(degraded=degraded, connected=degraded != "disconnected"), coingecko())
    )
    p = result.price
    assert (p.source, p.fallback_used, p.decisionable) == ("coingecko", True, True)
    assert p.kraken_state == degraded and not p.kraken_fresh
    # Kraken's last quote stays on the event for the record, with its age
    assert p.bid == Decimal("60000.0") and p.kraken_age_ms == 500
    # CoinGecko has no book: its price widened by the 0.1 % half-spread each way
    assert p.fair_rate_buy_btc == Decimal("59950.4895") and p.fair_rate_sell_btc == Decimal("60070.5105")
    assert p.fair_rate_mid == Decimal("60010.5") and p.freshness_ms == 30_000
    assert p.source_time == ago(30) and p.cross_check_divergence_pct is None
    assert "fallback_entered" in events(result) and "source_stale" in events(result)


def test_fallback_is_left_when_kraken_recovers() -> None:
    results = run(
        (kraken(), coingecko()), (kraken(degraded="system_maintenance"), coingecko()), (kraken(), coingecko())
    )
    assert [r.price.source for r in results] == ["kraken", "coingecko", "kraken"]
    assert "fallback_left" in events(results[-1]) and "source_recovered" in events(results[-1])


def test_fallback_disabled_is_not_decisionable() -> None:
    cfg = replace(CFG, allow_fallback=False)
    p = last((kraken(degraded="disconnected", connected=False), coingecko()), cfg=cfg).price
    assert (p.source, p.fallback_used, p.decisionable, p.status_reason) == (None, False, False, "FALLBACK_DISABLED")
    assert p.fair_rate_buy_btc is None and p.fair_rate_sell_btc is None and p.freshness_ms is None
    assert p.coingecko_fresh and p.coingecko_price == Decimal("60010.5")


@pytest.mark.parametrize(
    ("k", "c"),
    [
        (KRAKEN_DOWN, CG_NEVER),
        (kraken(age_s=60), coingecko(age_s=181)),
        (kraken(degraded="disconnected", connected=False), coingecko(age_s=600)),
        (kraken(degraded="no_data"), CoinGeckoView(reachable=False, poll_error="rate_limited")),
    ],
)
def test_both_stale_is_not_decisionable(k: KrakenView, c: CoinGeckoView) -> None:
    for allow in (True, False):
        p = last((k, c), cfg=replace(CFG, allow_fallback=allow)).price
        assert (p.source, p.decisionable, p.status_reason) == (None, False, "BOTH_STALE")
        assert p.fair_rate_buy_btc is None and p.fair_rate_sell_btc is None and p.source_time is None


@pytest.mark.parametrize("age_s, fresh", [(180, True), (180.001, False)])
def test_coingecko_staleness_is_by_last_updated_at(age_s: float, fresh: bool) -> None:
    p = last((KRAKEN_DOWN, coingecko(age_s=age_s))).price
    assert p.coingecko_fresh is fresh and p.decisionable is fresh


def test_a_coingecko_clock_ahead_of_ours_is_age_zero() -> None:
    view = replace(coingecko(), btc_updated_at=NOW + timedelta(seconds=5))
    p = last((KRAKEN_DOWN, view)).price
    assert p.coingecko_age_ms == 0 and p.coingecko_fresh


def test_a_failing_poll_keeps_the_last_fresh_price() -> None:
    p = last((KRAKEN_DOWN, coingecko(reachable=False, error="timeout"))).price
    assert p.source == "coingecko" and p.decisionable and p.coingecko_poll_error == "timeout"


# --- conflict ------------------------------------------------------------------------------------


def cg_at_divergence(pct: str) -> CoinGeckoView:
    # Kraken mid 60000.05; CoinGecko chosen so |mid - cg| / cg is the given percentage
    cg = Decimal("60000.05") / (1 + Decimal(pct) / 100)
    return coingecko(price=str(cg.quantize(Decimal("0.000000001"))))


def test_conflict_beyond_tolerance_is_latched_with_hysteresis() -> None:
    results = run(
        (kraken(), cg_at_divergence("0.5")),  # agree
        (kraken(), cg_at_divergence("1.2")),  # apart: conflict
        (kraken(), cg_at_divergence("0.9")),  # closer, but not within the clear band: still conflict
        (kraken(), coingecko(age_s=600)),  # cannot cross-check: the latch holds
        (KRAKEN_DOWN, cg_at_divergence("0.5")),  # only one side: the latch holds
        (kraken(), cg_at_divergence("0.7")),  # both fresh and within 0.75 %: agree again
    )
    assert [r.price.source_conflict for r in results] == [False, True, True, True, True, False]
    assert [r.price.status_reason for r in results] == [
        None,
        "SOURCE_CONFLICT",
        "SOURCE_CONFLICT",
        "SOURCE_CONFLICT",
        "SOURCE_CONFLICT",
        None,
    ]
    conflicted = results[1].price
    assert conflicted.source == "kraken" and conflicted.fair_rate_buy_btc == Decimal("60000.0")
    assert conflicted.cross_check_divergence_pct is not None and conflicted.cross_check_divergence_pct > 1
    assert results[3].price.cross_check_divergence_pct is None
    assert results[4].price.source == "coingecko"  # the fallback is what would be used, were it trusted
    assert results[1].state.conflict_since == NOW and results[5].state.conflict_since is None
    assert "conflict_entered" in events(results[1]) and "decisionable_lost" in events(results[1])
    assert "conflict_left" in events(results[5]) and "decisionable_restored" in events(results[5])
    assert not any(e.startswith("conflict") for r in results[2:5] for e in events(r))


def test_exactly_at_the_tolerance_is_agreement() -> None:
    cfg = replace(CFG, conflict_tolerance_pct=Decimal("1"), conflict_clear_pct=Decimal("1"))
    k = kraken(bid="60599.9", ask="60600.1")  # mid 60600 vs 60000: exactly 1 %
    assert not last((k, coingecko(price="60000")), cfg=cfg).price.source_conflict
    k = kraken(bid="60600.0", ask="60600.1")
    assert last((k, coingecko(price="60000")), cfg=cfg).price.source_conflict


def test_clear_band_above_tolerance_is_refused() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(conflict_tolerance_pct=Decimal("1"), conflict_clear_pct=Decimal("1.5"))
    with pytest.raises(ValueError):
        MarketReferenceSettings(market_conflict_tolerance_pct=Decimal("1"), market_conflict_clear_pct=Decimal("2"))


# --- EURe/EUR basis ------------------------------------------------------------------------------


def test_a_fresh_eure_quote_within_tolerance_is_sanity_checked_and_applied() -> None:
    p = last((kraken(), coingecko(eure="0.998912"))).price
    assert (p.eure_basis, p.eure_state, p.eure_eur_rate) == ("sanity_checked", "ok", Decimal("0.998912"))
    assert p.eure_eur_observed == Decimal("0.998912") and p.eure_eur_observed_age_ms == 30_000
    # EURe worth less than a euro: more EURe per BTC; BUY_BTC rounded down, SELL_BTC up
    # 60000.0 / 0.998912 = 60065.351101998...; 60000.1 / 0.998912 = 60065.451210917...
    assert p.fair_rate_buy_btc == Decimal("60065.35110199")
    assert p.fair_rate_sell_btc == Decimal("60065.45121092")
    assert p.decisionable


def test_a_checked_rate_can_be_kept_at_exactly_one() -> None:
    p = last((kraken(), coingecko(eure="0.998912")), cfg=replace(CFG, eure_apply_checked_rate=False)).price
    assert (p.eure_basis, p.eure_eur_rate) == ("sanity_checked", 1)
    assert p.fair_rate_buy_btc == Decimal("60000.0")


def test_a_stale_eure_quote_leaves_the_assumption_in_place() -> None:
    p = last((kraken(), coingecko(eure="0.95", eure_age_s=3601))).price
    assert (p.eure_basis, p.eure_state, p.eure_eur_rate, p.decisionable) == ("assumed_1_to_1", "stale", 1, True)
    assert p.eure_eur_observed == Decimal("0.95")


def test_eure_out_of_tolerance_blocks_without_moving_the_price() -> None:
    result = last((kraken(), coingecko(eure="0.998912")), (kraken(), coingecko(eure="0.95")))
    p = result.price
    assert (p.decisionable, p.status_reason) == (False, "EURE_EUR_OUT_OF_TOLERANCE")
    assert (p.eure_basis, p.eure_eur_rate, p.eure_state) == ("assumed_1_to_1", 1, "out_of_tolerance")
    assert p.eure_eur_observed == Decimal("0.95")  # both recorded: the rate applied and what was seen
    assert p.fair_rate_buy_btc == Decimal("60000.0") and p.source == "kraken"
    notes = {t.event: t for t in result.transitions}
    assert notes["eure_check_changed"].level == "warning"
    assert notes["eure_check_changed"].fields["to"] == "out_of_tolerance"
    assert notes["decisionable_lost"].fields["reason"] == "EURE_EUR_OUT_OF_TOLERANCE"


def test_eure_out_of_tolerance_can_be_record_only() -> None:
    p = last((kraken(), coingecko(eure="0.95")), cfg=replace(CFG, eure_out_of_tolerance_blocks=False)).price
    assert p.decisionable and p.eure_state == "out_of_tolerance" and p.eure_eur_rate == 1


def test_reason_precedence_no_source_then_conflict_then_eure() -> None:
    conflicted = run((kraken(), cg_at_divergence("2")))[-1].state
    both_stale = evaluate(conflicted, KRAKEN_DOWN, coingecko(age_s=600, eure="0.95", eure_age_s=1), NOW, CFG)
    assert both_stale.price.status_reason == "BOTH_STALE" and both_stale.state.conflict
    k = kraken()
    cg = cg_at_divergence("2")
    both = evaluate(conflicted, k, replace(cg, eure_eur=Decimal("0.95"), eure_updated_at=ago(1)), NOW, CFG)
    assert both.price.status_reason == "SOURCE_CONFLICT" and both.price.eure_state == "out_of_tolerance"


# --- transitions ---------------------------------------------------------------------------------


def test_startup_then_losses_and_recoveries_are_logged_once() -> None:
    results = run(
        (KRAKEN_DOWN, CG_NEVER),
        (KRAKEN_DOWN, coingecko()),
        (kraken(), coingecko()),
        (kraken(), coingecko()),
        (kraken(degraded="disconnected", connected=False), coingecko(reachable=False, error="timeout")),
        (kraken(), coingecko()),
    )
    assert [events(r) for r in results] == [
        ["not_decisionable"],
        ["source_established", "fallback_entered", "decisionable_restored"],
        ["source_established", "fallback_left"],
        [],
        ["source_lost", "source_stale", "source_lost", "fallback_entered"],
        ["source_reestablished", "source_recovered", "source_reestablished", "fallback_left"],
    ]
    lost = [t for t in results[4].transitions if t.event == "source_lost"]
    assert [t.fields["venue"] for t in lost] == ["kraken", "coingecko"]
    assert lost[1].fields["error"] == "timeout" and all(t.level == "warning" for t in lost)


def test_coingecko_going_stale_is_logged() -> None:
    results = run((kraken(), coingecko()), (kraken(), coingecko(age_s=200)), (kraken(), coingecko()))
    assert events(results[1]) == ["source_stale"] and results[1].transitions[0].fields["venue"] == "coingecko"
    assert events(results[2]) == ["source_recovered"]


def test_a_changed_reason_while_not_decisionable_is_logged() -> None:
    cfg = replace(CFG, allow_fallback=False)
    results = run((KRAKEN_DOWN, CG_NEVER), (KRAKEN_DOWN, coingecko()), cfg=cfg)
    assert [r.price.status_reason for r in results] == ["BOTH_STALE", "FALLBACK_DISABLED"]
    assert "not_decisionable" in events(results[1])


# --- properties ----------------------------------------------------------------------------------

prices = st.decimals(min_value=Decimal("50000"), max_value=Decimal("70000"), places=1)
ages = st.floats(min_value=0, max_value=400, allow_nan=False)
degradations = st.sampled_from([None, None, None, "disconnected", "system_maintenance", "no_data", "data_stale"])


@st.composite
def kraken_views(draw: st.DrawFn) -> KrakenView:
    if draw(st.booleans()) and draw(st.booleans()):
        return KRAKEN_DOWN
    a, b = draw(prices), draw(prices)
    bid, ask = min(a, b), max(a, b)
    if bid == ask:
        ask += Decimal("0.1")
    degraded = draw(degradations)
    return kraken(str(bid), str(ask), draw(ages), degraded, degraded != "disconnected")


@st.composite
def coingecko_views(draw: st.DrawFn) -> CoinGeckoView:
    if not draw(st.integers(0, 4)):
        return CG_NEVER
    eure = draw(st.none() | st.decimals(min_value=Decimal("0.9"), max_value=Decimal("1.1"), places=6))
    return coingecko(
        str(draw(prices)),
        draw(ages),
        str(eure) if eure is not None else None,
        draw(st.floats(min_value=0, max_value=5000, allow_nan=False)),
        draw(st.sampled_from([True, False, None])),
        draw(st.sampled_from([None, "timeout"])),
    )


configs = st.builds(
    PolicyConfig,
    allow_fallback=st.booleans(),
    eure_out_of_tolerance_blocks=st.booleans(),
    eure_apply_checked_rate=st.booleans(),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(kraken_views(), coingecko_views()), min_size=1, max_size=6), configs)
def test_every_payload_is_consistent(steps: list[tuple[KrakenView, CoinGeckoView]], cfg: PolicyConfig) -> None:
    for result in run(*steps, cfg=cfg):
        p = result.price
        assert p.decisionable == (p.status_reason is None)
        assert p.fallback_used == (p.source == "coingecko")
        if p.source is None:
            assert p.fair_rate_buy_btc is None and p.fair_rate_sell_btc is None and not p.decisionable
        else:
            assert p.fair_rate_buy_btc is not None and p.fair_rate_sell_btc is not None
            assert p.fair_rate_mid is not None
            assert 0 < p.fair_rate_buy_btc <= p.fair_rate_mid <= p.fair_rate_sell_btc
            assert p.freshness_ms is not None and p.source_time is not None
        if p.source == "kraken":
            assert p.kraken_fresh
        if p.fallback_used:
            assert not p.kraken_fresh and p.coingecko_fresh and cfg.allow_fallback
        if p.eure_basis == "assumed_1_to_1":
            assert p.eure_eur_rate == 1
        if p.decisionable:
            assert not p.source_conflict
            assert p.eure_state != "out_of_tolerance" or not cfg.eure_out_of_tolerance_blocks
        assert result.state.conflict == p.source_conflict
        # the payload survives the wire unchanged
        event = new_event(p, producer=Producer(service="t", instance="t"), pair="BTC/EURe")
        assert decode("ref.market_price", encode(event)).payload == p


@settings(max_examples=200)
@given(st.lists(st.tuples(kraken_views(), coingecko_views()), min_size=1, max_size=4), configs)
def test_the_same_inputs_twice_change_nothing(steps: list[tuple[KrakenView, CoinGeckoView]], cfg: PolicyConfig) -> None:
    """Transitions are changes only: re-evaluating unchanged inputs logs nothing, publishes no news."""
    state = PolicyState()
    for k, c in steps:
        first = evaluate(state, k, c, NOW, cfg)
        again = evaluate(first.state, k, c, NOW, cfg)
        assert again.transitions == () and again.state == first.state
        assert not material_change(first.price, again.price)
        state = first.state


def test_material_change_ignores_ages_only() -> None:
    a = last((kraken(age_s=0.5), coingecko())).price
    b = last((kraken(age_s=0.9), coingecko(age_s=40))).price
    assert a != b and not material_change(a, b)
    c = last((kraken(bid="60000.2", ask="60000.3"), coingecko())).price
    assert material_change(a, c) and material_change(None, a)
    d = last((kraken(), coingecko(age_s=200))).price
    assert material_change(a, d)  # a health change is news too
