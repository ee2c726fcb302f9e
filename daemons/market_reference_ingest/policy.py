"""The source policy: a pure state machine from (previous state, Kraken view, CoinGecko view, now,
config) to the `ref.market_price` payload, the next state and the transitions worth a log line.

Rules (docs/reference-prices.md; every threshold in `PolicyConfig`):

- Kraken usable (connected, system `online`, data flowing, latest valid tick no older than
  `kraken_stale_after_s`) → Kraken is the source.
- Kraken not usable and CoinGecko fresh (its own `last_updated_at` no older than
  `coingecko_stale_after_s`) → CoinGecko, marked `fallback_used`, only when `allow_fallback`;
  otherwise not decisionable, `FALLBACK_DISABLED`.
- Neither usable → no source, not decisionable, `BOTH_STALE`.
- Both fresh and apart by more than `conflict_tolerance_pct` → `SOURCE_CONFLICT`, latched until
  both are fresh again and within `conflict_clear_pct` (hysteresis, so a price hovering at the
  tolerance does not flap; and a conflict is not forgotten because one side went quiet: which
  side was wrong is unknown until they agree).
- EURe/EUR: `sanity_checked` when CoinGecko's EURe quote is fresh and within tolerance of 1
  (that quote is then the rate applied, or 1 is kept, per `eure_apply_checked_rate`), else
  `assumed_1_to_1` at exactly 1. A fresh quote outside tolerance never moves the price; it
  makes the price not decisionable (`EURE_EUR_OUT_OF_TOLERANCE`) when
  `eure_out_of_tolerance_blocks`, and is recorded on the event either way.

When several reasons hold, the event names the most basic: no source, then conflict, then EURe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from daemons.core.events import MarketPrice
from daemons.market_reference_ingest.fair import (
    EureState,
    FairRates,
    divergence_pct,
    eure_basis,
    eure_state,
    fallback_fair,
    kraken_fair,
    kraken_mid,
)

Source = Literal["kraken", "coingecko"]
Reason = Literal["BOTH_STALE", "FALLBACK_DISABLED", "SOURCE_CONFLICT", "EURE_EUR_OUT_OF_TOLERANCE"]
CoinGeckoState = Literal["ok", "no_data", "stale"]
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class PolicyConfig:
    kraken_stale_after_s: float = 15.0
    coingecko_stale_after_s: float = 180.0
    eure_stale_after_s: float = 3600.0
    eure_tolerance_pct: Decimal = Decimal("1.0")
    eure_out_of_tolerance_blocks: bool = True
    eure_apply_checked_rate: bool = True
    allow_fallback: bool = True
    fallback_half_spread_pct: Decimal = Decimal("0.1")
    conflict_tolerance_pct: Decimal = Decimal("1.0")
    conflict_clear_pct: Decimal = Decimal("0.75")
    fair_rate_places: int = 8

    def __post_init__(self) -> None:
        if self.conflict_clear_pct > self.conflict_tolerance_pct:
            raise ValueError("conflict_clear_pct must not exceed conflict_tolerance_pct")


@dataclass(frozen=True)
class KrakenView:
    """The latest *valid* Kraken tick (crossed or locked ones never get here) and the client's
    own verdict on the stream (`degraded`: its reason code, None when it has no complaint)."""

    bid: Decimal | None = None
    ask: Decimal | None = None
    received_at: datetime | None = None
    source_time: datetime | None = None
    connected: bool = False
    degraded: str | None = "disconnected"


@dataclass(frozen=True)
class CoinGeckoView:
    """The latest successful CoinGecko poll and how the latest poll went (`reachable` None:
    never polled; `poll_error` the kind of the latest failure)."""

    btc_eur: Decimal | None = None
    btc_updated_at: datetime | None = None
    eure_eur: Decimal | None = None
    eure_updated_at: datetime | None = None
    reachable: bool | None = None
    poll_error: str | None = None


@dataclass(frozen=True)
class PolicyState:
    """What the machine remembers between evaluations. None: not known yet (start)."""

    kraken_connected: bool | None = None
    kraken_fresh: bool | None = None
    coingecko_reachable: bool | None = None
    coingecko_fresh: bool | None = None
    fallback: bool = False
    conflict: bool = False
    conflict_since: datetime | None = None
    eure_state: EureState | None = None
    decisionable: bool | None = None
    status_reason: Reason | None = None


@dataclass(frozen=True)
class Transition:
    """One log line's worth: a state change, never a healthy repeat."""

    event: str
    level: Literal["info", "warning"]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    state: PolicyState
    price: MarketPrice
    transitions: tuple[Transition, ...]


def _age(now: datetime, then: datetime | None) -> timedelta | None:
    # a venue clock slightly ahead of ours must not read as negative age
    return None if then is None else max(now - then, timedelta(0))


def _ms(age: timedelta | None) -> int | None:
    return None if age is None else age // _MS


def kraken_state(view: KrakenView, now: datetime, cfg: PolicyConfig) -> str:
    """`ok`, the client's degraded reason, `no_data` (no valid tick yet) or `stale` (by age)."""
    if view.degraded is not None:
        return view.degraded
    age = _age(now, view.received_at)
    if view.bid is None or view.ask is None or age is None:
        return "no_data"
    if age > timedelta(seconds=cfg.kraken_stale_after_s):
        return "stale"
    return "ok"


def coingecko_state(view: CoinGeckoView, now: datetime, cfg: PolicyConfig) -> CoinGeckoState:
    """Judged by CoinGecko's own `last_updated_at`, never by when we asked (it serves a cache)."""
    age = _age(now, view.btc_updated_at)
    if view.btc_eur is None or age is None:
        return "no_data"
    return "stale" if age > timedelta(seconds=cfg.coingecko_stale_after_s) else "ok"


def _next_conflict(
    prev: PolicyState, divergence: Decimal | None, now: datetime, cfg: PolicyConfig
) -> tuple[bool, datetime | None]:
    if divergence is None:
        return prev.conflict, prev.conflict_since  # cannot tell: a latched conflict stays
    if not prev.conflict and divergence > cfg.conflict_tolerance_pct:
        return True, now
    if prev.conflict and divergence <= cfg.conflict_clear_pct:
        return False, None
    return prev.conflict, prev.conflict_since


def evaluate(
    prev: PolicyState, kraken: KrakenView, coingecko: CoinGeckoView, now: datetime, cfg: PolicyConfig
) -> Evaluation:
    """One step of the machine. Deterministic in its arguments."""
    k_state = kraken_state(kraken, now, cfg)
    k_fresh = k_state == "ok"
    k_age = _age(now, kraken.received_at)
    k_mid = kraken_mid(kraken.bid, kraken.ask) if kraken.bid is not None and kraken.ask is not None else None

    cg_state = coingecko_state(coingecko, now, cfg)
    cg_fresh = cg_state == "ok"
    cg_age = _age(now, coingecko.btc_updated_at)

    e_age = _age(now, coingecko.eure_updated_at)
    e_state = eure_state(
        coingecko.eure_eur,
        None if e_age is None else e_age.total_seconds(),
        cfg.eure_stale_after_s,
        cfg.eure_tolerance_pct,
    )
    rate, basis = eure_basis(e_state, coingecko.eure_eur, cfg.eure_apply_checked_rate)

    divergence = None
    if k_fresh and cg_fresh and k_mid is not None and coingecko.btc_eur is not None:
        divergence = divergence_pct(k_mid, coingecko.btc_eur)
    conflict, conflict_since = _next_conflict(prev, divergence, now, cfg)

    source: Source | None = None
    fair: FairRates | None = None
    source_time: datetime | None = None
    source_age: timedelta | None = None
    if k_fresh and kraken.bid is not None and kraken.ask is not None:
        source = "kraken"
        fair = kraken_fair(kraken.bid, kraken.ask, rate, cfg.fair_rate_places)
        source_time = kraken.source_time or kraken.received_at
        source_age = k_age
    elif cg_fresh and cfg.allow_fallback and coingecko.btc_eur is not None:
        source = "coingecko"
        fair = fallback_fair(coingecko.btc_eur, rate, cfg.fallback_half_spread_pct, cfg.fair_rate_places)
        source_time = coingecko.btc_updated_at
        source_age = cg_age

    reason: Reason | None = None
    if source is None:
        reason = "FALLBACK_DISABLED" if cg_fresh else "BOTH_STALE"
    elif conflict:
        reason = "SOURCE_CONFLICT"
    elif e_state == "out_of_tolerance" and cfg.eure_out_of_tolerance_blocks:
        reason = "EURE_EUR_OUT_OF_TOLERANCE"

    price = MarketPrice(
        source=source,
        fallback_used=source == "coingecko",
        fair_rate_buy_btc=fair.buy_btc if fair else None,
        fair_rate_sell_btc=fair.sell_btc if fair else None,
        fair_rate_mid=fair.mid if fair else None,
        source_time=source_time,
        freshness_ms=_ms(source_age),
        eure_eur_rate=rate,
        eure_basis=basis,
        eure_state=e_state,
        eure_eur_observed=coingecko.eure_eur,
        eure_eur_observed_age_ms=_ms(e_age),
        bid=kraken.bid,
        ask=kraken.ask,
        mid=k_mid,
        kraken_source_time=kraken.source_time,
        kraken_age_ms=_ms(k_age),
        kraken_fresh=k_fresh,
        kraken_state=k_state,
        coingecko_price=coingecko.btc_eur,
        coingecko_last_updated_at=coingecko.btc_updated_at,
        coingecko_age_ms=_ms(cg_age),
        coingecko_fresh=cg_fresh,
        coingecko_state=cg_state,
        coingecko_poll_error=coingecko.poll_error,
        cross_check_divergence_pct=divergence,
        source_conflict=conflict,
        decisionable=reason is None,
        status_reason=reason,
    )
    state = PolicyState(
        # unknown until the first connect: not being connected yet at start is not a loss
        kraken_connected=kraken.connected if kraken.connected or prev.kraken_connected is not None else None,
        # unknown until a source has ever delivered: its first price is not a "recovery"
        kraken_fresh=k_fresh if kraken.bid is not None else None,
        coingecko_reachable=coingecko.reachable,
        coingecko_fresh=cg_fresh if coingecko.btc_eur is not None else None,
        fallback=source == "coingecko",
        conflict=conflict,
        conflict_since=conflict_since,
        eure_state=e_state,
        decisionable=reason is None,
        status_reason=reason,
    )
    return Evaluation(state, price, tuple(transitions(prev, state, price, cfg)))


def transitions(prev: PolicyState, new: PolicyState, price: MarketPrice, cfg: PolicyConfig) -> list[Transition]:
    """The changes between two states, as log lines: source lost/re-established, stale/recovered,
    fallback entered/left, conflict entered/left, the EURe check, decisionable lost/restored."""
    out: list[Transition] = []

    # Kraken's connection: silence before the first connect is not a loss
    if new.kraken_connected and not prev.kraken_connected:
        event = "source_established" if prev.kraken_connected is None else "source_reestablished"
        out.append(Transition(event, "info", {"venue": "kraken"}))
    elif prev.kraken_connected and not new.kraken_connected:
        out.append(Transition("source_lost", "warning", {"venue": "kraken", "state": price.kraken_state}))
    if prev.kraken_fresh is not None and prev.kraken_fresh != new.kraken_fresh:
        if new.kraken_fresh:
            out.append(Transition("source_recovered", "info", {"venue": "kraken"}))
        else:
            out.append(
                Transition(
                    "source_stale",
                    "warning",
                    {"venue": "kraken", "state": price.kraken_state, "age_ms": price.kraken_age_ms},
                )
            )

    # CoinGecko's reachability: a first poll that fails is worth saying
    if new.coingecko_reachable is not None and new.coingecko_reachable != prev.coingecko_reachable:
        if new.coingecko_reachable:
            event = "source_established" if prev.coingecko_reachable is None else "source_reestablished"
            out.append(Transition(event, "info", {"venue": "coingecko"}))
        else:
            out.append(
                Transition("source_lost", "warning", {"venue": "coingecko", "error": price.coingecko_poll_error})
            )
    if prev.coingecko_fresh is not None and prev.coingecko_fresh != new.coingecko_fresh:
        if new.coingecko_fresh:
            out.append(Transition("source_recovered", "info", {"venue": "coingecko"}))
        else:
            out.append(
                Transition(
                    "source_stale",
                    "warning",
                    {"venue": "coingecko", "state": price.coingecko_state, "age_ms": price.coingecko_age_ms},
                )
            )

    if new.fallback and not prev.fallback:
        out.append(
            Transition("fallback_entered", "warning", {"venue": "coingecko", "kraken_state": price.kraken_state})
        )
    elif prev.fallback and not new.fallback:
        out.append(Transition("fallback_left", "info", {"source": price.source}))

    if new.conflict and not prev.conflict:
        out.append(
            Transition(
                "conflict_entered",
                "warning",
                {
                    "divergence_pct": price.cross_check_divergence_pct,
                    "tolerance_pct": cfg.conflict_tolerance_pct,
                    "kraken_mid": price.mid,
                    "coingecko_price": price.coingecko_price,
                },
            )
        )
    elif prev.conflict and not new.conflict:
        out.append(
            Transition(
                "conflict_left",
                "info",
                {"divergence_pct": price.cross_check_divergence_pct, "clear_pct": cfg.conflict_clear_pct},
            )
        )

    if new.eure_state != prev.eure_state and not (prev.eure_state is None and new.eure_state == "no_data"):
        level: Literal["info", "warning"] = "warning" if new.eure_state == "out_of_tolerance" else "info"
        out.append(
            Transition(
                "eure_check_changed",
                level,
                {
                    "from": prev.eure_state,
                    "to": new.eure_state,
                    "observed": price.eure_eur_observed,
                    "eure_basis": price.eure_basis,
                    "eure_eur_rate": price.eure_eur_rate,
                },
            )
        )

    if new.decisionable and not prev.decisionable:
        out.append(
            Transition(
                "decisionable" if prev.decisionable is None else "decisionable_restored",
                "info",
                {"source": price.source},
            )
        )
    elif not new.decisionable and (prev.decisionable is not False or prev.status_reason != new.status_reason):
        event = "decisionable_lost" if prev.decisionable else "not_decisionable"
        out.append(Transition(event, "warning", {"reason": new.status_reason}))
    return out


# Fields whose change is news to a consumer: published at once rather than at the next interval.
MATERIAL_FIELDS = (
    "source",
    "fallback_used",
    "fair_rate_buy_btc",
    "fair_rate_sell_btc",
    "eure_eur_rate",
    "eure_basis",
    "eure_state",
    "kraken_state",
    "coingecko_state",
    "source_conflict",
    "decisionable",
    "status_reason",
)


def material_change(prev: MarketPrice | None, new: MarketPrice) -> bool:
    """True when `new` differs from the last published price in anything but its ages."""
    if prev is None:
        return True
    return any(getattr(prev, name) != getattr(new, name) for name in MATERIAL_FIELDS)
