"""The monitor in an 80x24 terminal: the daemon table names every daemon whole (its short name)
and shows its running and health words whole, whatever the daemons report; wide terminals keep
the full names. Driven by Textual's pilot over a source that hands it every shape of `/state`."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len

from daemons.core.events import now_utc
from qlctl import compact
from qlctl.client import SERVICES, ControlClient
from qlctl.tui.app import MonitorApp
from qlctl.tui.source import MonitorSource, Snapshot
from tests.conftest import eventually
from tests.integration.test_tui import row, screen_text
from tests.unit.test_status_80 import every_shape


class CannedSource(MonitorSource):
    """Every daemon as `every_shape()` has it; no sockets, no database."""

    async def read(self) -> Snapshot:
        return Snapshot(at=now_utc(), states=every_shape(), db_error="no database configured (QL_DATABASE_URL)")


def _health_word(state: dict[str, object]) -> str:
    if not state.get("running"):
        return "NOT RUNNING"
    return "ok" if state.get("healthy") else "UNHEALTHY"


@pytest.mark.parametrize(("size", "short"), [((80, 24), True), ((200, 60), False)])
async def test_the_daemon_table_names_every_daemon_whole(tmp_path: Path, size: tuple[int, int], short: bool) -> None:
    app = MonitorApp(CannedSource(ControlClient(tmp_path), None), refresh_s=0.2, operator="carol")
    async with app.run_test(size=size) as pilot:
        await eventually(lambda: app.refreshes >= 2, what="two refreshes")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert len(lines) == size[1] and all(cell_len(line) <= size[0] for line in lines)
        top = next(i for i, ln in enumerate(lines) if "Daemons (select a row" in ln)
        box = lines[top : top + next(i for i, ln in enumerate(lines[top:]) if ln.startswith("╰")) + 1]
        states = every_shape()
        for service in SERVICES:
            name = compact.short_name(service) if short else service
            cells = row(app, "daemons", service)
            assert cells[0] == name
            # on screen: the name, then the running word and the health word, whole, on one line
            [line] = [ln for ln in box if ln.startswith(f"│ {name} ")]
            running = "NOT RUNNING" if not states[service].get("running") else "yes"
            health = _health_word(states[service])
            shown = line[len(f"│ {name} ") :].split()
            words = running.split() + ([health] if running == "yes" else [])
            assert [w.rstrip(":") for w in shown[: len(words)]] == words, (service, line)
            assert health in cells[2] or health == "NOT RUNNING" and cells[1] == "NOT RUNNING"
