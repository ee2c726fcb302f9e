"""`qlctl arm|disarm`, `threshold`, `limits`, `pair-filter`: the trading controls.

Arming shows what will be armed and the current caps and asks for confirmation; every change
names an operator and a reason, which the daemon audits in `control_actions`.
"""

from __future__ import annotations

import asyncio
import getpass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from qlctl import ops
from qlctl.client import Reply
from qlctl.disarm import summary_line
from qlctl.output import client, console, fail, print_json, run


class Target(StrEnum):
    strategy = "strategy"
    executor = "executor"
    both = "both"


AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Operator = Annotated[str | None, typer.Option(help="Who is acting (default: your Unix user)")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]


def _checked(service: str, reply: Reply, what: str) -> Any:
    if not reply.ok:
        fail(f"{service} refused {what}: {ops.refusal_error(reply)}")
    return reply.body


def arm(
    target: Annotated[Target, typer.Argument(help="strategy, executor or both")],
    reason: Annotated[str, typer.Option(help="Why (required; audited)")],
    operator: Operator = None,
    yes: Yes = False,
    as_json: AsJson = False,
) -> None:
    """Arm strategy-engine, trade-executor or both (asks for confirmation)."""
    who = operator or getpass.getuser()
    services = ops.arm_targets(target.value)
    limits = (
        ops.read_limits(_checked("strategy-engine", run(ops.show_limits(client())), "showing limits"))
        if "strategy-engine" in services
        else None
    )
    if not as_json:
        for line in ops.arm_prompt_lines(services, who, reason, limits):
            console.print(line)
    if not yes and not typer.confirm("Arm?", default=False):
        fail("not armed (cancelled)", code=1)
    replies = run(ops.arm(client(), services, who, reason))
    results = {s: _checked(s, r, "arm") for s, r in replies.items()}
    if as_json:
        print_json(results)
    else:
        for s, r in results.items():
            console.print(f"{s}: [red bold]ARMED[/red bold] by {r['arm_changed_by']}")


def disarm(
    target: Annotated[Target, typer.Argument(help="strategy, executor or both")] = Target.both,
    reason: Annotated[str | None, typer.Option(help="Why (audited)")] = None,
    operator: Operator = None,
    cancel_live: Annotated[
        bool, typer.Option("--cancel-live", help="Executor: also burn live answers' nonces")
    ] = False,
    yes: Yes = False,
    as_json: AsJson = False,
) -> None:
    """Disarm (default: both, trade-executor first). Latches until an operator arms again. Goes on
    past a daemon that fails or hangs, reports each one's state as read back, and exits 1 unless
    every one asked is confirmed disarmed."""
    who = operator or getpass.getuser()
    services = ops.disarm_targets(target.value)
    if not yes and not typer.confirm(ops.disarm_prompt(services), default=True):
        fail("not disarmed (cancelled)", code=1)
    results = asyncio.run(ops.disarm(client(), services, who, reason, cancel_live))
    if as_json:
        print_json(results)
    else:
        for s, r in results.items():
            line = summary_line(s, r)
            console.print(line if r["confirmed_disarmed"] else f"[red bold]{line}[/red bold]", highlight=False)
    if not all(r["confirmed_disarmed"] for r in results.values()):
        raise typer.Exit(1)


threshold_app = typer.Typer(help="The strategy's gross-edge threshold", no_args_is_help=True)
limits_app = typer.Typer(help="The strategy's notional caps, answer window and freshness bounds", no_args_is_help=True)
pair_filter_app = typer.Typer(help="near-intents-ingest's quote subscription filter", no_args_is_help=True)


def _emit(values: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print_json(values)
        return
    table = Table(title=title)
    table.add_column("setting")
    table.add_column("value")
    for k, v in values.items():
        table.add_row(k, str(v))
    console.print(table)


@threshold_app.command("show")
@limits_app.command("show")
def show_limits(as_json: AsJson = False) -> None:
    """Threshold, target edge and limits in force."""
    values = _checked("strategy-engine", run(ops.show_limits(client())), "showing limits")
    _emit(values, as_json, "strategy-engine limits")


@threshold_app.command("set")
def set_threshold(
    threshold_pct: Annotated[str, typer.Argument(help="Gross-edge threshold in percent, e.g. 2.0")],
    target_edge_pct: Annotated[str | None, typer.Option(help="Edge the answers are priced at (>= threshold)")] = None,
    operator: Operator = None,
    reason: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """Set the threshold (and optionally the target edge)."""
    who = operator or getpass.getuser()
    reply = run(ops.set_threshold(client(), threshold_pct, target_edge_pct, who, reason))
    values = _checked("strategy-engine", reply, "the threshold")
    _emit(values, as_json, "strategy-engine limits")


@limits_app.command("set")
def set_limits(
    min_notional_eure: Annotated[str | None, typer.Option()] = None,
    max_notional_eure: Annotated[str | None, typer.Option()] = None,
    answer_window_ms: Annotated[int | None, typer.Option()] = None,
    max_deadline_ms: Annotated[int | None, typer.Option()] = None,
    price_max_age_ms: Annotated[int | None, typer.Option()] = None,
    inventory_max_age_ms: Annotated[int | None, typer.Option()] = None,
    operator: Operator = None,
    reason: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """Change one or more limits; the others stay as they are."""
    limits = {
        "min_notional_eure": min_notional_eure,
        "max_notional_eure": max_notional_eure,
        "answer_window_ms": answer_window_ms,
        "max_deadline_ms": max_deadline_ms,
        "price_max_age_ms": price_max_age_ms,
        "inventory_max_age_ms": inventory_max_age_ms,
    }
    reply = run(ops.set_limits(client(), limits, operator or getpass.getuser(), reason))
    values = _checked("strategy-engine", reply, "the limits")
    _emit(values, as_json, "strategy-engine limits")


@pair_filter_app.command("show")
def show_filter(as_json: AsJson = False) -> None:
    """The filter in force and whether it is the default."""
    values = _checked("near-intents-ingest", run(ops.show_pair_filter(client())), "showing the filter")
    _emit(values, as_json, "near-intents-ingest pair filter")


@pair_filter_app.command("set")
def set_filter(
    tokens: Annotated[
        list[str], typer.Argument(help="Asset ids (from the registry) for both tokens_in and tokens_out")
    ],
    operator: Operator = None,
    reason: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """Override the filter; the ingest re-subscribes."""
    reply = run(ops.set_pair_filter(client(), tokens, operator or getpass.getuser(), reason))
    values = _checked("near-intents-ingest", reply, "the filter")
    _emit(values, as_json, "near-intents-ingest pair filter")


@pair_filter_app.command("reset")
def reset_filter(operator: Operator = None, as_json: AsJson = False) -> None:
    """Back to the configured default filter."""
    reply = run(ops.reset_pair_filter(client(), operator or getpass.getuser()))
    values = _checked("near-intents-ingest", reply, "the reset")
    _emit(values, as_json, "near-intents-ingest pair filter")
