"""The monitor's functional core: daemon `/state` bodies and report rows in, display rows out.

`/state` bodies are read through their typed models (daemons/core/state_models.py, via
`qlctl.ops.DaemonStatus`), never through dict keys. Every function here is pure and tolerant: a
daemon that is not running or a key a daemon does not (yet) publish shows as "-" or a muted note,
and a body whose values do not fit the model shows as UNREADABLE, never as an exception. Amounts
arrive as integer base units (decimal strings on the wire) and are shown in units of the asset
through the registry's decimals, exactly (Decimal, never float).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from rich.text import Text

from daemons.core.assets import REGISTRY, to_units
from daemons.core.state_models import (
    InventorySyncState,
    LiquidityManagerState,
    MarketReferenceState,
    StrategyEngineState,
    TradeExecutorState,
)
from qlctl.client import SERVICES
from qlctl.disarm import ARMABLE

if TYPE_CHECKING:
    from qlctl.ops import DaemonStatus
    from qlctl.pnl import Totals

Level = Literal["ok", "warn", "bad", "muted", "plain"]
STYLE: dict[Level, str] = {"ok": "green", "warn": "yellow", "bad": "bold red", "muted": "dim", "plain": ""}
NONE = "-"

State = Mapping[str, Any]
States = Mapping[str, State]


def as_status(service: str, state: Any) -> DaemonStatus:
    """The typed status (qlctl.ops) of an envelope; imported late: ops renders through this module."""
    from qlctl.ops import as_status as typed

    return typed(service, state)


def cell(text: object, level: Level = "plain") -> Text:
    return Text(str(text), style=STYLE[level])


# --- scalars --------------------------------------------------------------------------------------


def parse_ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def ms_between(earlier: Any, now: datetime) -> int | None:
    at = parse_ts(earlier)
    return None if at is None else int((now - at).total_seconds() * 1000)


def fmt_ms(ms: Any) -> str:
    """A duration for people: 850 ms, 12.3 s, 4 min, 2 h 5 min."""
    if isinstance(ms, bool) or not isinstance(ms, int | float | Decimal):
        return NONE
    ms = int(ms)
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        return f"{sign}{ms} ms"
    if ms < 60_000:
        return f"{sign}{ms // 1000}.{(ms % 1000) // 100} s"
    minutes = ms // 60_000
    if minutes < 60:
        return f"{sign}{minutes} min"
    return f"{sign}{minutes // 60} h {minutes % 60} min"


def ago(value: Any, now: datetime) -> str:
    ms = ms_between(value, now)
    return NONE if ms is None else f"{fmt_ms(ms)} ago"


def until(value: Any, now: datetime) -> str:
    ms = ms_between(value, now)
    if ms is None:
        return NONE
    return f"in {fmt_ms(-ms)}" if ms <= 0 else f"passed {fmt_ms(ms)} ago"


def clock(value: Any) -> str:
    at = parse_ts(value)
    return NONE if at is None else at.strftime("%H:%M:%S.%f")[:-3]


def short(value: Any, n: int = 8) -> str:
    if value is None:
        return NONE
    text = str(value)
    return text if len(text) <= n + 1 else text[:n] + "…"


def decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def plain_number(value: Any) -> str:
    d = decimal(value)
    return NONE if d is None else format(d, "f")


def symbol(asset_id: Any) -> str:
    asset = REGISTRY.get(asset_id) if isinstance(asset_id, str) else None
    if asset is not None:
        return asset.symbol
    return short(asset_id.removeprefix("nep141:") if isinstance(asset_id, str) else asset_id, 16)


def amount(base_units: Any, asset_id: Any, decimals: Any = None) -> str:
    """Base units as units of the asset ("0.00012 BTC"); raw base units when the decimals are
    unknown, so a figure is never shown at the wrong scale."""
    d = decimal(base_units)
    if d is None or d != d.to_integral_value():
        return NONE if d is None else f"{d} (base units?)"
    asset = REGISTRY.get(asset_id) if isinstance(asset_id, str) else None
    places = asset.decimals if asset is not None else decimals if isinstance(decimals, int) else None
    if places is None:
        return f"{int(d)} base units"
    # format "f" and strip by hand: normalize() would round to the context's 28 digits
    text = format(to_units(int(d), places), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol(asset_id)}"


# --- the daemon table -----------------------------------------------------------------------------

DAEMON_COLUMNS = ("service", "running", "health", "state", "arm", "connected", "data", "last success", "blocked")


def _connected(value: Any) -> Text:
    if isinstance(value, bool):
        return cell("up" if value else "DOWN", "ok" if value else "bad")
    if not isinstance(value, Mapping) or not value:
        return cell(NONE, "muted")
    text = Text()
    for name, up in value.items():
        if isinstance(up, Mapping):  # e.g. inventory-sync's bridge reads per chain
            up = all(v for v in up.values() if v is not None) if up else None
        if up is None:
            continue
        if text:
            text.append(" ")
        text.append(f"{name}{'✓' if up else '✗'}", style=STYLE["ok" if up else "bad"])
    return text or cell(NONE, "muted")


def daemon_row(service: str, state: State | DaemonStatus, now: datetime) -> list[Text]:
    st = as_status(service, state)
    if not st.running:
        error = st.error or ""
        # the plain "not running" needs no repeating; permission or timeout errors do
        detail = "" if "is not running" in error else error
        return [
            cell(service),
            cell("NOT RUNNING", "bad"),
            *(cell(NONE, "muted") for _ in range(6)),
            cell(detail, "warn"),
        ]
    s = st.state
    reasons = [str(r) for r in s.reasons or []]
    if st.outcome == "unreadable":
        health = cell(f"UNREADABLE: {st.error}", "bad")
    elif s.healthy is True:
        health = cell("ok", "ok")
    elif s.healthy is False:
        # the first reason, kept short: every reason is in full in the alerts panel
        health = cell("UNHEALTHY" + (f": {short(reasons[0], 40)}" if reasons else ""), "bad")
    else:
        health = cell(NONE, "muted")
    if s.draining:
        run_state = cell("draining", "warn")
    elif s.paused:
        run_state = cell("paused" if s.pause_effective is not False else "pausing", "warn")
    else:
        run_state = cell("running", "ok")
    if st.has_arm_switch or "armed" in s.model_fields_set:
        armed = st.armed
        arm = cell("ARMED", "bad") if armed is True else cell("disarmed", "ok") if armed is False else cell(NONE)
    else:
        arm = cell("", "muted")
    auth = s.authoritative
    data = cell("authoritative", "ok") if auth is True else cell("STALE", "warn") if auth is False else cell(NONE)
    blocked = s.blocked_reason
    return [
        cell(service),
        cell("yes", "ok"),
        health,
        run_state,
        arm,
        _connected(s.connected),
        data,
        cell(ago(s.last_success_at, now)),
        cell(str(blocked) if blocked else "", "warn"),
    ]


def daemon_rows(states: States, now: datetime) -> list[tuple[str, list[Text]]]:
    """One row per known service, in the fixed order, whatever `states` holds."""
    return [(s, daemon_row(s, states.get(s) or {"running": False}, now)) for s in SERVICES]


# --- alerts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    level: Level
    source: str
    text: str


def alerts(states: States, db_error: str | None = None) -> list[Alert]:
    """What needs an operator's eye: unhealthy reasons first, then absences and held states."""
    out: list[Alert] = []
    for service in SERVICES:
        st = as_status(service, states.get(service) or {"running": False})
        if not st.running:
            error = st.error or ""
            # the socket path is in the header already; other failures (permission, timeout) say more
            out.append(Alert("warn", service, "not running" if not error or "is not running" in error else error))
            continue
        s = st.state
        if st.outcome == "unreadable":
            out.append(Alert("bad", service, f"/state unreadable: {st.error}"))
        for reason in s.reasons or []:
            out.append(Alert("bad", service, str(reason)))
        if s.draining:
            out.append(Alert("warn", service, "draining: finishing in-flight work, then exiting"))
        elif s.paused:
            out.append(Alert("warn", service, "paused: taking no new work"))
        dead = s.dead_letters
        if isinstance(dead, int) and not isinstance(dead, bool) and dead > 0:
            out.append(Alert("warn", service, f"{dead} undecodable deliveries dead-lettered"))
        if isinstance(s, LiquidityManagerState) and s.withdrawals_frozen:
            out.append(Alert("warn", service, "withdrawals frozen"))
        if isinstance(s, TradeExecutorState):
            # live answers still unresolved after a timeout or disconnect: never assumed failed
            uncertain = [a for a in s.live_answers or [] if a.state == "uncertain"]
            if uncertain:
                out.append(Alert("bad", service, f"{len(uncertain)} live answers with an uncertain outcome"))
            undecided = s.undecided or []
            if undecided:
                out.append(
                    Alert(
                        "bad",
                        service,
                        f"{len(undecided)} answers the chain cannot decide: holds kept until `qlctl resolve answer`",
                    )
                )
        if isinstance(s, LiquidityManagerState):
            undecided_w = (s.withdrawals.undecided if s.withdrawals is not None else None) or []
            if undecided_w:
                out.append(
                    Alert(
                        "bad",
                        service,
                        f"{len(undecided_w)} withdrawals the chain cannot decide: new ones refused unless confirmed",
                    )
                )
    if db_error:
        out.append(Alert("warn", "postgresql", db_error))
    order = {"bad": 0, "warn": 1}
    return sorted(out, key=lambda a: order.get(a.level, 2))


# --- prices ---------------------------------------------------------------------------------------

PRICE_COLUMNS = ("price", "value", "freshness", "note")


def _fresh(age_ms: Any, fresh: Any = None) -> Text:
    if fresh is False:
        return cell(f"STALE {fmt_ms(age_ms)}" if age_ms is not None else "STALE", "warn")
    return cell(fmt_ms(age_ms), "plain" if age_ms is not None else "muted")


def price_rows(states: States, now: datetime) -> list[list[Text]]:
    rows: list[list[Text]] = []
    mr_st = as_status("market-reference-ingest", states.get("market-reference-ingest") or {})
    mr = mr_st.state if isinstance(mr_st.state, MarketReferenceState) else None
    if not mr_st.running or mr is None:
        rows.append([cell("market-reference-ingest"), cell("not running", "bad"), cell(NONE), cell("")])
    else:
        price = mr.price
        decisionable = mr.decisionable
        source = mr.source or (price.source if price is not None else None)
        note = "fallback (CoinGecko)" if mr.fallback_in_use else str(source or "")
        fresh = price.freshness_ms if price is not None else None
        ok = decisionable is True
        rows.append(
            [
                cell("fair BUY_BTC (bid)"),
                cell(plain_number(price.fair_rate_buy_btc if price is not None else None)),
                _fresh(fresh, ok if decisionable is not None else None),
                cell(note),
            ]
        )
        rows.append(
            [
                cell("fair SELL_BTC (ask)"),
                cell(plain_number(price.fair_rate_sell_btc if price is not None else None)),
                _fresh(fresh, ok if decisionable is not None else None),
                cell(note),
            ]
        )
        if price is not None and price.fair_rate_mid is not None:
            rows.append([cell("fair mid"), cell(plain_number(price.fair_rate_mid)), _fresh(fresh), cell("")])
        if ok:
            status = "decisionable"
        elif decisionable is False:
            status = f"NOT decisionable: {mr.blocked_reason or (price.status_reason if price is not None else None)}"
        else:
            status = NONE
        published = mr.publishing.last_published_at if mr.publishing is not None else None
        rows.append(
            [
                cell("status"),
                cell(status, "ok" if ok else "bad" if decisionable is False else "muted"),
                cell(""),
                cell(f"published {ago(published, now)}"),
            ]
        )
        kraken = mr.kraken
        k = kraken.latest if kraken is not None else None
        if k is not None and k.model_fields_set or kraken is not None and kraken.state:
            rows.append(
                [
                    cell("Kraken bid / ask"),
                    cell(
                        f"{plain_number(k.bid if k is not None else None)} / "
                        f"{plain_number(k.ask if k is not None else None)}"
                    ),
                    _fresh(k.age_ms if k is not None else None, kraken.fresh if kraken is not None else None),
                    cell(str((kraken.state if kraken is not None else None) or "")),
                ]
            )
        cg = mr.coingecko
        c = cg.latest if cg is not None else None
        if c is not None and c.model_fields_set or cg is not None and cg.state:
            rows.append(
                [
                    cell("CoinGecko BTC/EUR"),
                    cell(plain_number(c.btc_eur if c is not None else None)),
                    _fresh(c.age_ms if c is not None else None, cg.fresh if cg is not None else None),
                    cell(str((cg.state if cg is not None else None) or "")),
                ]
            )
        eure = mr.eure
        price_rate = price.eure_eur_rate if price is not None else None
        rate = eure.rate if eure is not None and "rate" in eure.model_fields_set else price_rate
        if rate is not None:
            basis = (eure.basis if eure is not None else None) or (price.eure_basis if price is not None else None)
            rows.append([cell("EURe/EUR"), cell(plain_number(rate)), cell(""), cell(str(basis or ""))])
    se_st = as_status("strategy-engine", states.get("strategy-engine") or {})
    se = se_st.state if isinstance(se_st.state, StrategyEngineState) else None
    inp = se.inputs.price if se is not None and se.inputs is not None else None
    if se_st.running and inp is not None:
        stale = inp.stale
        usable = not stale and inp.decisionable is not False
        rows.append(
            [
                cell("strategy sees"),
                cell("usable" if usable else "NOT usable", "ok" if usable else "bad"),
                _fresh(inp.age_ms, not stale if stale is not None else None),
                cell(str(inp.reason or inp.source or "")),
            ]
        )
    elif se_st.running:
        rows.append([cell("strategy sees"), cell("no price yet", "bad"), cell(NONE), cell("")])
    return rows


# --- inventory ------------------------------------------------------------------------------------

INVENTORY_COLUMNS = ("asset", "credited", "spendable", "pending in", "pending out", "rsv strategy", "rsv executor")


def inventory_rows(states: States, now: datetime) -> list[list[Text]]:
    inv_st = as_status("inventory-sync", states.get("inventory-sync") or {})
    se, ex = (
        as_status("strategy-engine", states.get("strategy-engine") or {}),
        as_status("trade-executor", states.get("trade-executor") or {}),
    )
    inv = inv_st.state if isinstance(inv_st.state, InventorySyncState) else None
    reserved_s: Mapping[str, Any] = (se.state.reserved if isinstance(se.state, StrategyEngineState) else None) or {}
    reserved_e: Mapping[str, Any] = (ex.state.reserved if isinstance(ex.state, TradeExecutorState) else None) or {}
    rows: list[list[Text]] = []
    seen: set[str] = set()
    for a in (inv.inventory if inv is not None else None) or []:
        aid: Any = a.asset_id  # whatever the daemon's JSON holds: symbol() and amount() take any value
        seen.add(str(aid))
        dec = a.decimals
        rows.append(
            [
                cell(symbol(aid)),
                cell(amount(a.credited, aid, dec)),
                cell(amount(a.spendable, aid, dec), "ok"),
                cell(amount(a.pending_in, aid, dec)),
                cell(amount(a.pending_out, aid, dec)),
                cell(amount(reserved_s.get(aid, 0), aid, dec)),
                cell(amount(reserved_e.get(aid, 0), aid, dec)),
            ]
        )
    # reservations on an asset the snapshot does not list are still shown
    for aid in sorted({*reserved_s, *reserved_e} - seen):
        rows.append(
            [
                cell(symbol(aid)),
                cell(NONE, "muted"),
                cell(NONE, "muted"),
                cell(NONE, "muted"),
                cell(NONE, "muted"),
                cell(amount(reserved_s.get(aid, 0), aid)),
                cell(amount(reserved_e.get(aid, 0), aid)),
            ]
        )
    if not inv_st.running or inv is None:
        rows.append([cell("inventory-sync"), cell("not running", "bad"), *(cell("") for _ in range(5))])
    else:
        stale = inv.stale
        note = f"STALE: {inv.stale_reason or 'snapshot too old'}" if stale else "fresh" if stale is False else NONE
        sync_at = inv.last_sync.synced_at if inv.last_sync is not None else None
        rows.append(
            [
                cell("snapshot"),
                cell(note, "bad" if stale else "ok" if stale is False else "muted"),
                cell(f"age {fmt_ms(inv.age_ms)}"),
                cell(f"synced {ago(sync_at, now)}"),
                cell(f"reconciliation {inv.reconciliation_status}" if inv.reconciliation_status else ""),
                cell(""),
                cell(""),
            ]
        )
    return rows


# --- live answers and reservations ---------------------------------------------------------------

ANSWER_COLUMNS = ("held by", "command", "quote", "state", "gives", "deadline / expiry")


def answer_rows(states: States, now: datetime) -> list[list[Text]]:
    rows: list[list[Text]] = []
    ex_st = as_status("trade-executor", states.get("trade-executor") or {})
    ex = ex_st.state if isinstance(ex_st.state, TradeExecutorState) else None
    undecided = (ex.undecided if ex is not None else None) or []
    for a in (ex.live_answers if ex is not None else None) or []:
        state = str(a.state or NONE)
        if a.command_id in undecided:
            state = "undecided"
        level: Level = "bad" if state in ("uncertain", "undecided") else "warn" if a.cancel_requested else "plain"
        rows.append(
            [
                cell("executor"),
                cell(short(a.command_id)),
                cell(short(a.quote_id, 12)),
                cell(state + (" (cancel sent)" if a.cancel_requested else ""), level),
                cell(amount(a.reserved, a.asset_id)),
                cell(until(a.deadline, now)),
            ]
        )
    se_st = as_status("strategy-engine", states.get("strategy-engine") or {})
    se = se_st.state if isinstance(se_st.state, StrategyEngineState) else None
    for r in (se.reservations if se is not None else None) or []:
        settled = r.settled_at
        rows.append(
            [
                cell("strategy"),
                cell(short(r.command_id)),
                cell(short(r.quote_id, 12)),
                cell("settled" if settled else "reserved", "muted" if settled else "plain"),
                cell(amount(r.amount, r.asset_id)),
                cell(until(r.expires_at, now)),
            ]
        )
    if not rows:
        missing = [s for s in ARMABLE if not as_status(s, states.get(s) or {}).running]
        note = f"({', '.join(missing)} not running)" if missing else ""
        rows.append([cell("none", "muted"), cell(""), cell(""), cell(""), cell(""), cell(note, "warn")])
    return rows


# --- funding pipeline -----------------------------------------------------------------------------

FUNDING_COLUMNS = ("kind", "id", "asset", "amount", "status", "since / address")


def funding_rows(
    states: States, now: datetime, db_pending: Iterable[Mapping[str, Any]] | None = None
) -> list[list[Text]]:
    """liquidity-manager's live view; PostgreSQL's pending funding when the daemon is away."""
    lm_st = as_status("liquidity-manager", states.get("liquidity-manager") or {})
    lm = lm_st.state if isinstance(lm_st.state, LiquidityManagerState) else None
    rows: list[list[Text]] = []
    if lm_st.running and lm is not None:
        for d in lm.deposit_addresses or []:
            assets = ", ".join(symbol(x) for x in d.asset_ids or [])
            rows.append(
                [
                    cell("deposit address"),
                    cell(str(d.chain or NONE)),
                    cell(assets),
                    cell(""),
                    cell(""),
                    cell(str(d.address or NONE)),
                ]
            )
        for f in (lm.funding.pending if lm.funding is not None else None) or []:
            status = str(f.status or NONE)
            rows.append(
                [
                    cell("funding in"),
                    cell(short(f.liquidity_action_id)),
                    cell(symbol(f.asset_id)),
                    cell(amount(f.amount, f.asset_id)),
                    cell(status, "warn" if status == "delayed" else "plain"),
                    cell(f"recorded {ago(f.recorded_at, now)}"),
                ]
            )
        for w in (lm.withdrawals.in_flight if lm.withdrawals is not None else None) or []:
            given = w.net_amount if "net_amount" in w.model_fields_set else w.amount
            rows.append(
                [
                    cell("withdrawal out"),
                    cell(short(w.liquidity_action_id)),
                    cell(symbol(w.asset_id)),
                    cell(amount(given, w.asset_id)),
                    cell(str(w.status or NONE)),
                    cell(f"requested {ago(w.requested_at, now)}"),
                ]
            )
        frozen = (
            lm.withdrawals_frozen
            if "withdrawals_frozen" in lm.model_fields_set
            else lm.withdrawals.frozen
            if lm.withdrawals is not None
            else None
        )
        if frozen is not None:
            rows.append(
                [
                    cell("withdrawals"),
                    cell(""),
                    cell(""),
                    cell(""),
                    cell("FROZEN" if frozen else "open", "warn" if frozen else "ok"),
                    cell(""),
                ]
            )
        if lm.blocked_reason:
            rows.append([cell("blocked"), cell(""), cell(""), cell(""), cell(str(lm.blocked_reason), "bad"), cell("")])
    else:
        rows.append(
            [
                cell("liquidity-manager"),
                cell(""),
                cell(""),
                cell(""),
                cell("not running", "bad"),
                cell("pending funding below is from PostgreSQL" if db_pending else ""),
            ]
        )
        for row in db_pending or []:  # report rows from PostgreSQL, not /state
            rows.append(
                [
                    cell(f"{row.get('kind') or 'funding'} (db)"),
                    cell(short(row.get("liquidity_action_id"))),
                    cell(symbol(row.get("asset_id"))),
                    cell(amount(row.get("amount"), row.get("asset_id"))),
                    cell(str(row.get("status") or NONE)),
                    cell(f"since {ago(row.get('status_at'), now)}"),
                ]
            )
    if not rows:
        rows.append([cell("nothing pending", "muted"), *(cell("") for _ in range(5))])
    return rows


# --- latest requests ------------------------------------------------------------------------------

# exec.trade_result statuses: what the venue (or the executor) made of the answer
RESULT_LEVEL: dict[str, Level] = {
    "settled": "ok",
    "acknowledged": "ok",
    "expired": "muted",
    "refused": "warn",
    "rejected": "bad",
    "uncertain": "bad",
}
DECISION_COLUMNS = ("decided", "direction", "decision", "reason", "edge %", "venue", "quote")
EDGE_SHOWN = Decimal("0.001")


def edge_text(value: Any) -> str:
    """A percentage to three places for reading (the record keeps the exact figure)."""
    d = decimal(value)
    if d is None or not d.is_finite():
        return NONE
    exponent = d.as_tuple().exponent
    return format(d.quantize(EDGE_SHOWN) if isinstance(exponent, int) and exponent < -3 else d, "f")


def decision_rows(decisions: Iterable[Mapping[str, Any]]) -> list[list[Text]]:
    """Quote id last and in full: it is what `qlctl report chain` takes."""
    rows = []
    for d in decisions:
        execute = d.get("decision") == "execute"
        reason = str(d.get("decision_reason") or NONE)
        detail = d.get("decision_detail")
        result = d.get("result_status")
        rows.append(
            [
                cell(clock(d.get("decided_at"))),
                cell(str(d.get("direction") or NONE)),
                cell("EXECUTE" if execute else "reject", "ok" if execute else "muted"),
                cell(reason + (f" ({detail})" if detail else ""), "plain" if execute else "warn"),
                cell(edge_text(d.get("gross_edge_pct"))),
                cell(str(result or ""), RESULT_LEVEL.get(str(result), "plain")),
                cell(str(d.get("quote_id") or NONE)),
            ]
        )
    return rows


PNL_SHOWN = Decimal("0.01")


def eure_text(value: Decimal | None) -> str:
    """Signed EURe to the cent for reading (the report keeps the exact figure)."""
    if value is None:
        return NONE
    return f"{value.quantize(PNL_SHOWN):+f}"


def pnl_line(totals: Totals | None, db_error: str | None = None) -> Text:
    """Today's P&L in one line that fits 80 columns: trades settled since midnight UTC, the edge
    captured, net of the protocol fee, and the 1-minute markout (over the trades it covers);
    `qlctl report pnl` has the rest."""
    if totals is None:
        why = "PostgreSQL unavailable" if db_error else "reading…"
        return cell(f"P&L today: {why}", "muted")
    line = Text("P&L today (UTC): ")
    line.append(f"{totals.trades} trades", STYLE["plain"])
    line.append(f" · edge {eure_text(totals.edge_eure)}")
    line.append(f" · net {eure_text(totals.net_eure)}", "green" if totals.net_eure >= 0 else "bold red")
    marked = f" ({totals.markout_1m_n}/{totals.trades})" if totals.markout_1m_n != totals.trades else ""
    line.append(f" · 1m markout {eure_text(totals.markout_1m_eure)}{marked} EURe")
    if db_error:
        line.append(" (stale)", STYLE["warn"])
    return line
