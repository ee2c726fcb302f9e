"""`qlctl status` in 80 columns: a short name per daemon, its health word, run state, last
success and the one detail that matters for it. Pure: `/state` bodies in, a Rich table out.

Names and health words are never cut or wrapped (their columns are as wide as their longest
value); only the detail gives way, ending in "…" (`--wide` shows everything). Meaning never
rests on colour alone: the words that need an eye are upper case (UNHEALTHY, NOT RUNNING,
ARMED, STALE, UNDECIDED), so NO_COLOR and a pipe lose nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from daemons.core.state_models import (
    HistoryWriterState,
    InventorySyncState,
    LiquidityManagerState,
    MarketReferenceState,
    NearIntentsIngestState,
    StrategyEngineState,
    TradeExecutorState,
)
from qlctl import ops
from qlctl.ops import DaemonStatus
from qlctl.tui.view import Level, cell, fmt_ms, ms_between, plain_number

# the short name of each daemon (qlctl.client.SERVICES order); the full name is the one to type
SHORT_NAMES: dict[str, str] = {
    "near-intents-ingest": "intents",
    "market-reference-ingest": "prices",
    "inventory-sync": "inventory",
    "liquidity-manager": "liquidity",
    "history-writer": "history",
    "strategy-engine": "strategy",
    "trade-executor": "executor",
}
HEALTH_WORDS: tuple[str, ...] = ("ok", "UNHEALTHY", "NOT RUNNING", "-")
STATE_WORDS: tuple[str, ...] = ("running", "paused", "pausing", "draining", "-")
COLUMNS: tuple[str, ...] = ("service", "health", "state", "last ok", "detail")


def age(ms: int | None) -> str:
    """A short age: 850ms, 12s, 4m, 2h05m, 3d."""
    if ms is None:
        return "-"
    ms = max(0, ms)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms // 1000}s"
    if ms < 3_600_000:
        return f"{ms // 60_000}m"
    if ms < 48 * 3_600_000:
        return f"{ms // 3_600_000}h{(ms // 60_000) % 60:02d}m"
    return f"{ms // 86_400_000}d"


def short_name(service: str) -> str:
    return SHORT_NAMES.get(service, service)


def _arm(st: DaemonStatus) -> tuple[str, Level] | None:
    armed = st.armed
    if armed is True:
        return "ARMED", "bad"
    if armed is False:
        return "disarmed", "ok"
    return None


def detail(service: str, state: DaemonStatus | Mapping[str, Any]) -> tuple[str, Level]:
    """The one thing an operator needs from this daemon now, most urgent first: outcomes the
    chain cannot decide, the first unhealthy reason, then the daemon's own key figure."""
    st = ops.as_status(service, state)
    if not st.running:
        error = st.error or ""
        return ("" if "is not running" in error else error), "warn"
    if st.outcome == "unreadable":
        return f"UNREADABLE: {st.error}", "bad"
    if st.undecided:
        return f"UNDECIDED {st.undecided}: qlctl resolve", "bad"
    s = st.state
    if s.reasons:
        return str(s.reasons[0]), "bad"
    arm = _arm(st)
    if isinstance(s, TradeExecutorState) and arm is not None:
        live = len(s.live_answers or [])
        return f"{arm[0]}, {live} live answer{'' if live == 1 else 's'}", arm[1]
    if isinstance(s, StrategyEngineState) and arm is not None:
        return arm
    if isinstance(s, MarketReferenceState):
        if s.decisionable is False:
            return f"NOT decisionable: {s.blocked_reason or '-'}", "bad"
        mid = s.price.fair_rate_mid if s.price else None
        source = s.source or (s.price.source if s.price else None) or "-"
        return f"{source} mid {plain_number(mid)}", "plain"
    if isinstance(s, InventorySyncState):
        if s.stale:
            return f"STALE: {s.stale_reason or 'snapshot too old'}", "bad"
        return f"fresh, age {fmt_ms(s.age_ms)}", "ok"
    if isinstance(s, NearIntentsIngestState):
        silent = s.pair_silent_for_ms
        if s.pair_silent and silent is not None:
            return f"pair silent {fmt_ms(silent)}", "warn"
        relay = (s.connected or {}).get("relay")
        return ("relay up", "ok") if relay is True else ("relay DOWN", "bad") if relay is False else ("-", "muted")
    if isinstance(s, LiquidityManagerState):
        if s.blocked_reason:
            return str(s.blocked_reason), "warn"
        if s.withdrawals is not None and s.withdrawals.frozen:
            return "withdrawals FROZEN", "warn"
        pending = len(s.funding.pending or []) if s.funding is not None else 0
        return (f"{pending} funding pending", "plain") if pending else ("nothing pending", "muted")
    if isinstance(s, HistoryWriterState):
        rows, dead = s.rows_written, s.dead_letters
        written = rows if rows is not None else "-"
        if isinstance(dead, int) and dead:
            return f"{dead} dead letters, {written} rows", "warn"
        return f"{written} rows written", "plain"
    return (str(s.blocked_reason), "warn") if s.blocked_reason else ("", "plain")


def row(service: str, state: DaemonStatus | Mapping[str, Any], now: datetime) -> list[Text]:
    st = ops.as_status(service, state)
    text, level = detail(service, st)
    if not st.running:
        return [
            cell(short_name(service)),
            cell("NOT RUNNING", "bad"),
            cell("-", "muted"),
            cell("-", "muted"),
            cell(text, level),
        ]
    s = st.state
    health = cell("ok", "ok") if s.healthy is True else cell("UNHEALTHY", "bad") if s.healthy is False else cell("-")
    if s.draining:
        run = cell("draining", "warn")
    elif s.paused:
        run = cell("paused" if s.pause_effective is not False else "pausing", "warn")
    else:
        run = cell("running", "ok")
    last = age(ms_between(s.last_success_at, now))
    return [cell(short_name(service)), health, run, cell(last), cell(text, level)]


def table(
    states: Mapping[str, DaemonStatus | Mapping[str, Any]], chosen: tuple[str, ...], now: datetime, control_dir: object
) -> Table:
    t = Table(
        title="quoteloop daemons",
        caption=f"control sockets in {control_dir}; --wide: full names, all details",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        expand=True,
    )
    width_of = {
        "service": max(len(short_name(s)) for s in chosen) if chosen else len("service"),
        "health": max(len(w) for w in HEALTH_WORDS),
        "state": max(len(w) for w in STATE_WORDS),
        "last ok": len("47h59m"),
    }
    for name in COLUMNS:
        if name == "detail":
            t.add_column(name, no_wrap=True, overflow="ellipsis", min_width=10, ratio=1)
        else:
            width = max(width_of[name], len(name))
            t.add_column(name, no_wrap=True, overflow="ellipsis", min_width=width)
    for service in chosen:
        t.add_row(*row(service, states.get(service) or DaemonStatus.absent(service), now))
    return t
