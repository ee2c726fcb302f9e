"""`qlctl report pnl`: what quoteloop's settled trades earned, in EURe.

Per settled trade (an `exec.trade_result` with status `settled`, one per command): what was
given and received, in units of each asset; both valued at the fair rate the decision used (its
`price_event_id` in `market_price_events`; the decision's own `reference_rate` when that event is
not stored); the edge captured (value received − value given, the `gross_edge_pct` of
docs/design.md §3 in EURe); the protocol fee; and markouts: the same trade valued again at the
reference price 10 s, 1 min and 5 min after the fill.

- The fill is the result's `resolved_at` (when the settlement became known), else its event time.
- Every valuation uses the fair rate of the trade's direction (EURe per BTC): the ask for
  `SELL_BTC` (BTC given), the bid for `BUY_BTC` (BTC received), so a markout at the decision's own
  price equals the edge and a positive markout is a gain for quoteloop.
- A markout's price is the first `ref.market_price` with fair rates at or after fill + horizon,
  and before fill + twice the horizon: a later price says more about that later time than about
  the horizon, and no price yet (the horizon has not passed) leaves it blank.
- The protocol fee quoteloop pays is 0 (`FEE_RULE`); the verifier's `fee_pips` recorded on the
  decision is shown beside it.
- Inventory over time: per `every` bucket, the last `state.intent_inventory` snapshot in it, its
  credited BTC and EURe valued at the fair mid rate of the latest price at most
  `INVENTORY_PRICE_MAX_AGE` before it (blank when there is none).

Money is `Decimal` throughout, never float, and plain decimal strings in JSON and CSV. The
computation here is pure (`report()`); `fetch()` is the thin SQL layer over the event store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict, PlainSerializer

from daemons.core.assets import EURE_ID, REGISTRY, to_units
from daemons.core.edge import DECIMAL_CTX, fair_rate_for
from daemons.core.events import Direction

HORIZONS: tuple[tuple[str, timedelta], ...] = (
    ("10s", timedelta(seconds=10)),
    ("1m", timedelta(minutes=1)),
    ("5m", timedelta(minutes=5)),
)
INVENTORY_PRICE_MAX_AGE = timedelta(minutes=5)
FEE_RULE = (
    "protocol fee paid by quoteloop: 0. Its balances move by exactly the token_diff it signs (+amount_in, "
    "-amount_out); the verifier's fee (fee_pips, charged on each negative delta) is balanced by the taker's side "
    "of the batch, as in the maker/taker example of docs/verifier.md §8 (how the relay folds the fee into the "
    "taker's amounts is UNCONFIRMED there)."
)
ZERO = Decimal(0)


def plain(value: Decimal) -> str:
    """A Decimal as a plain string, exact, without exponent or trailing zeros: "0.00005"."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# exact money and rates: a plain decimal string in JSON and CSV
Money = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]


# --- inputs (built by `fetch` from the event store, or by a test) ------------------------------


@dataclass(frozen=True)
class PriceMark:
    """One `ref.market_price` as far as valuation needs it (EURe per BTC)."""

    at: datetime
    fair_rate_buy_btc: Decimal | None
    fair_rate_sell_btc: Decimal | None
    fair_rate_mid: Decimal | None = None

    def rate(self, direction: Direction) -> Decimal | None:
        if self.fair_rate_buy_btc is None or self.fair_rate_sell_btc is None:
            return None
        return fair_rate_for(direction, self.fair_rate_buy_btc, self.fair_rate_sell_btc)

    def mid(self) -> Decimal | None:
        if self.fair_rate_mid is not None:
            return self.fair_rate_mid
        if self.fair_rate_buy_btc is None or self.fair_rate_sell_btc is None:
            return None
        with localcontext(DECIMAL_CTX):
            return (self.fair_rate_buy_btc + self.fair_rate_sell_btc) / 2


@dataclass(frozen=True)
class SettledTrade:
    quote_id: str
    command_id: str
    direction: Direction
    asset_in: str  # quoteloop received it
    amount_in: int  # base units
    asset_out: str  # quoteloop gave it
    amount_out: int
    filled_at: datetime
    decision_id: str | None = None
    price_event_id: str | None = None
    decision_price: PriceMark | None = None  # the decision's price event
    reference_rate: Decimal | None = None  # the decision's own copy of the fair rate
    fee_pips: int | None = None
    later: Mapping[str, PriceMark | None] | None = None  # horizon label -> price used


@dataclass(frozen=True)
class InventoryPoint:
    at: datetime
    inventory_id: str
    balances: Mapping[str, int]  # credited base units per asset id
    stale: bool = False
    price: PriceMark | None = None


# --- outputs ----------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class TradePnl(_Out):
    quote_id: str
    command_id: str
    filled_at: datetime
    day: date
    direction: Direction
    gave_asset: str
    gave_amount: Money | None
    received_asset: str
    received_amount: Money | None
    price_event_id: str | None
    fair_rate: Money | None  # EURe per BTC, the direction's rate the decision used
    given_value_eure: Money | None
    received_value_eure: Money | None
    edge_eure: Money | None
    edge_pct: Money | None
    fee_pips: int | None
    fee_eure: Money
    net_eure: Money | None
    markout_10s_eure: Money | None = None
    markout_10s_rate: Money | None = None
    markout_1m_eure: Money | None = None
    markout_1m_rate: Money | None = None
    markout_5m_eure: Money | None = None
    markout_5m_rate: Money | None = None

    def markout(self, label: str) -> Decimal | None:
        value: Decimal | None = getattr(self, f"markout_{label}_eure")
        return value


class Totals(_Out):
    """Sums over trades; a figure a trade lacks (no fair rate, no markout price yet) is left out
    of its sum, and `*_n` says how many trades each sum covers."""

    day: date | None = None  # None: every day
    direction: Direction | None = None  # None: both
    trades: int
    gave: dict[str, Money]  # asset symbol -> units
    received: dict[str, Money]
    given_value_eure: Money
    edge_eure: Money
    edge_n: int
    fee_eure: Money
    net_eure: Money
    markout_10s_eure: Money | None
    markout_10s_n: int
    markout_1m_eure: Money | None
    markout_1m_n: int
    markout_5m_eure: Money | None
    markout_5m_n: int


class InventoryValue(_Out):
    at: datetime
    inventory_id: str
    stale: bool
    btc: Money
    eure: Money
    price_at: datetime | None
    mid_rate: Money | None
    value_eure: Money | None
    change_eure: Money | None  # from the previous line with a value


class PnlReport(_Out):
    since: datetime
    until: datetime
    fee_rule: str
    trades: list[TradePnl]
    totals: list[Totals]  # per day and direction
    total: Totals  # every trade
    inventory: list[InventoryValue]


# --- the computation ---------------------------------------------------------------------------


def _symbol(asset_id: str) -> str:
    asset = REGISTRY.get(asset_id)
    return asset.symbol if asset is not None else asset_id


def _units(base: int, asset_id: str) -> Decimal | None:
    asset = REGISTRY.get(asset_id)
    return None if asset is None else to_units(base, asset.decimals)


def _btc_and_eure(t: SettledTrade) -> tuple[Decimal | None, Decimal | None]:
    """(BTC units, EURe units) of the trade: SELL_BTC gives BTC for EURe, BUY_BTC the reverse."""
    btc_id, btc_base, eure_id, eure_base = (
        (t.asset_out, t.amount_out, t.asset_in, t.amount_in)
        if t.direction == "SELL_BTC"
        else (t.asset_in, t.amount_in, t.asset_out, t.amount_out)
    )
    btc_asset = REGISTRY.get(btc_id)
    if eure_id != EURE_ID or btc_asset is None or btc_asset.symbol != "BTC":
        return None, None  # not the pair this report values
    return to_units(btc_base, btc_asset.decimals), _units(eure_base, eure_id)


def value_of(direction: Direction, btc: Decimal, eure: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """(value given, value received) in EURe at `rate` (EURe per BTC)."""
    with localcontext(DECIMAL_CTX):
        btc_value = btc * rate
    return (btc_value, eure) if direction == "SELL_BTC" else (eure, btc_value)


def pnl_at(direction: Direction, btc: Decimal, eure: Decimal, rate: Decimal) -> Decimal:
    """What the trade is worth to quoteloop at `rate`: value received − value given."""
    given, received = value_of(direction, btc, eure, rate)
    with localcontext(DECIMAL_CTX):
        return received - given


def trade_pnl(t: SettledTrade) -> TradePnl:
    btc, eure = _btc_and_eure(t)
    rate = t.decision_price.rate(t.direction) if t.decision_price is not None else None
    if rate is None:
        rate = t.reference_rate
    given = received = edge = edge_pct = None
    if btc is not None and eure is not None and rate is not None:
        given, received = value_of(t.direction, btc, eure, rate)
        with localcontext(DECIMAL_CTX):
            edge = received - given
            edge_pct = edge / given * 100 if given else None
    fee = ZERO  # FEE_RULE
    marks: dict[str, Decimal | None] = {}
    for label, _ in HORIZONS:
        mark = (t.later or {}).get(label)
        later_rate = mark.rate(t.direction) if mark is not None else None
        marks[f"markout_{label}_rate"] = later_rate
        marks[f"markout_{label}_eure"] = (
            pnl_at(t.direction, btc, eure, later_rate)
            if btc is not None and eure is not None and later_rate is not None
            else None
        )
    return TradePnl(
        quote_id=t.quote_id,
        command_id=t.command_id,
        filled_at=t.filled_at,
        day=t.filled_at.date(),
        direction=t.direction,
        gave_asset=_symbol(t.asset_out),
        gave_amount=_units(t.amount_out, t.asset_out),
        received_asset=_symbol(t.asset_in),
        received_amount=_units(t.amount_in, t.asset_in),
        price_event_id=t.price_event_id,
        fair_rate=rate,
        given_value_eure=given,
        received_value_eure=received,
        edge_eure=edge,
        edge_pct=edge_pct,
        fee_pips=t.fee_pips,
        fee_eure=fee,
        net_eure=None if edge is None else edge - fee,
        **marks,
    )


def _sum(values: Iterable[Decimal | None]) -> tuple[Decimal | None, int]:
    present = [v for v in values if v is not None]
    if not present:
        return None, 0
    with localcontext(DECIMAL_CTX):
        return sum(present, ZERO), len(present)


def totals(trades: list[TradePnl], day: date | None = None, direction: Direction | None = None) -> Totals:
    gave: dict[str, Decimal] = {}
    received: dict[str, Decimal] = {}
    with localcontext(DECIMAL_CTX):
        for t in trades:
            if t.gave_amount is not None:
                gave[t.gave_asset] = gave.get(t.gave_asset, ZERO) + t.gave_amount
            if t.received_amount is not None:
                received[t.received_asset] = received.get(t.received_asset, ZERO) + t.received_amount
    given_value, _ = _sum(t.given_value_eure for t in trades)
    edge, edge_n = _sum(t.edge_eure for t in trades)
    fee, _ = _sum(t.fee_eure for t in trades)
    net, _ = _sum(t.net_eure for t in trades)
    marks: dict[str, Any] = {}
    for label, _ in HORIZONS:
        marks[f"markout_{label}_eure"], marks[f"markout_{label}_n"] = _sum(t.markout(label) for t in trades)
    return Totals(
        day=day,
        direction=direction,
        trades=len(trades),
        gave=gave,
        received=received,
        given_value_eure=given_value or ZERO,
        edge_eure=edge or ZERO,
        edge_n=edge_n,
        fee_eure=fee or ZERO,
        net_eure=net or ZERO,
        **marks,
    )


def day_totals(trades: list[TradePnl]) -> list[Totals]:
    """One line per day (UTC, of the fill) and direction, in order."""
    groups: dict[tuple[date, Direction], list[TradePnl]] = {}
    for t in trades:
        groups.setdefault((t.day, t.direction), []).append(t)
    return [totals(group, day, direction) for (day, direction), group in sorted(groups.items())]


def inventory_values(points: list[InventoryPoint]) -> list[InventoryValue]:
    out: list[InventoryValue] = []
    previous: Decimal | None = None
    for p in sorted(points, key=lambda p: p.at):
        btc = eure = ZERO
        for asset_id, base in p.balances.items():
            asset = REGISTRY.get(asset_id)
            if asset_id == EURE_ID and asset is not None:
                eure = to_units(base, asset.decimals)
            elif asset is not None and asset.symbol == "BTC":
                btc += to_units(base, asset.decimals)
        mid = p.price.mid() if p.price is not None else None
        value = change = None
        if mid is not None:
            with localcontext(DECIMAL_CTX):
                value = btc * mid + eure
                change = None if previous is None else value - previous
            previous = value
        out.append(
            InventoryValue(
                at=p.at,
                inventory_id=p.inventory_id,
                stale=p.stale,
                btc=btc,
                eure=eure,
                price_at=p.price.at if p.price is not None else None,
                mid_rate=mid,
                value_eure=value,
                change_eure=change,
            )
        )
    return out


def report(trades: list[SettledTrade], inventory: list[InventoryPoint], since: datetime, until: datetime) -> PnlReport:
    rows = [trade_pnl(t) for t in sorted(trades, key=lambda t: (t.filled_at, t.command_id))]
    return PnlReport(
        since=since,
        until=until,
        fee_rule=FEE_RULE,
        trades=rows,
        totals=day_totals(rows),
        total=totals(rows),
        inventory=inventory_values(inventory),
    )


# --- the SQL layer ------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def price_mark(at: datetime | None, payload: Mapping[str, Any] | None) -> PriceMark | None:
    if at is None or payload is None:
        return None
    return PriceMark(
        at=at,
        fair_rate_buy_btc=_dec(payload.get("fair_rate_buy_btc")),
        fair_rate_sell_btc=_dec(payload.get("fair_rate_sell_btc")),
        fair_rate_mid=_dec(payload.get("fair_rate_mid")),
    )


def settled_trade(row: Mapping[str, Any]) -> SettledTrade | None:
    """One row of `TRADES_SQL`; None when neither the result nor its command names the amounts."""
    result: Mapping[str, Any] = row["result"] or {}
    command: Mapping[str, Any] = row["command"] or {}
    decision: Mapping[str, Any] = row["decision"] or {}

    def pick(key: str) -> Any:
        return result.get(key) if result.get(key) is not None else command.get(key)

    direction = pick("direction") or decision.get("direction")
    fields = (pick("asset_in"), pick("amount_in"), pick("asset_out"), pick("amount_out"))
    if direction not in ("SELL_BTC", "BUY_BTC") or any(f is None for f in fields):
        return None
    fee = decision.get("protocol_fee_pips")
    return SettledTrade(
        quote_id=row["quote_id"],
        command_id=row["command_id"],
        direction=direction,
        asset_in=str(fields[0]),
        amount_in=int(fields[1]),
        asset_out=str(fields[2]),
        amount_out=int(fields[3]),
        filled_at=row["filled_at"],
        decision_id=result.get("decision_id") or command.get("decision_id"),
        price_event_id=None if row["price_event_id"] is None else str(row["price_event_id"]),
        decision_price=price_mark(row["price_at"], row["price"]),
        reference_rate=_dec(decision.get("reference_rate")),
        fee_pips=int(fee) if fee is not None else None,
        later={label: price_mark(row[f"m{label}_at"], row[f"m{label}"]) for label, _ in HORIZONS},
    )


def _later(label: str, n: int) -> str:
    return f"""
    LEFT JOIN LATERAL (
        SELECT m.occurred_at AS m{label}_at, m.event->'payload' AS m{label} FROM market_price_events m
        WHERE m.occurred_at >= s.filled_at + ${n}::interval AND m.occurred_at < s.filled_at + 2 * ${n}::interval
          AND m.event->'payload'->>'fair_rate_buy_btc' IS NOT NULL
          AND m.event->'payload'->>'fair_rate_sell_btc' IS NOT NULL
        ORDER BY m.occurred_at LIMIT 1
    ) m{label} ON true"""


TRADES_SQL = f"""
WITH settled AS (
    SELECT DISTINCT ON (command_id) command_id, quote_id, event->'payload' AS result,
           coalesce((event->'payload'->>'resolved_at')::timestamptz, occurred_at) AS filled_at
    FROM trade_execution_results
    WHERE status = 'settled' AND occurred_at >= $1 AND occurred_at < $2
    ORDER BY command_id, occurred_at, observed_at
)
SELECT s.command_id, s.quote_id, s.result, s.filled_at, c.command, d.decision, d.price_event_id,
       p.occurred_at AS price_at, p.event->'payload' AS price,
       {", ".join(f"m{label}.m{label}_at, m{label}.m{label}" for label, _ in HORIZONS)}
FROM settled s
LEFT JOIN LATERAL (
    SELECT x.event->'payload' AS command FROM execute_trade_commands x
    WHERE x.command_id = s.command_id ORDER BY x.occurred_at LIMIT 1
) c ON true
LEFT JOIN LATERAL (
    SELECT y.event->'payload' AS decision, y.price_event_id FROM trade_decisions y
    WHERE y.decision_id = coalesce(s.result->>'decision_id', c.command->>'decision_id')
    ORDER BY y.occurred_at LIMIT 1
) d ON true
LEFT JOIN market_price_events p ON p.event_id = d.price_event_id
{"".join(_later(label, 3 + i) for i, (label, _) in enumerate(HORIZONS))}
ORDER BY s.filled_at, s.command_id
"""

INVENTORY_SQL = """
WITH last_in_bucket AS (
    SELECT DISTINCT ON (date_bin($3::interval, occurred_at, $1)) occurred_at, inventory_id,
           event->'payload' AS payload
    FROM intent_inventory_snapshots
    WHERE occurred_at >= $1 AND occurred_at < $2
    ORDER BY date_bin($3::interval, occurred_at, $1), occurred_at DESC, observed_at DESC
)
SELECT l.occurred_at, l.inventory_id, l.payload, p.price_at, p.price
FROM last_in_bucket l
LEFT JOIN LATERAL (
    SELECT m.occurred_at AS price_at, m.event->'payload' AS price FROM market_price_events m
    WHERE m.occurred_at <= l.occurred_at AND m.occurred_at > l.occurred_at - $4::interval
      AND m.event->'payload'->>'fair_rate_buy_btc' IS NOT NULL
      AND m.event->'payload'->>'fair_rate_sell_btc' IS NOT NULL
    ORDER BY m.occurred_at DESC LIMIT 1
) p ON true
ORDER BY l.occurred_at
"""


def inventory_point(row: Mapping[str, Any]) -> InventoryPoint:
    payload: Mapping[str, Any] = row["payload"] or {}
    balances: dict[str, int] = {}
    for a in payload.get("assets") or []:
        # credited when read; else spendable + what pending withdrawals still hold of it
        credited = a.get("credited")
        balances[str(a["asset_id"])] = (
            int(credited) if credited is not None else (int(a.get("spendable") or 0) + int(a.get("reserved_out") or 0))
        )
    return InventoryPoint(
        at=row["occurred_at"],
        inventory_id=str(row["inventory_id"]),
        balances=balances,
        stale=bool(payload.get("stale")),
        price=price_mark(row["price_at"], row["price"]),
    )


async def fetch(
    pool: asyncpg.Pool, since: datetime, until: datetime, every: timedelta
) -> tuple[list[SettledTrade], list[InventoryPoint]]:
    """The settled trades (by the time their settlement was recorded) and the inventory
    snapshots of [since, until), with the prices each needs."""
    trades = await fetch_trades(pool, since, until)
    inventory = [
        inventory_point(r) for r in await pool.fetch(INVENTORY_SQL, since, until, every, INVENTORY_PRICE_MAX_AGE)
    ]
    return trades, inventory


async def fetch_trades(pool: asyncpg.Pool, since: datetime, until: datetime) -> list[SettledTrade]:
    """The settled trades of [since, until) (by the time their settlement was recorded)."""
    rows = await pool.fetch(TRADES_SQL, since, until, *(h for _, h in HORIZONS))
    return [t for t in (settled_trade(r) for r in rows) if t is not None]


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: where "today" starts in the monitor's summary."""
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


async def today(pool: asyncpg.Pool, now: datetime) -> Totals:
    """Every trade settled since midnight UTC, summed (the monitor's P&L line)."""
    return totals([trade_pnl(t) for t in await fetch_trades(pool, start_of_day(now), now)], start_of_day(now).date())
