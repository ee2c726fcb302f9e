"""Every qlctl command written in runbooks/ parses against the real qlctl: a renamed command or
option fails here, not in front of an operator."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from typer.main import get_command

from qlctl.app import app

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
PLACEHOLDERS = {"<amount>": "1"}


def runbook_commands() -> list[tuple[str, str]]:
    found = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for match in re.finditer(r"`(qlctl [^`]+)`", path.read_text()):
            line = " ".join(match.group(1).split())
            found.append((path.name, re.sub(r"<[^>]+>", lambda m: PLACEHOLDERS.get(m.group(0), "x"), line)))
    return found


def parse(
    command: click.Command, args: list[str], parent: click.Context | None = None, name: str = "qlctl"
) -> click.Context:
    """Resolve subcommands and parse every option and argument, invoking nothing."""
    ctx = command.make_context(name, args, parent=parent)
    if isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # what the group left for its subcommand
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None
        return parse(sub, sub_args, ctx, sub_name)
    return ctx


def test_the_runbooks_name_commands() -> None:
    names = {c.split()[1] for _, c in runbook_commands()}
    assert {"status", "arm", "disarm", "funding", "withdraw", "withdrawals", "report", "limits"} <= names


@pytest.mark.parametrize(("runbook", "line"), runbook_commands())
def test_runbook_command_parses(runbook: str, line: str) -> None:
    try:
        parse(get_command(app), shlex.split(line)[1:])
    except click.UsageError as exc:
        pytest.fail(f"{runbook}: `{line}` does not parse: {exc.format_message()}")
