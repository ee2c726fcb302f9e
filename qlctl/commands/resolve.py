"""`qlctl resolve answer`: record an operator's verdict on an answer whose outcome the NEAR node
could not decide (`undecided` in trade-executor's `/state`), or record as settled an answer expired
by relay silence that did execute (a fill the relay never reported). The executor keeps an
undecided answer's hold until this is recorded; the verdict, who gave it and why are audited in
`control_actions`.
"""

from __future__ import annotations

import getpass
from enum import StrEnum
from typing import Annotated

import typer

from qlctl.output import client, console, fail, print_json, run

app = typer.Typer(help="Record the outcome of an answer the chain could not decide.", no_args_is_help=True)


class Outcome(StrEnum):
    settled = "settled"
    expired = "expired"


@app.command("answer")
def answer(
    command_id: Annotated[
        str, typer.Argument(help="The command whose answer is undecided (or expired by relay silence)")
    ],
    outcome: Annotated[Outcome, typer.Option(help="What the evidence shows: settled or expired")],
    reason: Annotated[str, typer.Option(help="The evidence (required; audited)")],
    operator: Annotated[str | None, typer.Option(help="Who is acting (default: your Unix user)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Record that an undecided answer settled or expired (its hold is released), or that an answer
    expired by relay silence settled after all."""
    if not reason.strip():
        fail("--reason must say what the evidence is", code=2)
    if not yes and not typer.confirm(f"Record answer {command_id} as {outcome.value}?", default=False):
        fail("nothing recorded (cancelled)")
    body = {
        "command_id": command_id,
        "outcome": outcome.value,
        "reason": reason,
        "operator": operator or getpass.getuser(),
    }
    reply = run(client().request("trade-executor", "POST", "/resolve", body))
    if not reply.ok:
        error = reply.body.get("error") if isinstance(reply.body, dict) else reply.body
        fail(f"trade-executor refused: {error}")
    if as_json:
        print_json(reply.body)
    else:
        console.print(f"answer {command_id}: recorded {outcome.value}")
