"""The armed stack a benchmark runs against: its own PostgreSQL and Kafka (`scripts/stack.sh` in a
directory of its own, wiped per run), the venue simulators (`python -m simulators --quote-rate 0`)
and the seven daemons, each its own process as in production, the solver account funded in both
assets and strategy-engine and trade-executor armed through their control sockets.

Used by `bench/latency.py` and `bench/near_rpc_budget.py`; each passes its own directory and ports
so that two benchmarks never share a stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemons.core.acls import ensure_acls  # noqa: E402
from daemons.core.assets import EURE_ID, NBTC_ID  # noqa: E402
from daemons.core.bus import ensure_topics  # noqa: E402
from daemons.core.settings import CoreSettings  # noqa: E402
from daemons.core.startup_order import START_ORDER  # noqa: E402
from qlctl.client import ClientError, ControlClient  # noqa: E402
from simulators.envfile import parse_env_file  # noqa: E402

# what a benchmark credits: enough of both for every answer of a run to settle
FUND_NBTC = 10 * 10**8
FUND_EURE = 1_000_000 * 10**18


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values`, linearly interpolated (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Procs:
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(self.env)
        admin = env.get("QL_KAFKA_PASSWORD_FILE")
        own = Path(admin).parent / name if admin else None
        if own is not None and own.is_file():  # a daemon logs in to Kafka as itself (scripts/stack.sh)
            env |= {"QL_KAFKA_USERNAME": name, "QL_KAFKA_PASSWORD_FILE": str(own)}
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.running[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.running.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}: see {self.logs / name}.log")

    def stop_all(self) -> None:
        for proc in reversed(list(self.running.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(list(self.running.items())):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"{name} ignored SIGTERM for 30 s: killing pid {proc.pid}")
                proc.kill()
                proc.wait()


@dataclass
class BenchStack:
    """One benchmark's stack. `up()` brings everything to armed; `down()` stops it all."""

    directory: Path
    pg_port: int
    kafka_port: int
    sim_port: int
    daemon_env: Mapping[str, str] = field(default_factory=dict)  # extra settings for the daemons
    procs: Procs = field(init=False)
    relay: str = ""  # the relay simulator's base URL
    near_rpc: str = ""  # the NEAR RPC simulator's URL
    account: str = ""  # the solver account

    def __post_init__(self) -> None:
        self.procs = Procs(logs=self.directory / "logs")

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    def _stack(self, action: str) -> None:
        env = {
            **os.environ,
            "QL_STACK_DIR": str(self.directory),
            "QL_PG_PORT": str(self.pg_port),
            "QL_KAFKA_PORT": str(self.kafka_port),
        }
        subprocess.run([str(REPO / "scripts" / "stack.sh"), action], env=env, check=True, stdout=subprocess.DEVNULL)

    def infra_up(self) -> None:
        """PostgreSQL and Kafka, fresh; the daemons' environment from them."""
        self._stack("down")
        shutil.rmtree(self.directory, ignore_errors=True)
        self._stack("up")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.procs.env = {
            **os.environ,
            **parse_env_file(self.directory / "env"),
            "QL_CONTROL_DIR": str(self.run_dir),
            **self.daemon_env,
        }

    async def up(self, http: aiohttp.ClientSession, *, operator: str, reason: str) -> ControlClient:
        """Migrate, make the topics, start the simulators, fund the account, start the seven
        daemons, wait until healthy and arm. `infra_up()` must have run."""
        env = self.procs.env
        subprocess.run(
            [sys.executable, "-m", "qlctl.app", "db", "migrate"],
            env=env,
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        await ensure_topics(self.settings())
        await ensure_acls(self.settings())  # each daemon logs in as itself (scripts/stack.sh)
        sock = self.directory / "pg" / "sock"
        if (sock / f".s.PGSQL.{self.pg_port}").exists():
            # as deployed (the playbook's QL_DATABASE_URL is the Unix socket), not loopback TCP
            env["QL_DATABASE_URL"] = f"postgresql://quoteloop@/quoteloop?host={sock}&port={self.pg_port}"
        sim_dir = self.directory / "sim"
        self.procs.start(
            "simulators", "simulators", "--dir", str(sim_dir), "--quote-rate", "0", "--base-port", str(self.sim_port)
        )
        for _ in range(200):
            self.procs.check()
            if (sim_dir / "env").is_file() and (sim_dir / "env").stat().st_size:
                break
            await asyncio.sleep(0.1)
        sim_env = parse_env_file(sim_dir / "env")
        env.update(sim_env)
        self.relay = sim_env["QL_RELAY_RPC_URL"].removesuffix("/rpc")
        self.near_rpc = sim_env["QL_NEAR_RPC_URL"].split(",")[0]
        self.account = sim_env["QL_SIGNER_ACCOUNT_ID"]
        for asset, amount in ((NBTC_ID, FUND_NBTC), (EURE_ID, FUND_EURE)):
            async with http.post(
                f"{self.relay}/_sim/credit", json={"account_id": self.account, "asset_id": asset, "amount": str(amount)}
            ) as resp:
                resp.raise_for_status()
        for name in START_ORDER:
            self.procs.start(name, f"daemons.{name.replace('-', '_')}")
        control = ControlClient(self.run_dir)
        print(f"stack {self.directory}: waiting for the seven daemons to be healthy", flush=True)
        await self.wait_healthy(control, timeout_s=120)
        for name in ("strategy-engine", "trade-executor"):
            reply = await control.request(name, "POST", "/arm", {"operator": operator, "reason": reason})
            if not reply.ok:
                raise SystemExit(f"{name} refused to arm: {reply.status} {reply.body}")
        return control

    def settings(self) -> CoreSettings:
        """The stack's Kafka and PostgreSQL as this process (the admin) reaches them."""
        env = self.procs.env
        return CoreSettings(
            kafka_bootstrap=env["QL_KAFKA_BOOTSTRAP"],
            database_url=env["QL_DATABASE_URL"],
            kafka_username=env.get("QL_KAFKA_USERNAME") or None,
            kafka_password_file=env.get("QL_KAFKA_PASSWORD_FILE") or None,
        )

    async def wait_healthy(self, control: ControlClient, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(START_ORDER)
        last: dict[str, Any] = {}
        while pending:
            self.procs.check()
            for name in sorted(pending):
                try:
                    reply = await control.request(name, "GET", "/healthz")
                except ClientError as exc:
                    last[name] = str(exc)
                    continue
                last[name] = reply.body
                if reply.status == 200:
                    pending.discard(name)
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"not healthy after {timeout_s:.0f} s: "
                    + json.dumps({n: last.get(n) for n in pending}, default=str)
                )
            await asyncio.sleep(0.5)

    def down(self, keep_infra: bool = False) -> None:
        self.procs.stop_all()
        if not keep_infra:
            self._stack("down")
