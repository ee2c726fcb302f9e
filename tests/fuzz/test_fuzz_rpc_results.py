"""Fuzz the NEAR RPC and POA bridge result decoding over real HTTP: a local aiohttp server
answers each call with the drawn body (and status), and the real client must raise only its
documented typed errors (`NearRpcError`, `PoaBridgeError`) — never anything else. Valid results
round-trip to the typed values."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.venues.near_intents.near_rpc import NearRpcClient, NearRpcError
from daemons.venues.poa_bridge import PoaBridgeClient, PoaBridgeError
from tests.fuzz.strategies import GARBAGE_TEXT, JSON, dumps, mutated


@dataclass
class Venue:
    """One loop, one HTTP server and both clients, shared by every example of the module."""

    loop: asyncio.AbstractEventLoop
    near: NearRpcClient
    poa: PoaBridgeClient
    body: str = "{}"
    status: int = 200

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def venue() -> Iterator[Venue]:
    loop = asyncio.new_event_loop()
    holder: dict[str, Venue] = {}

    async def answer(_request: web.Request) -> web.Response:
        v = holder["v"]
        # a 429 that lets the next call through: the client module is shared by every example, and
        # a drawn 429 with no Retry-After would cool the endpoint for the next one (a tested
        # behaviour of its own, not what these examples are about)
        headers = {"Retry-After": "0"} if v.status == 429 else None
        return web.Response(text=v.body, status=v.status, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    v = Venue(loop, NearRpcClient(url, timeout_s=5), PoaBridgeClient(url, timeout=5))
    holder["v"] = v
    yield v
    loop.run_until_complete(v.near.close())
    loop.run_until_complete(v.poa.close())
    loop.run_until_complete(runner.cleanup())
    loop.close()


def view_result(value: Any) -> dict[str, Any]:
    raw = list(json.dumps(value).encode())
    return {
        "jsonrpc": "2.0",
        "id": "1",
        "result": {"result": raw, "block_height": 100, "block_hash": "abc", "logs": []},
    }


NEAR_CALLS = {
    "mt_batch_balance_of": lambda c: c.mt_batch_balance_of("a.near", ["t1", "t2"]),
    "mt_balance_of": lambda c: c.mt_balance_of("a.near", "t1"),
    "has_public_key": lambda c: c.has_public_key("a.near", "ed25519:x"),
    "public_keys_of": lambda c: c.public_keys_of("a.near"),
    "is_nonce_used": lambda c: c.is_nonce_used("a.near", base64.b64encode(b"n" * 32).decode()),
    "current_salt": lambda c: c.current_salt(),
    "fee": lambda c: c.fee(),
}
POA_CALLS = {
    "supported_tokens": lambda c: c.supported_tokens(),
    "deposit_address": lambda c: c.deposit_address("a.near", "eth:100"),
    "recent_deposits": lambda c: c.recent_deposits("a.near", "eth:100"),
    "withdrawal_status": lambda c: c.withdrawal_status("hash"),
    "recent_withdrawals": lambda c: c.recent_withdrawals("a.near"),
    "withdrawal_estimate": lambda c: c.withdrawal_estimate("eth:100", "nep141:x.omft.near", "0xabc"),
    "notify_deposit": lambda c: c.notify_deposit("0xabc", "0xtx"),
}
STATUSES = st.sampled_from([200, 200, 200, 400, 404, 408, 429, 500, 503])


def call_near(venue: Venue, name: str) -> None:
    try:
        venue.run(NEAR_CALLS[name](venue.near))
    except NearRpcError:
        pass


def call_poa(venue: Venue, name: str) -> None:
    try:
        venue.run(POA_CALLS[name](venue.poa))
    except PoaBridgeError:
        pass


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(sorted(NEAR_CALLS)), STATUSES, st.one_of(GARBAGE_TEXT, JSON.map(dumps)))
def test_near_rpc_any_body_raises_only_typed_errors(venue: Venue, name: str, status: int, body: str) -> None:
    venue.body, venue.status = body, status
    call_near(venue, name)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(sorted(NEAR_CALLS)))
def test_near_rpc_mutated_view_results_raise_only_typed_errors(venue: Venue, data: st.DataObject, name: str) -> None:
    inner = data.draw(st.one_of(JSON, st.just(["1", "2"]), st.just("252812b3"), st.just(True), st.just(100)))
    doc = view_result(inner)
    if data.draw(st.booleans()):
        doc = data.draw(mutated(doc))
    venue.body, venue.status = dumps(doc), 200
    call_near(venue, name)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.lists(st.integers(0, 2**128 - 1), min_size=2, max_size=2), st.integers(0, 1_000_000))
def test_near_rpc_valid_views_round_trip(venue: Venue, balances: list[int], fee: int) -> None:
    venue.body, venue.status = dumps(view_result([str(b) for b in balances])), 200
    assert venue.run(venue.near.mt_batch_balance_of("a.near", ["t1", "t2"])) == balances
    venue.body = dumps(view_result(fee))
    assert venue.run(venue.near.fee()) == fee


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.sampled_from(sorted(POA_CALLS)), STATUSES, st.one_of(GARBAGE_TEXT, JSON.map(dumps)))
def test_poa_bridge_any_body_raises_only_typed_errors(venue: Venue, name: str, status: int, body: str) -> None:
    venue.body, venue.status = body, status
    call_poa(venue, name)


POA_VALID: dict[str, Any] = {
    "supported_tokens": {
        "tokens": [
            {
                "defuse_asset_identifier": "eth:100:0x420c",
                "near_token_id": "x.omft.near",
                "decimals": 18,
                "asset_name": "EURe",
                "min_deposit_amount": "1",
                "min_withdrawal_amount": "2",
                "withdrawal_fee": "3",
            }
        ]
    },
    "deposit_address": {"address": "0xabc", "chain": "eth:100"},
    "recent_deposits": {
        "deposits": [
            {
                "tx_hash": "0x1",
                "chain": "eth:100",
                "defuse_asset_identifier": "eth:100:0x4",
                "decimals": 18,
                "amount": 5,
                "account_id": "a.near",
                "address": "0xabc",
                "status": "COMPLETED",
            }
        ]
    },
    "withdrawal_status": {
        "status": "COMPLETED",
        "data": {"tx_hash": "0x2", "transfer_tx_hash": "0x3", "chain": "eth:100", "amount": "7", "decimals": 18},
    },
    "recent_withdrawals": {"withdrawals": []},
    "withdrawal_estimate": {
        "token": {"defuse_asset_identifier": "eth:100:0x4", "decimals": 18},
        "withdrawalFee": "10",
        "withdrawalFeeDecimals": 18,
    },
    "notify_deposit": {},
}


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data(), st.sampled_from(sorted(POA_CALLS)))
def test_poa_bridge_mutated_results_raise_only_typed_errors(venue: Venue, data: st.DataObject, name: str) -> None:
    doc = {"jsonrpc": "2.0", "id": "1", "result": POA_VALID[name]}
    venue.body, venue.status = dumps(data.draw(mutated(doc, max_mutations=4))), 200
    call_poa(venue, name)
