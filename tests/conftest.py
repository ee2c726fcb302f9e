"""Shared fixtures: the real PostgreSQL and Kafka, started once per test session.

The harness brings up its own stack (its own directory and ports, apart from `make run`'s)
with the project's `scripts/stack.sh`, applies the migrations with dbmate and ensures the
topics. Tests never mock our own infrastructure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from simulators.envfile import parse_env_file

REPO = Path(__file__).resolve().parents[1]
TEST_STACK_DIR = Path(os.environ.get("QL_TEST_STACK_DIR", REPO / ".local" / "test-stack"))
PG_PORT = int(os.environ.get("QL_TEST_PG_PORT", "25432"))
KAFKA_PORT = int(os.environ.get("QL_TEST_KAFKA_PORT", "29092"))
STACK_SCRIPT = str(REPO / "scripts" / "stack.sh")


def install_test_ceilings() -> Path:
    """The local ceilings (config/ceilings.local.toml) as a root-owned 0644 file, named by
    QL_CEILINGS_FILE for every daemon built in this process and every child it starts."""
    path = REPO / ".local" / "test-ceilings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes((REPO / "config" / "ceilings.local.toml").read_bytes())
    tmp.chmod(0o644)
    tmp.replace(path)
    os.environ.setdefault("QL_CEILINGS_FILE", str(path))
    return path


TEST_CEILINGS = install_test_ceilings()


@dataclass
class Stack:
    database_url: str
    kafka_bootstrap: str
    env: dict[str, str]

    def _stack(self, action: str, component: str) -> None:
        subprocess.run([STACK_SCRIPT, action, component], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def stop_postgres(self) -> None:
        self._stack("down", "pg")

    def start_postgres(self) -> None:
        self._stack("up", "pg")

    def settings_env(self, control_dir: Path) -> dict[str, str]:
        return {
            **self.env,
            "QL_DATABASE_URL": self.database_url,
            "QL_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "QL_CONTROL_DIR": str(control_dir),
        }


def stack_env(stack_dir: Path) -> dict[str, str]:
    """What scripts/stack.sh needs for a stack in `stack_dir` on the test ports."""
    return {**os.environ, "QL_STACK_DIR": str(stack_dir), "QL_PG_PORT": str(PG_PORT), "QL_KAFKA_PORT": str(KAFKA_PORT)}


def serve_stack(env: dict[str, str]) -> Iterator[Stack]:
    """Bring the stack up with migrations and topics, yield it, and stop it afterwards unless
    QL_TEST_KEEP_STACK=1 (then the next session reuses it quickly). The default suite and the
    fault matrix both start their stacks through here."""
    subprocess.run([STACK_SCRIPT, "up"], env=env, check=True)
    database_url = f"postgresql://quoteloop@127.0.0.1:{env['QL_PG_PORT']}/quoteloop"
    kafka = f"127.0.0.1:{env['QL_KAFKA_PORT']}"
    # the broker refuses anonymous clients: the harness and the daemons it builds in-process log
    # in as the stack's admin (scripts/stack.sh); daemon processes log in as themselves
    login = {
        k: v
        for k, v in parse_env_file(Path(env["QL_STACK_DIR"]) / "env").items()
        if k in ("QL_KAFKA_USERNAME", "QL_KAFKA_PASSWORD_FILE")
    }
    os.environ.update(login)
    env = env | login | {"QL_DATABASE_URL": database_url, "QL_KAFKA_BOOTSTRAP": kafka}
    qlctl = [sys.executable, "-m", "qlctl.app"]
    subprocess.run([*qlctl, "db", "migrate"], env=env, check=True, cwd=REPO)
    subprocess.run([*qlctl, "topics", "ensure", "--json"], env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    yield Stack(database_url=database_url, kafka_bootstrap=kafka, env=env)
    if os.environ.get("QL_TEST_KEEP_STACK") != "1":
        subprocess.run([STACK_SCRIPT, "down"], env=env, check=False)


def kafka_options() -> dict[str, Any]:
    """The login every raw aiokafka client of a test passes (the harness's admin)."""
    from daemons.core.bus import kafka_auth
    from daemons.core.settings import CoreSettings

    return kafka_auth(CoreSettings())


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    yield from serve_stack(stack_env(TEST_STACK_DIR))


@pytest.fixture
def control_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes: keep the directory short.
    with tempfile.TemporaryDirectory(prefix="qlctl-") as path:
        yield Path(path)


@pytest.fixture
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    from daemons.core.db import connect_pool

    p = await connect_pool(stack.database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Re-check a condition until it holds (a truthy result) or the timeout passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        last = result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or check!r} (last: {last!r})")
        await asyncio.sleep(interval)


async def start_group_at_end(stack: Stack, group: str) -> None:
    """Record the topics' current end offsets as `group`'s stored position, so a history-writer
    of that group starts at the end instead of replaying every earlier test's events."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from daemons.core.events import TOPICS

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, **kafka_options())
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or {0})]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.executemany(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)",
            [(group, tp.topic, tp.partition, off) for tp, off in ends.items()],
        )
    finally:
        await conn.close()


def closed_port() -> int:
    """A loopback port nothing listens on (free when asked; the kernel may hand it out later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpForwarder:
    """A TCP port that forwards to the broker once opened: Kafka "coming up" at the address a
    daemon bootstraps from (after bootstrap, clients use the broker's advertised address)."""

    def __init__(self, port: int, target: str) -> None:
        self.port = port
        self.host, target_port = target.rsplit(":", 1)
        self.target_port = int(target_port)
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
                self.pipes.add(task)
                task.add_done_callback(self.pipes.discard)

        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)


class TopicTail:
    """Reads topics from their current end: what a test's action publishes, decoded."""

    def __init__(self, stack: Stack, topics: list[str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topics = topics
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20, **kafka_options()
        )
        self.events: list[Any] = []

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or {0})]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end positions now, before the test acts
            await self.consumer.position(tp)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def wait_for(
        self, predicate: Callable[[Any], bool], count: int = 1, timeout: float = 30.0, what: str = ""
    ) -> list[Any]:
        """Collect decoded events until `count` of them satisfy `predicate`."""
        from daemons.core.events import decode

        async def enough() -> list[Any] | None:
            batches = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                self.events.extend(decode(tp.topic, r.value) for r in records)
            matching = [e for e in self.events if predicate(e)]
            return matching if len(matching) >= count else None

        return await eventually(enough, timeout=timeout, interval=0, what=what or f"{count} matching events")


@pytest.fixture
async def tail(stack: Stack) -> AsyncIterator[Callable[..., Awaitable[TopicTail]]]:
    tails: list[TopicTail] = []

    async def make(*topics: str) -> TopicTail:
        t = TopicTail(stack, list(topics))
        await t.start()
        tails.append(t)
        return t

    yield make
    for t in tails:
        await t.stop()


@pytest.fixture
async def writer(stack: Stack, control_dir: Path) -> AsyncIterator[tuple[Any, asyncio.Task[int]]]:
    """A history-writer service in-process on its own group started at the topics' end, and its
    task; drained at the end unless the test already stopped it."""
    import uuid

    from daemons.core.runtime import serve
    from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings

    group = f"writer-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    settings = HistoryWriterSettings(
        database_url=stack.database_url,
        kafka_bootstrap=stack.kafka_bootstrap,
        control_dir=control_dir,
        history_group=group,
    )
    service = HistoryWriter(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: service.db_available, what="writer connected")
    yield service, task
    if not task.done():
        service.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0


@pytest.fixture
def daemon_procs() -> Iterator[Callable[[str, dict[str, str], Path], subprocess.Popen[bytes]]]:
    """Start daemons as real processes (`python -m MODULE`, output appended to a log file), for
    tests that kill -9 them; whatever still runs at the end is killed."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=env, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
