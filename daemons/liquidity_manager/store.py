"""liquidity-manager's PostgreSQL working state (migration `20261124150000_liquidity_manager`):
funding attempts, the withdrawal ledger, deposit addresses, the freeze, and the event outbox.

Every state change is written together with its event in one transaction (`commit`), so what the
daemon knows and what the history will show never disagree; the outbox is published afterwards.
Amounts are `numeric(39,0)` in the database and `int` here, converted through `Decimal`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from daemons.core.events import Envelope, encode
from daemons.liquidity_manager.funding import FundingAttempt
from daemons.liquidity_manager.withdrawals import Withdrawal


@dataclass(frozen=True)
class DepositAddressRecord:
    chain: str
    address: str
    memo: str | None
    liquidity_action_id: str
    issued_at: datetime


@dataclass(frozen=True)
class FreezeState:
    frozen: bool
    changed_by: str | None = None
    changed_at: datetime | None = None
    reason: str | None = None
    liquidity_action_id: str | None = None


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_id: uuid.UUID
    topic: str
    key: str
    event: bytes


def _num(value: int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _int(value: Decimal | None) -> int | None:
    return None if value is None else int(value)


_FUNDING_COLUMNS = (
    "liquidity_action_id",
    "account_id",
    "asset_id",
    "chain",
    "amount",
    "tx_hash",
    "deposit_address",
    "wallet_label",
    "operator",
    "note",
    "stage",
    "recorded_at",
    "delayed_at",
    "notified_at",
    "seen_at",
    "settled_at",
    "credited_amount",
    "venue_status",
    "reason",
)
_WITHDRAWAL_COLUMNS = (
    "liquidity_action_id",
    "account_id",
    "asset_id",
    "chain",
    "net_amount",
    "fee",
    "address",
    "wallet_label",
    "operator",
    "note",
    "requested_at",
    "deadline",
    "intent_hash",
    "nonce",
    "signed_data",
    "stage",
    "delayed_at",
    "published_at",
    "burned_at",
    "settled_at",
    "tx_hash",
    "transfer_tx_hash",
    "venue_status",
    "reason",
)


def _funding_values(a: FundingAttempt) -> list[Any]:
    return [
        a.liquidity_action_id,
        a.account_id,
        a.asset_id,
        a.chain,
        _num(a.amount),
        a.tx_hash,
        a.deposit_address,
        a.wallet_label,
        a.operator,
        a.note,
        a.stage,
        a.recorded_at,
        a.delayed_at,
        a.notified_at,
        a.seen_at,
        a.settled_at,
        _num(a.credited_amount),
        a.venue_status,
        a.reason,
    ]


def _funding_from(row: asyncpg.Record) -> FundingAttempt:
    values = dict(row)
    values["amount"] = int(values["amount"])
    values["credited_amount"] = _int(values["credited_amount"])
    return FundingAttempt(**{k: values[k] for k in _FUNDING_COLUMNS})


def _withdrawal_values(w: Withdrawal) -> list[Any]:
    return [
        w.liquidity_action_id,
        w.account_id,
        w.asset_id,
        w.chain,
        _num(w.net_amount),
        _num(w.fee),
        w.address,
        w.wallet_label,
        w.operator,
        w.note,
        w.requested_at,
        w.deadline,
        w.intent_hash,
        w.nonce,
        w.signed_data,
        w.stage,
        w.delayed_at,
        w.published_at,
        w.burned_at,
        w.settled_at,
        w.tx_hash,
        w.transfer_tx_hash,
        w.venue_status,
        w.reason,
    ]


def _withdrawal_from(row: asyncpg.Record) -> Withdrawal:
    values = dict(row)
    values["net_amount"] = int(values["net_amount"])
    values["fee"] = int(values["fee"])
    return Withdrawal(**{k: values[k] for k in _WITHDRAWAL_COLUMNS})


def _upsert(table: str, columns: Sequence[str]) -> str:
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT (liquidity_action_id) DO UPDATE SET {updates}, updated_at = now()"
    )


_SAVE_FUNDING = _upsert("liquidity_funding", _FUNDING_COLUMNS)
_SAVE_WITHDRAWAL = _upsert("liquidity_withdrawals", _WITHDRAWAL_COLUMNS)
_INSERT_FUNDING = (
    f"INSERT INTO liquidity_funding ({', '.join(_FUNDING_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_FUNDING_COLUMNS) + 1))}) "
    "ON CONFLICT (chain, tx_hash) DO NOTHING RETURNING liquidity_action_id"
)
_OUTBOX = "INSERT INTO liquidity_outbox (event_id, topic, key, event) VALUES ($1, $2, $3, $4)"


class Store:
    """The daemon's tables over one asyncpg pool. Every method may raise one of `DB_ERRORS`."""

    def __init__(self, pool: asyncpg.Pool, account_id: str) -> None:
        self.pool = pool
        self.account_id = account_id

    # --- reading at start -------------------------------------------------------------------

    async def funding(self, recent: int) -> list[FundingAttempt]:
        """Every attempt still watched, plus the `recent` last credited ones."""
        rows = await self.pool.fetch(
            "(SELECT * FROM liquidity_funding WHERE account_id = $1 AND stage <> 'credited')"
            " UNION ALL (SELECT * FROM liquidity_funding WHERE account_id = $1 AND stage = 'credited'"
            " ORDER BY recorded_at DESC LIMIT $2)",
            self.account_id,
            recent,
        )
        return sorted((_funding_from(r) for r in rows), key=lambda a: a.recorded_at)

    async def withdrawals(self, recent: int) -> list[Withdrawal]:
        rows = await self.pool.fetch(
            "(SELECT * FROM liquidity_withdrawals WHERE account_id = $1 AND stage NOT IN ('completed', 'failed'))"
            " UNION ALL (SELECT * FROM liquidity_withdrawals WHERE account_id = $1"
            " AND stage IN ('completed', 'failed') ORDER BY requested_at DESC LIMIT $2)",
            self.account_id,
            recent,
        )
        return sorted((_withdrawal_from(r) for r in rows), key=lambda w: w.requested_at)

    async def deposit_addresses(self) -> dict[str, DepositAddressRecord]:
        rows = await self.pool.fetch(
            "SELECT chain, address, memo, liquidity_action_id, issued_at FROM liquidity_deposit_addresses"
            " WHERE account_id = $1",
            self.account_id,
        )
        return {r["chain"]: DepositAddressRecord(**dict(r)) for r in rows}

    async def freeze_state(self) -> FreezeState:
        row = await self.pool.fetchrow(
            "SELECT withdrawals_frozen, changed_by, changed_at, reason, liquidity_action_id FROM liquidity_controls"
            " WHERE account_id = $1",
            self.account_id,
        )
        if row is None:
            return FreezeState(frozen=False)
        return FreezeState(
            row["withdrawals_frozen"], row["changed_by"], row["changed_at"], row["reason"], row["liquidity_action_id"]
        )

    async def funding_by_id(self, liquidity_action_id: str) -> FundingAttempt | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM liquidity_funding WHERE liquidity_action_id = $1", liquidity_action_id
        )
        return None if row is None else _funding_from(row)

    async def withdrawal_by_id(self, liquidity_action_id: str) -> Withdrawal | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM liquidity_withdrawals WHERE liquidity_action_id = $1", liquidity_action_id
        )
        return None if row is None else _withdrawal_from(row)

    async def recorded_tx_hashes(self, chain: str, tx_hashes: Sequence[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT tx_hash FROM liquidity_funding WHERE chain = $1 AND tx_hash = ANY($2::text[])",
            chain,
            list(tx_hashes),
        )
        return {r["tx_hash"] for r in rows}

    # --- writing: state and its events in one transaction -------------------------------------

    async def commit(
        self,
        events: Sequence[tuple[Envelope[Any], str]],
        *,
        funding: FundingAttempt | None = None,
        withdrawal: Withdrawal | None = None,
        address: DepositAddressRecord | None = None,
        freeze: FreezeState | None = None,
    ) -> None:
        """Save the given state and queue `events` (each with its Kafka key) atomically."""
        async with self.pool.acquire() as conn, conn.transaction():
            if funding is not None:
                await conn.execute(_SAVE_FUNDING, *_funding_values(funding))
            if withdrawal is not None:
                await conn.execute(_SAVE_WITHDRAWAL, *_withdrawal_values(withdrawal))
            if address is not None:
                await conn.execute(
                    "INSERT INTO liquidity_deposit_addresses (account_id, chain, address, memo, liquidity_action_id,"
                    " issued_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, chain) DO UPDATE SET"
                    " address = EXCLUDED.address, memo = EXCLUDED.memo,"
                    " liquidity_action_id = EXCLUDED.liquidity_action_id, issued_at = EXCLUDED.issued_at",
                    self.account_id,
                    address.chain,
                    address.address,
                    address.memo,
                    address.liquidity_action_id,
                    address.issued_at,
                )
            if freeze is not None:
                await conn.execute(
                    "INSERT INTO liquidity_controls (account_id, withdrawals_frozen, changed_by, changed_at, reason,"
                    " liquidity_action_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id) DO UPDATE SET"
                    " withdrawals_frozen = EXCLUDED.withdrawals_frozen, changed_by = EXCLUDED.changed_by,"
                    " changed_at = EXCLUDED.changed_at, reason = EXCLUDED.reason,"
                    " liquidity_action_id = EXCLUDED.liquidity_action_id",
                    self.account_id,
                    freeze.frozen,
                    freeze.changed_by,
                    freeze.changed_at,
                    freeze.reason,
                    freeze.liquidity_action_id,
                )
            await self._enqueue(conn, events)

    async def insert_funding(self, attempt: FundingAttempt, events: Sequence[tuple[Envelope[Any], str]]) -> str | None:
        """Record a new attempt with its events; on a (chain, tx_hash) conflict nothing is written
        and the id of the attempt that holds that transfer is returned instead."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(_INSERT_FUNDING, *_funding_values(attempt))
            if inserted is None:
                return str(
                    await conn.fetchval(
                        "SELECT liquidity_action_id FROM liquidity_funding WHERE chain = $1 AND tx_hash = $2",
                        attempt.chain,
                        attempt.tx_hash,
                    )
                )
            await self._enqueue(conn, events)
            return None

    async def enqueue(self, events: Sequence[tuple[Envelope[Any], str]]) -> None:
        """Events with no working state behind them (refusals, duplicates)."""
        async with self.pool.acquire() as conn:
            await self._enqueue(conn, events)

    @staticmethod
    async def _enqueue(conn: asyncpg.Connection, events: Sequence[tuple[Envelope[Any], str]]) -> None:
        if events:
            await conn.executemany(_OUTBOX, [(e.event_id, e.event_type, key, encode(e)) for e, key in events])

    # --- the outbox -----------------------------------------------------------------------------

    async def unpublished(self, limit: int) -> list[OutboxRow]:
        rows = await self.pool.fetch(
            "SELECT seq, event_id, topic, key, event FROM liquidity_outbox WHERE published_at IS NULL"
            " ORDER BY seq LIMIT $1",
            limit,
        )
        return [OutboxRow(r["seq"], r["event_id"], r["topic"], r["key"], bytes(r["event"])) for r in rows]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        await self.pool.execute(
            "UPDATE liquidity_outbox SET published_at = now() WHERE seq = ANY($1::bigint[])", list(seqs)
        )

    async def prune_outbox(self, keep: timedelta) -> None:
        """Published rows are only a delivery record (the history has the events): keep a while."""
        await self.pool.execute("DELETE FROM liquidity_outbox WHERE published_at < now() - $1::interval", keep)

    async def outbox_backlog(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM liquidity_outbox WHERE published_at IS NULL"))


class DatabaseDown(Exception):
    """A state change could not be made durable; nothing was applied."""
