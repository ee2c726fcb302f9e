"""Fault-matrix harness: the simulators and the seven daemons as real processes.

It starts `python -m simulators` (its env file points every daemon at the simulators, with a
generated signer key and JWT) and each daemon with `python -m daemons.<pkg>` against the test
stack, so a fault can be a real `kill -9`. It talks to the daemons over their control sockets
and to the simulators over their `/_sim/` routes, drives a steady quote stream through the
relay simulator, and samples the invariants while faults run. Test infrastructure only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.control import socket_path
from daemons.core.startup_order import START_ORDER
from simulators.envfile import parse_env_file

REPO = Path(__file__).resolve().parents[2]

ARMED_DAEMONS = ("strategy-engine", "trade-executor")
# amounts the loop can answer, from either fixed side of SELL_BTC: 5000 and 500 000 sats out,
# 3 EURe in (the other combinations are refused by the notional gates, also worth exercising);
# 500 000 sats keep the reservations pressing against the credited 0.05 nBTC
SIZES = [5_000, 500_000, 3 * 10**18]
OPERATOR = {"operator": "fault-matrix", "reason": "fault matrix run"}


@dataclass
class Proc:
    name: str
    module: str
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0


@dataclass
class FaultLoop:
    """The running loop: processes, their env, and what the invariant monitor saw."""

    stack_env: dict[str, str]
    run_dir: Path
    control_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    sim_urls: dict[str, str] = field(default_factory=dict)
    # the venue's record (`GET /_sim/book` of the relay simulator), fetched incrementally
    venue_answers: list[dict[str, Any]] = field(default_factory=list)
    venue_requests: list[dict[str, Any]] = field(default_factory=list)
    _answers_stable: int = 0  # answers before this index can no longer change (past deadline)
    # answer-based invariants judge the venue's record from here on (see `check_invariants`)
    judged_until: float = 0.0
    # windows in which a fault may lose quote requests on their way in (a killed reader, a
    # closing connection, a broker away): requests sent then need no raw row
    excused: list[tuple[float, float]] = field(default_factory=list)
    held_replies: int = 0  # quote_response replies the relay holds back (fault `hold_responses`)
    start_offsets: dict[Any, int] = field(default_factory=dict)  # Kafka ends at the last check

    # --- processes ---------------------------------------------------------------------------

    def _env_of(self, name: str) -> dict[str, str]:
        """The stack's environment; a daemon logs in to Kafka as itself (scripts/stack.sh made
        one password file per principal beside the admin's the stack's env names)."""
        env = dict(self.env or self.stack_env)
        admin = env.get("QL_KAFKA_PASSWORD_FILE")
        own = Path(admin).parent / name if admin else None
        if own is not None and own.is_file():
            env |= {"QL_KAFKA_USERNAME": name, "QL_KAFKA_PASSWORD_FILE": str(own)}
        return env

    async def _spawn(self, proc: Proc, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        log = proc.log.open("ab")
        try:
            proc.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                proc.module,
                *args,
                cwd=REPO,
                env=self._env_of(proc.name) | (extra_env or {}),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        proc.starts += 1

    async def start_simulators(self, base_port: int) -> None:
        sim_dir = self.run_dir / "sim"
        env_file = sim_dir / "env"
        env_file.unlink(missing_ok=True)
        proc = Proc("simulators", "simulators", self.run_dir / "logs" / "simulators.log")
        self.procs["simulators"] = proc
        # no built-in stream: the harness starts its own, with deadlines short enough that
        # reservations turn over within a CI-length run
        await self._spawn(proc, ["--dir", str(sim_dir), "--base-port", str(base_port), "--quote-rate", "0"])
        deadline = time.monotonic() + 30
        while not (env_file.exists() and env_file.stat().st_size > 0):
            if proc.process is not None and proc.process.returncode is not None:
                raise RuntimeError(f"simulators exited: see {proc.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulators wrote no env file: see {proc.log}")
            await asyncio.sleep(0.1)
        sim_env = parse_env_file(env_file)
        self.env = {
            **self.stack_env,
            **sim_env,
            "QL_CONTROL_DIR": str(self.control_dir),
            "QL_LOG_LEVEL": os.environ.get("QL_LOG_LEVEL", "INFO"),
        }
        self.sim_urls = {
            "relay": sim_env["QL_RELAY_RPC_URL"].removesuffix("/rpc"),
            "near_rpc": sim_env["QL_NEAR_RPC_URL"],
            "poa_bridge": sim_env["QL_POA_BRIDGE_URL"].removesuffix("/rpc"),
            "kraken": sim_env["QL_KRAKEN_WS_URL"].replace("ws://", "http://").removesuffix("/v2"),
            "coingecko": sim_env["QL_COINGECKO_URL"].removesuffix("/api/v3"),
        }

    async def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        proc = self.procs.get(name) or Proc(
            name, f"daemons.{name.replace('-', '_')}", self.run_dir / "logs" / f"{name}.log"
        )
        self.procs[name] = proc
        socket_path(self.control_dir, name).unlink(missing_ok=True)
        await self._spawn(proc, [], extra_env)
        await self.wait_control(name)

    async def wait_control(self, name: str, timeout: float = 60.0) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while True:
            if proc.process is not None and proc.process.returncode is not None:
                raise RuntimeError(f"{name} exited with {proc.process.returncode}: see {proc.log}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                status, _ = await self.control(name, "GET", "/healthz")
                if status in (200, 503):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} control socket did not answer in {timeout}s: see {proc.log}")
            await asyncio.sleep(0.1)

    def pid(self, name: str) -> int:
        proc = self.procs[name].process
        assert proc is not None and proc.returncode is None, f"{name} is not running"
        return proc.pid

    async def exited(self, name: str, timeout: float) -> int:
        """Wait for a daemon to exit by itself (a crash point); its exit code."""
        proc = self.procs[name].process
        assert proc is not None
        return await asyncio.wait_for(proc.wait(), timeout)

    async def kill9(self, name: str) -> None:
        proc = self.procs[name].process
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> dict[str, int | None]:
        """SIGTERM everything (daemons first, then the simulators); SIGKILL what lingers."""
        codes: dict[str, int | None] = {}
        for name in [*reversed(START_ORDER), "simulators"]:
            proc = self.procs.get(name)
            if proc is None or proc.process is None:
                continue
            p = proc.process
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(p.wait(), timeout=30)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    await p.wait()
            codes[name] = p.returncode
        return codes

    def alive(self) -> dict[str, bool]:
        return {n: p.process is not None and p.process.returncode is None for n, p in self.procs.items()}

    # --- control sockets and simulators ------------------------------------------------------

    async def control(
        self, name: str, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        sock = socket_path(self.control_dir, name)
        connector = aiohttp.UnixConnector(path=str(sock))
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.request(method, f"http://localhost{path}", json=body) as resp:
                return resp.status, await resp.json(content_type=None)

    async def sim(self, name: str, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            async with s.request(method, f"{self.sim_urls[name]}{path}", json=body) as resp:
                resp.raise_for_status()
                return await resp.json(content_type=None)

    async def fault(self, sim: str, name: str, **kw: Any) -> None:
        await self.sim(sim, "POST", "/_sim/fault", {"name": name, **kw})

    async def state(self, name: str) -> dict[str, Any]:
        _, body = await self.control(name, "GET", "/state")
        return body if isinstance(body, dict) else {}

    async def book(self) -> list[dict[str, Any]]:
        """The relay simulator's record, brought up to date: every quote_response it received
        (accepted or refused, in arrival order) — also what `venue_requests` extends.

        An accepted answer's record changes until its deadline (its nonce spent, its settlement),
        so the tail from the first answer that may still change is fetched again each time."""
        fetched_at = time.time()
        page = await self.sim(
            "relay", "GET", f"/_sim/book?answers_from={self._answers_stable}&requests_from={len(self.venue_requests)}"
        )
        del self.venue_answers[self._answers_stable :]
        self.venue_answers.extend(page["answers"])
        self.venue_requests.extend(page["requests"])
        self.held_replies = int(page.get("held_replies", 0))
        i = self._answers_stable
        while i < len(self.venue_answers):
            a = self.venue_answers[i]
            if a["accepted"] and (a["deadline"] or 0) >= fetched_at - 1.0:
                break
            i += 1
        self._answers_stable = i
        return self.venue_answers

    async def answers(self) -> list[tuple[float, str]]:
        """(relay time, quote_id) of every quote_response the relay received."""
        return [(a["at"], a["quote_id"]) for a in await self.book()]

    async def settled_count(self) -> int:
        return sum(1 for a in await self.book() if a.get("settled_tx"))

    # --- trading -----------------------------------------------------------------------------

    async def arm(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.control(name, "POST", "/arm", OPERATOR)
            if status == 200 and body.get("armed") is True:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} refused to arm: {status} {body}")
            await asyncio.sleep(0.5)

    async def arm_all(self) -> None:
        for name in ARMED_DAEMONS:
            await self.arm(name)

    async def disarm_all(self) -> None:
        for name in ARMED_DAEMONS:
            status, body = await self.control(name, "POST", "/disarm", OPERATOR)
            assert status == 200 and body.get("armed") is False, (name, status, body)

    async def start_stream(self, rate_per_s: float, min_deadline_ms: int) -> int:
        reply = await self.sim(
            "relay",
            "POST",
            "/_sim/scenario",
            {
                "count": 10**9,
                "rate_per_s": rate_per_s,
                "pairs": [[NBTC_ID, EURE_ID]],
                "sizes": SIZES,
                "malformed_ratio": 0.01,
                "repeat_ratio": 0.02,
                "min_deadline_ms": min_deadline_ms,
                "seed": int(time.time()),
            },
        )
        return int(reply["scenario_id"])

    async def wait_new_answers(
        self, count: int, timeout: float, what: str = "", settled: int = 0
    ) -> list[dict[str, Any]]:
        """Wait until the relay has accepted `count` more answers than now, and has settled
        `settled` of the answers from now on; those new answers."""
        before = len(await self.book())
        deadline = time.monotonic() + timeout
        while True:
            new = [a for a in (await self.book())[before:] if a["accepted"]]
            if len(new) >= count and sum(1 for a in new if a.get("settled_tx")) >= settled:
                return new
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no recovery{': ' + what if what else ''}: {len(new)} of {count} new answers "
                    f"({sum(1 for a in new if a.get('settled_tx'))} of {settled} settled) in "
                    f"{timeout}s; alive={self.alive()}; unhealthy={await self.unhealthy()}"
                )
            await asyncio.sleep(0.5)

    async def unhealthy(self) -> dict[str, Any]:
        """Each running daemon that reports itself unhealthy, with its reasons (for a failure message)."""
        out: dict[str, Any] = {}
        for name in START_ORDER:
            if not self.alive().get(name):
                continue
            try:
                st = await self.state(name)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                out[name] = f"no state: {exc.__class__.__name__}"
                continue
            if st.get("healthy") is False:
                out[name] = st.get("reasons")
        return out


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc), root first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[list[int]]:
    """SIGSTOP a process and everything below it (a hung server: connections stay open, nothing
    answers), SIGCONT them all on the way out whatever happens."""
    pids = process_tree(pid)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
