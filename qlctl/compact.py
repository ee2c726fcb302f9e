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

from qlctl.tui.view import Level, cell, dig, fmt_ms, ms_between, plain_number

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


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list | tuple) else 0


def _arm(state: Mapping[str, Any]) -> tuple[str, Level] | None:
    armed = state.get("armed")
    if armed is True:
        return "ARMED", "bad"
    if armed is False:
        return "disarmed", "ok"
    return None


def detail(service: str, state: Mapping[str, Any]) -> tuple[str, Level]:
    """The one thing an operator needs from this daemon now, most urgent first: outcomes the
    chain cannot decide, the first unhealthy reason, then the daemon's own key figure."""
    if not state.get("running"):
        error = str(state.get("error") or "")
        return ("" if "is not running" in error else error), "warn"
    undecided = _count(state.get("undecided")) + _count(dig(state, "withdrawals", "undecided"))
    if undecided:
        return f"UNDECIDED {undecided}: qlctl resolve", "bad"
    reasons = state.get("reasons")
    if isinstance(reasons, list) and reasons:
        return str(reasons[0]), "bad"
    arm = _arm(state)
    if service == "trade-executor" and arm is not None:
        live = _count(state.get("live_answers"))
        return f"{arm[0]}, {live} live answer{'' if live == 1 else 's'}", arm[1]
    if service == "strategy-engine" and arm is not None:
        return arm
    if service == "market-reference-ingest":
        if state.get("decisionable") is False:
            return f"NOT decisionable: {state.get('blocked_reason') or '-'}", "bad"
        mid = dig(state, "price", "fair_rate_mid")
        source = state.get("source") or dig(state, "price", "source") or "-"
        return f"{source} mid {plain_number(mid)}", "plain"
    if service == "inventory-sync":
        if state.get("stale"):
            return f"STALE: {state.get('stale_reason') or 'snapshot too old'}", "bad"
        return f"fresh, age {fmt_ms(state.get('age_ms'))}", "ok"
    if service == "near-intents-ingest":
        silent = state.get("pair_silent_for_ms")
        if state.get("pair_silent") and silent is not None:
            return f"pair silent {fmt_ms(silent)}", "warn"
        relay = dig(state, "connected", "relay")
        return ("relay up", "ok") if relay is True else ("relay DOWN", "bad") if relay is False else ("-", "muted")
    if service == "liquidity-manager":
        if state.get("blocked_reason"):
            return str(state["blocked_reason"]), "warn"
        if dig(state, "withdrawals", "frozen"):
            return "withdrawals FROZEN", "warn"
        pending = _count(dig(state, "funding", "pending"))
        return (f"{pending} funding pending", "plain") if pending else ("nothing pending", "muted")
    if service == "history-writer":
        rows, dead = state.get("rows_written"), state.get("dead_letters")
        written = rows if rows is not None else "-"
        if isinstance(dead, int) and dead:
            return f"{dead} dead letters, {written} rows", "warn"
        return f"{written} rows written", "plain"
    blocked = state.get("blocked_reason")
    return (str(blocked), "warn") if blocked else ("", "plain")


def row(service: str, state: Mapping[str, Any], now: datetime) -> list[Text]:
    text, level = detail(service, state)
    if not state.get("running"):
        return [
            cell(short_name(service)),
            cell("NOT RUNNING", "bad"),
            cell("-", "muted"),
            cell("-", "muted"),
            cell(text, level),
        ]
    healthy = state.get("healthy")
    health = cell("ok", "ok") if healthy is True else cell("UNHEALTHY", "bad") if healthy is False else cell("-")
    if state.get("draining"):
        run = cell("draining", "warn")
    elif state.get("paused"):
        run = cell("paused" if state.get("pause_effective", True) else "pausing", "warn")
    else:
        run = cell("running", "ok")
    last = age(ms_between(state.get("last_success_at"), now))
    return [cell(short_name(service)), health, run, cell(last), cell(text, level)]


def table(
    states: Mapping[str, Mapping[str, Any]], chosen: tuple[str, ...], now: datetime, control_dir: object
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
        t.add_row(*row(service, states.get(service) or {"running": False}, now))
    return t
