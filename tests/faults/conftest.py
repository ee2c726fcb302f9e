"""Fixtures of the fault matrix: its own fresh stack, one loop of real processes for the whole
matrix, the table of faults and results.

CI mode (`QL_FAULT_SOAK_S` unset or 0, as `make test` runs it) runs every fault row; the broker
and PostgreSQL faults hold 15 s, the others a few seconds. `QL_FAULT_SOAK_S=<seconds>` adds the
soak row (that long, a random daemon killed -9 every 30-90 s).

The matrix starts from an empty stack every session, in its own directory (`QL_FAULT_STACK_DIR`,
default `.local/fault-stack`; data wiped at the start) on the test ports (`QL_TEST_PG_PORT`,
`QL_TEST_KAFKA_PORT`; the default suite's stack, if kept running, is stopped first). The
default suite's history is another simulated world (other signer accounts, other venues' state):
inherited, its live commands and settlements become the fresh daemons' reservations and its
backlog the history-writer's, and the invariants would judge the matrix by someone else's data.
Simulators on `QL_FAULT_SIM_PORT` .. +4 (default 18480).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from daemons.core.db import connect_pool
from daemons.core.startup_order import START_ORDER
from tests.conftest import REPO, STACK_SCRIPT, TEST_STACK_DIR, Stack, serve_stack, stack_env
from tests.faults.harness import FaultLoop
from tests.faults.invariants import topic_ends

SOAK_S = float(os.environ.get("QL_FAULT_SOAK_S", "0"))
RATE_PER_S = float(os.environ.get("QL_FAULT_RATE", "50"))
BASE_PORT = int(os.environ.get("QL_FAULT_SIM_PORT", "18480"))
SUMMARY = Path(os.environ.get("QL_FAULT_SUMMARY", REPO / ".local" / "fault-matrix-summary.txt"))
FAULT_STACK_DIR = Path(os.environ.get("QL_FAULT_STACK_DIR", REPO / ".local" / "fault-stack"))

# shortened bounds so a stale input shows within a CI-length fault window; each is a daemon
# setting, so the matrix exercises the same code paths production runs with its own values
DAEMON_ENV = {
    "QL_INVENTORY_INTERVAL_S": "1",
    "QL_INVENTORY_FRESH_MS": "4000",
    # a reading every second is 60 NEAR RPC calls/min, past inventory-sync's production budget
    # (36/min): each daemon may spend this many, and the simulated node still limits the host
    "QL_NEAR_RPC_BUDGET_PER_MIN": "80",
    "QL_NEAR_RPC_BUDGET_BURST": "10",
    "QL_MARKET_KRAKEN_STALE_AFTER_S": "5",
    "QL_STRATEGY_MAX_NOTIONAL_EURE": "400",  # lets 0.005 nBTC answers press on the inventory
}
# the freshness limits in force, set here so the invariant judges by the numbers the daemons use
PRICE_MAX_AGE_MS = 5000
INVENTORY_MAX_AGE_MS = 6000
DAEMON_ENV |= {
    "QL_STRATEGY_PRICE_MAX_AGE_MS": str(PRICE_MAX_AGE_MS),
    "QL_STRATEGY_INVENTORY_MAX_AGE_MS": str(INVENTORY_MAX_AGE_MS),
}
QUOTE_MIN_DEADLINE_MS = 10_000  # reservations turn over every ~10 s instead of every minute
# the simulated takers settle a share of the quotes, each after its collection window, so holds
# are released by fills (and finality) all through every fault, not only by deadlines
TAKER = {"pick": "best", "take_fraction": 0.3, "collection_window_s": 1.5}


@dataclass
class Row:
    fault: str
    result: str
    answers_after: int = 0
    settled: int = 0
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # each invariant: samples (worst margin)


ROWS: list[Row] = []


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The matrix's own stack, from empty (overrides the default suite's shared `stack`)."""
    env = stack_env(FAULT_STACK_DIR)
    # the same ports: the default suite's stack if kept running (QL_TEST_KEEP_STACK=1; its next
    # session starts it again), and this one if a killed session left it running
    subprocess.run([STACK_SCRIPT, "down"], env=stack_env(TEST_STACK_DIR), check=True)
    subprocess.run([STACK_SCRIPT, "down"], env=env, check=True)
    for data in ("pg", "kafka"):
        shutil.rmtree(FAULT_STACK_DIR / data, ignore_errors=True)
    yield from serve_stack(env)


@pytest.fixture(scope="session")
async def fault_loop(stack: Stack) -> AsyncIterator[FaultLoop]:
    control_dir = Path(tempfile.mkdtemp(prefix="qlf-"))  # Unix socket paths must stay short
    run_dir = REPO / ".local" / "fault-runs" / time.strftime("%Y%m%d-%H%M%S")
    loop = FaultLoop(stack_env={**stack.env, **DAEMON_ENV}, run_dir=run_dir, control_dir=control_dir)
    loop.start_offsets = await topic_ends(stack.kafka_bootstrap)
    await loop.start_simulators(BASE_PORT)
    await loop.sim("relay", "POST", "/_sim/config", TAKER)
    try:
        for name in START_ORDER:
            await loop.start(name)
        await loop.start_stream(RATE_PER_S, QUOTE_MIN_DEADLINE_MS)
        await loop.arm_all()
        loop.judged_until = time.time()
        yield loop
    finally:
        codes = await loop.stop_all()
        write_summary(loop, codes)
        shutil.rmtree(control_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def fault_pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(stack.database_url, min_size=1, max_size=3)
    yield p
    await p.close()


def write_summary(loop: FaultLoop, codes: dict[str, int | None]) -> None:
    lines = [
        f"fault matrix ({'soak ' + str(SOAK_S) + ' s' if SOAK_S else 'CI mode'}, {RATE_PER_S:g} req/s, "
        f"takers {TAKER}, run {uuid.uuid4().hex[:6]}, logs {loop.run_dir})",
        f"{'fault':<40} {'result':<6} {'answers':>7} {'settled':>7}  notes",
        f"{'':<40} {'':<6} {'':>7} {'':>7}  invariant samples (worst margin)",
    ]
    for r in ROWS:
        lines.append(f"{r.fault:<40} {r.result:<6} {r.answers_after:>7} {r.settled:>7}  {'; '.join(r.notes)}")
        for figure in r.figures:
            lines.append(f"{'':<58}{figure}")
    answers = [a for a in loop.venue_answers if a["accepted"]]
    lines.append(
        f"venue: {len(loop.venue_requests)} requests sent, {len(loop.venue_answers)} answers received, "
        f"{len(answers)} accepted, {sum(1 for a in answers if a.get('settled_tx'))} settled; "
        f"exit codes at stop: {codes}"
    )
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text("\n".join(lines) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS and SUMMARY.exists():
        terminalreporter.section("fault matrix")
        for line in SUMMARY.read_text().splitlines():
            terminalreporter.write_line(line)
