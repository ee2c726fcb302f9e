"""The Typer root of qlctl: global options and the command groups, one module each."""

from __future__ import annotations

import typer

from qlctl.commands import control, db, pnl, report, resolve, status, topics, trading, treasury
from qlctl.tui.command import tui

app = typer.Typer(
    name="qlctl",
    help="Operate quoteloop: daemon state, arm/disarm, limits, pair filter, topics, database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("status")(status.status)
app.command("pause")(control.pause)
app.command("resume")(control.resume)
app.command("drain")(control.drain)
app.command("arm")(trading.arm)
app.command("disarm")(trading.disarm)
app.add_typer(trading.threshold_app, name="threshold")
app.add_typer(trading.limits_app, name="limits")
app.add_typer(trading.pair_filter_app, name="pair-filter")
app.add_typer(treasury.funding_app, name="funding")
app.add_typer(treasury.withdraw_app, name="withdraw")
app.add_typer(treasury.withdrawals_app, name="withdrawals")
report.app.command("pnl")(pnl.pnl)
app.add_typer(report.app, name="report")
app.add_typer(resolve.app, name="resolve")
app.add_typer(topics.app, name="topics")
app.add_typer(db.app, name="db")
app.command("tui")(tui)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
