"""`qlctl pause|resume|drain SERVICE`: the common state changes, audited by the daemon."""

from __future__ import annotations

from typing import Annotated

import typer

from qlctl.output import client, console, fail, print_json, run

Operator = Annotated[str | None, typer.Option(help="Who is acting (default: your Unix user)")]
Reason = Annotated[str | None, typer.Option(help="Why, for the audit table")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _post(service: str, action: str, operator: str | None, reason: str | None, as_json: bool) -> None:
    body = {k: v for k, v in (("operator", operator), ("reason", reason)) if v}
    reply = run(client().request(service, "POST", f"/{action}", body))
    if as_json:
        print_json({"service": service, "status": reply.status, **reply.body})
    if not reply.ok:
        fail(f"{service} refused {action}: {reply.body.get('error', reply.status)}")
    if not as_json:
        console.print(f"{service}: {action} accepted {reply.body}")


def pause(service: str, operator: Operator = None, reason: Reason = None, as_json: AsJson = False) -> None:
    """Stop SERVICE taking new work; it stays alive and observable."""
    _post(service, "pause", operator, reason, as_json)


def resume(service: str, operator: Operator = None, reason: Reason = None, as_json: AsJson = False) -> None:
    """Let SERVICE take new work again."""
    _post(service, "resume", operator, reason, as_json)


def drain(service: str, operator: Operator = None, reason: Reason = None, as_json: AsJson = False) -> None:
    """Let SERVICE finish in-flight work and exit cleanly (systemd does not restart it)."""
    _post(service, "drain", operator, reason, as_json)
