"""Shared output for qlctl commands: JSON for scripts, Rich for people, one-line failures."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from daemons.core.settings import CoreSettings
from qlctl.client import ClientError, ControlClient

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def settings() -> CoreSettings:
    return CoreSettings()


def client() -> ControlClient:
    return ControlClient(settings().control_dir)


def print_json(data: Any) -> None:
    typer.echo(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine; a ClientError becomes a one-line failure with exit code 1."""
    try:
        return asyncio.run(coro)
    except ClientError as exc:
        fail(str(exc))


def print_rows(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A Rich table of `columns` from each row (missing values left blank)."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    console.print(table)
