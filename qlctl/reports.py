"""The reports service layer: the operator's questions (docs/design.md §5) answered straight
from PostgreSQL.

Every report reads the append-only history tables and the views of the event-store migration;
it never asks a daemon. A database that cannot be reached is a `ClientError` naming the URL's
host and what to do.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import RefusalCode
from qlctl.client import ClientError

_SINCE = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2d`."""
    match = _SINCE.match(text.strip())
    if not match:
        raise ClientError(f"bad duration {text!r}: use a number and s, m, h or d (e.g. 1h)")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


class Reports:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> Reports:
        try:
            self._pool = await connect_pool(self.database_url, min_size=1, max_size=2)
        except DB_ERRORS as exc:
            raise ClientError(
                f"PostgreSQL is not reachable ({exc.__class__.__name__}): start it (make run) or set QL_DATABASE_URL"
            ) from None
        except asyncpg.InvalidCatalogNameError:
            raise ClientError("the database does not exist: run `qlctl db migrate`") from None
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "use Reports as an async context manager"
        return self._pool

    # --- chain of custody -------------------------------------------------------------------

    async def chain(self, quote_id: str) -> dict[str, Any]:
        """Request → price and inventory used → decision → command → answer → settlement."""
        q = self.pool
        raw = await q.fetch(
            "SELECT event, observed_at FROM raw_near_intents_quotes WHERE quote_id = $1 ORDER BY observed_at", quote_id
        )
        demand = await q.fetch(
            "SELECT event FROM swap_demand_events WHERE quote_id = $1 ORDER BY observed_at", quote_id
        )
        decisions = await q.fetch("SELECT * FROM decision_context WHERE quote_id = $1 ORDER BY decided_at", quote_id)
        decision_events = {
            r["decision_id"]: r["event"]
            for r in await q.fetch("SELECT decision_id, event FROM trade_decisions WHERE quote_id = $1", quote_id)
        }
        commands = await q.fetch(
            "SELECT event FROM execute_trade_commands WHERE quote_id = $1 ORDER BY observed_at", quote_id
        )
        results = await q.fetch(
            "SELECT event FROM trade_execution_results WHERE quote_id = $1 ORDER BY observed_at", quote_id
        )
        if not (raw or demand or decisions or commands or results):
            raise ClientError(f"no record of quote {quote_id} in PostgreSQL")
        chain = {
            "quote_id": quote_id,
            "request": [r["event"] for r in raw],
            "demand": [r["event"] for r in demand],
            "decisions": [{**dict(r), "event": decision_events.get(r["decision_id"])} for r in decisions],
            "commands": [r["event"] for r in commands],
            "results": [r["event"] for r in results],
        }
        chain["stages"] = stage_latencies(chain)
        return chain

    # --- skipped ----------------------------------------------------------------------------

    async def skipped(self, since: timedelta, examples: int = 3) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT decision_reason, count(*) AS n,
                   (array_agg(quote_id ORDER BY decided_at DESC))[1:$2] AS examples,
                   max(decided_at) AS latest
            FROM skipped_quotes WHERE decided_at >= now() - $1::interval
            GROUP BY decision_reason ORDER BY n DESC
            """,
            since,
            examples,
        )
        return [dict(r) for r in rows]

    # --- refusals -----------------------------------------------------------------------------

    async def refusals(self, since: timedelta) -> list[dict[str, Any]]:
        """trade-executor's refused and not-sent answers by `reason_code`, each marked as one of
        its own checks (`RefusalCode`) or the venue's rejection code."""
        rows = await self.pool.fetch(
            """
            SELECT status, event->'payload'->>'reason_code' AS reason_code, count(*) AS n,
                   max(occurred_at) AS latest, (array_agg(quote_id ORDER BY occurred_at DESC))[1] AS example
            FROM trade_execution_results
            WHERE occurred_at >= now() - $1::interval AND status IN ('refused', 'rejected')
            GROUP BY status, reason_code ORDER BY n DESC
            """,
            since,
        )
        own = {c.value for c in RefusalCode}
        return [{**dict(r), "source": "executor" if r["reason_code"] in own else "venue"} for r in rows]

    # --- funding ------------------------------------------------------------------------------

    async def funding(self, pending_only: bool) -> list[dict[str, Any]]:
        view = "pending_funding" if pending_only else "liquidity_action_latest"
        rows = await self.pool.fetch(f"SELECT * FROM {view} ORDER BY status_at DESC LIMIT 200")
        return [dict(r) for r in rows]

    # --- inventory ------------------------------------------------------------------------------

    async def inventory_at(self, at: datetime) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT inventory_id, occurred_at, event FROM intent_inventory_snapshots"
            " WHERE occurred_at <= $1 ORDER BY occurred_at DESC LIMIT 1",
            at,
        )
        if row is None:
            raise ClientError(f"no inventory snapshot at or before {at.isoformat()}")
        return {"inventory_id": row["inventory_id"], "occurred_at": row["occurred_at"], **row["event"]["payload"]}

    # --- latest decisions (the TUI's "latest requests") -------------------------------------------

    async def recent_decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest decisions with their reasons, and what the venue last said for each quote."""
        rows = await self.pool.fetch(
            """
            SELECT d.quote_id, d.decision_id, d.decision, d.decision_reason,
                   d.event->'payload'->>'decision_detail' AS decision_detail,
                   d.event->'payload'->>'direction' AS direction,
                   d.event->'payload'->>'gross_edge_pct' AS gross_edge_pct,
                   coalesce((d.event->'payload'->>'decided_at')::timestamptz, d.occurred_at) AS decided_at,
                   r.status AS result_status
            FROM (SELECT * FROM trade_decisions ORDER BY occurred_at DESC LIMIT $1) d
            LEFT JOIN LATERAL (
                SELECT status FROM trade_execution_results t
                WHERE t.quote_id = d.quote_id ORDER BY t.observed_at DESC LIMIT 1
            ) r ON true
            ORDER BY d.occurred_at DESC
            """,
            limit,
        )
        return [
            {**dict(r), "gross_edge_pct": None if r["gross_edge_pct"] is None else Decimal(r["gross_edge_pct"])}
            for r in rows
        ]

    # --- latency --------------------------------------------------------------------------------

    async def latency(self, since: timedelta) -> list[dict[str, Any]]:
        """Per-stage percentiles (ms) over the chains that reached each stage."""
        rows = await self.pool.fetch(
            """
            WITH d AS (
                SELECT quote_id,
                       (event->'payload'->>'request_received_at')::timestamptz AS received,
                       (event->'payload'->>'decided_at')::timestamptz AS decided,
                       observed_at AS decision_observed
                FROM trade_decisions WHERE occurred_at >= now() - $1::interval
            ), r AS (
                SELECT DISTINCT ON (quote_id) quote_id,
                       (event->'payload'->>'command_received_at')::timestamptz AS cmd_received,
                       (event->'payload'->>'sent_at')::timestamptz AS sent,
                       (event->'payload'->>'venue_answered_at')::timestamptz AS answered
                FROM trade_execution_results
                WHERE occurred_at >= now() - $1::interval AND event->'payload'->>'sent_at' IS NOT NULL
                ORDER BY quote_id, observed_at
            ), stages AS (
                SELECT 'ingest → decided' AS stage, extract(epoch FROM decided - received) * 1000 AS ms FROM d
                UNION ALL SELECT 'decided → executor', extract(epoch FROM r.cmd_received - d.decided) * 1000
                    FROM d JOIN r USING (quote_id)
                UNION ALL SELECT 'executor → sent', extract(epoch FROM r.sent - r.cmd_received) * 1000 FROM r
                UNION ALL SELECT 'request → answer sent', extract(epoch FROM r.sent - d.received) * 1000
                    FROM d JOIN r USING (quote_id)
                UNION ALL SELECT 'sent → venue answered', extract(epoch FROM r.answered - r.sent) * 1000 FROM r
            )
            SELECT stage, count(ms) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) AS p90,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                   max(ms) AS max
            FROM stages WHERE ms IS NOT NULL GROUP BY stage ORDER BY min(stage)
            """,
            since,
        )
        return [dict(r) for r in rows]


def _ts(value: Any) -> datetime | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if isinstance(value, datetime) else None


def stage_latencies(chain: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stage's timestamp and its latency from the previous one, in milliseconds."""
    marks: list[tuple[str, datetime | None]] = []
    if chain["demand"]:
        marks.append(("request received", _ts(chain["demand"][0]["payload"]["received_at"])))
    if chain["decisions"] and chain["decisions"][0]["event"]:
        payload = chain["decisions"][0]["event"]["payload"]
        marks.append(("decided", _ts(payload.get("decided_at"))))
    if chain["results"]:
        first = chain["results"][0]["payload"]
        marks += [
            ("command received by executor", _ts(first.get("command_received_at"))),
            ("signed", _ts(first.get("signed_at"))),
            ("sent to relay", _ts(first.get("sent_at"))),
            ("venue answered", _ts(first.get("venue_answered_at"))),
        ]
        final = chain["results"][-1]["payload"]
        if final.get("status") in ("settled", "expired"):
            marks.append((final["status"], _ts(final.get("resolved_at")) or _ts(chain["results"][-1]["occurred_at"])))
    out = []
    previous: datetime | None = None
    for name, at in marks:
        if at is None:
            continue
        out.append(
            {
                "stage": name,
                "at": at,
                "ms_since_previous": None if previous is None else (at - previous).total_seconds() * 1000,
            }
        )
        previous = at
    return out
