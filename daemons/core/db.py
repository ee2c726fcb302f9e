"""The PostgreSQL pool (asyncpg) and the small writes every daemon shares.

`connect_pool` sets the jsonb codec once (orjson) so rows carry structured events. `DB_ERRORS` tells
"the database is away" from "the statement is wrong"; `DEAD_LETTER_SQL` is the one way a dead
letter is stored.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


class RawJson(bytes):
    """JSON text that is already serialised (an event as Kafka held it): stored as it is."""


def _encode_jsonb(value: Any) -> bytes:
    # binary jsonb is a version byte followed by the JSON text
    if isinstance(value, RawJson):
        return b"\x01" + value
    return b"\x01" + orjson.dumps(value, default=str)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=lambda data: orjson.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL).

    No daemon sets session state, listens or takes advisory locks, and the reset cost a round
    trip per release — a sixth of the executor's CPU at 100 answers/s. asyncpg still rolls back
    a transaction left open before calling this.
    """


async def connect_pool(database_url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
    )


class DatabaseUnavailable(Exception):
    """The connection broke in the middle of an operation (the server went away)."""


DB_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    # a connection caught mid-reset by a server shutdown (found by the fault matrix: PostgreSQL
    # stopped under history-writer raised it from pool.release and killed the daemon)
    asyncpg.InternalClientError,
    TimeoutError,
)
"""Errors that mean "the database is not reachable right now", as opposed to a bad statement."""


DEAD_LETTER_SQL = (
    "INSERT INTO dead_letters (service, source, topic, partition, kafka_offset, key, value, reason)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (service, topic, partition, kafka_offset) DO NOTHING"
)
