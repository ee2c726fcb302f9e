"""trade-executor against the relay and NEAR RPC simulators (one simulated verifier) and the real
Kafka and PostgreSQL: every ledger transition, duplicates, rejects, timeouts, settlement, missed
statuses, late inventory shortfall, signer problems, disarm/cancel-live, restart recovery and a
kill -9 between sending and publishing."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.bus import EventProducer, topic_end_offsets
from daemons.core.control import socket_path
from daemons.core.events import Envelope, ExecuteTrade, IntentInventory, MarketPrice, Producer, new_event
from daemons.core.metrics import MetricSet
from daemons.core.runtime import serve
from daemons.trade_executor.answer import plan_nonce, sign_answer
from daemons.trade_executor.ledger import LedgerRow, LedgerState, LedgerStore
from daemons.trade_executor.service import TradeExecutor
from daemons.trade_executor.settings import ExecutorSettings
from daemons.venues.near_intents.nep413 import SignerKey, parse_nonce
from simulators.near_rpc import NearRpcSimulator
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import (
    ERR_DEADLINE_TOO_SHORT,
    ERR_FIXED_AMOUNT_CHANGED,
    ERR_INSUFFICIENT_BALANCE,
    ERR_INVALID_SALT,
    VerifierState,
    err_public_key_missing,
)
from tests.conftest import REPO, Stack, TopicTail, eventually, kafka_options
from tests.samples import sample_payloads

JWT = "executor-test-jwt"
ACCOUNT = "solver.near"
EURE = 10**18
SATS = 100_000  # 0.001 BTC
GIVE = 89 * EURE  # what quoteloop gives for SATS in BUY_BTC
PRICE_BID = "92000"  # EURe per BTC: SATS are worth 92 EURe, a gross edge of 3.4 % on GIVE
TEST_PRODUCER = Producer(service="test", instance="test")


@dataclass
class Venue:
    verifier: VerifierState
    relay: RelaySimulator
    near: NearRpcSimulator
    key: SignerKey

    def quote_responses(self) -> list[dict[str, Any]]:
        return [s for s in self.relay.seen if s["kind"] == "ws_in" and '"quote_response"' in s.get("text", "")]


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    verifier = VerifierState()
    relay = RelaySimulator(verifier, RelaySimConfig(jwt=JWT, collection_window_s=60.0, redelivery_s=0.2))
    near = NearRpcSimulator(verifier)
    await relay.start()
    await near.start()
    key = SignerKey.generate()
    verifier.add_public_key(ACCOUNT, key.public_key)
    verifier.deposit(ACCOUNT, EURE_ID, 10_000 * EURE)
    verifier.deposit(ACCOUNT, NBTC_ID, 10**8)
    yield Venue(verifier, relay, near, key)
    await relay.stop()
    await near.stop()


@pytest.fixture
def secrets_dir(tmp_path: Path, venue: Venue) -> Path:
    (tmp_path / "relay.jwt").write_text(JWT)
    (tmp_path / "relay.jwt").chmod(0o600)
    (tmp_path / "signer.key").write_text(venue.key.secret_for_export())
    (tmp_path / "signer.key").chmod(0o600)
    return tmp_path


async def _commands_from_end(stack: Stack, group: str) -> None:
    """Give `group` a committed position at the topic's end, so it skips earlier tests' commands."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False, **kafka_options()
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition("cmd.execute_trade", p)
            for p in sorted(consumer.partitions_for_topic("cmd.execute_trade") or {0})
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: ends[tp] for tp in tps})
    finally:
        await consumer.stop()


def _env(stack: Stack, control_dir: Path, venue: Venue, secrets_dir: Path, group: str, **extra: str) -> dict[str, str]:
    return {
        **stack.settings_env(control_dir),
        "QL_RELAY_WS_URL": venue.relay.ws_url,
        "QL_RELAY_RPC_URL": venue.relay.rpc_url,
        "QL_RELAY_JWT_FILE": str(secrets_dir / "relay.jwt"),
        "QL_NEAR_RPC_URL": venue.near.base_url,
        "QL_SIGNER_ACCOUNT_ID": ACCOUNT,
        "QL_SIGNER_KEY_FILE": str(secrets_dir / "signer.key"),
        "QL_EXECUTOR_GROUP": group,
        # a group of its own per test, and no look back: earlier tests' commands are not its
        "QL_EXECUTOR_NEW_GROUP_LOOKBACK_MS": "0",
        "QL_RELAY_BACKOFF_INITIAL_S": "0.05",
        "QL_RELAY_BACKOFF_MAX_S": "0.2",
        "QL_EXECUTOR_RESOLVE_INTERVAL_S": "0.05",
        "QL_EXECUTOR_SETTLE_GRACE_MS": "100",
        "QL_EXECUTOR_ANSWER_MARGIN_MS": "300",
        "QL_EXECUTOR_RELAY_ANSWER_TIMEOUT_S": "0.5",
        "QL_EXECUTOR_POLL_MS": "20",
        "QL_EXECUTOR_CLOSE_TIMEOUT_S": "1",
        "QL_LOG_LEVEL": "WARNING",
        # deadlines here are a second or less: the status wait and the chain reads that decide
        # answers come in seconds, not the production minutes (budget 12/min)
        "QL_EXECUTOR_STATUS_WAIT_MS": "1000",
        "QL_EXECUTOR_FINAL_BLOCK_INTERVAL_S": "0.3",
        "QL_NEAR_RPC_BUDGET_PER_MIN": "100",
        "QL_NEAR_RPC_BUDGET_BURST": "20",
        **extra,
    }


def _settings(env: dict[str, str]) -> ExecutorSettings:
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("QL_")})
        return ExecutorSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Harness:
    """One executor under test plus the means to drive and watch it."""

    def __init__(
        self,
        stack: Stack,
        control_dir: Path,
        venue: Venue,
        secrets_dir: Path,
        producer: EventProducer,
        results: TopicTail,
        pool: asyncpg.Pool,
    ) -> None:
        self.stack, self.control_dir, self.venue, self.secrets_dir = stack, control_dir, venue, secrets_dir
        self.producer, self.results, self.pool = producer, results, pool
        self.group = f"exec-{uuid.uuid4()}"
        self.service: TradeExecutor | None = None
        self.task: asyncio.Task[int] | None = None
        self.prices: asyncio.Task[None] | None = None
        self.command_ids: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        return _env(self.stack, self.control_dir, self.venue, self.secrets_dir, self.group, **extra)

    async def start(self, *, arm: bool = True, wait_ready: bool = True, **extra: str) -> TradeExecutor:
        await _commands_from_end(self.stack, self.group)
        self.service = TradeExecutor(_settings(self.env(**extra)))
        self.task = asyncio.create_task(serve(self.service, handle_signals=False))
        svc = self.service
        self.start_price_beat()
        if wait_ready:
            await eventually(
                lambda: (
                    svc.relay is not None
                    and svc.relay.connected
                    and svc.db.healthy
                    and svc.consumer.assignment()
                    and svc.recovered_at is not None
                    and svc.prices.latest is not None
                    and (svc.signer.ready or not arm)
                ),
                what="executor ready",
            )
        if arm:
            status, body = await self.control("POST", "/arm", {"operator": "tester", "reason": "integration test"})
            assert status == 200 and body["armed"] is True, body
        return svc

    async def price(
        self, bid: str = PRICE_BID, ask: str | None = None, *, decisionable: bool = True, freshness_ms: int = 0
    ) -> str:
        """Publish a `ref.market_price` (EURe per BTC) and wait until the executor holds it."""
        sample = sample_payloads()["ref.market_price"]
        assert isinstance(sample, MarketPrice)
        price = sample.model_copy(
            update={
                "fair_rate_buy_btc": Decimal(bid),
                "fair_rate_sell_btc": Decimal(ask or bid),
                "decisionable": decisionable,
                "status_reason": None if decisionable else "SOURCE_CONFLICT",
                "freshness_ms": freshness_ms,
            }
        )
        event = new_event(price, producer=TEST_PRODUCER, pair="BTC/EURe")
        await self.producer.publish(event)
        svc = self.service
        if svc is not None:
            await eventually(
                lambda: svc.prices.latest is not None and svc.prices.latest.event_id == str(event.event_id),
                what="price seen",
            )
        return str(event.event_id)

    async def _price_beat(self) -> None:
        """What market-reference-ingest does: a fresh price every second (PRICE_BID, an edge
        of about 3 % on the harness's commands)."""
        while True:
            await self.price()
            await asyncio.sleep(1.0)

    def start_price_beat(self) -> None:
        if self.prices is None:
            self.prices = asyncio.create_task(self._price_beat())

    async def stop_price_beat(self) -> None:
        """From now on only the test's own `price()` calls publish prices."""
        if self.prices is not None:
            self.prices.cancel()
            await asyncio.gather(self.prices, return_exceptions=True)
            self.prices = None

    async def stop(self) -> None:
        await self.stop_price_beat()
        if self.service is not None and self.task is not None:
            self.service.request_drain()
            assert await asyncio.wait_for(self.task, timeout=30) == 0
            self.service = self.task = None

    async def retire(self) -> None:
        """Test hygiene, after the executor stopped: the ledger is shared by every test, and this
        test's simulated venue is gone, so its unresolved rows are closed here instead of
        haunting the next test's recovery (rows are never deleted)."""
        closed = "CASE WHEN state = 'received' THEN 'refused' ELSE 'expired' END"
        await self.pool.execute(
            f"UPDATE executor_ledger SET state = {closed}, published_state = {closed},"
            " reason = 'closed by the test harness' WHERE command_id = ANY($1::text[])"
            " AND state IN ('received', 'signing', 'submitted', 'acknowledged', 'uncertain')",
            self.command_ids,
        )

    async def statuses(self, command_id: str) -> list[str]:
        """Every result published for the command so far, in order (each exactly once)."""
        await self.collect()
        return [r.status for r in self.results_for(command_id)]

    async def control(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        sock = socket_path(self.control_dir, "trade-executor")
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            async with session.request(method, f"http://x{path}", json=json) as resp:
                return resp.status, await resp.json()

    async def inventory(
        self,
        eure: int = 10_000 * EURE,
        btc: int = 10**8,
        *,
        stale: bool = False,
        age_ms: int = 0,
        results_through: dict[int, int] | None | Literal["now"] = "now",
        account: str = ACCOUNT,
    ) -> str:
        """Publish a `state.intent_inventory` snapshot and wait until the executor holds it. By
        default it covers every result published so far, as a covering reading of inventory-sync
        would; None: it proves nothing about settlements."""
        if results_through == "now":
            results_through = await self.results_end()
        sample = sample_payloads()["state.intent_inventory"]
        assert isinstance(sample, IntentInventory)
        btc_asset, eure_asset = sample.assets[0], sample.assets[1]
        inventory_id = str(uuid.uuid4())
        snapshot = sample.model_copy(
            update={
                "inventory_id": inventory_id,
                "account_id": account,
                "stale": stale,
                "age_ms": age_ms,
                "synced_at": datetime.now(UTC) - timedelta(milliseconds=age_ms),
                "results_through": results_through,
                "assets": [
                    btc_asset.model_copy(update={"asset_id": NBTC_ID, "spendable": btc}),
                    eure_asset.model_copy(update={"asset_id": EURE_ID, "spendable": eure}),
                ],
            }
        )
        await self.producer.publish(new_event(snapshot, producer=TEST_PRODUCER, pair="BTC/EURe"))
        svc = self.service
        if svc is not None:
            await eventually(
                lambda: svc.inventory.latest is not None and svc.inventory.latest.inventory_id == inventory_id,
                what="snapshot seen",
            )
        return inventory_id

    async def results_end(self) -> dict[int, int]:
        """exec.trade_result's end offsets now: what a snapshot covering every result so far names."""
        return await topic_end_offsets(
            _settings(_env(self.stack, self.control_dir, self.venue, self.secrets_dir, self.group)),
            "exec.trade_result",
            "test-results-end",
        )

    async def quote(self, *, sats: int = SATS, min_deadline_ms: int = 60_000) -> str:
        """A BUY_BTC request at the relay: the taker gives `sats` BTC and wants EURe."""
        q = await self.venue.relay.emit_quote(
            asset_in=NBTC_ID, asset_out=EURE_ID, exact_amount_in=sats, min_deadline_ms=min_deadline_ms
        )
        return str(q["quote_id"])

    def command(
        self,
        quote_id: str,
        *,
        give: int = GIVE,
        sats: int = SATS,
        min_deadline_ms: int = 60_000,
        answer_by: datetime | None = None,
        command_id: str | None = None,
    ) -> Envelope[ExecuteTrade]:
        command_id = command_id or str(uuid.uuid4())
        self.command_ids.append(command_id)
        cmd = ExecuteTrade(
            command_id=command_id,
            decision_id=str(uuid.uuid4()),
            quote_id=quote_id,
            direction="BUY_BTC",
            asset_in=NBTC_ID,
            asset_out=EURE_ID,
            amount_in=sats,
            amount_out=give,
            fixed_side="exact_amount_in",
            min_deadline_ms=min_deadline_ms,
            answer_by=answer_by or datetime.now(UTC) + timedelta(seconds=5),
        )
        return new_event(cmd, producer=TEST_PRODUCER, pair="BTC/EURe", correlation_id=quote_id)

    async def send(self, event: Envelope[ExecuteTrade]) -> None:
        await self.producer.publish(event, key=event.payload.command_id)

    async def result(self, command_id: str, status: str, timeout: float = 15.0) -> Any:
        try:
            found = await self.results.wait_for(
                lambda e: e.payload.command_id == command_id and e.payload.status == status,
                timeout=timeout,
                what=f"{status} result for {command_id}",
            )
        except AssertionError as exc:  # say what came instead, and what the executor thought
            seen = [(r.status, r.reason_code, r.reason) for r in self.results_for(command_id)]
            state = self.service.state() if self.service is not None else None
            brief = {
                k: state[k]
                for k in ("blocked_reason", "reserved", "settled_holds", "refusals", "errors")
                if state and k in state
            }
            raise AssertionError(f"{exc}; results for it: {seen}; executor: {brief}") from None
        return found[-1].payload

    def results_for(self, command_id: str) -> list[Any]:
        return [e.payload for e in self.results.events if e.payload.command_id == command_id]

    async def collect(self) -> None:
        """Read whatever results are on the topic now (not only those a wait asked for)."""
        from daemons.core.events import decode

        while True:
            batches = await self.results.consumer.getmany(timeout_ms=300)
            if not batches:
                return
            for tp, records in batches.items():
                self.results.events.extend(decode(tp.topic, r.value) for r in records)

    async def row(self, command_id: str) -> LedgerRow | None:
        return await LedgerStore(self.pool).get(command_id)


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(stack_settings(stack), client_id="executor-test")
    await p.start()
    yield p
    await p.stop()


def stack_settings(stack: Stack) -> ExecutorSettings:
    return ExecutorSettings(kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url)


@pytest.fixture
async def harness(
    stack: Stack,
    control_dir: Path,
    venue: Venue,
    secrets_dir: Path,
    producer: EventProducer,
    tail: Callable[..., Awaitable[TopicTail]],
    pool: asyncpg.Pool,
) -> AsyncIterator[Harness]:
    results = await tail("exec.trade_result")
    h = Harness(stack, control_dir, venue, secrets_dir, producer, results, pool)
    yield h
    await h.stop()
    await h.retire()


# --- the happy path and every transition on it ---------------------------------------------------


async def test_answer_is_recorded_before_it_is_sent_acknowledged_then_settled(harness: Harness) -> None:
    svc = await harness.start()
    inventory_id = await harness.inventory()
    qid = await harness.quote()
    event = harness.command(qid)
    cid = event.payload.command_id
    await harness.send(event)

    ack = await harness.result(cid, "acknowledged")
    assert ack.quote_id == qid and ack.execution_id and ack.quote_hash and ack.nonce and ack.deadline
    assert (ack.amount_in, ack.amount_out, ack.asset_in, ack.asset_out) == (SATS, GIVE, NBTC_ID, EURE_ID)
    assert ack.venue_response["ok"] is True and ack.inventory_id == inventory_id
    assert ack.command_received_at <= ack.signed_at <= ack.sent_at <= ack.venue_answered_at
    # the nonce deadline is the intent deadline, at millisecond precision, min_deadline + margin out
    parsed = parse_nonce(base64.b64decode(ack.nonce))
    assert parsed.deadline == ack.deadline and ack.deadline.microsecond % 1000 == 0
    life = timedelta(milliseconds=60_000 + 300)
    assert (
        ack.command_received_at + life - timedelta(milliseconds=1)
        <= ack.deadline
        <= ack.signed_at + life + timedelta(milliseconds=1)
    )
    # what reached the relay is exactly what the ledger stored
    sent = harness.venue.quote_responses()
    assert len(sent) == 1
    row = await harness.row(cid)
    assert row is not None and row.state.value == "acknowledged"
    assert row.signed_data is not None and row.signed_data["signature"] in sent[0]["text"]
    assert svc.book.reserved(EURE_ID) == GIVE

    outcome = await harness.venue.relay.close_quote(qid)
    assert outcome["settled"] is True
    settled = await harness.result(cid, "settled")
    assert (settled.intent_hash, settled.tx_hash) == (outcome["intent_hash"], outcome["tx_hash"])
    assert settled.resolved_by == "quote_status" and settled.execution_id == ack.execution_id

    async def published() -> LedgerRow | None:
        row = await harness.row(cid)
        return row if row is not None and row.published_state == row.state == LedgerState.SETTLED else None

    row = await eventually(published, what="the settled result noted as published")
    times = [row.received_at, row.submitted_at, row.acknowledged_at, row.settled_at]
    assert all(times) and times == sorted(times)  # type: ignore[type-var]
    # one write took it from received to submitted, nonce and signature together
    assert row.signing_at is None and row.nonce and row.signed_data and row.signed_at == row.submitted_at
    assert cid not in svc.book.answers
    # still held until an inventory snapshot proves it holds the settlement: a later snapshot
    # whose head was read before the settled result existed (a `final` read trails the chain)
    # proves nothing, one whose results_through passes that result does
    assert svc.book.reserved(EURE_ID) == GIVE
    # what a snapshot must reach: one past the settled result's own offset (other results may
    # follow it on the shared topic, so the topic's end would say nothing about this one)
    needs = await eventually(lambda: svc.book.settled.get(cid, (None,))[0], what="the settled result placed")
    await harness.inventory(results_through=None)
    await harness.inventory(results_through={p: o - 1 for p, o in needs.items()})
    assert svc.book.reserved(EURE_ID) == GIVE
    await harness.inventory(results_through=needs, account="someone-else.near")  # not the signer's balances
    assert svc.book.reserved(EURE_ID) == GIVE
    await harness.inventory(results_through=needs)
    assert svc.book.reserved(EURE_ID) == 0
    assert await harness.statuses(cid) == ["acknowledged", "settled"]  # each result exactly once
    status, state = await harness.control("GET", "/state")
    assert state["results"]["settled"] == 1 and state["last_venue_response"]["ok"] is True
    assert state["last_request_sent"]["command_id"] == cid and state["completed"] >= 1


async def test_a_duplicate_delivery_republishes_and_never_answers_twice(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    qid = await harness.quote()
    event = harness.command(qid)
    cid = event.payload.command_id
    await harness.send(event)
    first = await harness.result(cid, "acknowledged")
    await harness.send(event)  # the same command delivered again
    await harness.results.wait_for(lambda e: e.payload.command_id == cid, count=2, what="republished result")
    again = harness.results_for(cid)
    assert [r.status for r in again] == ["acknowledged", "acknowledged"]
    assert again[1].execution_id == first.execution_id and again[1].quote_hash == first.quote_hash
    assert svc.book.reserved(EURE_ID) == GIVE  # the live answer's hold, neither doubled nor dropped
    # another command for the same quote is refused: a quote is never answered twice
    other = harness.command(qid)
    await harness.send(other)
    refused = await harness.result(other.payload.command_id, "refused")
    assert refused.reason_code == "quote_already_answered" and cid in refused.reason
    assert svc.book.by_quote[qid] == cid and svc.book.reserved(EURE_ID) == GIVE  # still the live answer's
    assert len(harness.venue.quote_responses()) == 1


async def test_a_duplicate_delivered_while_the_answer_is_in_hand_changes_nothing(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    harness.venue.relay.faults.set("drop_responses", count=1)  # the answer stays in hand until it times out
    qid = await harness.quote()
    event = harness.command(qid)
    cid = event.payload.command_id
    await harness.send(event)
    await eventually(lambda: len(harness.venue.quote_responses()) == 1, what="the answer sent, awaiting the relay")
    await harness.send(event)  # redelivered meanwhile
    await eventually(lambda: svc.errors["duplicate_commands"] == 1, what="the redelivery seen")
    assert svc.book.reserved(EURE_ID) == GIVE  # held once, and not released by the duplicate
    assert (await harness.result(cid, "uncertain")).reason_code == "relay_timeout"
    await harness.venue.relay.close_quote(qid)
    await harness.result(cid, "settled")
    assert await harness.statuses(cid) == ["uncertain", "settled"]  # nothing published for the duplicate
    assert len(harness.venue.quote_responses()) == 1


# --- venue rejects -------------------------------------------------------------------------------


async def test_venue_rejects_are_recorded_with_the_error_verbatim(harness: Harness) -> None:
    # ceilings loose enough for one answer to give more than the verifier holds (10,000 EURe)
    ceilings = write_ceilings(harness.secrets_dir / "ceilings.toml", notional="30000", give_eure="30000")
    svc = await harness.start(QL_CEILINGS_FILE=str(ceilings))
    await harness.inventory(eure=100_000 * EURE)  # the snapshot claims more than the verifier holds
    venue = harness.venue

    async def rejected(event: Envelope[ExecuteTrade]) -> Any:
        await harness.send(event)
        return await harness.result(event.payload.command_id, "rejected")

    # the verifier holds less than the snapshot claims
    big = 22_000_000  # 0.22 BTC, worth 20,240 EURe at PRICE_BID: a 1.2 % edge on 20,000 EURe
    r = await rejected(harness.command(await harness.quote(sats=big), give=20_000 * EURE, sats=big))
    assert r.reason == ERR_INSUFFICIENT_BALANCE and r.reason_code == "INSUFFICIENT_BALANCE"
    assert r.venue_response["error"] == ERR_INSUFFICIENT_BALANCE and r.quote_hash
    # the command does not echo the request's fixed amount
    r = await rejected(harness.command(await harness.quote(sats=SATS + 1)))
    assert r.reason == ERR_FIXED_AMOUNT_CHANGED
    # the command promises a shorter life than the request asked for
    r = await rejected(harness.command(await harness.quote(min_deadline_ms=60_000), min_deadline_ms=1_000))
    assert r.reason == ERR_DEADLINE_TOO_SHORT
    # a quote the relay never sent (the relay's own wording, kept verbatim)
    r = await rejected(harness.command(str(uuid.uuid4())))
    assert r.reason == "quote not found"
    # the same, as a bare JSON-RPC error string
    venue.relay.config.error_shape = "string"
    r = await rejected(harness.command(str(uuid.uuid4())))
    assert r.reason == "quote not found" and '"error": "quote not found"' in r.venue_response["raw"]
    venue.relay.config.error_shape = "object"
    # the key was removed from the account after arming
    venue.verifier.remove_public_key(ACCOUNT, venue.key.public_key)
    r = await rejected(harness.command(await harness.quote()))
    assert r.reason == err_public_key_missing(ACCOUNT, venue.key.public_key)
    assert r.reason_code == "PUBLIC_KEY_NOT_EXIST"
    venue.verifier.add_public_key(ACCOUNT, venue.key.public_key)

    # nothing rejected holds inventory; each result is final and published once
    assert svc.book.answers == {} and svc.errors["venue_rejected:INSUFFICIENT_BALANCE"] == 1
    for cid in harness.command_ids:
        assert await harness.statuses(cid) == ["rejected"]
    status, state = await harness.control("GET", "/state")
    assert state["results"]["rejected"] == 6 and state["live_answers"] == []


async def test_invalid_salt_is_rejected_then_the_salt_is_read_again(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    first = harness.command(await harness.quote())
    await harness.send(first)
    await harness.result(first.payload.command_id, "acknowledged")
    old_salt = svc.salt.salt
    assert old_salt == harness.venue.verifier.current_salt()
    harness.venue.verifier.invalidate_salts([old_salt])  # the cached salt is no longer valid
    second = harness.command(await harness.quote())
    await harness.send(second)
    r = await harness.result(second.payload.command_id, "rejected")
    assert r.reason == ERR_INVALID_SALT and r.reason_code == "INVALID_SALT"
    third = harness.command(await harness.quote())
    await harness.send(third)
    ok = await harness.result(third.payload.command_id, "acknowledged")
    assert parse_nonce(base64.b64decode(ok.nonce)).salt_hex == harness.venue.verifier.current_salt()
    assert svc.salt.invalidations == 1


# --- outcomes known only later --------------------------------------------------------------------


async def test_no_relay_answer_is_uncertain_then_settled_by_quote_status(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    harness.venue.relay.faults.set("drop_responses", count=1)
    qid = await harness.quote()
    event = harness.command(qid)
    cid = event.payload.command_id
    await harness.send(event)
    unsure = await harness.result(cid, "uncertain")
    assert unsure.reason_code == "relay_timeout" and "unknown" in unsure.reason
    assert unsure.sent_at is not None and unsure.venue_answered_at is None  # sent; the venue never said
    assert svc.book.reserved(EURE_ID) == GIVE  # uncertain answers keep their hold
    outcome = await harness.venue.relay.close_quote(qid)
    settled = await harness.result(cid, "settled")
    assert settled.tx_hash == outcome["tx_hash"] and settled.resolved_by == "quote_status"
    assert len(harness.venue.quote_responses()) == 1  # never resubmitted


async def test_no_relay_answer_and_no_fill_expires_by_is_nonce_used(harness: Harness) -> None:
    await harness.start()
    await harness.inventory()
    harness.venue.relay.faults.set("drop_responses", count=1)
    event = harness.command(await harness.quote(min_deadline_ms=300), min_deadline_ms=300)
    cid = event.payload.command_id
    await harness.send(event)
    await harness.result(cid, "uncertain")
    expired = await harness.result(cid, "expired")
    assert expired.resolved_by == "is_nonce_used" and expired.reason_code == "deadline_passed"
    assert expired.resolved_at >= expired.deadline
    row = await harness.row(cid)
    assert row is not None and row.resolution["is_nonce_used"] is False and row.uncertain_at and row.expired_at
    assert len(harness.venue.quote_responses()) == 1


async def test_a_lost_quote_status_is_caught_on_chain_and_corrected_to_settled(harness: Harness) -> None:
    """The relay loses a fill's status (neither sent nor queued: it broke its delivery
    guarantee). The silence expires the answer; the chain audit finds its nonce used at the
    deadline block and corrects it to settled, holding its amount again."""
    svc = await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=1_000)
    event = harness.command(qid, min_deadline_ms=1_000)
    cid = event.payload.command_id
    await harness.send(event)
    await harness.result(cid, "acknowledged")
    harness.venue.relay.faults.set("lose_status", count=1)
    outcome = await harness.venue.relay.close_quote(qid)
    assert outcome["settled"] is True
    expired = await harness.result(cid, "expired")
    assert expired.resolved_by == "no_quote_status"
    settled = await harness.result(cid, "settled")
    assert settled.resolved_by == "is_nonce_used" and settled.reason_code == "nonce_used"
    assert settled.tx_hash is None  # the status that carried it was lost
    assert svc.audit_counts["used"] == 1 and svc.book.reserved(EURE_ID) == GIVE  # held as settled again


async def test_a_fill_the_relay_never_reported_keeps_its_money_held_until_a_snapshot_holds_it(
    harness: Harness,
) -> None:
    """The relay loses a fill's status (it broke its delivery guarantee) and the node keeps too
    few blocks for the audit to decide: the silence expires the answer, but its amount stays held
    until a snapshot read after the expiry. The snapshot in hand predates the fill, so an answer
    needing that money is refused; judged by what the relay received and the verifier holds."""
    harness.venue.verifier.chain.keep_blocks = 2
    svc = await harness.start()
    await harness.inventory(eure=GIVE + GIVE // 2)
    qid = await harness.quote(min_deadline_ms=1_000)
    first = harness.command(qid, min_deadline_ms=1_000)
    cid = first.payload.command_id
    await harness.send(first)
    await harness.result(cid, "acknowledged")
    before = harness.venue.verifier.balances_of(ACCOUNT)[EURE_ID]
    harness.venue.relay.faults.set("lose_status", count=1)
    assert (await harness.venue.relay.close_quote(qid))["settled"] is True
    assert harness.venue.verifier.balances_of(ACCOUNT)[EURE_ID] == before - GIVE  # it did execute
    expired = await harness.result(cid, "expired")
    assert expired.resolved_by == "no_quote_status"
    await eventually(lambda: svc.audit_counts["unknown"] >= 1, what="the audit unable to decide")
    second_q = await harness.quote()
    second = harness.command(second_q)
    await harness.send(second)
    refused = await harness.result(second.payload.command_id, "refused")
    assert refused.reason_code == "insufficient_inventory"
    assert [r for r in harness.venue.quote_responses() if second_q in r["text"]] == []
    # the operator finds the fill (an archival node, the account's history) and records it; an
    # expiry by silence takes `settled` only
    verdict = {"command_id": cid, "reason": "nonce used at its deadline block (archival node)", "operator": "olga"}
    status, err = await harness.control("POST", "/resolve", {**verdict, "outcome": "expired"})
    assert status == 409 and "only `settled`" in err["error"]
    status, body = await harness.control("POST", "/resolve", {**verdict, "outcome": "settled"})
    assert status == 200 and body["state"] == "settled"
    corrected = await harness.result(cid, "settled")
    assert (corrected.resolved_by, corrected.reason_code) == ("operator", "operator_settled")
    assert svc.book.reserved(EURE_ID) == GIVE and not svc.book.silent  # held as settled now
    await harness.inventory(eure=GIVE // 2)  # read after the results were published: holds the fill
    assert svc.book.reserved(EURE_ID) == 0


async def test_an_answer_the_node_cannot_decide_keeps_its_hold_until_an_operator_records_it(harness: Harness) -> None:
    """The node keeps too few blocks to read the nonce at the deadline: the outcome stays open
    (undecided, hold kept, never expired) until an operator's verdict, which is audited."""
    harness.venue.verifier.chain.keep_blocks = 2  # every block a final read names is already gone
    svc = await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=300)
    event = harness.command(qid, min_deadline_ms=300)
    cid = event.payload.command_id
    harness.venue.relay.faults.set("drop_responses", count=1)  # uncertain: only the chain could tell
    await harness.send(event)
    await harness.result(cid, "uncertain")
    await eventually(lambda: cid in svc.undecided, what="the outcome undecided")
    status, state = await harness.control("GET", "/state")
    assert cid in state["undecided"] and svc.book.reserved(EURE_ID) == GIVE
    assert await harness.statuses(cid) == ["uncertain"]  # neither expired nor settled by a guess
    # what the unknown-outcome alert reads: how long past its deadline the oldest one is
    scrape = MetricSet("trade-executor")
    svc.metrics(scrape)
    [oldest] = [f for f in scrape.families() if f.name == "quoteloop_executor_undecided_oldest_seconds"]
    assert oldest.samples[0].value > 0
    status, err = await harness.control(
        "POST",
        "/resolve",
        {"command_id": str(uuid.uuid4()), "outcome": "expired", "reason": "guess", "operator": "olga"},
    )
    assert status == 409 and "not undecided" in err["error"]
    status, err = await harness.control("POST", "/resolve", {"command_id": cid, "outcome": "expired"})
    assert status == 422  # the evidence is required
    status, body = await harness.control(
        "POST",
        "/resolve",
        {
            "command_id": cid,
            "outcome": "expired",
            "reason": "archival node: nonce unused at the deadline",
            "operator": "olga",
        },
    )
    assert status == 200 and body["state"] == "expired"
    expired = await harness.result(cid, "expired")
    assert (expired.resolved_by, expired.reason_code) == ("operator", "operator_expired")
    assert svc.book.reserved(EURE_ID) == 0 and cid not in svc.undecided

    async def audited() -> Any:
        return await harness.pool.fetchrow(
            "SELECT * FROM control_actions WHERE service = 'trade-executor' AND "
            "action = 'resolve' AND operator = 'olga' AND outcome = 'expired'"
        )

    row = await eventually(audited, what="the verdict audited")
    assert row["reason"] == "archival node: nonce unused at the deadline"


async def test_a_broken_status_frame_is_replayed_by_guaranteed_delivery(harness: Harness) -> None:
    """Guaranteed delivery is on by default: a status frame that arrives broken is delivered
    again (it was never acknowledged), so the fill is known from the relay, not guessed."""
    await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=1_000)
    event = harness.command(qid, min_deadline_ms=1_000)
    cid = event.payload.command_id
    await harness.send(event)
    await harness.result(cid, "acknowledged")
    harness.venue.relay.faults.set("malformed_next", count=1)  # the status frame arrives broken
    outcome = await harness.venue.relay.close_quote(qid)
    settled = await harness.result(cid, "settled")
    assert (settled.resolved_by, settled.tx_hash) == ("quote_status", outcome["tx_hash"])


async def test_an_executed_answer_whose_nonce_was_cleaned_up_is_settled_never_expired(harness: Harness) -> None:
    """The verifier's garbage collector cleans the nonce right after the deadline, so reading
    `is_nonce_used` now says false although the answer executed: the executor must read it at the
    last block at or before the deadline."""
    harness.venue.verifier.nonce_cleanup_after_s = 0.0
    await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=1_000)
    event = harness.command(qid, min_deadline_ms=1_000)
    cid = event.payload.command_id
    harness.venue.relay.faults.set("drop_responses", count=1)  # the relay's answer never comes: uncertain
    await harness.send(event)
    ack = await harness.result(cid, "uncertain")
    harness.venue.relay.faults.set("lose_status", count=1)  # only the chain can tell
    assert (await harness.venue.relay.close_quote(qid))["settled"] is True
    settled = await harness.result(cid, "settled")
    assert settled.resolved_by == "is_nonce_used" and settled.reason_code == "nonce_used"
    # judged from the chain's side: it executed, and its nonce reads unused at the head now
    assert harness.venue.verifier.nonces_cleaned >= 1
    assert harness.venue.verifier.is_nonce_used(ACCOUNT, ack.nonce) is False
    assert await harness.statuses(cid) == ["uncertain", "settled"]


async def test_an_unpicked_answer_expires_after_its_deadline(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=300)
    event = harness.command(qid, min_deadline_ms=300)
    await harness.send(event)
    await harness.result(event.payload.command_id, "acknowledged")
    await harness.venue.relay.close_quote(qid, pick="none")
    expired = await harness.result(event.payload.command_id, "expired")
    assert expired.resolved_by == "no_quote_status"  # guaranteed delivery, connected throughout
    # silence proves nothing moved only once balances read after it are in hand
    assert svc.book.reserved(EURE_ID) == GIVE and svc.book.silent == {event.payload.command_id}
    status, state = await harness.control("GET", "/state")
    assert [(h["command_id"], h["state"]) for h in state["settled_holds"]] == [(event.payload.command_id, "expired")]
    await harness.inventory(results_through=None)  # proves nothing about results
    assert svc.book.reserved(EURE_ID) == GIVE
    await harness.inventory()  # a covering reading: released
    assert svc.book.reserved(EURE_ID) == 0 and not svc.book.silent
    # a quote_status arriving after all is a venue fact: it corrects the expiry
    await harness.venue.relay.broadcast_status(
        {"quote_hash": expired.quote_hash, "intent_hash": "late-intent", "tx_hash": "late-tx"}
    )
    corrected = await harness.result(event.payload.command_id, "settled")
    assert (corrected.tx_hash, corrected.resolved_by) == ("late-tx", "quote_status")
    assert svc.book.reserved(EURE_ID) == GIVE  # gone from the verifier, not yet from a snapshot


async def test_a_status_that_beats_the_relay_answer_settles_and_the_answer_is_kept(harness: Harness) -> None:
    await harness.start(QL_EXECUTOR_RELAY_ANSWER_TIMEOUT_S="10")
    await harness.inventory()
    relay = harness.venue.relay
    relay.faults.set("hold_responses", count=1)
    qid = await harness.quote()
    event = harness.command(qid)
    cid = event.payload.command_id
    await harness.send(event)
    await eventually(lambda: relay.counts.get("answers_ok", 0) == 1, what="answer checked by the relay")
    await relay.close_quote(qid)  # settles while the executor still waits for the relay's OK
    settled = await harness.result(cid, "settled")
    assert settled.resolved_by == "quote_status"
    assert await relay.release_held() == 1  # now the OK arrives, after the settlement

    async def answer_kept() -> LedgerRow | None:
        row = await harness.row(cid)
        return row if row is not None and "answer" in (row.venue_response or {}) else None

    row = await eventually(answer_kept, what="the late OK recorded beside the settlement")
    assert row.state == LedgerState.SETTLED and row.venue_response["answer"]["ok"] is True
    assert row.acknowledged_at is None and row.submitted_at is not None
    await harness.collect()
    assert [r.status for r in harness.results_for(cid)] == ["settled"]


# --- refusals --------------------------------------------------------------------------------------


async def test_late_inventory_shortfall_and_stale_inventory_refuse_explicitly(harness: Harness) -> None:
    svc = await harness.start()
    inventory_id = await harness.inventory(eure=150 * EURE)
    first = harness.command(await harness.quote())
    await harness.send(first)
    await harness.result(first.payload.command_id, "acknowledged")
    # 150 spendable − 89 reserved by the live answer = 61 < 89
    second = harness.command(await harness.quote())
    await harness.send(second)
    refused = await harness.result(second.payload.command_id, "refused")
    assert refused.reason_code == "insufficient_inventory" and "detected late" in refused.reason
    assert (refused.spendable_at_check, refused.reserved_at_check) == (150 * EURE, GIVE)
    assert refused.inventory_id == inventory_id and refused.nonce is None and refused.quote_hash is None
    await harness.inventory(stale=True)
    third = harness.command(await harness.quote())
    await harness.send(third)
    stale = await harness.result(third.payload.command_id, "refused")
    assert stale.reason_code == "inventory_stale"
    await harness.inventory(age_ms=10**9)  # fresh flag, ancient data
    fourth = harness.command(await harness.quote())
    await harness.send(fourth)
    assert (await harness.result(fourth.payload.command_id, "refused")).reason_code == "inventory_stale"
    assert len(harness.venue.quote_responses()) == 1  # nothing refused reached the relay
    assert svc.refusals["insufficient_inventory"] == 1 and svc.refusals["inventory_stale"] == 2
    for cid in harness.command_ids[1:]:
        assert await harness.statuses(cid) == ["refused"]
    row = await harness.row(second.payload.command_id)
    assert row is not None and row.state.value == "refused" and row.refused_at and row.signing_at is None


async def test_the_executor_checks_the_price_itself_whatever_the_command_says(harness: Harness) -> None:
    """A well-formed command is not enough: at the executor's own reference price the answer must
    keep at least the ceilings' edge floor (1 % here), on a price that is decisionable and fresh."""
    svc = await harness.start()
    await harness.inventory()
    await harness.stop_price_beat()
    cases = [  # (bid, decisionable, freshness_ms) -> refusal
        (("88000", True, 0), "edge_below_floor"),  # SATS worth 88 EURe for the 89 given: -1.1 %
        (("89800", True, 0), "edge_below_floor"),  # 0.9 %: just under the floor
        ((PRICE_BID, False, 0), "price_not_decisionable"),
        ((PRICE_BID, True, 60_000), "price_stale"),
    ]
    for (bid, decisionable, freshness), code in cases:
        await harness.price(bid, decisionable=decisionable, freshness_ms=freshness)
        event = harness.command(await harness.quote())
        await harness.send(event)
        refused = await harness.result(event.payload.command_id, "refused")
        assert refused.reason_code == code, (bid, refused.reason)
    assert "min_edge_pct" in (await harness.row(harness.command_ids[0])).reason  # type: ignore[union-attr]
    assert harness.venue.quote_responses() == []  # nothing refused reached the relay
    await harness.price("89900")  # 1.01 %: at the floor, answered
    ok = harness.command(await harness.quote())
    await harness.send(ok)
    await harness.result(ok.payload.command_id, "acknowledged")
    assert svc.refusals["edge_below_floor"] == 2


async def test_strict_audit_mode_holds_in_the_executor_too(harness: Harness) -> None:
    """With QL_STRICT_AUDIT and no history-writer to vouch for the audit history, nothing is
    answered, whatever the strategy (or anyone else on the bus) commands."""
    svc = await harness.start(QL_STRICT_AUDIT="true")
    await harness.inventory()
    await eventually(lambda: svc.audit_watch.impaired, what="history-writer found missing")
    event = harness.command(await harness.quote())
    await harness.send(event)
    refused = await harness.result(event.payload.command_id, "refused")
    assert refused.reason_code == "audit_impaired" and "history-writer" in refused.reason
    assert harness.venue.quote_responses() == []
    assert "audit history impaired" in (svc.state()["blocked_reason"] or "")


def write_ceilings(
    path: Path, *, notional: str = "500", give_eure: str = "500", exposure_eure: str = "200000", min_edge: str = "1.0"
) -> Path:
    path.write_text(f"""min_edge_pct = "{min_edge}"
max_notional_eure_per_answer = "{notional}"
max_price_age_ms = 10000
max_inventory_age_ms = 30000
[max_give_per_answer]
BTC = "0.01"
EURe = "{give_eure}"
[max_live_exposure]
BTC = "1"
EURe = "{exposure_eure}"
""")
    path.chmod(0o644)
    return path


async def test_ceilings_bound_each_answer_and_all_live_answers_together(harness: Harness, tmp_path: Path) -> None:
    ceilings = write_ceilings(tmp_path / "ceilings.toml", notional="100", give_eure="150", exposure_eure="200")
    svc = await harness.start(QL_CEILINGS_FILE=str(ceilings))
    await harness.inventory()
    refused = {}
    for name, give, sats in (("notional", 120 * EURE, 135_000), ("give", 160 * EURE, 180_000)):
        event = harness.command(await harness.quote(sats=sats), give=give, sats=sats)
        await harness.send(event)
        refused[name] = await harness.result(event.payload.command_id, "refused")
    assert refused["notional"].reason_code == "over_notional_ceiling"
    assert "max_notional_eure_per_answer 100" in refused["notional"].reason
    assert refused["give"].reason_code == "over_give_ceiling"
    live = []
    for _ in range(2):  # 2 × 89 = 178 EURe live: within 200
        event = harness.command(await harness.quote())
        await harness.send(event)
        live.append(await harness.result(event.payload.command_id, "acknowledged"))
    third = harness.command(await harness.quote())
    await harness.send(third)
    over = await harness.result(third.payload.command_id, "refused")
    assert over.reason_code == "over_exposure_ceiling" and "max_live_exposure" in over.reason
    assert len(harness.venue.quote_responses()) == 2
    state = svc.state()
    assert state["live_exposure"][EURE_ID] == str(2 * GIVE) and state["ceilings"]["file"] == str(ceilings)


async def test_an_executor_without_usable_ceilings_does_not_start(tmp_path: Path) -> None:
    """Missing, writable by others, or looser than its own settings: refused at start, one line,
    exit code 78 (systemd does not restart into the same refusal)."""
    env = {**os.environ, "QL_CONTROL_DIR": str(tmp_path), "QL_LOG_LEVEL": "ERROR"}
    loose = write_ceilings(tmp_path / "loose.toml")
    loose.chmod(0o666)
    for path, words in ((tmp_path / "absent.toml", "does not exist"), (loose, "mode 0666")):
        proc = subprocess.run(
            [sys.executable, "-m", "daemons.trade_executor"],
            env={**env, "QL_CEILINGS_FILE": str(path)},
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 78, proc.stderr
        assert words in proc.stderr.decode()
    tight = write_ceilings(tmp_path / "tight.toml")
    tight.write_text(tight.read_text().replace("max_inventory_age_ms = 30000", "max_inventory_age_ms = 1000"))
    proc = subprocess.run(
        [sys.executable, "-m", "daemons.trade_executor"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        env={**env, "QL_CEILINGS_FILE": str(tight)},
    )
    assert proc.returncode == 78 and "QL_EXECUTOR_INVENTORY_MAX_AGE_MS 30000" in proc.stderr.decode()


async def test_an_answer_being_stored_when_the_executor_is_disarmed_never_leaves(harness: Harness) -> None:
    # The window is the `submitted` write (signed, not yet sent). A trigger of the test's own makes
    # that write wait for a lock the test holds, so the disarm lands inside it every time (the fault
    # matrix once caught an answer leaving ~1 ms after /disarm had answered).
    svc = await harness.start()
    await harness.inventory()
    # idempotent: a run killed before its `finally` must not break the next one on a kept stack
    await harness.pool.execute("""
        CREATE OR REPLACE FUNCTION test_hold_submitted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(74110); RETURN NEW; END $$;
        DROP TRIGGER IF EXISTS test_hold_submitted ON executor_ledger;
        CREATE TRIGGER test_hold_submitted BEFORE INSERT OR UPDATE ON executor_ledger FOR EACH ROW
            WHEN (NEW.state = 'submitted') EXECUTE FUNCTION test_hold_submitted();""")
    try:
        async with harness.pool.acquire() as conn:
            hold = conn.transaction()
            await hold.start()
            await conn.execute("SELECT pg_advisory_xact_lock(74110)")
            event = harness.command(await harness.quote(min_deadline_ms=1000), min_deadline_ms=1000)
            cid = event.payload.command_id
            await harness.send(event)
            await eventually(
                lambda: cid in svc.book.answers and svc.book.answers[cid].state is LedgerState.SIGNING,
                what="signed, its write held",
            )
            status, _ = await harness.control("POST", "/disarm", {"operator": "tester", "reason": "stop now"})
            assert status == 200
            await hold.rollback()  # the write goes on, after the disarm
        rejected = await harness.result(cid, "rejected")
        assert rejected.reason_code == "disarmed" and rejected.sent_at is None and rejected.nonce
        assert harness.venue.quote_responses() == []
        assert await harness.statuses(cid) == ["rejected"]
        # its signature is valid until its deadline: it holds its amount until then
        assert svc.book.reserved(EURE_ID) == GIVE and cid in svc.book.withheld
        await eventually(lambda: svc.book.reserved(EURE_ID) == 0, timeout=10, what="released after the deadline")
        assert datetime.now(UTC) >= rejected.deadline
    finally:
        await harness.pool.execute(
            "DROP TRIGGER IF EXISTS test_hold_submitted ON executor_ledger;"
            " DROP FUNCTION IF EXISTS test_hold_submitted()"
        )


async def test_disarmed_paused_and_late_commands_are_refused_with_a_result(harness: Harness) -> None:
    await harness.start(arm=False)
    await harness.inventory()
    status, state = await harness.control("GET", "/state")
    assert state["armed"] is False and state["blocked_reason"] == "disarmed"
    disarmed = harness.command(await harness.quote())
    await harness.send(disarmed)
    assert (await harness.result(disarmed.payload.command_id, "refused")).reason_code == "disarmed"

    status, _ = await harness.control("POST", "/arm", {"operator": "tester", "reason": "go"})
    assert status == 200
    await harness.control("POST", "/pause", {"operator": "tester"})
    paused = harness.command(await harness.quote())
    await harness.send(paused)
    assert (await harness.result(paused.payload.command_id, "refused")).reason_code == "paused"
    await harness.control("POST", "/resume", {"operator": "tester"})

    late = harness.command(await harness.quote(), answer_by=datetime.now(UTC) - timedelta(milliseconds=1))
    await harness.send(late)
    assert (await harness.result(late.payload.command_id, "refused")).reason_code == "answer_by_passed"
    assert harness.venue.quote_responses() == []
    for cid in harness.command_ids:
        assert await harness.statuses(cid) == ["refused"]
        row = await harness.row(cid)
        assert row is not None and row.nonce is row.signed_data is None  # nothing was signed
    rows = await harness.pool.fetch(
        "SELECT action, operator, outcome FROM control_actions WHERE service = 'trade-executor'"
        " AND action IN ('arm', 'pause') ORDER BY id DESC LIMIT 2"
    )
    assert {(r["action"], r["operator"]) for r in rows} == {("arm", "tester"), ("pause", "tester")}


# --- signing authority ---------------------------------------------------------------------------


def _break_key(secrets_dir: Path, venue: Venue, problem: str) -> None:
    key = secrets_dir / "signer.key"
    if problem == "key_missing":
        key.unlink()
    elif problem == "key_invalid":
        key.write_text("ed25519:not-a-key")
    elif problem == "key_insecure":
        key.chmod(0o644)
    elif problem == "not_authorized":
        venue.verifier.remove_public_key(ACCOUNT, venue.key.public_key)


@pytest.mark.parametrize("problem", ["key_missing", "key_invalid", "key_insecure", "not_authorized"])
async def test_signer_problems_keep_it_up_disarmed_and_say_which(harness: Harness, problem: str) -> None:
    _break_key(harness.secrets_dir, harness.venue, problem)
    await harness.start(arm=False)
    status, state = await harness.control("GET", "/state")
    assert state["signer"]["status"] == problem and state["armed"] is False
    assert harness.venue.key.secret_for_export() not in str(state) and "not-a-key" not in str(state)
    status, health = await harness.control("GET", "/healthz")
    assert status == 503 and any(r.startswith(f"signer_{problem}") for r in health["reasons"])
    status, refusal = await harness.control("POST", "/arm", {"operator": "tester", "reason": "try"})
    assert status == 409 and refusal["error"].startswith(f"signer {problem}: ")
    status, state = await harness.control("GET", "/state")
    assert state["armed"] is False
    await harness.inventory()
    event = harness.command(await harness.quote())
    await harness.send(event)
    assert (await harness.result(event.payload.command_id, "refused")).reason_code == "disarmed"


async def test_fixing_the_signer_lets_an_operator_arm(harness: Harness) -> None:
    _break_key(harness.secrets_dir, harness.venue, "not_authorized")
    await harness.start(arm=False)
    status, _ = await harness.control("POST", "/arm", {"operator": "tester", "reason": "try"})
    assert status == 409
    harness.venue.verifier.add_public_key(ACCOUNT, harness.venue.key.public_key)
    status, body = await harness.control("POST", "/arm", {"operator": "tester", "reason": "key registered"})
    assert status == 200 and body["armed"] is True
    status, health = await harness.control("GET", "/healthz")
    assert status == 200


# --- disarm with cancel_live ---------------------------------------------------------------------


async def test_disarm_with_cancel_live_burns_the_nonces_of_live_answers(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    qid = await harness.quote(min_deadline_ms=1_000)
    event = harness.command(qid, min_deadline_ms=1_000)
    cid = event.payload.command_id
    await harness.send(event)
    ack = await harness.result(cid, "acknowledged")
    operator = f"ops-{uuid.uuid4()}"
    status, body = await harness.control(
        "POST", "/disarm", {"operator": operator, "reason": "cancel everything", "cancel_live": True}
    )
    assert status == 200 and body["armed"] is False
    assert body["cancel_live"]["requested"] == 1 and body["cancel_live"]["relay"]["status"] == "OK"
    burned = harness.venue.verifier.snapshot()["relay_burned_nonces"][ACCOUNT]
    assert ack.nonce in burned
    # the taker can no longer settle it
    outcome = await harness.venue.relay.close_quote(qid)
    assert outcome["settled"] is False and outcome["error"] == "nonce was already used"
    expired = await harness.result(cid, "expired")
    assert expired.reason_code == "cancelled" and expired.cancel_requested_at is not None
    row = await harness.row(cid)
    assert row is not None and row.cancel_response["status"] == "OK" and row.cancel_response["nonces"] == [ack.nonce]
    audit = await eventually(
        lambda: harness.pool.fetch(
            "SELECT action, outcome FROM control_actions WHERE service = 'trade-executor' AND operator = $1", operator
        ),
        what="audit rows",
    )
    assert {(r["action"], r["outcome"]) for r in audit} == {("disarm", "disarmed"), ("cancel_live", "OK")}
    assert svc.arm.armed is False


# --- restart ---------------------------------------------------------------------------------------


async def test_start_resolves_every_unresolved_row_from_the_venue(harness: Harness) -> None:
    """Rows left in received, signing, submitted and acknowledged by a previous process."""
    store = LedgerStore(harness.pool)
    now = datetime.now(UTC)
    key = harness.venue.key

    async def seed(state: str, min_deadline_ms: int = 200) -> str:
        event = harness.command(await harness.quote(min_deadline_ms=min_deadline_ms), min_deadline_ms=min_deadline_ms)
        cid = event.payload.command_id
        assert await store.insert_received(event, now) is not None
        if state == "received":
            return cid
        plan = plan_nonce(harness.venue.verifier.current_salt(), now, min_deadline_ms, 0)
        await store.transition(
            cid,
            LedgerState.SIGNING,
            now,
            signer_id=ACCOUNT,
            salt=plan.salt,
            nonce=plan.nonce_b64,
            deadline=plan.deadline,
        )
        if state == "signing":
            return cid
        answer = sign_answer(key, ACCOUNT, event.payload, plan, "intents.near")
        await store.transition(
            cid,
            LedgerState.SUBMITTED,
            now,
            signed_data=answer.signed_data,
            quote_hash=answer.quote_hash,
            quote_output=answer.quote_output_wire(),
            signed_at=now,
        )
        if state == "acknowledged":
            await store.transition(cid, LedgerState.ACKNOWLEDGED, now)
        return cid

    received, signing, submitted, acknowledged = [
        await seed(s) for s in ("received", "signing", "submitted", "acknowledged")
    ]
    await harness.start(arm=False)
    r = await harness.result(received, "refused")
    assert r.reason_code == "executor_restarted"
    s = await harness.result(signing, "expired")
    assert s.resolved_by == "is_nonce_used" and "while signing" in s.reason
    u = await harness.result(submitted, "uncertain")
    assert u.reason_code == "restarted_after_submit"
    assert (await harness.result(submitted, "expired")).resolved_by == "is_nonce_used"
    assert (await harness.result(acknowledged, "expired")).resolved_by == "no_quote_status"
    assert harness.venue.quote_responses() == []  # nothing was (re)sent
    for cid in (received, signing, submitted, acknowledged):
        await eventually(functools.partial(_published, harness, cid), what=f"{cid} noted as published")


# --- kill -9 between sending and publishing ------------------------------------------------------


@pytest.fixture
def spawn(harness: Harness, tmp_path: Path, daemon_procs: Any) -> Callable[..., subprocess.Popen[bytes]]:
    def start(**extra: str) -> subprocess.Popen[bytes]:
        return daemon_procs(
            "daemons.trade_executor",
            {**os.environ, **harness.env(**extra)},  # type: ignore[no-any-return]
            tmp_path / "executor.log",
        )

    return start


async def test_kill_9_after_sending_then_restart_answers_once_and_publishes(
    harness: Harness, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    instance = f"exec-{uuid.uuid4()}"
    await _commands_from_end(harness.stack, harness.group)
    proc = spawn(QL_EXECUTOR_RELAY_INSTANCE_ID=instance)

    async def ready() -> bool:
        try:
            status, state = await harness.control("GET", "/state")
        except (aiohttp.ClientError, OSError):
            return False
        return bool(
            state["connected"]["relay"] and state["ledger"]["available"] and state["signer"]["status"] == "authorized"
        )

    await eventually(ready, what="executor process ready")
    status, _ = await harness.control("POST", "/arm", {"operator": "tester", "reason": "crash test"})
    assert status == 200
    await harness.inventory()
    harness.start_price_beat()
    await eventually(lambda: _state_has_inputs(harness), what="snapshot and price seen by the process")
    relay = harness.venue.relay
    relay.faults.set("hold_responses", count=1)  # the relay keeps its answer: the executor waits
    qid = await harness.quote()
    event = harness.command(qid, answer_by=datetime.now(UTC) + timedelta(seconds=30))
    cid = event.payload.command_id
    await harness.send(event)
    await eventually(lambda: relay.counts.get("answers_ok", 0) == 1, what="the answer reached the relay")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    await harness.collect()
    assert harness.results_for(cid) == []  # no result made it out before the kill
    row = await harness.row(cid)
    assert row is not None and row.state.value == "submitted" and row.signed_data is not None

    outcome = await relay.close_quote(qid)  # the taker fills it while the executor is down
    assert outcome["settled"] is True
    proc = spawn(QL_EXECUTOR_RELAY_INSTANCE_ID=instance)
    unsure = await harness.result(cid, "uncertain", timeout=30)
    assert unsure.reason_code == "restarted_after_submit"
    settled = await harness.result(cid, "settled", timeout=30)
    assert settled.tx_hash == outcome["tx_hash"] and settled.resolved_by == "quote_status"
    assert len(harness.venue.quote_responses()) == 1  # exactly one answer, ever
    await eventually(lambda: relay.queues[instance].unacked == {}, what="the status acknowledged after the write")
    await harness.collect()
    assert [r.status for r in harness.results_for(cid)] == ["uncertain", "settled"]
    proc.send_signal(signal.SIGTERM)  # drain: exits 0 (the simulators live on this loop: never block it)
    assert await eventually(lambda: proc.poll() is not None, what="drained and exited") and proc.returncode == 0


async def _published(harness: Harness, cid: str) -> bool:
    row = await harness.row(cid)
    return row is not None and row.published_state == row.state


async def _state_has_inputs(harness: Harness) -> bool:
    status, state = await harness.control("GET", "/state")
    return state["inputs"]["inventory"]["latest"] is not None and state["inputs"]["price"]["latest"] is not None


# --- PostgreSQL away -------------------------------------------------------------------------------


async def test_without_postgres_nothing_is_answered_until_it_returns(harness: Harness) -> None:
    svc = await harness.start()
    await harness.inventory()
    await asyncio.to_thread(harness.stack.stop_postgres)
    try:
        await eventually(lambda: not svc.db.healthy, what="the executor noticed the ledger is gone")
        status, state = await harness.control("GET", "/state")
        assert state["ledger"]["available"] is False and state["blocked_reason"].startswith("ledger unavailable")
        assert state["authoritative"] is False
        status, health = await harness.control("GET", "/healthz")
        assert status == 503 and any(r.startswith("ledger_unavailable") for r in health["reasons"])
        event = harness.command(await harness.quote(), answer_by=datetime.now(UTC) + timedelta(seconds=60))
        await harness.send(event)
        status, health = await harness.control("POST", "/arm", {"operator": "tester", "reason": "again"})
        assert status == 409 and "ledger unavailable" in health["error"]
    finally:
        restarting_at = datetime.now(UTC)
        await asyncio.to_thread(harness.stack.start_postgres)
    ack = await harness.result(event.payload.command_id, "acknowledged", timeout=30)
    assert ack.quote_id == event.payload.quote_id and svc.db.healthy
    # written and answered only once the ledger was back: nothing went out while it was away
    assert ack.command_received_at >= restarting_at and ack.sent_at >= restarting_at
    assert len(harness.venue.quote_responses()) == 1


async def test_transition_many_moves_only_rows_that_may_follow_with_each_rows_reason(harness: Harness) -> None:
    """Silence expiries of one sweep are one ledger write: each row gets its own reason columns,
    the shared ones alike, and a row another path moved first is left as it is."""
    store = LedgerStore(harness.pool)
    now = datetime.now(UTC)
    cids = []
    for _ in range(3):
        event = harness.command(await harness.quote())
        plan = plan_nonce(harness.venue.verifier.current_salt(), now, 200, 0)
        answer = sign_answer(harness.venue.key, ACCOUNT, event.payload, plan, "intents.near")
        signed = {
            "signer_id": ACCOUNT,
            "salt": plan.salt,
            "nonce": plan.nonce_b64,
            "deadline": plan.deadline,
            "signed_data": answer.signed_data,
            "quote_hash": answer.quote_hash,
            "quote_output": answer.quote_output_wire(),
            "signed_at": now,
        }
        assert await store.insert(event, now, LedgerState.SUBMITTED, now, **signed) is not None
        assert await store.transition(event.payload.command_id, LedgerState.ACKNOWLEDGED, now) is not None
        cids.append(event.payload.command_id)
    first, second, settled_first = cids
    assert await store.transition(settled_first, LedgerState.SETTLED, now, resolved_by="quote_status") is not None
    each = {cid: {"reason": f"reason {i}", "reason_code": "deadline_passed"} for i, cid in enumerate(cids)}
    at = datetime.now(UTC)
    moved = await store.transition_many(
        LedgerState.EXPIRED, at, each, resolved_by="no_quote_status", resolution={"rule": "r"}
    )
    assert sorted(r.command_id for r in moved) == sorted([first, second])
    for i, cid in enumerate((first, second)):
        row = await store.get(cid)
        assert row is not None and row.state is LedgerState.EXPIRED and row.expired_at == at
        assert (row.reason, row.reason_code, row.resolved_by) == (f"reason {i}", "deadline_passed", "no_quote_status")
        assert row.resolution == {"rule": "r"}
    kept = await store.get(settled_first)
    assert kept is not None and kept.state is LedgerState.SETTLED and kept.reason is None
    assert await store.transition_many(LedgerState.EXPIRED, at, {}) == []
    with pytest.raises(ValueError):
        await store.transition_many(LedgerState.EXPIRED, at, {first: {"nonce": "x"}})
    # noted as published, so no later executor's start republishes these hand-made rows
    await store.mark_published_many({first: LedgerState.EXPIRED, second: LedgerState.EXPIRED})
    await store.mark_published_many({settled_first: LedgerState.SETTLED})
