"""liquidity-manager against the POA bridge, relay and NEAR RPC simulators (one simulated
verifier behind them) and the real Kafka and PostgreSQL; a history-writer runs in-process for
the whole module, and each test checks that its transitions reached the `liquidity_actions`
table."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID
from daemons.core.control import socket_path
from daemons.core.runtime import serve
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings
from daemons.liquidity_manager.service import LiquidityManager
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.venues.near_intents.nep413 import SignerKey
from simulators.near_rpc import NearRpcSimulator
from simulators.poa_bridge import PoaBridgeSimulator, SimClock
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.conftest import Stack, TopicTail, eventually, start_group_at_end

JWT = "jwt-for-the-liquidity-test"
GNOSIS_WALLET = "0x" + "ab" * 20
BTC_WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
EURE = 10**18  # one EURe in base units
TOPIC = "ops.liquidity_action"

TREASURY = f"""
[[assets]]
asset_id = "{EURE_ID}"
chains = ["eth:100"]

[[assets]]
asset_id = "{POA_BTC_ID}"
chains = ["btc:mainnet"]

[[wallets]]
label = "gnosis-treasury"
chain = "eth:100"
address = "{GNOSIS_WALLET}"

[[wallets]]
label = "btc-cold"
chain = "btc:mainnet"
address = "{BTC_WALLET}"
"""


def _tx() -> str:
    return "0x" + secrets.token_hex(32)


@pytest.fixture(scope="module")
async def history(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HistoryWriter]:
    group = f"hw-liquidity-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    control = Path(tmp_path_factory.mktemp("hw"))
    writer = HistoryWriter(
        HistoryWriterSettings(
            database_url=stack.database_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            control_dir=control,
            history_group=group,
            history_retry_max_s=0.5,
        )
    )
    task = asyncio.create_task(serve(writer, handle_signals=False))
    yield writer
    writer.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


@dataclass
class Harness:
    stack: Stack
    control_dir: Path
    tmp: Path
    verifier: VerifierState = field(default_factory=VerifierState)
    key: SignerKey = field(default_factory=SignerKey.generate)
    poa: PoaBridgeSimulator | None = None
    relay: RelaySimulator | None = None
    near: NearRpcSimulator | None = None
    service: LiquidityManager | None = None
    task: asyncio.Task[int] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.key.implicit_account_id

    async def start_sims(self) -> None:
        self.poa = PoaBridgeSimulator(self.verifier.deposit, clock=SimClock(frozen=True), chain=self.verifier.chain)
        self.poa.watch_burns(self.verifier)
        self.relay = RelaySimulator(self.verifier, RelaySimConfig(jwt=JWT))
        self.near = NearRpcSimulator(self.verifier)
        for sim in (self.poa, self.relay, self.near):
            await sim.start()

    def settings(self) -> LiquiditySettings:
        assert self.poa and self.relay and self.near
        key_file, jwt_file, treasury = self.tmp / "signer.key", self.tmp / "relay.jwt", self.tmp / "treasury.toml"
        key_file.write_text(self.key.secret_for_export())
        key_file.chmod(0o600)
        jwt_file.write_text(JWT)
        jwt_file.chmod(0o600)
        treasury.write_text(TREASURY)
        values: dict[str, Any] = {
            "kafka_bootstrap": self.stack.kafka_bootstrap,
            "database_url": self.stack.database_url,
            "control_dir": self.control_dir,
            "poa_bridge_url": f"{self.poa.base_url}/rpc",
            "relay_rpc_url": self.relay.rpc_url,
            "relay_jwt_file": jwt_file,
            "near_rpc_url": self.near.base_url,
            "signer_key_file": key_file,
            "treasury_file": treasury,
            "liquidity_poll_interval_s": 0.1,
            "liquidity_venue_timeout_s": 2.0,
            **self.overrides,
        }
        return LiquiditySettings(**values)

    async def start(self) -> LiquidityManager:
        self.service = LiquidityManager(self.settings())
        self.task = asyncio.create_task(serve(self.service, handle_signals=False))
        service = self.service
        await eventually(lambda: service.ready.is_set() or service.blocked, what="liquidity-manager ready")
        return service

    async def stop(self) -> None:
        if self.service is not None and self.task is not None:
            self.service.request_drain()
            assert await asyncio.wait_for(self.task, timeout=30) == 0
            self.service = self.task = None

    async def restart(self) -> LiquidityManager:
        await self.stop()
        return await self.start()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        sock = socket_path(self.control_dir, LiquidityManager.name)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            async with session.request(method, f"http://x{path}", json=body) as resp:
                return resp.status, await resp.json()


@pytest.fixture
async def harness(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(stack, control_dir, tmp_path)
    await h.start_sims()
    yield h
    await h.stop()
    for sim in (h.poa, h.relay, h.near):
        if sim is not None:
            await sim.stop()


@pytest.fixture
async def lm(harness: Harness, history: HistoryWriter) -> Harness:
    await harness.start()
    return harness


async def _events(t: TopicTail, action_id: str, *statuses: str) -> list[Any]:
    """Wait until the action's events include every status given; return them in order."""
    wanted = set(statuses)
    await t.wait_for(
        lambda e: e.payload.liquidity_action_id == action_id and e.payload.status in wanted,
        len(wanted),
        what=f"{action_id}: {sorted(wanted)}",
    )
    return [e for e in t.events if e.payload.liquidity_action_id == action_id]


async def _in_postgres(pool: asyncpg.Pool, action_id: str, statuses: list[str]) -> list[str]:
    """The action's statuses as history-writer stored them, once every expected one is there."""

    async def stored() -> list[str] | None:
        rows = await pool.fetch(
            "SELECT status FROM liquidity_actions WHERE liquidity_action_id = $1 ORDER BY occurred_at, kafka_offset",
            action_id,
        )
        got = [r["status"] for r in rows]
        return got if set(statuses) <= set(got) else None

    return list(await eventually(stored, what=f"{action_id} {statuses} in liquidity_actions"))


def _id_of(message: str) -> str:
    return message.rsplit("liquidity_action_id ", 1)[1].rstrip("]")


async def test_funding_goes_from_requested_to_credited_and_every_transition_is_in_postgres(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    t = await tail(TOPIC)
    assert lm.poa is not None
    # deposit addresses are requested and kept for every treasury route
    await eventually(
        lambda: lm.service and set(lm.service.addresses) == {"eth:100", "btc:mainnet"},
        what="both deposit addresses held",
    )
    issued = lm.service.addresses["eth:100"]  # type: ignore[union-attr]
    assert issued.address == lm.poa.deposit_address_for(lm.account, "eth:100")
    assert await _in_postgres(pool, issued.liquidity_action_id, ["requested", "issued"]) == ["requested", "issued"]

    tx = _tx()
    status, view = await lm.call(
        "POST",
        "/funding",
        {
            "asset_id": EURE_ID,
            "amount_units": "100",
            "chain": "eth:100",
            "tx_hash": tx.upper().replace("0X", "0x"),
            "wallet_label": "gnosis-treasury",
            "operator": "alice",
            "reason": "first funding",
        },
    )
    assert status == 200, view
    action = view["liquidity_action_id"]
    assert view["status"] == "notified" and view["amount"] == str(100 * EURE) and view["tx_hash"] == tx
    assert lm.poa.notifications[-1] == {"deposit_address": issued.address, "tx_hash": tx, "chain": "eth:100"}
    _, state = await lm.call("GET", "/state")
    assert state["pending_credits"] == {EURE_ID: str(100 * EURE)}

    # the transfer lands on the deposit address: seen, not yet credited, so still pending
    lm.poa.add_deposit(lm.account, "eth:100", EURE_ID, 100 * EURE, tx_hash=tx, credit_after_s=600)
    await _events(t, action, "pending")
    assert lm.verifier.balance(lm.account, EURE_ID) == 0
    _, state = await lm.call("GET", "/state")
    assert [p["liquidity_action_id"] for p in state["funding"]["pending"]] == [action]
    assert state["authoritative"] is True and state["connected"]["poa_bridge"] is True

    lm.poa.advance(600)  # the bridge sweeps and mints: credited in the verifier
    events = await _events(t, action, "credited")
    credited = events[-1].payload
    assert (credited.status, credited.credited_amount, credited.amount) == ("credited", 100 * EURE, 100 * EURE)
    assert lm.verifier.balance(lm.account, EURE_ID) == 100 * EURE
    assert [e.payload.status for e in events] == ["requested", "notified", "pending", "credited"]
    assert all(e.correlation_id == action and e.payload.wallet_label == "gnosis-treasury" for e in events)
    assert await _in_postgres(pool, action, ["requested", "notified", "pending", "credited"]) == [
        "requested",
        "notified",
        "pending",
        "credited",
    ]
    assert await pool.fetchval("SELECT count(*) FROM pending_funding WHERE liquidity_action_id = $1", action) == 0
    _, state = await lm.call("GET", "/state")
    assert state["pending_credits"] == {} and state["funding"]["recent"][0]["status"] == "credited"


async def test_a_deposit_address_request_failure_is_visible_then_recovers(
    harness: Harness, history: HistoryWriter, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    assert harness.poa is not None
    harness.poa.faults.set("http_500", on=True)
    t = await tail(TOPIC)
    lm = await harness.start()
    await eventually(lambda: "eth:100" in lm.address_errors, what="the failure recorded")
    failed_id = lm.address_errors["eth:100"]["liquidity_action_id"]
    events = await _events(t, failed_id, "requested", "failed")
    assert "HTTP 500" in (events[-1].payload.reason or "")
    status, health = await harness.call("GET", "/healthz")
    assert status == 503 and any(r.startswith("poa_bridge_unavailable") for r in health["reasons"])
    status, err = await harness.call("POST", "/deposit-address", {"asset_id": EURE_ID, "operator": "alice"})
    assert status == 502 and "did not issue an address for eth:100" in err["error"]
    _, state = await harness.call("GET", "/state")
    assert "eth:100" in state["deposit_address_errors"] and state["deposit_addresses"] == []
    assert state["connected"]["poa_bridge"] is False and state["authoritative"] is False

    harness.poa.faults.set("http_500", on=False)
    status, view = await harness.call("POST", "/deposit-address", {"asset_id": EURE_ID, "operator": "alice"})
    assert status == 200 and view["existing"] is False
    assert view["address"] == harness.poa.deposit_address_for(harness.account, "eth:100")
    await _events(t, view["liquidity_action_id"], "requested", "issued")
    status, again = await harness.call("POST", "/deposit-address", {"asset_id": EURE_ID})
    assert status == 200 and again["existing"] is True and again["address"] == view["address"]
    await eventually(lambda: "poa_bridge" not in lm.venue_errors, what="bridge recovered")
    assert await _in_postgres(pool, failed_id, ["requested", "failed"]) == ["requested", "failed"]
    assert await _in_postgres(pool, view["liquidity_action_id"], ["requested", "issued"]) == ["requested", "issued"]


async def test_unsupported_assets_chains_and_destinations_are_refused_with_a_reason(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    t = await tail(TOPIC)
    cases = [
        ("/deposit-address", {"asset_id": NBTC_ID}, "Omni bridge"),
        ("/deposit-address", {"asset_id": EURE_ID, "chain": "sol:mainnet"}, "unknown chain 'sol:mainnet'"),
        ("/funding", {"asset_id": NBTC_ID, "amount": "1000", "tx_hash": "ab" * 32}, "Omni bridge"),
        ("/funding", {"asset_id": "nep141:wrap.near", "amount": "1", "tx_hash": _tx()}, "not in the asset registry"),
        (
            "/funding",
            {"asset_id": EURE_ID, "amount": "1", "chain": "btc:mainnet", "tx_hash": "ab" * 32},
            "funded through chain 'eth:100'",
        ),
        ("/funding", {"asset_id": EURE_ID, "amount": "1", "tx_hash": "not-a-hash"}, "not a transaction hash"),
        ("/withdrawals", {"asset_id": NBTC_ID, "amount": "1000", "address": BTC_WALLET}, "Omni bridge"),
        (
            "/withdrawals",
            {"asset_id": EURE_ID, "amount_units": "2", "address": "0x" + "cd" * 20},
            "not a labelled treasury wallet",
        ),
    ]
    ids = []
    for path, body, needle in cases:
        status, err = await lm.call("POST", path, {**body, "operator": "carol"})
        assert status == 422 and needle in err["error"], (path, body, err)
        ids.append(_id_of(err["error"]))
    for (path, _, needle), action_id in zip(cases, ids, strict=True):
        [event] = await _events(t, action_id, "refused")
        assert (
            event.payload.kind
            == {"/deposit-address": "deposit_address", "/funding": "funding", "/withdrawals": "withdrawal"}[path]
        )
        assert needle in (event.payload.reason or "") and event.payload.operator == "carol"
    # a malformed body is a 422 from validation, with nothing to record
    status, err = await lm.call("POST", "/funding", {"asset_id": EURE_ID, "amount": 1.5, "tx_hash": _tx()})
    assert status == 422 and "amount" in err["error"]
    _, state = await lm.call("GET", "/state")
    assert {r["liquidity_action_id"] for r in state["recent_refusals"]} >= set(ids)
    for action_id in ids:
        assert await _in_postgres(pool, action_id, ["refused"]) == ["refused"]
    # paused: new work is refused, visibly, and taken again on resume
    assert (await lm.call("POST", "/pause", {"operator": "carol"}))[0] == 200
    status, err = await lm.call("POST", "/funding", {"asset_id": EURE_ID, "amount": "1", "tx_hash": _tx()})
    assert status == 409 and "paused" in err["error"]
    assert (await lm.call("POST", "/resume", {"operator": "carol"}))[0] == 200


async def test_a_credit_past_the_bound_is_delayed_and_still_pending_until_credited(
    harness: Harness, history: HistoryWriter, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    harness.overrides["liquidity_credit_delay_s"] = 0.5
    t = await tail(TOPIC)
    await harness.start()
    assert harness.poa is not None
    tx = _tx()
    status, view = await harness.call("POST", "/funding", {"asset_id": EURE_ID, "amount": str(5 * EURE), "tx_hash": tx})
    assert status == 200
    action = view["liquidity_action_id"]
    events = await _events(t, action, "delayed")
    assert "not credited" in (events[-1].payload.reason or "") and "(bound 0.5 s)" in (events[-1].payload.reason or "")
    _, state = await harness.call("GET", "/state")
    assert state["funding"]["delayed"] == [action]
    assert state["pending_credits"] == {EURE_ID: str(5 * EURE)}  # delayed is still pending, never spendable
    # the bridge finally sees it and credits it
    harness.poa.add_deposit(harness.account, "eth:100", EURE_ID, 5 * EURE, tx_hash=tx, credit_after_s=60)
    harness.poa.advance(60)
    events = await _events(t, action, "credited")
    statuses = [e.payload.status for e in events]
    assert statuses[0] == "requested" and statuses[-1] == "credited" and "delayed" in statuses
    stored = await _in_postgres(pool, action, ["requested", "notified", "delayed", "credited"])
    assert stored[-1] == "credited"


async def test_a_failed_deposit_is_reported_and_a_later_manual_completion_credits_it(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    assert lm.poa is not None
    t = await tail(TOPIC)
    tx = _tx()
    lm.poa.add_deposit(lm.account, "eth:100", EURE_ID, 3 * EURE, tx_hash=tx, outcome="fail")
    status, view = await lm.call("POST", "/funding", {"asset_id": EURE_ID, "amount": str(3 * EURE), "tx_hash": tx})
    assert status == 200
    action = view["liquidity_action_id"]
    events = await _events(t, action, "failed")
    assert "FAILED" in (events[-1].payload.reason or "")
    _, state = await lm.call("GET", "/state")
    assert state["pending_credits"] == {}  # failed is not pending
    lm.poa.complete_deposit(tx)  # the bridge's operators complete it by hand (docs/poa-bridge.md §4)
    await _events(t, action, "credited")
    assert lm.verifier.balance(lm.account, EURE_ID) == 3 * EURE
    assert (await _in_postgres(pool, action, ["failed", "credited"]))[-1] == "credited"


async def test_the_same_transfer_recorded_twice_is_refused_as_a_duplicate_even_after_a_restart(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    t = await tail(TOPIC)
    tx = _tx()
    body = {"asset_id": EURE_ID, "amount": str(2 * EURE), "tx_hash": tx, "operator": "dave"}
    status, first = await lm.call("POST", "/funding", body)
    assert status == 200
    original = first["liquidity_action_id"]
    # the same hash typed in upper case is the same transfer
    status, err = await lm.call("POST", "/funding", {**body, "tx_hash": "0x" + tx[2:].upper()})
    assert status == 409 and f"already recorded as {original}" in err["error"]
    dup_id = _id_of(err["error"])
    [dup] = await _events(t, dup_id, "duplicate")
    assert (dup.payload.duplicate_of, dup.payload.tx_hash, dup.payload.kind) == (original, tx, "funding")
    # a retried request with its own id is a replay, not a duplicate
    status, replay = await lm.call("POST", "/funding", {**body, "liquidity_action_id": original})
    assert status == 200 and replay["replayed"] is True and replay["liquidity_action_id"] == original

    await lm.restart()
    status, err = await lm.call("POST", "/funding", {**body, "amount": str(EURE)})
    assert status == 409 and f"already recorded as {original}" in err["error"]
    dup_after = _id_of(err["error"])
    await _events(t, dup_after, "duplicate")
    assert await _in_postgres(pool, dup_id, ["duplicate"]) == ["duplicate"]
    assert await _in_postgres(pool, dup_after, ["duplicate"]) == ["duplicate"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pending_funding WHERE liquidity_action_id = ANY($1::text[])", [dup_id, dup_after]
        )
        == 0
    )


async def test_a_withdrawal_is_estimated_signed_published_and_followed_to_completed(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    assert lm.poa is not None and lm.relay is not None
    lm.poa.burn_script["complete_after_s"] = 60  # the bridge holds it PENDING until the clock moves
    lm.verifier.deposit(lm.account, EURE_ID, 10 * EURE)
    t = await tail(TOPIC)
    status, view = await lm.call(
        "POST",
        "/withdrawals",
        {
            "asset_id": EURE_ID,
            "amount_units": "2",
            "wallet_label": "gnosis-treasury",
            "operator": "erin",
            "reason": "rebalance to the bank",
        },
    )
    assert status == 200, view
    action = view["liquidity_action_id"]
    fee = 5 * 10**17  # the simulated bridge's EURe withdrawal fee
    assert view["status"] in ("issued", "pending") and view["fee"] == str(fee)
    assert view["amount"] == str(2 * EURE + fee) and view["net_amount"] == str(2 * EURE)
    events = await _events(t, action, "requested", "issued", "pending")
    requested, issued, pending = (
        next(e.payload for e in events if e.payload.status == s) for s in ("requested", "issued", "pending")
    )
    assert (requested.amount, requested.net_amount, requested.fee, requested.address, requested.wallet_label) == (
        2 * EURE + fee,
        2 * EURE,
        fee,
        GNOSIS_WALLET,
        "gnosis-treasury",
    )
    assert issued.intent_hash and issued.intent_hash == requested.intent_hash
    assert pending.tx_hash == lm.verifier.ft_withdrawals[-1].tx_hash
    # what went to the relay is the documented POA withdrawal intent, fee included
    published = [
        json.loads(s["text"]) for s in lm.relay.seen if s["kind"] == "rpc_in" and "publish_intents" in s["text"]
    ]
    [signed] = published[-1]["params"][0]["signed_datas"]
    [intent] = json.loads(signed["payload"]["message"])["intents"]
    token = EURE_ID.removeprefix("nep141:")
    assert (intent["intent"], intent["token"], intent["receiver_id"], intent["amount"], intent["memo"]) == (
        "ft_withdraw",
        token,
        token,
        str(2 * EURE + fee),
        "WITHDRAW_TO:" + GNOSIS_WALLET,
    )
    assert lm.verifier.balance(lm.account, EURE_ID) == 10 * EURE - 2 * EURE - fee
    _, state = await lm.call("GET", "/state")
    assert state["pending_withdrawals"] == {EURE_ID: str(2 * EURE + fee)}

    lm.poa.advance(60)
    events = await _events(t, action, "completed")
    assert events[-1].payload.transfer_tx_hash == lm.poa.withdrawals[-1].transfer_tx_hash
    assert [e.payload.status for e in events] == ["requested", "issued", "pending", "completed"]
    assert await _in_postgres(pool, action, ["requested", "issued", "pending", "completed"]) == [
        "requested",
        "issued",
        "pending",
        "completed",
    ]
    _, state = await lm.call("GET", "/state")
    assert state["pending_withdrawals"] == {} and state["withdrawals"]["recent"][0]["status"] == "completed"


async def test_a_withdrawal_the_verifier_refuses_fails_visibly_and_moves_nothing(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    t = await tail(TOPIC)
    status, err = await lm.call(
        "POST", "/withdrawals", {"asset_id": EURE_ID, "amount_units": "2", "address": GNOSIS_WALLET}
    )
    assert status == 502 and "insufficient balance or overflow" in err["error"]
    action = _id_of(err["error"])
    events = await _events(t, action, "requested", "failed")
    assert events[-1].payload.reason == "relay refused: insufficient balance or overflow"
    assert lm.verifier.ft_withdrawals == [] and lm.poa is not None and lm.poa.withdrawals == []
    assert await _in_postgres(pool, action, ["requested", "failed"]) == ["requested", "failed"]


async def test_an_unknown_publish_outcome_is_retried_with_the_same_signed_intent_after_a_restart(
    harness: Harness, history: HistoryWriter, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    # only the start-up poll follows it
    harness.overrides.update(liquidity_poll_interval_s=3600, liquidity_stale_after_s=7200)
    await harness.start()
    assert harness.relay is not None
    harness.verifier.deposit(harness.account, EURE_ID, 5 * EURE)
    t = await tail(TOPIC)
    harness.relay.faults.set("rpc_http_500", count=1)  # the first publish gets no usable answer
    status, view = await harness.call(
        "POST", "/withdrawals", {"asset_id": EURE_ID, "amount_units": "1", "wallet_label": "gnosis-treasury"}
    )
    assert status == 200 and view["status"] == "requested"  # signed and in the ledger, outcome unknown
    action = view["liquidity_action_id"]
    assert harness.verifier.ft_withdrawals == []

    await harness.restart()  # the ledger row survives; the start-up poll resolves it
    events = await _events(t, action, "requested", "issued", "pending", "completed")
    assert [e.payload.status for e in events] == ["requested", "issued", "pending", "completed"]
    publishes = [
        json.loads(s["text"])["params"][0]["signed_datas"]
        for s in harness.relay.seen
        if s["kind"] == "rpc_in" and "publish_intents" in s["text"]
    ]
    assert len(publishes) == 2 and publishes[0] == publishes[1]  # the same nonce and signature, never re-signed
    assert len(harness.verifier.ft_withdrawals) == 1
    assert harness.verifier.balance(harness.account, EURE_ID) == 5 * EURE - EURE - 5 * 10**17
    assert await _in_postgres(pool, action, ["requested", "issued", "pending", "completed"]) == [
        "requested",
        "issued",
        "pending",
        "completed",
    ]


async def test_a_withdrawal_the_chain_cannot_decide_stays_open_and_blocks_another_until_confirmed(
    harness: Harness, pool: asyncpg.Pool
) -> None:
    """Every answer from the relay is lost, and the node no longer keeps the block at the
    deadline: whether the withdrawal executed cannot be told, so it is never marked failed, and a
    new withdrawal (which would send the money twice if the first went out) is refused until the
    operator confirms with a reason, which is audited."""
    harness.overrides.update(
        liquidity_withdraw_deadline_s=10,
        liquidity_withdraw_expiry_grace_s=0,
        near_rpc_budget_per_min=120,
        near_rpc_budget_burst=20,
    )
    harness.verifier.chain.keep_blocks = 2  # every block a final read names is already gone
    service = await harness.start()
    assert harness.relay is not None
    harness.verifier.deposit(harness.account, EURE_ID, 5 * EURE)
    harness.relay.faults.set("rpc_http_500", on=True)  # publish and status: no usable answer
    body = {"asset_id": EURE_ID, "amount_units": "1", "wallet_label": "gnosis-treasury", "operator": "erin"}
    status, view = await harness.call("POST", "/withdrawals", body)
    assert status == 200 and view["status"] == "requested"
    action = view["liquidity_action_id"]
    await eventually(lambda: action in service.undecided, timeout=40, what="the outcome undecided")
    status, state = await harness.call("GET", "/state")
    assert state["withdrawals"]["undecided"] == [action]
    assert next(w for w in state["withdrawals"]["recent"] if w["liquidity_action_id"] == action)["status"] != "failed"
    harness.relay.faults.set("rpc_http_500", on=False)
    status, err = await harness.call("POST", "/withdrawals", body)
    assert status == 409 and action in err["error"] and "twice" in err["error"]
    status, err = await harness.call("POST", "/withdrawals", {**body, "confirm_unknown": True})
    assert status == 422  # the evidence is required
    status, view2 = await harness.call(
        "POST", "/withdrawals", {**body, "confirm_unknown": True, "reason": "gnosis explorer: nothing arrived"}
    )
    assert status == 200 and view2["liquidity_action_id"] != action

    async def audited() -> Any:
        return await pool.fetchrow(  # this run's: the database outlives a test run on a local stack
            "SELECT * FROM control_actions WHERE service = 'liquidity-manager' "
            "AND action = 'withdrawal_despite_unknown' AND operator = 'erin' AND params::text LIKE $1",
            f"%{action}%",
        )

    row = await eventually(audited, what="the confirmation audited")
    assert row["reason"] == "gnosis explorer: nothing arrived" and action in str(row["params"])


async def test_frozen_withdrawals_are_refused_with_409_and_the_freeze_survives_a_restart(
    lm: Harness, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    assert lm.relay is not None
    lm.verifier.deposit(lm.account, EURE_ID, 10 * EURE)
    t = await tail(TOPIC)
    status, frozen = await lm.call("POST", "/freeze-withdrawals", {"operator": "frank", "reason": "incident 42"})
    assert status == 200 and frozen["changed"] is True and frozen["withdrawals_frozen"] is True
    freeze_id = frozen["liquidity_action_id"]
    [event] = await _events(t, freeze_id, "frozen")
    assert (event.payload.kind, event.payload.operator, event.payload.reason) == ("freeze", "frank", "incident 42")

    body = {"asset_id": EURE_ID, "amount_units": "1", "wallet_label": "gnosis-treasury", "operator": "erin"}
    status, err = await lm.call("POST", "/withdrawals", body)
    assert status == 409 and "withdrawals are frozen" in err["error"] and "incident 42" in err["error"]
    refused_id = _id_of(err["error"])
    await _events(t, refused_id, "refused")

    await lm.restart()  # the freeze latches across restarts
    _, state = await lm.call("GET", "/state")
    assert state["withdrawals_frozen"] is True and state["withdrawals"]["frozen_by"] == "frank"
    status, err = await lm.call("POST", "/withdrawals", body)
    assert status == 409
    assert not any("publish_intents" in s.get("text", "") for s in lm.relay.seen)  # nothing was ever sent
    assert lm.verifier.balance(lm.account, EURE_ID) == 10 * EURE

    status, unfrozen = await lm.call("POST", "/unfreeze-withdrawals", {"operator": "frank", "reason": "resolved"})
    assert status == 200 and unfrozen["changed"] is True
    unfreeze_id = unfrozen["liquidity_action_id"]
    await _events(t, unfreeze_id, "unfrozen")
    status, view = await lm.call("POST", "/withdrawals", body)
    assert status == 200 and view["status"] in ("issued", "pending", "completed")
    assert await _in_postgres(pool, freeze_id, ["frozen"]) == ["frozen"]
    assert await _in_postgres(pool, refused_id, ["refused"]) == ["refused"]
    assert await _in_postgres(pool, unfreeze_id, ["unfrozen"]) == ["unfrozen"]

    async def audited() -> list[str] | None:
        rows = await pool.fetch(
            "SELECT action FROM control_actions WHERE service = 'liquidity-manager'"
            " AND operator = 'frank' AND params->>'liquidity_action_id' = ANY($1::text[])",
            [freeze_id, unfreeze_id],
        )
        return sorted(r["action"] for r in rows) if len(rows) == 2 else None

    assert await eventually(audited, what="both audit rows") == ["freeze_withdrawals", "unfreeze_withdrawals"]


async def test_transitions_wait_in_the_outbox_while_kafka_is_away_and_none_is_lost(
    harness: Harness, history: HistoryWriter, tail: Callable[..., Awaitable[TopicTail]], pool: asyncpg.Pool
) -> None:
    harness.overrides["kafka_bootstrap"] = "127.0.0.1:1"  # nothing listens there
    t = await tail(TOPIC)
    lm = await harness.start()
    status, view = await harness.call("POST", "/funding", {"asset_id": EURE_ID, "amount": str(EURE), "tx_hash": _tx()})
    assert status == 200  # durable in PostgreSQL: the request does not depend on Kafka
    action = view["liquidity_action_id"]
    await eventually(lambda: lm.outbox is not None and lm.outbox.kafka_link.error, what="kafka failure noticed")
    status, health = await harness.call("GET", "/healthz")
    assert status == 503 and any(r.startswith("kafka_unavailable") for r in health["reasons"])
    _, state = await harness.call("GET", "/state")
    assert state["connected"]["kafka"] is False and state["outbox"]["backlog"] >= 2

    await harness.stop()
    del harness.overrides["kafka_bootstrap"]
    await harness.start()  # the backlog goes out, in order, with the event ids it was committed with
    events = await _events(t, action, "requested", "notified")
    assert [e.payload.status for e in events] == ["requested", "notified"]
    assert await _in_postgres(pool, action, ["requested", "notified"]) == ["requested", "notified"]


async def test_without_postgres_new_work_fails_visibly_and_comes_back(lm: Harness, stack: Stack) -> None:
    service = lm.service
    assert service is not None
    body = {"asset_id": EURE_ID, "amount": str(2 * EURE), "tx_hash": _tx(), "operator": "gina"}
    await asyncio.to_thread(stack.stop_postgres)
    try:
        status, err = await lm.call("POST", "/funding", body)
        assert status == 503 and "database unavailable" in err["error"]
        status, err = await lm.call("POST", "/freeze-withdrawals", {"operator": "gina"})
        assert status == 503 and "not changed" in err["error"]
        status, health = await lm.call("GET", "/healthz")
        assert status == 503 and any(r.startswith("database_unavailable") for r in health["reasons"])
        _, state = await lm.call("GET", "/state")
        assert state["connected"]["database"] is False and state["authoritative"] is False
        assert state["blocked_reason"].startswith("database unavailable")
        assert state["withdrawals_frozen"] is False
    finally:
        await asyncio.to_thread(stack.start_postgres)
    await eventually(lambda: service.db_error is None, what="database recovered")
    status, view = await lm.call("POST", "/funding", body)
    assert status == 200 and view["status"] in ("requested", "notified")
