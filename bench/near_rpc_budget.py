"""Benchmark: the whole stack's NEAR RPC use under trading load, counted at the node.

Run on purpose (`make bench-near-rpc`), not in the default suite. It brings up its own armed stack
(`bench/stackrun.py`: `.local/bench-rpc-stack`, PostgreSQL 26532 / Kafka 29892, simulators from
18580, wiped per run) with the daemons' production settings (their NEAR RPC budgets and reading
cadence untouched), makes the relay simulator's taker take a third of the quotes
(`take_fraction`), then sends quote requests the strategy will EXECUTE at `--rate` (50/s) for
`--seconds` (300).

Figures, judged from the other side:

- every NEAR RPC request the simulated node received during the load (its `/_sim/seen` log, each
  with the daemon's User-Agent): the average per minute, the most in any 10 s and any 60 s
  (sliding windows over the request times), how many the node refused (429), and by daemon;
- the 10 s allowance of the budgets the daemons run with (each client's token bucket lets at most
  `burst + per_min / 6` through in 10 s; read from each daemon's `/state`), beside the figure;
- inventory age at decision time: for every decision of the load, `decided_at` minus the
  `synced_at` of the snapshot it used (as PostgreSQL holds them), and the decisions refused for
  stale inventory;
- settlements the relay simulator made (a third of the answers, by construction).

Targets (the chain-truth issue): ≤ 60 NEAR RPC requests/min averaged over 5 minutes, no 10 s
window over the budget, inventory age ≤ 5 s at the 99th percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stackrun import REPO, BenchStack, pct  # noqa: E402

sys.path.insert(0, str(REPO))
from daemons.core.assets import EURE_ID, NBTC_ID  # noqa: E402

PG_PORT = int(os.environ.get("QL_BENCH_RPC_PG_PORT", "26532"))
KAFKA_PORT = int(os.environ.get("QL_BENCH_RPC_KAFKA_PORT", "29892"))
SIM_PORT = int(os.environ.get("QL_BENCH_RPC_SIM_PORT", "18580"))
STACK_DIR = REPO / ".local" / "bench-rpc-stack"
TEMPLATES = [  # both directions, sizes inside the default 1–5 EURe caps at the simulated ~60,000 EUR/BTC
    {"asset_in": EURE_ID, "asset_out": NBTC_ID, "exact_amount_in": str(3 * 10**18), "min_deadline_ms": 60_000},
    {"asset_in": NBTC_ID, "asset_out": EURE_ID, "exact_amount_in": "5000", "min_deadline_ms": 60_000},
]
RPC_DAEMONS = ("inventory-sync", "trade-executor", "liquidity-manager")
TARGET_PER_MIN = 60
TARGET_AGE_P99_MS = 5_000

AGE_SQL = """
SELECT d.event->'payload'->>'decision_reason' AS reason,
       (d.event->'payload'->>'decided_at')::timestamptz AS decided,
       (s.event->'payload'->>'synced_at')::timestamptz AS synced
FROM trade_decisions d
LEFT JOIN LATERAL (SELECT event FROM intent_inventory_snapshots i
                   WHERE i.inventory_id = d.inventory_snapshot_id LIMIT 1) s ON true
WHERE (d.event->'payload'->>'decided_at')::timestamptz BETWEEN to_timestamp($1) AND to_timestamp($2)
"""


def most_in_window(times: list[float], window_s: float) -> tuple[int, float]:
    """The most requests in any half-open window [t, t + window_s), and where it starts."""
    times = sorted(times)
    best, at, lo = 0, times[0] if times else 0.0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, times[lo]
    return best, at


async def daemon_budgets(control: Any) -> dict[str, tuple[int, int]]:
    """(per_min, burst) of the endpoint each NEAR RPC-using daemon has in use, from its /state."""
    out: dict[str, tuple[int, int]] = {}
    for name in RPC_DAEMONS:
        reply = await control.request(name, "GET", "/state")
        usage = reply.body.get("near_rpc") or {}
        endpoint = next((e for e in usage.get("endpoints", []) if e.get("in_use")), None)
        if endpoint and endpoint.get("budget_per_min"):
            out[name] = (int(endpoint["budget_per_min"]), int(endpoint["budget_burst"]))
    return out


async def wait_load(http: aiohttp.ClientSession, relay: str, load_id: str, bench: BenchStack) -> dict[str, Any]:
    while True:
        await asyncio.sleep(1.0)
        bench.procs.check()
        async with http.get(f"{relay}/_sim/timing", params={"summary": "1"}) as resp:
            load = (await resp.json())["loads"][load_id]
        if load["done"]:
            return dict(load)


async def main(rate: float, seconds: float, take: float, warmup_s: float, keep: bool) -> None:
    bench = BenchStack(STACK_DIR, PG_PORT, KAFKA_PORT, SIM_PORT)
    bench.infra_up()
    try:
        async with aiohttp.ClientSession() as http:
            control = await bench.up(http, operator="bench", reason="NEAR RPC budget benchmark")
            relay, node = bench.relay, bench.near_rpc
            async with http.post(f"{relay}/_sim/config", json={"take_fraction": take}) as resp:
                resp.raise_for_status()
            if warmup_s > 0:  # not counted: start-up reads (fee, salt, keys) and group joins
                async with http.post(
                    f"{relay}/_sim/load", json={"rate_per_s": rate, "duration_s": warmup_s, "templates": TEMPLATES}
                ) as resp:
                    resp.raise_for_status()
                    await wait_load(http, relay, str((await resp.json())["load_id"]), bench)
            budgets = await daemon_budgets(control)
            print(f"armed; {rate:g} requests/s for {seconds:g} s, the taker takes {take:.0%} ...", flush=True)
            t0 = time.time()
            async with http.post(
                f"{relay}/_sim/load", json={"rate_per_s": rate, "duration_s": seconds, "templates": TEMPLATES}
            ) as resp:
                resp.raise_for_status()
                load = await wait_load(http, relay, str((await resp.json())["load_id"]), bench)
            t1 = time.time()
            async with http.get(f"{node.rstrip('/')}/_sim/seen") as resp:
                seen = (await resp.json())["seen"]
            async with http.get(f"{relay}/_sim/seen") as resp:
                relay_state = await resp.json()
            pool = await asyncpg.create_pool(bench.procs.env["QL_DATABASE_URL"], min_size=1, max_size=1)
            try:
                await asyncio.sleep(3)  # the history-writer's batch wait, so the last decisions are stored
                rows = await pool.fetch(AGE_SQL, t0, t1)
            finally:
                await pool.close()
        report(rate, seconds, load, t0, t1, seen, relay_state, rows, budgets)
    finally:
        bench.procs.stop_all()
        if not keep:
            bench.down()


def report(
    rate: float,
    seconds: float,
    load: dict[str, Any],
    t0: float,
    t1: float,
    seen: list[dict[str, Any]],
    relay_state: dict[str, Any],
    rows: list[asyncpg.Record],
    budgets: dict[str, tuple[int, int]],
) -> None:
    span = t1 - t0
    calls = [e for e in seen if e["kind"] == "rpc" and t0 <= e["at"] <= t1]
    refused = [e for e in seen if e["kind"] == "rate_limited" and t0 <= e["at"] <= t1]
    times = [e["at"] for e in calls]
    per_min = len(calls) / span * 60
    w10, w10_at = most_in_window(times, 10.0)
    w60, _ = most_in_window(times, 60.0)
    allowance_10s = sum(burst + per_min_ / 6 for per_min_, burst in budgets.values())
    budget_min = sum(p for p, _ in budgets.values())
    print(
        f"\n=== load: {load['sent']} requests in {span:.0f} s ({load['sent'] / span:.1f}/s, "
        f"max {load['late_max_ms']:.1f} ms behind schedule) ==="
    )
    counts = relay_state.get("counts", {})
    print(f"  relay: {counts.get('settled', 0)} settled, {counts.get('settle_failed', 0)} failed to settle")
    print("\n=== NEAR RPC requests the node received during the load (its own log) ===")
    print(
        f"  total {len(calls)}: {per_min:.1f}/min on average; most in any 10 s: {w10} "
        f"(from +{w10_at - t0:.0f} s); most in any 60 s: {w60}; refused with 429: {len(refused)}"
    )
    by_agent = Counter(str(e.get("agent")) for e in calls)
    by_method = Counter((str(e.get("agent")), str(e.get("method_name") or e.get("method"))) for e in calls)
    for agent, n in by_agent.most_common():
        daemon = agent.removeprefix("quoteloop-")
        per_min_, burst = budgets.get(daemon, (0, 0))
        methods = ", ".join(f"{m} {c}" for (a, m), c in by_method.most_common() if a == agent)
        print(f"  {agent:<30} {n:>5} ({n / span * 60:5.1f}/min; budget {per_min_}/min burst {burst}): {methods}")
    print(
        f"  budgets in force: {budget_min}/min in all; at most {allowance_10s:.0f} in any 10 s "
        "(each bucket: burst + per_min / 6)"
    )
    ages = [(r["decided"] - r["synced"]).total_seconds() * 1000 for r in rows if r["synced"] and r["decided"]]
    reasons = Counter(r["reason"] for r in rows)
    print("\n=== inventory age at decision (decided_at - snapshot synced_at, from PostgreSQL) ===")
    print(f"  decisions {len(rows)} ({', '.join(f'{k} {v}' for k, v in reasons.most_common())})")
    print(
        f"  age ms: p50 {pct(ages, 0.5):.0f}, p90 {pct(ages, 0.9):.0f}, p99 {pct(ages, 0.99):.0f}, "
        f"max {max(ages, default=float('nan')):.0f} (over {len(ages)} decisions with a snapshot)"
    )
    ok = lambda c: "ok" if c else "MISSED"  # noqa: E731
    print("\n=== targets ===")
    print(
        f"  <= {TARGET_PER_MIN}/min averaged over the run ({span / 60:.1f} min): "
        f"{per_min:.1f} {ok(per_min <= TARGET_PER_MIN)}"
    )
    print(
        f"  no 10 s window over the budgets' allowance ({allowance_10s:.0f}): most {w10} {ok(w10 <= allowance_10s)}; "
        f"pro rata of {TARGET_PER_MIN}/min ({TARGET_PER_MIN // 6}): {ok(w10 <= TARGET_PER_MIN // 6)}"
    )
    print(
        f"  inventory age p99 <= {TARGET_AGE_P99_MS} ms: "
        f"{pct(ages, 0.99):.0f} {ok(pct(ages, 0.99) <= TARGET_AGE_P99_MS)}"
    )
    if seconds < 300:
        print(f"  (the target is over 5 minutes; this run was {seconds:g} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="quote requests per second (default 50)")
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the counted load (default 300)")
    parser.add_argument("--take", type=float, default=1 / 3, help="share of the quotes the taker takes (1/3)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before counting (0: none)")
    parser.add_argument("--keep-stack", action="store_true", help="leave PostgreSQL and Kafka up afterwards")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.rate, args.seconds, args.take, args.warmup, args.keep_stack))
