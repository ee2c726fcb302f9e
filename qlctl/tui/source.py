"""The monitor's I/O shell: one read of everything the panels show, and the control requests.

Daemons are read through `qlctl.client.ControlClient`: a daemon that is not running, or that
fails mid-answer, comes back as `running: false` with the reason, never as an exception. The
latest decisions and the pending funding come through `qlctl.reports.Reports`, today's P&L
(`qlctl.pnl.today`) at most every `pnl_every_s`. PostgreSQL being
away is a message on the snapshot, and the last rows read stay on screen marked stale;
reconnecting is tried again after a pause so an unreachable database never slows every refresh.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg

from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc
from qlctl import ops, pnl
from qlctl.client import SERVICES, ClientError, ControlClient, Reply
from qlctl.reports import Reports


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    states: dict[str, dict[str, Any]]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    pending_funding: list[dict[str, Any]] = field(default_factory=list)
    # None: PostgreSQL answered this refresh; otherwise why not (the rows above are the last read)
    db_error: str | None = None
    db_read_at: datetime | None = None
    # trades settled since midnight UTC, summed; None until first read
    pnl: pnl.Totals | None = None


class MonitorSource:
    def __init__(
        self,
        client: ControlClient,
        database_url: str | None,
        *,
        decisions_shown: int = 20,
        db_timeout_s: float = 3.0,
        db_retry_s: float = 5.0,
        pnl_every_s: float = 10.0,
    ) -> None:
        self.client = client
        self.database_url = database_url
        self.decisions_shown = decisions_shown
        self.db_timeout_s = db_timeout_s
        self.db_retry_s = db_retry_s
        self._reports: Reports | None = None
        self._retry_at = 0.0
        self._decisions: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._db_error: str | None = None if database_url else "no database configured (QL_DATABASE_URL)"
        self._db_read_at: datetime | None = None
        self.pnl_every_s = pnl_every_s
        self._pnl: pnl.Totals | None = None
        self._pnl_due = 0.0

    async def read(self) -> Snapshot:
        states, _ = await asyncio.gather(self._states(), self._read_db())
        return Snapshot(
            at=now_utc(),
            states=states,
            decisions=self._decisions,
            pending_funding=self._pending,
            db_error=self._db_error,
            db_read_at=self._db_read_at,
            pnl=self._pnl,
        )

    async def send(self, service: str, path: str, body: dict[str, Any]) -> Reply:
        """POST a control request; any failure to get an answer is a `ClientError` (one line)."""
        try:
            return await self.client.request(service, "POST", path, body)
        except (aiohttp.ClientError, OSError) as exc:
            raise ClientError(f"{service} did not answer {path}: {exc.__class__.__name__}: {exc}") from None

    # --- daemons ------------------------------------------------------------------------------

    async def _states(self) -> dict[str, dict[str, Any]]:
        """Every daemon's `/state` envelope (`qlctl.ops.read_all_raw`): a daemon that breaks the
        connection mid-answer costs only its own row, not the whole refresh."""
        return await ops.read_all_raw(self.client, SERVICES)

    async def close(self) -> None:
        await self._drop()

    # --- PostgreSQL ---------------------------------------------------------------------------

    async def _read_db(self) -> None:
        if not self.database_url:
            return
        loop = asyncio.get_running_loop()
        if self._reports is None:
            if loop.time() < self._retry_at:
                return
            opening = Reports(self.database_url)
            try:
                self._reports = await asyncio.wait_for(opening.__aenter__(), timeout=self.db_timeout_s)
            except TimeoutError:
                self._down(f"PostgreSQL did not answer within {self.db_timeout_s:g} s; retrying")
                return
            except ClientError as exc:
                self._down(str(exc))
                return
            except asyncpg.PostgresError as exc:  # e.g. authentication refused
                self._down(f"PostgreSQL refused the connection: {exc.__class__.__name__}: {str(exc)[:160]}")
                return
        reports = self._reports
        assert reports is not None
        try:
            decisions, pending = await asyncio.wait_for(
                asyncio.gather(reports.recent_decisions(self.decisions_shown), reports.funding(pending_only=True)),
                timeout=self.db_timeout_s,
            )
        except (*DB_ERRORS, asyncpg.PostgresError) as exc:
            await self._drop()
            self._down(f"PostgreSQL: {exc.__class__.__name__}: {str(exc)[:160]}; showing the last rows read")
            return
        self._decisions, self._pending = decisions, pending
        self._db_error = None
        self._db_read_at = now_utc()
        if loop.time() >= self._pnl_due:
            try:
                self._pnl = await asyncio.wait_for(pnl.today(reports.pool, now_utc()), timeout=self.db_timeout_s)
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                await self._drop()
                self._down(f"PostgreSQL: {exc.__class__.__name__}: {str(exc)[:160]}; showing the last rows read")
                return
            self._pnl_due = loop.time() + self.pnl_every_s

    def _down(self, message: str) -> None:
        self._db_error = message
        self._retry_at = asyncio.get_running_loop().time() + self.db_retry_s

    async def _drop(self) -> None:
        reports, self._reports = self._reports, None
        if reports is not None:
            try:
                await asyncio.wait_for(reports.__aexit__(None, None, None), timeout=self.db_timeout_s)
            except (*DB_ERRORS, asyncpg.PostgresError):
                pass  # the pool is gone with the server; nothing left to release
