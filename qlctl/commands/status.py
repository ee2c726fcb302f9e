"""`qlctl status`: every daemon's health and key state in one table (or JSON)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from daemons.core.events import now_utc
from daemons.core.state_models import HistoryWriterState, NearIntentsIngestState
from qlctl import compact, ops
from qlctl.client import SERVICES
from qlctl.ops import DaemonStatus, Statuses
from qlctl.output import client, console, fail, print_json, run


def _summary(st: DaemonStatus) -> str:
    s = st.state
    fields: list[tuple[str, Any]] = [
        ("armed", st.armed),
        ("connected", s.connected),
        ("authoritative", s.authoritative),
        ("rows_written", s.rows_written if isinstance(s, HistoryWriterState) else None),
        ("dead_letters", s.dead_letters),
        ("blocked_reason", s.blocked_reason),
        ("pair_silent_for_ms", s.pair_silent_for_ms if isinstance(s, NearIntentsIngestState) else None),
    ]
    parts = []
    for key, value in fields:
        if value is not None:
            if isinstance(value, dict):
                value = ",".join(f"{k}={'up' if v else 'down'}" for k, v in value.items())
            parts.append(f"{key}={value}")
    # outcomes the chain could not decide: holds kept until an operator records a verdict
    if st.undecided:
        parts.append(f"[red]undecided={st.undecided}[/red]")
    return " ".join(parts)


def _table(states: Statuses, chosen: tuple[str, ...], control_dir: object) -> Table:
    table = Table(title="quoteloop daemons", caption=f"control sockets in {control_dir}")
    for column in ("service", "running", "health", "paused", "last success", "details"):
        table.add_column(column)
    for name in chosen:
        st = states[name]
        if not st.running:
            error = st.error or ""
            table.add_row(name, "[red]no[/red]", "-", "-", "-", "" if "is not running" in error else error)
            continue
        s = st.state
        health = "[green]ok[/green]" if s.healthy else "[red]" + "; ".join(s.reasons or []) + "[/red]"
        table.add_row(
            name,
            "[green]yes[/green]",
            health,
            "yes" if s.paused else "no",
            s.last_success_at.isoformat() if s.last_success_at else "-",
            _summary(st),
        )
    return table


def status(
    services: Annotated[list[str] | None, typer.Argument(help="Only these services (default: all seven)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    require_all: Annotated[bool, typer.Option(help="Fail when a daemon is not running")] = False,
    watch: Annotated[float | None, typer.Option(help="Refresh every N seconds until Ctrl-C")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Full names, every column and every detail")] = False,
) -> None:
    """Health, connections, inputs, last success, blocked reason and arm state of every daemon.

    Fits 80 columns (short names, the one detail that matters per daemon); --wide shows all.
    Exit code 0 when every running daemon is healthy (and, with --require-all, all are running).
    """
    chosen = tuple(services) if services else SERVICES
    for name in chosen:
        if name not in SERVICES:
            fail(f"unknown service {name!r}; one of: {', '.join(SERVICES)}", code=2)
    ctl = client()

    def render(states: Statuses) -> Table:
        if wide:
            return _table(states, chosen, ctl.control_dir)
        return compact.table(states, chosen, now_utc(), ctl.control_dir)

    if watch is not None:
        if watch <= 0:
            fail("--watch takes a positive number of seconds", code=2)
        if not console.is_terminal:  # a pipe or a log: one table per refresh, no cursor games
            try:
                while True:
                    console.print(render(run(ops.status(ctl, chosen))))
                    time.sleep(watch)
            except KeyboardInterrupt:
                return
        with Live(render(run(ops.status(ctl, chosen))), console=console) as live:
            try:
                while True:
                    time.sleep(watch)
                    live.update(render(run(ops.status(ctl, chosen))))
            except KeyboardInterrupt:
                return
    states = run(ops.status(ctl, chosen))
    if as_json:
        print_json({n: st.raw for n, st in states.items()})
    else:
        console.print(render(states))
    unhealthy, missing = ops.unhealthy_or_missing(states)
    if unhealthy or (require_all and missing):
        raise typer.Exit(1)
