"""near-intents-ingest against the relay simulator and the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID
from daemons.core.control import socket_path
from daemons.core.runtime import serve
from daemons.near_intents_ingest.service import IngestSettings, NearIntentsIngest
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.conftest import Stack, eventually

JWT = "jwt-generated-for-this-test"


@pytest.fixture
async def relay() -> AsyncIterator[RelaySimulator]:
    sim = RelaySimulator(VerifierState(), RelaySimConfig(jwt=JWT, collection_window_s=0.05))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def jwt_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.jwt"
    path.write_text(JWT)
    path.chmod(0o600)
    return path


def _settings(stack: Stack, control_dir: Path, relay: RelaySimulator, jwt_file: Path, **extra: Any) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        control_dir=control_dir,
        relay_ws_url=relay.ws_url,
        relay_jwt_file=jwt_file,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.2,
        **extra,
    )


async def _run(service: NearIntentsIngest) -> asyncio.Task[int]:
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: service.connected, what="ingest connected to the relay")
    return task


async def _stop(service: NearIntentsIngest, task: asyncio.Task[int]) -> None:
    service.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


@pytest.fixture
async def ingest(
    stack: Stack, control_dir: Path, relay: RelaySimulator, jwt_file: Path
) -> AsyncIterator[NearIntentsIngest]:
    service = NearIntentsIngest(_settings(stack, control_dir, relay, jwt_file, ingest_pair_silent_after_ms=1))
    task = await _run(service)
    yield service
    await _stop(service, task)


async def _control(service: NearIntentsIngest, method: str, path: str, json: Any = None) -> tuple[int, Any]:
    sock = socket_path(service.settings.control_dir, service.name)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        async with session.request(method, f"http://x{path}", json=json) as resp:
            return resp.status, await resp.json()


async def test_both_directions_and_other_pairs_are_classified(
    ingest: NearIntentsIngest, relay: RelaySimulator, tail: Any
) -> None:
    t = await tail("raw.near_intents.quote", "norm.swap_demand")
    sell = await relay.emit_quote(
        asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=10**20, metadata={"partner_id": "1click"}
    )
    buy = await relay.emit_quote(
        asset_in=NBTC_ID, asset_out=EURE_ID, exact_amount_out=5 * 10**19, min_deadline_ms="30000", envelope="subscribe"
    )
    other = await relay.emit_quote(
        asset_in="nep141:wrap.near", asset_out=EURE_ID, exact_amount_in=1, ignore_filter=True
    )
    ids = {sell["quote_id"], buy["quote_id"], other["quote_id"]}
    raws = await t.wait_for(lambda e: e.event_type == "raw.near_intents.quote" and e.payload.quote_id in ids, 3)
    assert {r.payload.quote_id: r.payload.classification for r in raws} == {
        sell["quote_id"]: "active_pair",
        buy["quote_id"]: "active_pair",
        other["quote_id"]: "other_pair",
    }
    norms = await t.wait_for(lambda e: e.event_type == "norm.swap_demand" and e.payload.quote_id in ids, 2)
    by_id = {n.payload.quote_id: n for n in norms}
    s, b = by_id[sell["quote_id"]].payload, by_id[buy["quote_id"]].payload
    assert (s.direction, s.fixed_side, s.fixed_amount, s.asset_in_decimals, s.asset_out_decimals) == (
        "SELL_BTC",
        "exact_amount_in",
        10**20,
        18,
        8,
    )
    assert s.partner == {"partner_id": "1click"} and s.min_deadline_ms == 60000
    assert (b.direction, b.fixed_side, b.fixed_amount, b.min_deadline_ms) == (
        "BUY_BTC",
        "exact_amount_out",
        5 * 10**19,
        30000,
    )
    assert b.received_at.microsecond or b.received_at.second  # a real receive time, not a placeholder
    norm = by_id[sell["quote_id"]]
    raw = next(r for r in raws if r.payload.quote_id == sell["quote_id"])
    assert norm.causation_id == raw.event_id and norm.correlation_id == sell["quote_id"]
    assert '"quote_id"' in raw.payload.raw_frame and raw.payload.subscription
    assert other["quote_id"] not in {n.payload.quote_id for n in norms}
    assert ingest.counts["other_pair"] >= 1 and ingest.counts["active_pair"] >= 2


async def test_a_repeated_quote_id_is_marked_not_dropped(
    ingest: NearIntentsIngest, relay: RelaySimulator, tail: Any
) -> None:
    t = await tail("norm.swap_demand")
    qid = str(uuid.uuid4())
    for _ in range(2):
        await relay.emit_quote(asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=10**19, quote_id=qid)
    norms = await t.wait_for(lambda e: e.payload.quote_id == qid, 2)
    assert [n.payload.repeat for n in norms] == [False, True]
    assert ingest.counts["repeats"] >= 1


async def test_invalid_json_is_counted_dead_lettered_and_the_stream_goes_on(
    ingest: NearIntentsIngest, relay: RelaySimulator, tail: Any, pool: asyncpg.Pool
) -> None:
    t = await tail("norm.swap_demand")
    junk = f"not json {uuid.uuid4()}"
    await relay.send_raw(junk)
    after = await relay.emit_quote(asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=10**19)
    await t.wait_for(lambda e: e.payload.quote_id == after["quote_id"])
    assert ingest.counts["invalid_json"] == 1
    row = await eventually(
        lambda: pool.fetchrow("SELECT * FROM dead_letters WHERE value = $1", junk.encode()), what="dead letter stored"
    )
    assert row["service"] == "near-intents-ingest" and row["source"] == "relay"
    assert row["reason"].startswith("invalid_json")


async def test_disconnect_reconnects_resubscribes_and_shows_the_gap(
    ingest: NearIntentsIngest, relay: RelaySimulator, tail: Any
) -> None:
    _, before = await _control(ingest, "GET", "/state")
    await relay.close_all()
    await eventually(lambda: ingest.gaps == 1 and ingest.connected, what="reconnected after the gap")
    _, after = await _control(ingest, "GET", "/state")
    assert set(after["subscriptions"]) != set(before["subscriptions"])  # fresh subscription ids
    assert after["last_gap"]["reason"] and after["last_gap"]["gap_ms"] is not None
    t = await tail("norm.swap_demand")
    q = await relay.emit_quote(asset_in=EURE_ID, asset_out=NBTC_ID, exact_amount_in=10**19)
    await t.wait_for(lambda e: e.payload.quote_id == q["quote_id"])


async def test_reconnect_storm_is_paced_by_backoff_and_budget(
    stack: Stack, control_dir: Path, relay: RelaySimulator, jwt_file: Path
) -> None:
    relay.faults.set("refuse_upgrade", on=True)
    service = NearIntentsIngest(
        _settings(stack, control_dir, relay, jwt_file, relay_reconnect_budget=3, relay_reconnect_window_s=600)
    )
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        await eventually(
            lambda: service.client is not None and service.client.backoff.budget_exhausted(), what="budget spent"
        )
        _, state = await _control(service, "GET", "/state")
        assert state["reconnects_in_window"] == 3 and state["relay"]["budget_exhausted"] is True
        status, health = await _control(service, "GET", "/healthz")
        assert status == 503 and "relay_disconnected" in health["reasons"]
        # the budget holds the client back: no more attempts reach the venue
        attempts = sum(1 for s in relay.seen if s["kind"] == "ws_upgrade")
        assert 3 <= attempts <= 3 + 1
    finally:
        relay.faults.set("refuse_upgrade", on=False)
        await _stop(service, task)


async def test_a_silent_pair_on_a_healthy_connection_is_its_own_state(ingest: NearIntentsIngest) -> None:
    await eventually(lambda: (ingest.pair_silent_for_ms() or 0) >= 1, what="silence measured")
    status, state = await _control(ingest, "GET", "/state")
    assert state["pair_silent"] is True and state["pair_silent_for_ms"] >= 1
    status, health = await _control(ingest, "GET", "/healthz")
    assert status == 200 and health["healthy"] is True


async def test_pair_filter_override_validated_audited_and_resubscribed(
    ingest: NearIntentsIngest, relay: RelaySimulator, pool: asyncpg.Pool
) -> None:
    status, view = await _control(ingest, "GET", "/pair-filter")
    assert status == 200 and view["source"] == "default" and set(view["tokens_in"]) == {NBTC_ID, EURE_ID}
    status, err = await _control(
        ingest, "PUT", "/pair-filter", {"tokens_in": ["nep141:nope.near"], "tokens_out": [EURE_ID]}
    )
    assert status == 422 and "nep141:nope.near" in err["error"]
    status, err = await _control(ingest, "PUT", "/pair-filter", {"tokens_in": []})
    assert status == 422
    assert (await _control(ingest, "GET", "/pair-filter"))[1]["source"] == "default"  # unchanged

    def subscribes() -> list[str]:
        return [s["text"] for s in relay.seen if s["kind"] == "ws_in" and '"subscribe"' in s.get("text", "")]

    before = len(subscribes())
    erin = f"erin-{uuid.uuid4()}"  # the database outlives a test run: find this run's rows only
    body = {
        "tokens_in": [POA_BTC_ID, EURE_ID],
        "tokens_out": [POA_BTC_ID, EURE_ID],
        "operator": erin,
        "reason": "try legacy BTC",
    }
    status, view = await _control(ingest, "PUT", "/pair-filter", body)
    assert status == 200 and view["source"] == "override" and POA_BTC_ID in view["tokens_in"]
    await eventually(lambda: len(subscribes()) > before, what="re-subscribed")
    assert POA_BTC_ID in subscribes()[-1]  # the new subscription carries the new filter
    status, view = await _control(ingest, "POST", "/pair-filter/reset", {"operator": erin})
    assert view["source"] == "default"

    async def audit_rows() -> list[Any] | None:
        rows = await pool.fetch(
            "SELECT action, operator FROM control_actions"
            " WHERE service = 'near-intents-ingest' AND operator = $1 ORDER BY id",
            erin,
        )
        return rows if len(rows) >= 2 else None

    rows = await eventually(audit_rows, what="both audit rows")
    assert [tuple(r) for r in rows] == [("pair_filter_set", erin), ("pair_filter_reset", erin)]


async def test_without_a_readable_jwt_the_daemon_stays_up_and_says_why(
    stack: Stack, control_dir: Path, relay: RelaySimulator, tmp_path: Path
) -> None:
    loose = tmp_path / "loose.jwt"
    loose.write_text(JWT)
    loose.chmod(0o644)
    service = NearIntentsIngest(_settings(stack, control_dir, relay, loose))
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        await eventually(lambda: service.blocked, what="blocked reason")
        status, health = await _control(service, "GET", "/healthz")
        assert status == 503 and "mode 0644" in health["reasons"][0]
    finally:
        await _stop(service, task)
