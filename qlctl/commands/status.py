"""`qlctl status`: every daemon's health and key state in one table (or JSON)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from daemons.core.events import now_utc
from qlctl import compact
from qlctl.client import SERVICES
from qlctl.output import client, console, fail, print_json, run


def _summary(state: dict[str, Any]) -> str:
    keys = (
        "armed",
        "connected",
        "authoritative",
        "rows_written",
        "dead_letters",
        "blocked_reason",
        "pair_silent_for_ms",
    )
    parts = []
    for key in keys:
        if key in state and state[key] is not None:
            value = state[key]
            if isinstance(value, dict):
                value = ",".join(f"{k}={'up' if v else 'down'}" for k, v in value.items())
            parts.append(f"{key}={value}")
    # outcomes the chain could not decide: holds kept until an operator records a verdict
    undecided = len(state.get("undecided") or []) + len((state.get("withdrawals") or {}).get("undecided") or [])
    if undecided:
        parts.append(f"[red]undecided={undecided}[/red]")
    return " ".join(parts)


def _table(states: dict[str, dict[str, Any]], chosen: tuple[str, ...], control_dir: object) -> Table:
    table = Table(title="quoteloop daemons", caption=f"control sockets in {control_dir}")
    for column in ("service", "running", "health", "paused", "last success", "details"):
        table.add_column(column)
    for name in chosen:
        st = states[name]
        if not st.get("running"):
            error = st.get("error", "")
            table.add_row(name, "[red]no[/red]", "-", "-", "-", "" if "is not running" in error else error)
            continue
        health = "[green]ok[/green]" if st.get("healthy") else "[red]" + "; ".join(st.get("reasons", [])) + "[/red]"
        table.add_row(
            name,
            "[green]yes[/green]",
            health,
            "yes" if st.get("paused") else "no",
            str(st.get("last_success_at") or "-"),
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

    def render(states: dict[str, dict[str, Any]]) -> Table:
        if wide:
            return _table(states, chosen, ctl.control_dir)
        return compact.table(states, chosen, now_utc(), ctl.control_dir)

    if watch is not None:
        if watch <= 0:
            fail("--watch takes a positive number of seconds", code=2)
        if not console.is_terminal:  # a pipe or a log: one table per refresh, no cursor games
            try:
                while True:
                    console.print(render(run(ctl.state_of_all(chosen))))
                    time.sleep(watch)
            except KeyboardInterrupt:
                return
        with Live(render(run(ctl.state_of_all(chosen))), console=console) as live:
            try:
                while True:
                    time.sleep(watch)
                    live.update(render(run(ctl.state_of_all(chosen))))
            except KeyboardInterrupt:
                return
    states = run(ctl.state_of_all(chosen))
    if as_json:
        print_json(states)
    else:
        console.print(render(states))
    unhealthy = [n for n, st in states.items() if st.get("running") and not st.get("healthy")]
    missing = [n for n, st in states.items() if not st.get("running")]
    if unhealthy or (require_all and missing):
        raise typer.Exit(1)
