"""POA bridge client against the POA bridge simulator (docs/poa-bridge.md): every method, both withdrawal_status
shapes, the error shapes, scripted deposits and withdrawals on a frozen clock, and the failures
that must surface as `PoaBridgeUnavailable`. No Kafka or PostgreSQL involved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemons.venues.poa_bridge import (
    PoaBridgeBadResponse,
    PoaBridgeClient,
    PoaBridgeRpcError,
    PoaBridgeUnavailable,
)
from simulators.base import SimServer
from simulators.poa_bridge import PoaBridgeSimulator, SimClock

ME = "quoteloop.near"
BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
EURE_BIG = 123_456_789_012_345_678_901_234  # > 2**64 base units: must survive JSON exactly


@dataclass
class Credits:
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, account_id: str, token_id: str, amount: int) -> None:
        self.calls.append((account_id, token_id, amount))
        self.event.set()


@dataclass
class Bridge:
    sim: PoaBridgeSimulator
    client: PoaBridgeClient
    credits: Credits
    url: str
    http: aiohttp.ClientSession

    async def sim_post(self, path: str, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        async with self.http.post(self.url + path, json=body) as resp:
            assert resp.status == expect, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    credits = Credits()
    sim = PoaBridgeSimulator(credits, clock=SimClock(frozen=True))
    url = await sim.start()
    async with aiohttp.ClientSession() as http:
        client = PoaBridgeClient(url + "/rpc", timeout=5.0, session=http)
        try:
            yield Bridge(sim, client, credits, url, http)
        finally:
            await client.close()
            await sim.stop()


# --- plain methods -------------------------------------------------------------------------------


async def test_supported_tokens_all_and_by_chain(bridge: Bridge) -> None:
    everything = await bridge.client.supported_tokens()
    assert {t.intents_token_id for t in everything.tokens} == {BTC, EURE}
    btc_only = await bridge.client.supported_tokens(["btc:mainnet"])
    [btc] = btc_only.tokens
    assert (btc.near_token_id, btc.decimals, btc.asset_name, btc.chain) == ("btc.omft.near", 8, "BTC", "btc:mainnet")
    assert (btc.min_deposit_amount, btc.min_withdrawal_amount, btc.withdrawal_fee) == (10_000, 700, 1_500)
    assert everything.by_intents_id(EURE) is not None and everything.by_intents_id(EURE).decimals == 18  # type: ignore[union-attr]
    assert bridge.sim.seen[-1]["params"] == [{"chains": ["btc:mainnet"]}]


async def test_deposit_address_is_stable_per_account_and_chain(bridge: Bridge) -> None:
    btc1 = await bridge.client.deposit_address(ME, "btc:mainnet")
    btc2 = await bridge.client.deposit_address(ME, "btc:mainnet")
    eure = await bridge.client.deposit_address(ME, "eth:100")
    other = await bridge.client.deposit_address("someone.near", "btc:mainnet")
    assert btc1 == btc2
    assert btc1.chain == "btc:mainnet" and btc1.address.startswith("bc1q")
    assert eure.chain == "eth:100" and eure.address.startswith("0x") and len(eure.address) == 42
    assert other.address != btc1.address
    # a fresh simulator (a restart) hands out the same address
    again = PoaBridgeSimulator(Credits())
    assert again.deposit_address_for(ME, "btc:mainnet") == btc1.address


async def test_unsupported_chain_is_a_string_error_raised_verbatim(bridge: Bridge) -> None:
    with pytest.raises(PoaBridgeRpcError) as exc:
        await bridge.client.deposit_address(ME, "eth:1")
    assert exc.value.message == "Unsupported chain: eth:1"
    assert exc.value.method == "deposit_address"
    # the wire shape: `error` is a bare string (docs/poa-bridge.md §1)
    body = {"jsonrpc": "2.0", "id": 7, "method": "deposit_address", "params": [{"account_id": ME, "chain": "eth:1"}]}
    async with bridge.http.post(bridge.url + "/", json=body) as resp:
        assert await resp.json() == {"jsonrpc": "2.0", "id": 7, "error": "Unsupported chain: eth:1"}


async def test_withdrawal_estimate(bridge: Bridge) -> None:
    estimate = await bridge.client.withdrawal_estimate("btc:mainnet", BTC, "bc1qdestination")
    assert estimate.withdrawal_fee == 1_500
    assert estimate.withdrawal_fee_decimals == 8
    assert estimate.user_address == "bc1qdestination"
    assert estimate.token["near_token_id"] == "btc.omft.near"
    # the registry's prefixed id goes out unprefixed, as the bridge expects
    assert bridge.sim.seen[-1]["params"] == [
        {"chain": "btc:mainnet", "token": "btc.omft.near", "address": "bc1qdestination"}
    ]
    with pytest.raises(PoaBridgeRpcError, match="Unsupported token"):
        await bridge.client.withdrawal_estimate("eth:100", "btc.omft.near", "0xabc")


# --- deposits -----------------------------------------------------------------------------------


async def test_deposit_pending_then_completed_credits_exactly_once(bridge: Bridge) -> None:
    scripted = await bridge.sim_post(
        "/_sim/deposit",
        {
            "account_id": ME,
            "chain": "btc:mainnet",
            "asset": BTC,
            "amount": "50000",
            "tx_hash": "btctx1",
            "outcome": "credit",
            "credit_after_s": 600,
        },
    )
    assert scripted["status"] == "PENDING"
    address = (await bridge.client.deposit_address(ME, "btc:mainnet")).address

    pending = await bridge.client.recent_deposits(ME, "btc:mainnet")
    [dep] = pending.deposits
    assert (dep.tx_hash, dep.status, dep.amount, dep.address, dep.decimals) == ("btctx1", "PENDING", 50_000, address, 8)
    assert dep.intents_token_id == BTC
    assert dep.created_at is not None and dep.created_at.tzinfo is not None
    assert pending.total == 1
    assert bridge.credits.calls == []

    await bridge.sim_post("/_sim/advance", {"seconds": 599})
    assert (await bridge.client.recent_deposits(ME, "btc:mainnet")).deposits[0].status == "PENDING"
    assert bridge.credits.calls == []

    await bridge.sim_post("/_sim/advance", {"seconds": 1})
    done = (await bridge.client.recent_deposits(ME, "btc:mainnet")).deposits[0]
    assert done.status == "COMPLETED"
    assert done.mint_tx_hash
    assert bridge.credits.calls == [(ME, BTC, 50_000)]

    # nothing credits twice: more time, more polls, a manual completion
    bridge.sim.advance(10_000)
    await bridge.client.recent_deposits(ME)
    await bridge.sim_post("/_sim/deposit/complete", {"tx_hash": "btctx1"})
    assert bridge.credits.calls == [(ME, BTC, 50_000)]


async def test_deposit_that_fails_is_not_credited_until_resolved(bridge: Bridge) -> None:
    bridge.sim.add_deposit(ME, "eth:100", EURE, EURE_BIG, tx_hash="0xfail", outcome="fail", credit_after_s=30)
    bridge.sim.advance(30)
    [dep] = (await bridge.client.recent_deposits(ME, "eth:100")).deposits
    assert dep.status == "FAILED"
    assert bridge.credits.calls == []
    # "FAILED … handled manually and eventually updated to COMPLETED" (docs/poa-bridge.md §4)
    await bridge.sim_post("/_sim/deposit/complete", {"tx_hash": "0xfail"})
    [dep] = (await bridge.client.recent_deposits(ME, "eth:100")).deposits
    assert dep.status == "COMPLETED"
    assert bridge.credits.calls == [(ME, EURE, EURE_BIG)]


async def test_deposit_never_credited_stays_pending(bridge: Bridge) -> None:
    bridge.sim.add_deposit(ME, "btc:mainnet", BTC, 70_000, tx_hash="stuck", outcome="never_credit")
    bridge.sim.advance(365 * 24 * 3600)
    [dep] = (await bridge.client.recent_deposits(ME, "btc:mainnet", status="PENDING")).deposits
    assert dep.tx_hash == "stuck"
    assert bridge.credits.calls == []


async def test_deposit_below_the_minimum_is_never_swept(bridge: Bridge) -> None:
    scripted = await bridge.sim_post(
        "/_sim/deposit",
        {
            "account": ME,
            "chain": "btc:mainnet",
            "asset": "btc.omft.near",
            "amount": 5_000,
            "tx_hash": "dust",
        },
    )
    assert scripted["below_min_deposit"] is True
    bridge.sim.advance(3600)
    assert (await bridge.client.recent_deposits(ME)).deposits[0].status == "PENDING"
    assert bridge.credits.calls == []


async def test_notify_deposit_is_recorded_and_speeds_nothing(bridge: Bridge) -> None:
    address = (await bridge.client.deposit_address(ME, "btc:mainnet")).address
    bridge.sim.add_deposit(ME, "btc:mainnet", BTC, 20_000, tx_hash="btctx2", credit_after_s=600)
    await bridge.client.notify_deposit(address, "btctx2", chain="btc:mainnet")
    assert bridge.sim.notifications == [{"deposit_address": address, "tx_hash": "btctx2", "chain": "btc:mainnet"}]
    async with bridge.http.get(bridge.url + "/_sim/seen") as resp:
        state = await resp.json()
    assert any(s["kind"] == "notify_deposit" and s["tx_hash"] == "btctx2" for s in state["seen"])
    assert state["notifications"] == bridge.sim.notifications
    assert (await bridge.client.recent_deposits(ME)).deposits[0].status == "PENDING"
    assert bridge.credits.calls == []
    with pytest.raises(PoaBridgeRpcError, match="deposit_address is required"):
        await bridge.client.notify_deposit("", "btctx2")


async def test_recent_deposits_filters_pages_and_reads_both_amount_shapes(bridge: Bridge) -> None:
    bridge.sim.add_deposit(ME, "btc:mainnet", BTC, 11_000, tx_hash="a")
    bridge.sim.add_deposit(ME, "btc:mainnet", BTC, 12_000, tx_hash="b", outcome="never_credit")
    bridge.sim.add_deposit(ME, "eth:100", EURE, EURE_BIG, tx_hash="0xc", sender="0xsender")
    bridge.sim.add_deposit("other.near", "btc:mainnet", BTC, 13_000, tx_hash="d")

    everything = await bridge.client.recent_deposits(ME)
    assert [d.tx_hash for d in everything.deposits] == ["0xc", "b", "a"]  # newest first
    assert everything.deposits[0].amount == EURE_BIG
    assert everything.deposits[0].sender == "0xsender"
    assert [d.tx_hash for d in (await bridge.client.recent_deposits(ME, "btc:mainnet")).deposits] == ["b", "a"]
    assert [d.tx_hash for d in (await bridge.client.recent_deposits(ME, status="COMPLETED")).deposits] == ["0xc", "a"]
    page = await bridge.client.recent_deposits(ME, limit=1, offset=1)
    assert ([d.tx_hash for d in page.deposits], page.total, page.limit, page.offset) == (["b"], 3, 1, 1)
    assert bridge.sim.seen[-1]["params"] == [{"account_id": ME, "limit": 1, "offset": 1}]

    # the old docs' string amounts parse to the same ints
    await bridge.sim_post("/_sim/fault", {"name": "amounts_as_strings", "on": True})
    assert [d.amount for d in (await bridge.client.recent_deposits(ME)).deposits] == [EURE_BIG, 12_000, 11_000]


async def test_scripting_an_impossible_deposit_is_refused(bridge: Bridge) -> None:
    out = await bridge.sim_post(
        "/_sim/deposit", {"account_id": ME, "chain": "eth:1", "asset": BTC, "amount": "1"}, expect=400
    )
    assert "no token" in out["error"]
    out = await bridge.sim_post(
        "/_sim/deposit", {"account_id": ME, "chain": "btc:mainnet", "asset": BTC, "amount": 1.5}, expect=400
    )
    assert "float" in out["error"]


async def test_a_running_clock_credits_without_anyone_polling() -> None:
    credits = Credits()
    sim = PoaBridgeSimulator(credits)  # real time, as in the local stack
    await sim.start()
    try:
        sim.add_deposit(ME, "btc:mainnet", BTC, 20_000, tx_hash="rt", credit_after_s=0.05)
        await asyncio.wait_for(credits.event.wait(), timeout=10)
        assert credits.calls == [(ME, BTC, 20_000)]
        assert sim.deposits[0].status == "COMPLETED"
    finally:
        await sim.stop()


# --- withdrawals -------------------------------------------------------------------------------


async def test_withdrawal_status_sdk_shape_pending_then_completed(bridge: Bridge) -> None:
    await bridge.sim_post(
        "/_sim/withdrawal",
        {
            "withdrawal_hash": "8yFNEk7GmRcM3NMJihwCKXt8ZANLpL2koVFWWH1MEEj",
            "account_id": ME,
            "chain": "btc:mainnet",
            "asset": BTC,
            "amount": "1001500",
            "address": "bc1qdest",
            "complete_after_s": 120,
        },
    )
    status = await bridge.client.withdrawal_status("8yFNEk7GmRcM3NMJihwCKXt8ZANLpL2koVFWWH1MEEj")
    assert status.shape == "withdrawals_list"
    first = status.first
    assert first is not None and first.status == "PENDING" and first.data is not None
    assert first.data.transfer_tx_hash is None
    assert first.data.amount == 1_001_500
    assert first.data.created_at is not None

    bridge.sim.advance(120)
    status = await bridge.client.withdrawal_status("8yFNEk7GmRcM3NMJihwCKXt8ZANLpL2koVFWWH1MEEj")
    done = status.for_token(BTC)
    assert done is not None and done.status == "COMPLETED"
    assert done.data is not None and done.data.transfer_tx_hash
    assert done.data.address == "bc1qdest"
    assert status.for_token(EURE) is None


async def test_withdrawal_status_docs_shape(bridge: Bridge) -> None:
    await bridge.sim_post("/_sim/fault", {"name": "withdrawal_status_shape", "value": "status_data"})
    bridge.sim.add_withdrawal("burn1", ME, "eth:100", EURE, EURE_BIG, "0xdest", complete_after_s=5)
    bridge.sim.advance(5)
    status = await bridge.client.withdrawal_status("burn1")
    assert status.shape == "status_data"
    [w] = status.withdrawals
    assert w.status == "COMPLETED"
    assert w.data is not None
    assert w.data.amount == EURE_BIG
    assert w.data.withdrawal_fee == 5 * 10**17
    assert w.data.withdraw_amount == EURE_BIG - 5 * 10**17
    assert w.data.intents_token_id == EURE
    assert w.data.transfer_tx_hash and w.data.transfer_tx_hash.startswith("0x")


async def test_withdrawal_not_found_is_transient_then_failed(bridge: Bridge) -> None:
    bridge.sim.add_withdrawal(
        "burn2", ME, "btc:mainnet", BTC, 2_000, "bc1q", outcome="fail", visible_after_s=10, complete_after_s=50
    )
    with pytest.raises(PoaBridgeRpcError) as exc:
        await bridge.client.withdrawal_status("burn2")
    assert exc.value.withdrawals_not_found and exc.value.message == "Withdrawals not found"
    bridge.sim.advance(10)
    assert (await bridge.client.withdrawal_status("burn2")).withdrawals[0].status == "PENDING"
    bridge.sim.advance(50)
    assert (await bridge.client.withdrawal_status("burn2")).withdrawals[0].status == "FAILED"


async def test_recent_withdrawals(bridge: Bridge) -> None:
    bridge.sim.add_withdrawal("w1", ME, "btc:mainnet", BTC, 2_000, "bc1q", outcome="pending")
    bridge.sim.add_withdrawal("w2", ME, "eth:100", EURE, 10**18, "0xd")
    bridge.sim.add_withdrawal("w3", "other.near", "eth:100", EURE, 10**18, "0xd")
    recent = await bridge.client.recent_withdrawals(ME)
    assert [(w.status, w.data.tx_hash if w.data else None) for w in recent.withdrawals] == [
        ("COMPLETED", "w2"),
        ("PENDING", "w1"),
    ]
    assert len((await bridge.client.recent_withdrawals(ME, "btc:mainnet")).withdrawals) == 1


# --- faults --------------------------------------------------------------------------------------


async def test_rpc_error_fault_keeps_the_message(bridge: Bridge) -> None:
    await bridge.sim_post("/_sim/fault", {"name": "rpc_error", "count": 1})
    with pytest.raises(PoaBridgeRpcError, match=r"^Internal error$"):
        await bridge.client.supported_tokens()
    await bridge.sim_post("/_sim/fault", {"name": "rpc_error", "value": "Too many requests, slow down"})
    with pytest.raises(PoaBridgeRpcError) as exc:
        await bridge.client.recent_deposits(ME)
    assert exc.value.message == "Too many requests, slow down"


async def test_http_500_is_unavailable(bridge: Bridge) -> None:
    await bridge.sim_post("/_sim/fault", {"name": "http_500", "count": 1})
    with pytest.raises(PoaBridgeUnavailable) as exc:
        await bridge.client.deposit_address(ME, "btc:mainnet")
    assert exc.value.http_status == 500
    assert not isinstance(exc.value, PoaBridgeRpcError)
    assert (await bridge.client.deposit_address(ME, "btc:mainnet")).address  # one-shot fault


async def test_timeout_is_unavailable(bridge: Bridge) -> None:
    await bridge.sim_post("/_sim/fault", {"name": "timeout", "count": 1})
    impatient = PoaBridgeClient(bridge.url + "/rpc", timeout=0.2)  # owns its session
    async with impatient:
        with pytest.raises(PoaBridgeUnavailable, match="timed out"):
            await impatient.withdrawal_status("anything")
        with pytest.raises(PoaBridgeRpcError, match="Withdrawals not found"):
            await impatient.withdrawal_status("anything")


async def test_connection_refused_is_unavailable() -> None:
    sim = PoaBridgeSimulator(Credits())
    url = await sim.start()
    await sim.stop()
    async with PoaBridgeClient(url + "/rpc", timeout=2.0) as client:
        with pytest.raises(PoaBridgeUnavailable):
            await client.supported_tokens()


async def test_reset_clears_scripted_state(bridge: Bridge) -> None:
    bridge.sim.add_deposit(ME, "btc:mainnet", BTC, 20_000, tx_hash="x", outcome="never_credit")
    await bridge.sim_post("/_sim/reset", {})
    assert (await bridge.client.recent_deposits(ME)).deposits == []


# --- responses the simulator does not send, but the real bridge might (docs/poa-bridge.md §1, §6) ---


class Canned(SimServer):
    """Answers every POST with one fixed (status, body)."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.body = ""

    def venue_routes(self, app: web.Application) -> None:
        async def answer(_r: web.Request) -> web.Response:
            return web.Response(status=self.status, text=self.body, content_type="application/json")

        app.router.add_post("/rpc", answer)


@pytest.fixture
async def canned() -> AsyncIterator[tuple[Canned, PoaBridgeClient]]:
    server = Canned()
    url = await server.start()
    async with PoaBridgeClient(url + "/rpc", timeout=2.0) as client:
        yield server, client
    await server.stop()


DEPOSIT = (
    '{"tx_hash":null,"chain":"eth:100","defuse_asset_identifier":"eth:100:0x42","near_token_id":"x.near",'
    '"decimals":18,"amount":%s,"account_id":"a.near","address":"0x1","status":"%s",'
    '"created_at":"2026-07-01T10:00:00"}'
)


async def test_error_object_and_4xx_are_rpc_errors(canned: tuple[Canned, PoaBridgeClient]) -> None:
    server, client = canned
    server.body = '{"jsonrpc":"2.0","id":"1","error":{"code":-32602,"message":"Invalid params","data":"chain"}}'
    with pytest.raises(PoaBridgeRpcError) as exc:
        await client.deposit_address(ME, "x")
    assert (exc.value.message, exc.value.code, exc.value.data) == ("Invalid params", -32602, "chain")
    server.status, server.body = 400, '{"jsonrpc":"2.0","id":"1","error":"Bad chain"}'
    with pytest.raises(PoaBridgeRpcError, match=r"^Bad chain$"):
        await client.deposit_address(ME, "x")


async def test_non_json_gateway_error_is_unavailable(canned: tuple[Canned, PoaBridgeClient]) -> None:
    server, client = canned
    server.status, server.body = 429, "<html>slow down</html>"
    with pytest.raises(PoaBridgeUnavailable) as exc:
        await client.supported_tokens()
    assert exc.value.http_status == 429


async def test_amount_numbers_are_read_exactly(canned: tuple[Canned, PoaBridgeClient]) -> None:
    server, client = canned
    server.body = '{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (
        DEPOSIT % ("1.23456789012345678901234E+23", "CREDITED")
    )
    [dep] = (await client.recent_deposits("a.near")).deposits
    # the digits as written; through float this would be 123456789012345685803008
    assert dep.amount == EURE_BIG
    assert dep.status == "CREDITED"
    assert dep.tx_hash == ""
    assert dep.created_at is not None and dep.created_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (DEPOSIT % ("1.5", "PENDING")), "amount"),
        # beyond u128, as a number, an exponent or a string: refused before any int is built
        ('{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (DEPOSIT % (2**128, "PENDING")), "amount"),
        ('{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (DEPOSIT % ("1E+999999", "PENDING")), "amount"),
        ('{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (DEPOSIT % ('"-1"', "PENDING")), "amount"),
        ('{"jsonrpc":"2.0","id":"1","result":{"deposits":[%s]}}' % (DEPOSIT % ("1", "SWEEPING")), "status"),
        ('{"jsonrpc":"2.0","id":"1"}', "neither result nor error"),
        ("not json", "not JSON"),
    ],
)
async def test_unparseable_answers_are_bad_responses(
    canned: tuple[Canned, PoaBridgeClient], body: str, what: str
) -> None:
    server, client = canned
    server.body = body
    with pytest.raises(PoaBridgeBadResponse, match=what):
        await client.recent_deposits("a.near")


async def test_withdrawal_status_of_neither_shape_is_a_bad_response(canned: tuple[Canned, PoaBridgeClient]) -> None:
    server, client = canned
    server.body = '{"jsonrpc":"2.0","id":"1","result":{"something":"else"}}'
    with pytest.raises(PoaBridgeBadResponse, match="neither documented shape"):
        await client.withdrawal_status("h")
