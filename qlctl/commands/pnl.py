"""`qlctl report pnl`: settled trades valued at the decision's fair price, edge, fee, markouts,
totals per day and direction, and inventory value over time (`qlctl.pnl`)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from daemons.core.events import now_utc
from qlctl import pnl as model
from qlctl.client import ClientError
from qlctl.output import console, fail, print_json, run, settings
from qlctl.reports import Reports, parse_since

SHOWN = Decimal("0.0001")  # EURe figures are shown to 1/100 cent; JSON and CSV keep them exact


def parse_time(text: str, now: datetime) -> datetime:
    """A duration back from `now` (90s, 15m, 1h, 2d) or an ISO time (UTC when it names no zone)."""
    try:
        return now - parse_since(text)
    except ClientError:
        pass
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ClientError(
            f"bad time {text!r}: a duration (90s, 15m, 1h, 2d) or ISO 8601 (2026-11-24T12:00:00Z)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _eur(value: Decimal | None) -> str:
    return "" if value is None else model.plain(value.quantize(SHOWN, rounding=ROUND_HALF_UP))


def _pct(value: Decimal | None) -> str:
    return "" if value is None else model.plain(value.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def _amount(value: Decimal | None, symbol: str) -> str:
    return "" if value is None else f"{model.plain(value)} {symbol}"


def _markout(t: model.Totals, label: str) -> str:
    value: Decimal | None = getattr(t, f"markout_{label}_eure")
    n: int = getattr(t, f"markout_{label}_n")
    return _eur(value) + (f" ({n}/{t.trades})" if value is not None and n < t.trades else "")


def _print(r: model.PnlReport, shown: int) -> None:
    console.print(
        f"[bold]settled trades from {r.since:%Y-%m-%d %H:%M:%S} to {r.until:%Y-%m-%d %H:%M:%S} UTC[/bold]"
        f" ({len(r.trades)})"
    )
    if shown and r.trades:
        trades = Table(
            title="trades (EURe at the decision's fair price; markouts at the price 10 s / 1 min / 5 min "
            "after the fill)"
        )
        for c in (
            "filled",
            "direction",
            "gave",
            "received",
            "fair",
            "edge",
            "edge %",
            "fee",
            "mo 10s",
            "mo 1m",
            "mo 5m",
            "quote",
        ):
            trades.add_column(
                c, justify="right" if c in ("edge", "edge %", "fee", "mo 10s", "mo 1m", "mo 5m") else "left"
            )
        for t in r.trades[-shown:]:
            trades.add_row(
                f"{t.filled_at:%m-%d %H:%M:%S}",
                t.direction,
                _amount(t.gave_amount, t.gave_asset),
                _amount(t.received_amount, t.received_asset),
                "" if t.fair_rate is None else model.plain(t.fair_rate),
                _eur(t.edge_eure),
                _pct(t.edge_pct),
                _eur(t.fee_eure),
                _eur(t.markout_10s_eure),
                _eur(t.markout_1m_eure),
                _eur(t.markout_5m_eure),
                t.quote_id,
            )
        console.print(trades)
    totals = Table(title="totals per day and direction (EURe)")
    for c in ("day", "direction", "trades", "gave", "received", "edge", "fee", "net", "mo 10s", "mo 1m", "mo 5m"):
        totals.add_column(c, justify="left" if c in ("day", "direction", "gave", "received") else "right")
    for s in [*r.totals, r.total]:
        totals.add_row(
            "all" if s.day is None else s.day.isoformat(),
            s.direction or "all",
            str(s.trades),
            ", ".join(_amount(v, k) for k, v in s.gave.items()),
            ", ".join(_amount(v, k) for k, v in s.received.items()),
            _eur(s.edge_eure),
            _eur(s.fee_eure),
            _eur(s.net_eure),
            *(_markout(s, label) for label, _ in model.HORIZONS),
        )
    console.print(totals)
    if r.inventory:
        inv = Table(title="inventory value (credited, at the fair mid rate of the time)")
        for c in ("at", "BTC", "EURe", "mid", "value EURe", "change"):
            inv.add_column(c, justify="left" if c == "at" else "right")
        for v in r.inventory:
            inv.add_row(
                f"{v.at:%Y-%m-%d %H:%M:%S}" + (" STALE" if v.stale else ""),
                model.plain(v.btc),
                model.plain(v.eure),
                "" if v.mid_rate is None else model.plain(v.mid_rate),
                _eur(v.value_eure),
                _eur(v.change_eure),
            )
        console.print(inv)
    console.print(r.fee_rule, highlight=False)


def write_csv(path: Path, r: model.PnlReport) -> None:
    """One row per trade, every field, exact (money as plain decimal strings)."""
    columns = list(model.TradePnl.model_fields)
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=columns)
        out.writeheader()
        for t in r.trades:
            row: dict[str, Any] = t.model_dump(mode="json")
            out.writerow({k: "" if row[k] is None else row[k] for k in columns})


def pnl(
    since: Annotated[str, typer.Option(help="From: a duration back from now (90s, 15m, 1h, 2d) or an ISO time")] = "1d",
    until: Annotated[str, typer.Option(help="To (exclusive): an ISO time or a duration back (default: now)")] = "",
    every: Annotated[str, typer.Option(help="Inventory: one line per this much time (15m, 1h, 1d)")] = "1h",
    trades_shown: Annotated[int, typer.Option("--trades", help="Trades listed in the table, newest (0: none)")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per trade to this CSV file")
    ] = None,
) -> None:
    """Settled trades: given and received, their value at the decision's fair price, edge, protocol fee and
    markouts at 10 s, 1 min and 5 min; totals per day and direction; inventory value over time."""
    now = now_utc()
    try:
        start = parse_time(since, now)
        end = parse_time(until, now) if until else now
        step = parse_since(every)
    except ClientError as exc:
        fail(str(exc), code=2)
    if end <= start:
        fail(f"--until ({end.isoformat()}) must be after --since ({start.isoformat()})", code=2)
    if step <= timedelta(0):
        fail("--every must be a positive duration", code=2)

    async def go() -> model.PnlReport:
        async with Reports(settings().database_url) as reports:
            trades, inventory = await model.fetch(reports.pool, start, end, step)
        return model.report(trades, inventory, start, end)

    result = run(go())
    if csv_path is not None:
        try:
            write_csv(csv_path, result)
        except OSError as exc:
            fail(f"cannot write {csv_path}: {exc.strerror or exc}")
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        _print(result, trades_shown)
        if csv_path is not None:
            console.print(f"wrote {len(result.trades)} trades to {csv_path}", highlight=False)
