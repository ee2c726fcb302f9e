"""`qlctl status` in 80 columns: short names and health words whole, one detail per daemon cut
with "…" when it must give way, NO_COLOR and pipes respected, `--json` as it was. Rendered in
process from every shape of `/state`, and through the real command (a subprocess, so a pipe)
against a real strategy-engine whose broker is away (unhealthy, with a long reason)."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.cells import cell_len
from rich.console import Console

from daemons.core.runtime import serve
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from qlctl import compact
from qlctl.client import SERVICES
from tests.conftest import REPO, closed_port, eventually

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LONG = "kafka_unreachable: KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1, <AF_INET>)] " * 2
COLOR = re.compile(r"\x1b\[[0-9;]*m")
COLOR_CODE = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7]|38;[25];[0-9;]+)m")


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def every_shape() -> dict[str, dict[str, Any]]:
    """One of each: running and healthy, unhealthy with a long reason, not running with a long
    error, paused, draining, armed with live answers, undecided outcomes, stale, silent."""
    return {
        "near-intents-ingest": {
            "running": True,
            "healthy": True,
            "reasons": [],
            "pair_silent": True,
            "pair_silent_for_ms": 754_000,
            "connected": {"relay": True},
            "last_success_at": _ago(0.4),
        },
        "market-reference-ingest": {
            "running": True,
            "healthy": False,
            "reasons": ["price_not_decisionable"],
            "decisionable": False,
            "blocked_reason": "BOTH_STALE",
            "last_success_at": _ago(3 * 86_400),
        },
        "inventory-sync": {
            "running": False,
            "error": "permission denied on /run/quoteloop/inventory-sync.sock: "
            "run qlctl as a member of the socket's group (quoteloop)",
        },
        "liquidity-manager": {
            "running": True,
            "healthy": True,
            "reasons": [],
            "draining": True,
            "withdrawals": {"undecided": ["w1", "w2"]},
            "last_success_at": _ago(59),
        },
        "history-writer": {
            "running": True,
            "healthy": True,
            "reasons": [],
            "paused": True,
            "pause_effective": False,
            "rows_written": 123_456_789,
            "dead_letters": 3,
            "last_success_at": _ago(47 * 3600 + 3599),
        },
        "strategy-engine": {"running": True, "healthy": False, "reasons": [LONG], "armed": False},
        "trade-executor": {
            "running": True,
            "healthy": True,
            "reasons": [],
            "armed": True,
            "live_answers": [{}, {}, {}],
            "last_success_at": _ago(1.2),
        },
    }


def lines_of(states: dict[str, dict[str, Any]], width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(compact.table(states, SERVICES, NOW, "/run/quoteloop"))
    return console.export_text().splitlines()


def rows_by_name(lines: list[str]) -> dict[str, str]:
    """Each service's line, found by its short name as the first word: one line per service
    (nothing wrapped onto a second line)."""
    found: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if words and words[0] in compact.SHORT_NAMES.values():
            assert words[0] not in found, f"{words[0]} on two lines: wrapped"
            found[words[0]] = line
    return found


def check_80(lines: list[str], states: dict[str, dict[str, Any]]) -> dict[str, str]:
    assert all(cell_len(line) <= 80 for line in lines), [line for line in lines if cell_len(line) > 80]
    rows = rows_by_name(lines)
    assert set(rows) == {compact.short_name(s) for s in SERVICES}
    for service in SERVICES:
        line, st = rows[compact.short_name(service)], states[service]
        health = "NOT RUNNING" if not st.get("running") else "ok" if st.get("healthy") else "UNHEALTHY"
        # the health word whole, right after the name, then the run state whole
        after = line.split(compact.short_name(service), 1)[1].split()
        assert " ".join(after[: len(health.split())]) == health, (service, line)
    return rows


def test_every_shape_fits_80_columns_with_names_and_health_words_whole() -> None:
    states = every_shape()
    rows = check_80(lines_of(states), states)
    assert rows["history"].split()[2] == "pausing" and rows["liquidity"].split()[2] == "draining"
    assert rows["executor"].split()[2:5] == ["running", "1s", "ARMED,"]
    assert "3 live answers" in rows["executor"]
    # the one detail that matters, most urgent first
    assert "UNDECIDED 2: qlctl resolve" in rows["liquidity"]
    assert "NOT decisionable" not in rows["prices"] and "price_not_decisionable" in rows["prices"]
    assert "pair silent 12 min" in rows["intents"]
    assert "3 dead letters, 123456789 rows" in rows["history"]
    assert rows["history"].split()[3] == "47h59m" and rows["prices"].split()[3] == "3d"
    # a long reason or error gives way, and says so
    assert rows["strategy"].rstrip().endswith("…") and "kafka_unreachable" in rows["strategy"]
    assert rows["inventory"].rstrip().endswith("…") and "permission denied" in rows["inventory"]


@pytest.mark.parametrize("width", [80, 100, 200])
def test_nothing_is_cut_when_there_is_room_and_names_never_are(width: int) -> None:
    states = every_shape()
    states["strategy-engine"]["reasons"] = ["no_price"]
    lines = lines_of(states, width)
    rows = rows_by_name(lines)
    assert "no_price" in rows["strategy"] and all(cell_len(line) <= width for line in lines)
    if width >= 200:
        assert not rows["inventory"].rstrip().endswith("…")


def test_only_some_services_and_all_absent() -> None:
    absent = {s: {"running": False, "error": f"{s} is not running: no control socket"} for s in SERVICES}
    check_80(lines_of(absent), absent)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(compact.table(absent, ("trade-executor",), NOW, "/run/quoteloop"))
    text = console.export_text()
    assert "executor" in text and "intents" not in text


def test_short_ages() -> None:
    assert [compact.age(ms) for ms in (None, 850, 12_300, 240_000, 7_500_000, 3 * 86_400_000)] == [
        "-",
        "850ms",
        "12s",
        "4m",
        "2h05m",
        "3d",
    ]


# --- the command itself, as an operator runs it ---------------------------------------------------


async def qlctl_status(control_dir: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qlctl.app",
        "status",
        *args,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "QL_CONTROL_DIR": str(control_dir), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert not err, err.decode()
    return proc.returncode or 0, out.decode()


@pytest.fixture
async def broker_away_engine(tmp_path: Path) -> AsyncIterator[Path]:
    """A real strategy-engine with no broker to reach: up, observable, unhealthy."""
    control_dir = Path(tmp_path / "ctl")
    control_dir.mkdir()
    settings = StrategySettings(
        kafka_bootstrap=f"127.0.0.1:{closed_port()}",
        control_dir=control_dir,
        database_url=f"postgresql://quoteloop@127.0.0.1:{closed_port()}/quoteloop",
    )
    service = StrategyEngine(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: service.kafka_unreachable is not None, what="engine saw the broker away")
    yield control_dir
    service.request_drain()
    await asyncio.wait_for(task, timeout=30)


async def test_the_command_at_80_columns_through_a_pipe_and_with_no_color(broker_away_engine: Path) -> None:
    control_dir = broker_away_engine
    code, out = await qlctl_status(control_dir, env={"COLUMNS": "80"})
    assert code == 1  # a running daemon is unhealthy
    assert not COLOR.search(out)  # a pipe gets no escape codes
    lines = out.splitlines()
    assert all(cell_len(line) <= 80 for line in lines)
    rows = rows_by_name(lines)
    assert set(rows) == {compact.short_name(s) for s in SERVICES}
    assert rows["strategy"].split()[1:3] == ["UNHEALTHY", "running"] and "kafka_unreachable" in rows["strategy"]
    assert all(
        rows[compact.short_name(s)].split()[1:3] == ["NOT", "RUNNING"] for s in SERVICES if s != "strategy-engine"
    )

    # forced colour shows colour; NO_COLOR takes it away again and keeps every word
    _, forced = await qlctl_status(control_dir, env={"COLUMNS": "80", "FORCE_COLOR": "1"})
    assert COLOR_CODE.search(forced)
    _, plain = await qlctl_status(control_dir, env={"COLUMNS": "80", "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not COLOR_CODE.search(plain)
    assert COLOR.sub("", plain).split() == COLOR.sub("", forced).split()

    # --wide has the full names and every detail; --json is the daemons' own bodies, full names
    _, wide = await qlctl_status(control_dir, "--wide", env={"COLUMNS": "250"})
    assert "strategy-engine" in wide and "market-reference-ingest" in wide and "blocked_reason=disarmed" in wide
    _, as_json = await qlctl_status(control_dir, "--json", env={"COLUMNS": "80"})
    states = orjson.loads(as_json)
    assert list(states) == list(SERVICES)
    se = states["strategy-engine"]
    assert se["running"] is True and se["healthy"] is False and se["service"] == "strategy-engine"
    assert {"limits", "ceilings", "inputs", "reason_counters", "armed", "reasons"} <= set(se)
    assert states["trade-executor"] == {
        "service": "trade-executor",
        "running": False,
        "error": states["trade-executor"]["error"],
    }
