"""CPU and memory of processes and of the whole machine, from /proc, for the benchmarks.

Both benchmarks share a two-core machine with PostgreSQL, the Kafka broker and each other: CPU
time per process (not wall time) is the figure other load disturbs least, and the machine's busy
share printed beside it says how much the wall-clock figures can be trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(RSS in kB, utime+stime in ticks) of one process, from /proc. A negative pid stands for a
    PostgreSQL postmaster and all its backends: RSS of the postmaster, CPU of them all (backends
    of the daemons' pools live as long as the run, so none is lost between samples)."""
    if pid < 0:
        own = proc_sample(-pid)
        if own is None:
            return None
        cpu = own[1] + sum(c[1] for c in (proc_sample(k) for k in _children(-pid)) if c is not None)
        return own[0], cpu
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    fields = stat.rsplit(")", 1)[1].split()
    return rss, int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5), after pid and comm


def stack_pids(stack_dir: Path) -> dict[str, int]:
    """The broker and PostgreSQL of a `scripts/stack.sh` stack (PostgreSQL as a negative pid: all
    its backends). Their CPU is part of what every benchmarked event costs."""
    out: dict[str, int] = {}
    try:
        out["kafka broker"] = int((stack_dir / "kafka.pid").read_text().split()[0])
        out["postgresql (all backends)"] = -int((stack_dir / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat: other work on a shared host
    competes for the same two cores, and the figures are only honest with it printed beside."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)
