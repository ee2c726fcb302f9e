"""The executor's durable ledger: the state machine (pure) and its PostgreSQL table.

One row per command (`executor_ledger`, unique by `command_id` and by `quote_id`), written before
anything leaves the process. States and the only moves between them::

    received ──► signing ──► submitted ──► acknowledged ──► settled | expired
        │  │        │       ▲    ├───────► rejected
        │  └────────┼───────┘    └───────► uncertain ────► settled | expired
        ▼           └──► settled | expired          (restart: never sent, resolved at once)
     refused

A command's first row is written straight in `submitted` (`LedgerStore.insert`: the nonce,
deadline and signature with the command, before anything is sent; signing is local and has no
side effect, so a write before it protected nothing and cost a durable commit on the hot path)
or straight in `refused`. `received` and `signing` remain for rows written by earlier versions,
and recovery still resolves them.

`submitted` also goes straight to settled/expired (a `quote_status` can beat the relay's OK),
and `expired` to `settled` (a late `quote_status` is a venue fact and wins over our inference).
`rejected`, `settled` and `refused` are final. A state change is a compare-and-set in SQL
(`WHERE state = ANY(<allowed sources>)`), so two paths racing on one row (the relay's answer and
a `quote_status`) can never both win; the loser sees `None` and leaves the row alone.

`result_from_row` is the one way a row becomes an `exec.trade_result`, so a republished result
is the same record; `published_state` says which state's result is known to be on Kafka.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import asyncpg

from daemons.core.events import Envelope, ExecuteTrade, TradeResult


class LedgerState(StrEnum):
    RECEIVED = "received"
    SIGNING = "signing"
    SUBMITTED = "submitted"
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    SETTLED = "settled"
    EXPIRED = "expired"
    REFUSED = "refused"


S = LedgerState

TRANSITIONS: dict[LedgerState, frozenset[LedgerState]] = {
    S.RECEIVED: frozenset({S.SIGNING, S.SUBMITTED, S.REFUSED}),
    S.SIGNING: frozenset({S.SUBMITTED, S.SETTLED, S.EXPIRED}),
    S.SUBMITTED: frozenset({S.ACKNOWLEDGED, S.REJECTED, S.UNCERTAIN, S.SETTLED, S.EXPIRED}),
    S.ACKNOWLEDGED: frozenset({S.SETTLED, S.EXPIRED}),
    S.UNCERTAIN: frozenset({S.SETTLED, S.EXPIRED}),
    S.EXPIRED: frozenset({S.SETTLED}),
    S.REJECTED: frozenset(),
    S.SETTLED: frozenset(),
    S.REFUSED: frozenset(),
}

# May still settle: its give-amount stays reserved until it is resolved.
LIVE: frozenset[LedgerState] = frozenset({S.SIGNING, S.SUBMITTED, S.ACKNOWLEDGED, S.UNCERTAIN})
# Not final yet: what a restart must pick up.
UNRESOLVED: frozenset[LedgerState] = frozenset({S.RECEIVED}) | LIVE
FINAL: frozenset[LedgerState] = frozenset({S.REJECTED, S.SETTLED, S.REFUSED})

# The exec.trade_result status of each state; None: nothing to publish yet (in hand).
RESULT_STATUS: dict[LedgerState, str | None] = {
    S.RECEIVED: None,
    S.SIGNING: None,
    S.SUBMITTED: None,
    S.ACKNOWLEDGED: "acknowledged",
    S.REJECTED: "rejected",
    S.UNCERTAIN: "uncertain",
    S.SETTLED: "settled",
    S.EXPIRED: "expired",
    S.REFUSED: "refused",
}


class IllegalTransition(ValueError):
    def __init__(self, current: LedgerState, target: LedgerState) -> None:
        super().__init__(f"no ledger transition {current.value} → {target.value}")
        self.current = current
        self.target = target


def can_transition(current: LedgerState, target: LedgerState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: LedgerState, target: LedgerState) -> LedgerState:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def sources_of(target: LedgerState) -> frozenset[LedgerState]:
    """Every state from which `target` may be entered."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def resolve_by_nonce(nonce_used: bool) -> LedgerState:
    """A live answer past its deadline: the verifier's `is_nonce_used` decides."""
    return S.SETTLED if nonce_used else S.EXPIRED


_EXECUTION_NS = uuid.UUID("6f0d35a4-51a5-4d3e-9a43-7b1f7ee3c0de")


def execution_id_for(command_id: str) -> str:
    """Deterministic: a redelivered command (or a refusal never stored) gets the same id."""
    return str(uuid.uuid5(_EXECUTION_NS, command_id))


# --- rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    command_id: str
    quote_id: str
    execution_id: str
    decision_id: str | None
    command_event_id: uuid.UUID | None
    state: LedgerState
    direction: str
    asset_in: str
    asset_out: str
    amount_in: int
    amount_out: int
    fixed_side: str
    min_deadline_ms: int
    answer_by: datetime
    inventory_id: str | None = None
    spendable_at_check: int | None = None
    reserved_at_check: int | None = None
    signer_id: str | None = None
    salt: str | None = None
    nonce: str | None = None
    deadline: datetime | None = None
    quote_output: dict[str, Any] | None = None
    signed_data: dict[str, Any] | None = None
    quote_hash: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    venue_response: Any = None
    intent_hash: str | None = None
    tx_hash: str | None = None
    resolved_by: Literal["quote_status", "is_nonce_used", "no_quote_status", "operator"] | None = None
    resolution: Any = None
    cancel_requested_at: datetime | None = None
    cancel_response: Any = None
    published_state: LedgerState | None = None
    received_at: datetime | None = None
    signing_at: datetime | None = None
    signed_at: datetime | None = None
    submitted_at: datetime | None = None
    sent_at: datetime | None = None
    venue_answered_at: datetime | None = None
    acknowledged_at: datetime | None = None
    rejected_at: datetime | None = None
    uncertain_at: datetime | None = None
    settled_at: datetime | None = None
    expired_at: datetime | None = None
    refused_at: datetime | None = None

    @property
    def transition_times(self) -> dict[str, datetime | None]:
        return {s.value: getattr(self, f"{s.value}_at") for s in LedgerState}

    @property
    def needs_publishing(self) -> bool:
        return RESULT_STATUS[self.state] is not None and self.published_state != self.state

    @classmethod
    def from_record(cls, record: asyncpg.Record | dict[str, Any]) -> LedgerRow:
        data = dict(record)
        data.pop("command", None)
        data.pop("updated_at", None)
        for key in ("amount_in", "amount_out", "spendable_at_check", "reserved_at_check"):
            if isinstance(data.get(key), Decimal):
                data[key] = int(data[key])
        data["state"] = LedgerState(data["state"])
        if data.get("published_state") is not None:
            data["published_state"] = LedgerState(data["published_state"])
        return cls(**data)


# What a LedgerRow holds: every column but the stored command event (a jsonb decoded for nothing
# on every transition) and updated_at.
_COLUMNS = ", ".join(f.name for f in fields(LedgerRow))
_L_COLUMNS = ", ".join(f"l.{f.name}" for f in fields(LedgerRow))  # the same, in a statement that joins


def result_from_row(row: LedgerRow) -> TradeResult:
    """The exec.trade_result for the row's current state (which must have one)."""
    status = RESULT_STATUS[row.state]
    if status is None:
        raise ValueError(f"state {row.state.value} has no result to publish")
    resolved_at = row.settled_at if row.state is S.SETTLED else row.expired_at if row.state is S.EXPIRED else None
    return TradeResult(
        execution_id=row.execution_id,
        command_id=row.command_id,
        quote_id=row.quote_id,
        decision_id=row.decision_id,
        status=status,  # type: ignore[arg-type]
        reason=row.reason,
        reason_code=row.reason_code,
        venue_response=row.venue_response,
        quote_hash=row.quote_hash,
        intent_hash=row.intent_hash,
        tx_hash=row.tx_hash,
        nonce=row.nonce,
        deadline=row.deadline,
        direction=row.direction,  # type: ignore[arg-type]
        asset_in=row.asset_in,
        asset_out=row.asset_out,
        amount_in=row.amount_in,
        amount_out=row.amount_out,
        signer_id=row.signer_id,
        command_received_at=row.received_at,
        signed_at=row.signed_at,
        sent_at=row.sent_at,
        venue_answered_at=row.venue_answered_at,
        resolved_at=resolved_at,
        resolved_by=row.resolved_by if row.state in (S.SETTLED, S.EXPIRED) else None,
        cancel_requested_at=row.cancel_requested_at,
        inventory_id=row.inventory_id,
        spendable_at_check=row.spendable_at_check,
        reserved_at_check=row.reserved_at_check,
    )


# --- SQL ---------------------------------------------------------------------------------------------

# Columns a transition or note may set besides the state and its time; the SQL is built only
# from these names, never from input.
_SETTABLE = frozenset(
    {
        "inventory_id",
        "spendable_at_check",
        "reserved_at_check",
        "signer_id",
        "salt",
        "nonce",
        "deadline",
        "quote_output",
        "signed_data",
        "quote_hash",
        "reason",
        "reason_code",
        "venue_response",
        "intent_hash",
        "tx_hash",
        "resolved_by",
        "resolution",
        "signed_at",
        "sent_at",
        "venue_answered_at",
    }
)
_AMOUNTS = frozenset({"spendable_at_check", "reserved_at_check"})


# text columns `transition_many` may set to a different value in each row
_PER_ROW = frozenset({"reason", "reason_code"})


def _value(name: str, value: Any) -> Any:
    if name in _AMOUNTS and isinstance(value, int):
        return Decimal(value)
    return value


class LedgerStore:
    """The ledger's SQL. Every method raises the pool's errors (`DB_ERRORS` when PostgreSQL is
    away): the caller decides, and nothing here retries behind its back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert_received(self, event: Envelope[ExecuteTrade], received_at: datetime) -> LedgerRow | None:
        """A row in `received`, as earlier versions wrote a command's first row (the executor now
        writes it straight in its state, `insert`); recovery still refuses such rows, and tests
        seed them with this. None when its command_id or quote_id already has one."""
        return await self.insert(event, received_at, S.RECEIVED, received_at)

    async def insert(
        self, event: Envelope[ExecuteTrade], received_at: datetime, target: LedgerState, at: datetime, **fields: Any
    ) -> LedgerRow | None:
        """The command's first row, written straight in `target` (`submitted` with its signature,
        or `refused`): one durable write where a `received` row and a transition would make two.
        None when its command_id or quote_id already has a row."""
        if target not in (S.RECEIVED, S.SUBMITTED, S.REFUSED):
            raise ValueError(f"a command's first row is received, submitted or refused, not {target.value}")
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not ledger columns: {sorted(unknown)}")
        cmd = event.payload
        # `received_at` is always written; another state also gets its own time
        stamped = [] if target is S.RECEIVED else [(f"{target.value}_at", at)]
        names = [n for n, _ in stamped] + list(fields)
        values = [v for _, v in stamped] + [_value(n, fields[n]) for n in fields]
        sql = (
            "INSERT INTO executor_ledger (command_id, quote_id, execution_id, decision_id, command_event_id, state, "
            "direction, asset_in, asset_out, amount_in, amount_out, fixed_side, min_deadline_ms, answer_by, command, "
            f"received_at{''.join(f', {n}' for n in names)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
            f"$12, $13, $14, $15, $16{''.join(f', ${i}' for i in range(17, 17 + len(names)))}) "
            f"ON CONFLICT DO NOTHING RETURNING {_COLUMNS}"
        )
        record = await self.pool.fetchrow(
            sql,
            cmd.command_id,
            cmd.quote_id,
            execution_id_for(cmd.command_id),
            cmd.decision_id,
            event.event_id,
            target.value,
            cmd.direction,
            cmd.asset_in,
            cmd.asset_out,
            Decimal(cmd.amount_in),
            Decimal(cmd.amount_out),
            cmd.fixed_side,
            cmd.min_deadline_ms,
            cmd.answer_by,
            event.model_dump(mode="json"),
            received_at,
            *values,
        )
        return LedgerRow.from_record(record) if record is not None else None

    async def get(self, command_id: str) -> LedgerRow | None:
        record = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM executor_ledger WHERE command_id = $1", command_id)
        return LedgerRow.from_record(record) if record is not None else None

    async def get_by_quote(self, quote_id: str) -> LedgerRow | None:
        record = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM executor_ledger WHERE quote_id = $1", quote_id)
        return LedgerRow.from_record(record) if record is not None else None

    async def get_by_hash(self, quote_hash: str) -> LedgerRow | None:
        record = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM executor_ledger WHERE quote_hash = $1", quote_hash)
        return LedgerRow.from_record(record) if record is not None else None

    async def transition(self, command_id: str, target: LedgerState, at: datetime, **fields: Any) -> LedgerRow | None:
        """Move the row to `target` if its current state allows it; set `<target>_at` and
        `fields`. None when the row is in a state `target` cannot follow (someone else won)."""
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not ledger columns: {sorted(unknown)}")
        names = list(fields)
        sets = ["state = $2", f"{target.value}_at = $3", "updated_at = now()"]
        sets += [f"{name} = ${i}" for i, name in enumerate(names, start=5)]
        sql = (
            f"UPDATE executor_ledger SET {', '.join(sets)} "
            f"WHERE command_id = $1 AND state = ANY($4::text[]) RETURNING {_COLUMNS}"
        )
        record = await self.pool.fetchrow(
            sql,
            command_id,
            target.value,
            at,
            [s.value for s in sources_of(target)],
            *(_value(n, fields[n]) for n in names),
        )
        return LedgerRow.from_record(record) if record is not None else None

    async def transition_many(
        self, target: LedgerState, at: datetime, each: dict[str, dict[str, str | None]], **common: Any
    ) -> list[LedgerRow]:
        """`transition` of many rows in one statement: the same target, `<target>_at` and `common`
        fields for all, plus the text columns in `each[command_id]` (the same names for every
        row, from `_PER_ROW`). Returns the rows moved; a row in a state `target` cannot follow is
        left as it is (someone else won) and is not returned."""
        if not each:
            return []
        per_row = sorted(next(iter(each.values())))
        if set(per_row) - _PER_ROW or any(sorted(v) != per_row for v in each.values()):
            raise ValueError(f"per-row columns must be the same subset of {sorted(_PER_ROW)} for every row")
        unknown = set(common) - _SETTABLE
        if unknown:
            raise ValueError(f"not ledger columns: {sorted(unknown)}")
        names = list(common)
        sets = ["state = $2", f"{target.value}_at = $3", "updated_at = now()"]
        sets += [f"{name} = ${i}" for i, name in enumerate(names, start=5)]
        sets += [f"{name} = m.{name}" for name in per_row]
        first = 5 + len(names)
        arrays = ", ".join(["$1::text[]"] + [f"${first + i}::text[]" for i in range(len(per_row))])
        sql = (
            f"UPDATE executor_ledger l SET {', '.join(sets)} "
            f"FROM unnest({arrays}) AS m({', '.join(['command_id', *per_row])}) "
            f"WHERE l.command_id = m.command_id AND l.state = ANY($4::text[]) RETURNING {_L_COLUMNS}"
        )
        cids = list(each)
        records = await self.pool.fetch(
            sql,
            cids,
            target.value,
            at,
            [s.value for s in sources_of(target)],
            *(_value(n, common[n]) for n in names),
            *([each[cid][n] for cid in cids] for n in per_row),
        )
        return [LedgerRow.from_record(r) for r in records]

    async def merge_venue_response(self, command_id: str, key: str, value: Any) -> None:
        """Add `{key: value}` to the row's venue_response without changing its state (e.g. the
        relay's answer arriving after the row already settled, or a late answer)."""
        await self.pool.execute(
            "UPDATE executor_ledger SET venue_response = coalesce(venue_response, '{}'::jsonb) || $2::jsonb,"
            " updated_at = now() WHERE command_id = $1",
            command_id,
            {key: value},
        )

    async def mark_published_many(self, marks: dict[str, LedgerState]) -> None:
        """Note each row's result as on Kafka, if the row is still in the state published."""
        if not marks:
            return
        await self.pool.execute(
            "UPDATE executor_ledger l SET published_state = m.state"
            " FROM unnest($1::text[], $2::text[]) AS m(command_id, state)"
            " WHERE l.command_id = m.command_id AND l.state = m.state",
            list(marks),
            [s.value for s in marks.values()],
        )

    async def record_cancel(self, command_ids: list[str], at: datetime, response: Any) -> None:
        await self.pool.execute(
            "UPDATE executor_ledger SET cancel_requested_at = $2, cancel_response = $3, updated_at = now()"
            " WHERE command_id = ANY($1::text[])",
            command_ids,
            at,
            response,
        )

    async def unresolved(self) -> list[LedgerRow]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM executor_ledger WHERE state = ANY($1::text[]) ORDER BY received_at",
            [s.value for s in UNRESOLVED],
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def unpublished(self, limit: int = 500) -> list[LedgerRow]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM executor_ledger WHERE published_state IS DISTINCT FROM state"
            " AND state <> ALL($1::text[]) ORDER BY updated_at LIMIT $2",
            [s.value for s, status in RESULT_STATUS.items() if status is None],
            limit,
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def settled_since(self, since: datetime) -> list[LedgerRow]:
        """Rows whose holds wait for a snapshot (`held_until_covered`), resolved at or after `since`:
        settled ones, and expiries by relay silence."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM executor_ledger WHERE (state = 'settled' AND settled_at >= $1) "
            "OR (state = 'expired' AND resolved_by = 'no_quote_status' AND expired_at >= $1)",
            since,
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def withheld_until(self, after: datetime) -> list[LedgerRow]:
        """Signed answers never sent (rejected, `venue_response.not_sent`) whose deadline is after
        `after`: they could still execute if they had leaked, so they keep their holds."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM executor_ledger WHERE state = 'rejected' AND deadline > $1 "
            "AND signed_data IS NOT NULL AND venue_response ? 'not_sent'",
            after,
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")
