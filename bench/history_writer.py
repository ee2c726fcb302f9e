"""Benchmark: history-writer durable events/s against a raw COPY of the same rows.

Run on purpose (`make bench-history`), not in the default suite. It brings up its own stack
(`.local/bench-stack`, its own ports), creates a fresh database, pre-fills the topics with N
events spread over all eight topics, then:

1. COPY: the same rows (same columns, same jsonb) copied straight into the same tables;
2. truncates the tables, and runs the real history-writer service (Kafka fetch, decode and
   validation, one transaction per batch with offsets, ON CONFLICT) from offset zero until every
   row is durable;

and prints both rates and their ratio, with the writer's CPU per event (process CPU time over
the events: the figure that still means something when other work shares the machine) and the
load average before and after. Target on the 2-core machine: >= 20,000 events/s and >= 0.5 of
COPY.

Options: `--writers N` runs N writer processes in one consumer group (the eight partitions split
between them); `--start-when FILE` waits, once the topics are filled, until FILE exists before
timing anything (how `bench/latency.py --with-history-bench` runs it beside the latency steps);
`QL_BENCH_PROFILE=file` writes a cProfile of the writer; `QL_BENCH_BATCH` sets the batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemons.core.bus import Delivery, EventProducer, ensure_topics  # noqa: E402
from daemons.core.db import connect_pool  # noqa: E402
from daemons.core.events import TOPICS, Envelope, Producer, encode, new_event  # noqa: E402
from daemons.core.runtime import serve  # noqa: E402
from daemons.core.settings import CoreSettings  # noqa: E402
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings  # noqa: E402
from daemons.history_writer.store import COPY_COLUMNS, _row  # noqa: E402
from tests.samples import sample_payloads  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from procstat import CLK_TCK, machine_ticks, proc_sample, stack_pids  # noqa: E402

PG_PORT = int(os.environ.get("QL_BENCH_PG_PORT", "56432"))
KAFKA_PORT = int(os.environ.get("QL_BENCH_KAFKA_PORT", "39092"))


BENCH_STACK = REPO / ".local" / "bench-stack"
STACK_ENV = {
    **os.environ,
    "QL_STACK_DIR": str(BENCH_STACK),
    "QL_PG_PORT": str(PG_PORT),
    "QL_KAFKA_PORT": str(KAFKA_PORT),
}


def stack(action: str) -> None:
    subprocess.run([str(REPO / "scripts" / "stack.sh"), action], env=STACK_ENV, check=True, stdout=subprocess.DEVNULL)


class StackUsage:
    """CPU of PostgreSQL and the broker, and how busy the machine was, over one timed phase:
    whether the writer waits on them, or all of them on the two cores."""

    def __init__(self) -> None:
        self.pids = stack_pids(BENCH_STACK)
        self.before = {name: proc_sample(pid) for name, pid in self.pids.items()}
        self.machine = machine_ticks()
        self.start = time.perf_counter()

    def line(self) -> str:
        wall = time.perf_counter() - self.start
        parts = []
        for name, pid in self.pids.items():
            before, after = self.before[name], proc_sample(pid)
            if before is not None and after is not None:
                parts.append(f"{name} {(after[1] - before[1]) / CLK_TCK / wall:.0%}")
        busy, total = machine_ticks()
        share = (busy - self.machine[0]) / max(1, total - self.machine[1])
        return f"{', '.join(parts)} of one core; machine {share:.0%} busy of {os.cpu_count()} cores"


def fresh_stack() -> None:
    """Empty topics and tables on every run, so both figures measure the same rows."""
    stack("down")
    shutil.rmtree(BENCH_STACK, ignore_errors=True)
    stack("up")
    # the broker requires a login: this process and the writers it starts use the stack's admin
    os.environ.update(
        {"QL_KAFKA_USERNAME": "admin", "QL_KAFKA_PASSWORD_FILE": str(BENCH_STACK / "kafka-credentials" / "admin")}
    )


async def fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "QL_DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "qlctl.app", "db", "migrate"], env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL
    )
    return url


def make_events(n: int) -> list[Envelope[Any]]:
    producer = Producer(service="bench", instance="b1")
    events = []
    topics = list(TOPICS)
    samples = sample_payloads()
    for i in range(n):
        topic = topics[i % len(topics)]
        payload = samples[topic]
        events.append(new_event(payload, producer=producer, pair="BTC/EURe", correlation_id=str(i)))
    return events


async def copy_baseline(url: str, events: list[Envelope[Any]]) -> float:
    """The same rows (built by the writer's own row function) COPY'd in one transaction."""
    by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for offset, e in enumerate(events):
        delivery = Delivery(e.event_type, 0, offset, None, encode(e), e, None)
        by_table[e.event_type].append(_row(delivery))
    pool = await connect_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            # the median of three runs: a single COPY figure swings with checkpoints and WAL
            rates = []
            usage = StackUsage()
            for _ in range(3):
                start = time.perf_counter()
                async with conn.transaction():
                    for topic, rows in by_table.items():
                        await conn.copy_records_to_table(TOPICS[topic].table, records=rows, columns=COPY_COLUMNS[topic])
                rates.append(len(events) / (time.perf_counter() - start))
                for topic in by_table:
                    await conn.execute(f"TRUNCATE {TOPICS[topic].table}")
                await conn.execute("CHECKPOINT")
            print(f"during COPY: {usage.line()}")
        return sorted(rates)[1]
    finally:
        await pool.close()


def writer_settings(url: str, kafka: str, group: str, control: str) -> HistoryWriterSettings:
    return HistoryWriterSettings(
        database_url=url,
        kafka_bootstrap=kafka,
        control_dir=Path(control),
        history_group=group,
        history_batch_max=int(os.environ.get("QL_BENCH_BATCH", "5000")),
    )


async def child_writer(url: str, kafka: str, group: str) -> None:
    """One more history-writer process of the same group (`--writers N`), until SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="qlbench-") as control:
        await serve(HistoryWriter(writer_settings(url, kafka, group, control)))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (it runs elsewhere, so its own clock is not ours)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_writer(url: str, kafka: str, n: int, writers: int = 1) -> float:
    group = f"bench-{uuid.uuid4()}"
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", url, kafka, group],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(writers - 1)
    ]
    with tempfile.TemporaryDirectory(prefix="qlbench-") as control:
        settings = writer_settings(url, kafka, group, control)
        service = HistoryWriter(settings)
        pool = await asyncpg.connect(url)
        task = asyncio.create_task(serve(service, handle_signals=False))
        # the clock starts once the group is joined and positions are synced: the figure is the
        # rate of draining a backlog, not of joining a consumer group (with more writers: once
        # this one holds only its share, i.e. every writer has joined)
        share = -(-len(TOPICS) // writers)
        while not service.consumer.assignment() or service._unsynced or len(service.consumer.assignment()) > share:
            await asyncio.sleep(0.005)
        child_cpu_start = [cpu_seconds(c.pid) for c in children]
        # another writer may have stored some rows before the last one joined: those are not timed
        done_before = await pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $1", group
        )
        timed = n - int(done_before)
        profile = None
        if os.environ.get("QL_BENCH_PROFILE"):
            import cProfile  # noqa: PLC0415 - only when asked: it slows the writer down

            profile = cProfile.Profile()
            profile.enable()
        usage = StackUsage()
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            while True:
                done = await pool.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $1",
                    group,
                )
                if done >= n:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            print(f"during the writer: {usage.line()}")
            for child, before in zip(children, child_cpu_start, strict=True):
                child_cpu = cpu_seconds(child.pid) - before
                print(f"extra writer process CPU {child_cpu:.2f} s ({child_cpu / elapsed:.0%} of one core)")
                cpu += child_cpu
            if profile is not None:
                profile.disable()
                profile.dump_stats(os.environ["QL_BENCH_PROFILE"])
            # CPU per event is the figure that holds on a busy machine; events/s is not
            print(
                f"writer wall {elapsed:.2f} s, writer CPU {cpu:.2f} s ({cpu / elapsed:.0%} of one core), "
                f"{cpu / timed * 1e6:.1f} µs CPU/event ({writers} process{'es' if writers > 1 else ''}"
                f"{f', {timed:,} events timed' if timed != n else ''})"
            )
            stored = sum([await pool.fetchval(f"SELECT count(*) FROM {s.table}") for s in TOPICS.values()])
            assert stored == n, f"stored {stored} of {n}"
            return timed / elapsed
        finally:
            service.request_drain()
            await task
            await pool.close()
            for child in children:
                child.terminate()
                child.wait(timeout=30)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main(n: int, writers: int, start_when: Path | None = None) -> None:
    print(f"before: {load()} on {os.cpu_count()} cores")
    fresh_stack()
    try:
        kafka = f"127.0.0.1:{KAFKA_PORT}"
        url = await fresh_database(f"postgresql://quoteloop@127.0.0.1:{PG_PORT}/quoteloop", "bench")
        settings = CoreSettings(kafka_bootstrap=kafka)
        await ensure_topics(settings)
        events = make_events(n)
        producer = EventProducer(settings, client_id="bench")
        await producer.start()
        t0 = time.perf_counter()
        for i in range(0, n, 20000):
            await producer.publish_many(events[i : i + 20000])
        fill = time.perf_counter() - t0
        await producer.stop()
        if start_when is not None:
            print(f"topics filled; waiting for {start_when}", flush=True)
            while not start_when.exists():
                await asyncio.sleep(0.05)
        measured_from = time.time()

        copy_rate = await copy_baseline(url, events)
        writer_rate = await run_writer(url, kafka, n, writers)
        print(f"events: {n:,} over {len(TOPICS)} topics (pre-filled at {n / fill:,.0f} events/s)")
        print(f"COPY baseline (median): {copy_rate:>10,.0f} events/s")
        print(f"history-writer durable: {writer_rate:>10,.0f} events/s")
        print(f"ratio writer/COPY:      {writer_rate / copy_rate:>10.2f}  (targets: >= 20,000 events/s, >= 0.5)")
        print(f"after: {load()}")
        print(f"measured: {measured_from:.3f} to {time.time():.3f} (unix time)")
    finally:
        stack("down")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--writers",
        type=int,
        default=1,
        help="history-writer processes sharing the group (the partitions split between them)",
    )
    parser.add_argument(
        "--start-when",
        type=Path,
        metavar="FILE",
        help="once the topics are filled, wait until FILE exists before timing anything",
    )
    parser.add_argument("--child", nargs=3, metavar=("URL", "KAFKA", "GROUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uvloop.run(child_writer(*args.child))
    else:
        uvloop.run(main(args.events, args.writers, args.start_when))  # the daemons' own event loop
