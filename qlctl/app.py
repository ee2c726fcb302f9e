"""The Typer root of qlctl: global options and the command groups, one module each."""

from __future__ import annotations

import typer

from qlctl.commands import control, db, status, topics

app = typer.Typer(
    name="qlctl",
    help="Operate quoteloop: daemon state, pause/resume/drain, topics, database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("status")(status.status)
app.command("pause")(control.pause)
app.command("resume")(control.resume)
app.command("drain")(control.drain)
app.add_typer(topics.app, name="topics")
app.add_typer(db.app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
