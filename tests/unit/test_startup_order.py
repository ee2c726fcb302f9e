"""The daemons' start order (`daemons/core/startup_order.py`) names every daemon once: each
package under daemons/ that runs as a process (has a `__main__.py`), the same seven qlctl shows."""

from __future__ import annotations

from pathlib import Path

from daemons.core.startup_order import START_ORDER
from qlctl.client import SERVICES

DAEMONS_DIR = Path(__file__).resolve().parents[2] / "daemons"


def test_every_daemon_once() -> None:
    runnable = sorted(
        p.parent.name.replace("_", "-") for p in DAEMONS_DIR.glob("*/__main__.py") if p.parent.name != "core"
    )
    assert len(set(START_ORDER)) == len(START_ORDER)
    assert sorted(START_ORDER) == runnable
    assert sorted(START_ORDER) == sorted(SERVICES)


def test_the_writer_first_and_the_answerers_last() -> None:
    assert START_ORDER[0] == "history-writer"
    assert START_ORDER[-2:] == ("strategy-engine", "trade-executor")
