"""Secrets never leak: the seven daemons run on a freshly generated signing key and relay JWT,
one quote is answered end to end (so the key is really used), and then the key material (the
exported secret, its base58 body, the base58 of the 32-byte seed) and the JWT appear in no log
line, no `/state`, no event on any topic, and no row of any PostgreSQL table."""

from __future__ import annotations

import io
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import asyncpg
import base58
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.events import TOPICS
from daemons.core.logs import configure_logging
from daemons.venues.near_intents.nep413 import SignerKey
from tests.conftest import Stack, eventually, kafka_options
from tests.seven import seven_daemons


def needles(key: SignerKey, jwt: str) -> dict[str, str]:
    exported = key.secret_for_export()
    body = exported.split(":", 1)[-1]
    raw = base58.b58decode(body)
    return {
        "secret": exported,
        "secret_b58": body,
        "seed_b58": base58.b58encode(raw[:32]).decode(),
        "seed_hex": raw[:32].hex(),
        "jwt": jwt,
    }


def leaks(text: str, found: dict[str, str]) -> list[str]:
    return [name for name, value in found.items() if value in text]


@pytest.mark.timeout(180)
async def test_key_and_jwt_appear_nowhere(
    stack: Stack, control_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = SignerKey.generate()
    jwt = "eyJ" + secrets.token_urlsafe(48)  # a fresh JWT-shaped secret, unique to this run
    material = needles(key, jwt)
    buffer = io.StringIO()
    real_stdout, sys.stdout = sys.stdout, buffer
    try:
        configure_logging("secrets-test", "DEBUG")  # binds structlog and stdlib logging to the buffer
    finally:
        sys.stdout = real_stdout

    ends: dict[TopicPartition, int] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, **kafka_options())
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or {0})]
        ends = await consumer.end_offsets(tps)
        states: dict[str, str] = {}
        async with seven_daemons(stack, control_dir, tmp_path, jwt=jwt, key=key) as seven:
            await eventually(
                seven.ready_to_answer,
                timeout=60,
                what="fresh price, our inventory (strategy and executor) and the relay connection",
            )
            for service in ("strategy-engine", "trade-executor"):
                status, _ = await seven.call(
                    service, "POST", "/arm", {"operator": "secrets-test", "reason": "leak test"}
                )
                assert status == 200
            quote = await seven.relay.emit_quote(
                asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=3 * 10**18, min_deadline_ms=60_000
            )

            def answers() -> list[Any]:
                return [s for s in seven.relay.seen if s["kind"] == "ws_in" and '"quote_response"' in s.get("text", "")]

            await eventually(answers, timeout=30, what="a signed answer reached the relay")
            for name in seven.services:
                states[name] = json.dumps((await seven.call(name, "GET", "/state"))[1])
            assert quote["quote_id"]
        # every topic's events produced during the run
        consumer.assign(tps)
        for tp, end in ends.items():
            consumer.seek(tp, end)
        events: list[bytes] = []
        latest = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < latest[tp] for tp in tps])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                events.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()

    log_text = buffer.getvalue() + capsys.readouterr().out
    assert '"control_listening"' in log_text or "control_listening" in log_text, "log capture saw nothing"
    assert events, "no events read: the event check would pass vacuously"
    leaked_lines = [line for line in log_text.splitlines() if leaks(line, material)]
    assert not leaked_lines, leaked_lines[:5]
    for name, state in states.items():
        assert not leaks(state, material), (name, leaks(state, material))
    event_text = b"\n".join(events).decode("utf-8", "replace")
    assert not leaks(event_text, material), leaks(event_text, material)

    conn = await asyncpg.connect(stack.database_url)
    try:
        tables = [
            r["t"]
            for r in await conn.fetch(
                "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            )
        ]
        assert tables
        for table in tables:
            rows = await conn.fetch(f"SELECT t::text AS row FROM {table} AS t")  # noqa: S608 (catalog names)
            dump = "\n".join(r["row"] for r in rows)
            assert not leaks(dump, material), (table, leaks(dump, material))
    finally:
        await conn.close()
