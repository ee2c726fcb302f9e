"""`qlctl report ...`: chain of custody, skipped quotes, funding, inventory and latency, from
PostgreSQL (through `qlctl.reports`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from qlctl.output import console, fail, print_json, print_rows, run, settings
from qlctl.reports import Reports, parse_since

app = typer.Typer(
    help="Reports from PostgreSQL: chain, skipped, refusals, funding, inventory, latency, pnl", no_args_is_help=True
)
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Since = Annotated[str, typer.Option(help="How far back: 90s, 15m, 1h, 2d")]
T = TypeVar("T")


def _query(fn: Callable[[Reports], Awaitable[T]]) -> T:
    async def go() -> T:
        async with Reports(settings().database_url) as reports:
            return await fn(reports)

    return run(go())


def _or_dash(value: object) -> str:
    """A figure a decision did not record (never priced) is "-", not "None"."""
    return "-" if value is None else str(value)


@app.command("chain")
def chain(quote_id: str, as_json: AsJson = False) -> None:
    """Request → price and inventory used → decision → command → answer → settlement."""
    result = _query(lambda r: r.chain(quote_id))
    if as_json:
        print_json(result)
        return
    console.print(f"[bold]quote {quote_id}[/bold]")
    for d in result["decisions"]:
        console.print(
            f"decision {d['decision_id']}: {d['decision']} ({d['decision_reason']}) "
            f"edge {_or_dash(d['gross_edge_pct'])} % at implied {_or_dash(d['implied_rate'])} "
            f"vs fair {_or_dash(d['reference_rate'])}"
        )
        console.print(
            f"  price {d['price_event_id']} ({d['price_source']}, {d['eure_basis']}) at {d['price_at']}; "
            f"inventory {d['inventory_snapshot_id']} at {d['inventory_at']}"
        )
    for c in result["commands"]:
        p = c["payload"]
        console.print(
            f"command {p['command_id']}: give {p['amount_out']} {p['asset_out']} for {p['amount_in']} {p['asset_in']}"
        )
    for res in result["results"]:
        p = res["payload"]
        console.print(
            f"result {p['status']}: {p.get('reason') or ''} quote_hash={p.get('quote_hash')} tx={p.get('tx_hash')}"
        )
    print_rows("stages", result["stages"], ["stage", "at", "ms_since_previous"])


@app.command("skipped")
def skipped(since: Since = "1h", as_json: AsJson = False) -> None:
    """Skipped quotes: counts and examples by reason."""
    rows = _query(lambda r: r.skipped(parse_since(since)))
    if as_json:
        print_json(rows)
    else:
        print_rows(f"skipped in the last {since}", rows, ["decision_reason", "n", "examples", "latest"])


@app.command("refusals")
def refusals(since: Since = "1h", as_json: AsJson = False) -> None:
    """trade-executor's refusals and not-sent answers by reason code (its own checks or the venue's)."""
    rows = _query(lambda r: r.refusals(parse_since(since)))
    if as_json:
        print_json(rows)
    else:
        print_rows(
            f"executor refusals in the last {since}",
            rows,
            ["status", "reason_code", "source", "n", "example", "latest"],
        )


@app.command("funding")
def funding(
    pending: Annotated[bool, typer.Option("--pending", help="Only funding still pending")] = False,
    as_json: AsJson = False,
) -> None:
    """Liquidity actions and their latest status (or only pending funding)."""
    rows = _query(lambda r: r.funding(pending))
    if as_json:
        print_json(rows)
    else:
        print_rows(
            "pending funding" if pending else "liquidity actions",
            rows,
            ["liquidity_action_id", "kind", "status", "asset_id", "chain", "amount", "tx_hash", "status_at"],
        )


@app.command("inventory")
def inventory(
    at: Annotated[str, typer.Option(help="ISO time, e.g. 2026-11-24T12:00:00Z (default: now)")] = "",
    as_json: AsJson = False,
) -> None:
    """The inventory snapshot in force at a time: credited (spendable) and pending per asset."""
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00")) if at else datetime.now(UTC)
    except ValueError:
        fail(f"bad time {at!r}: use ISO 8601, e.g. 2026-11-24T12:00:00Z", code=2)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    snapshot = _query(lambda r: r.inventory_at(when))
    if as_json:
        print_json(snapshot)
    else:
        console.print(
            f"inventory {snapshot['inventory_id']} at {snapshot['occurred_at']} (stale: {snapshot.get('stale')})"
        )
        print_rows("assets", snapshot.get("assets", []), ["asset_id", "spendable", "pending_in", "pending_out"])


@app.command("latency")
def latency(since: Since = "1h", as_json: AsJson = False) -> None:
    """Per-stage latency percentiles (ms)."""
    rows = _query(lambda r: r.latency(parse_since(since)))
    if as_json:
        print_json(rows)
    else:
        print_rows(f"latency in the last {since} (ms)", rows, ["stage", "n", "p50", "p90", "p99", "max"])
