"""The NEAR RPC client against the simulated node: every view, the finality / block_id it sends,
both contract-error shapes, node refusals, and the venue-down cases (HTTP 500, timeout, refused
connection, garbage). No PostgreSQL or Kafka needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemons.venues.near_intents.near_rpc import (
    NearContractError,
    NearMethodNotFound,
    NearRpcBadResponse,
    NearRpcClient,
    NearRpcRequestError,
    NearRpcUnavailable,
    NearRpcUnknownAccount,
)
from daemons.venues.near_intents.nep413 import (
    SignerKey,
    b64_nonce,
    intents_message,
    sign_intent,
    versioned_nonce,
)
from simulators.near_rpc import NearRpcSimulator
from simulators.verifier import VerifierState

BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
BIG = 123_456_789 * 10**18 + 7  # beyond 2^64: must survive as an exact u128


@pytest.fixture
async def state() -> VerifierState:
    s = VerifierState(fee_pips=1, salt_hex="252812b3")
    s.deposit("solver.near", EURE, BIG)
    s.deposit("solver.near", BTC, 42)
    return s


@pytest.fixture
async def sim(state: VerifierState) -> AsyncIterator[NearRpcSimulator]:
    server = NearRpcSimulator(state)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(sim: NearRpcSimulator) -> AsyncIterator[NearRpcClient]:
    async with NearRpcClient(sim.base_url, timeout_s=5.0) as c:
        yield c


def queries(sim: NearRpcSimulator) -> list[dict[str, Any]]:
    return [s for s in sim.seen if s["kind"] == "rpc"]


# --- views ---------------------------------------------------------------------------------------------


async def test_balances(client: NearRpcClient, sim: NearRpcSimulator) -> None:
    assert await client.mt_batch_balance_of("solver.near", [EURE, BTC, "nep141:none.near"]) == [BIG, 42, 0]
    assert await client.mt_balance_of("solver.near", EURE) == BIG
    sent = queries(sim)[0]
    assert sent["method"] == "query" and sent["account_id"] == "intents.near"
    assert sent["method_name"] == "mt_batch_balance_of"
    assert sent["args"] == {"account_id": "solver.near", "token_ids": [EURE, BTC, "nep141:none.near"]}


async def test_public_keys(client: NearRpcClient, state: VerifierState) -> None:
    key = SignerKey.generate()
    assert await client.has_public_key("solver.near", key.public_key) is False
    assert await client.has_public_key(key.implicit_account_id, key.public_key) is True  # implicit account
    assert await client.public_keys_of("solver.near") == []
    state.add_public_key("solver.near", key.public_key)
    assert await client.has_public_key("solver.near", key.public_key) is True
    assert await client.public_keys_of("solver.near") == [key.public_key]


async def test_salt_and_fee(client: NearRpcClient, state: VerifierState) -> None:
    assert await client.current_salt() == "252812b3"
    new = state.rotate_salt()
    assert await client.current_salt() == new
    assert await client.is_valid_salt("252812b3") is True
    assert await client.is_valid_salt("00000000") is False
    assert await client.fee() == 1
    state.set_fee(100)
    assert await client.fee() == 100


async def test_is_nonce_used(client: NearRpcClient, state: VerifierState) -> None:
    key = SignerKey.generate()
    now = datetime.now(timezone.utc)
    deadline = now + timedelta(seconds=60)
    nonce = versioned_nonce("252812b3", deadline)
    assert await client.is_nonce_used(key.implicit_account_id, b64_nonce(nonce)) is False
    signed = sign_intent(key, intents_message(key.implicit_account_id, deadline, []), nonce)
    state.burn_nonces([signed.signed_data], now, on_chain=True)
    assert await client.is_nonce_used(key.implicit_account_id, b64_nonce(nonce)) is True


async def test_query_returns_value_and_block(client: NearRpcClient) -> None:
    first = await client.query("current_salt", {})
    second = await client.query("fee")
    assert first.value == "252812b3" and second.value == 1
    assert second.block_height > first.block_height and first.block_hash and first.logs == []
    assert client.last_block_height == second.block_height


# --- what is sent ----------------------------------------------------------------------------------------


async def test_finality_default_setting_override_and_block_id(sim: NearRpcSimulator) -> None:
    async with NearRpcClient(sim.base_url) as default_client:
        await default_client.fee()
    async with NearRpcClient(sim.base_url, finality="optimistic") as c:
        await c.fee()
        await c.query("fee", finality="near-final")
        r = await c.query("fee", block_id=await _height(c))
        await c.mt_batch_balance_of("solver.near", [BTC], block_id=r.block_height)
    sent = queries(sim)
    assert [s["finality"] for s in sent[:3]] == ["final", "optimistic", "near-final"]
    assert all(s["block_id"] is None for s in sent[:3])
    assert sent[-1]["finality"] is None and sent[-1]["block_id"] == r.block_height
    assert r.block_height == sent[-2]["block_id"]


async def _height(c: NearRpcClient) -> int:
    return (await c.query("fee")).block_height


async def test_contract_id_is_configurable(state: VerifierState) -> None:
    other = VerifierState(contract_id="defuse.test.near", salt_hex="0a0b0c0d")
    server = NearRpcSimulator(other)
    await server.start()
    try:
        async with NearRpcClient(server.base_url, "defuse.test.near") as c:
            assert await c.current_salt() == "0a0b0c0d"
        assert queries(server)[0]["account_id"] == "defuse.test.near"
    finally:
        await server.stop()


# --- the venue says no ---------------------------------------------------------------------------------------


async def test_unknown_account(sim: NearRpcSimulator) -> None:
    async with NearRpcClient(sim.base_url, "nobody.near") as c:
        with pytest.raises(NearRpcUnknownAccount) as info:
            await c.fee()
    assert info.value.message == "account nobody.near does not exist while viewing"
    assert info.value.cause == "UNKNOWN_ACCOUNT" and info.value.name == "HANDLER_ERROR"
    assert isinstance(info.value, NearRpcRequestError) and not isinstance(info.value, NearRpcUnavailable)


@pytest.mark.parametrize("form", ["result", "error"])
async def test_unknown_method_in_both_shapes(client: NearRpcClient, sim: NearRpcSimulator, form: str) -> None:
    sim.faults.set("panic_form", value=form)
    with pytest.raises(NearMethodNotFound) as info:
        await client.query("no_such_view", {})
    assert info.value.message == "wasm execution failed with error: MethodResolveError(MethodNotFound)"
    assert info.value.block_height is not None


@pytest.mark.parametrize("form", ["result", "error"])
async def test_contract_panic_in_both_shapes(client: NearRpcClient, sim: NearRpcSimulator, form: str) -> None:
    sim.faults.set("panic_form", value=form)
    with pytest.raises(NearContractError) as info:
        await client.is_nonce_used("solver.near", "not base64!")
    assert not isinstance(info.value, NearMethodNotFound)
    assert info.value.panic_msg == "JSON: nonce is not standard base64"
    assert info.value.message == (
        'wasm execution failed with error: HostError(GuestPanic { panic_msg: "JSON: nonce is not standard base64" })'
    )
    with pytest.raises(NearContractError) as info:
        await client.query("has_public_key", {"account_id": 5})
    assert info.value.panic_msg == "Failed to deserialize input from JSON."


async def test_rpc_error_fault_through_the_control_route(client: NearRpcClient, sim: NearRpcSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sim.base_url}/_sim/fault", json={"name": "rpc_error", "count": 1})
    with pytest.raises(NearRpcRequestError) as info:
        await client.fee()
    assert info.value.cause == "UNKNOWN_BLOCK" and info.value.message.startswith("DB Not Found Error: BLOCK HEIGHT:")
    assert await client.fee() == 1  # one-shot


async def test_rpc_error_fault_with_a_given_error(client: NearRpcClient, sim: NearRpcSimulator) -> None:
    error = {"name": "HANDLER_ERROR", "cause": {"name": "NO_SYNCED_BLOCKS", "info": {}}, "code": -32000,
             "message": "Server error", "data": "There are no fully synchronized blocks on the node yet"}
    sim.faults.set("rpc_error", on=True, value=error)
    with pytest.raises(NearRpcRequestError) as info:
        await client.current_salt()
    assert info.value.message == "There are no fully synchronized blocks on the node yet"
    assert info.value.error == error and info.value.code == -32000


async def test_request_validation_error_is_a_refusal(client: NearRpcClient) -> None:
    with pytest.raises(NearRpcRequestError) as info:
        await client.query("fee", finality="soon")  # type: ignore[arg-type]
    assert info.value.name == "REQUEST_VALIDATION_ERROR"


# --- the venue is down ------------------------------------------------------------------------------------------


async def test_http_500(client: NearRpcClient, sim: NearRpcSimulator) -> None:
    sim.faults.set("http_500", count=1)
    with pytest.raises(NearRpcUnavailable) as info:
        await client.fee()
    assert info.value.status == 500 and not isinstance(info.value, NearRpcRequestError)
    assert await client.fee() == 1


async def test_timeout(sim: NearRpcSimulator) -> None:
    sim.faults.set("timeout", count=1)
    async with NearRpcClient(sim.base_url, timeout_s=0.2) as c:
        with pytest.raises(NearRpcUnavailable, match="timed out"):
            await c.current_salt()
        assert await c.current_salt() == "252812b3"


async def test_connection_refused() -> None:
    gone = NearRpcSimulator(VerifierState())
    url = await gone.start()
    await gone.stop()
    async with NearRpcClient(url, timeout_s=2.0) as c:
        with pytest.raises(NearRpcUnavailable, match="unreachable"):
            await c.fee()


@pytest.mark.parametrize(
    "body",
    [
        "<html>gateway</html>",
        '{"jsonrpc":"2.0","id":"1","result":{"result":"nope","block_height":1,"block_hash":"x"}}',
        '{"jsonrpc":"2.0","id":"1","result":{"result":[123,34],"block_height":1,"block_hash":"x","logs":[]}}',
        '{"jsonrpc":"2.0","id":"1","result":{"result":[34,120,34],"block_height":1,"block_hash":"x","logs":[]}}',
    ],
    ids=["html", "not-bytes", "not-json", "wrong-type"],
)
async def test_garbage_is_unavailable(body: str) -> None:
    async def handler(_r: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            c = NearRpcClient(f"http://127.0.0.1:{port}", session=session)
            with pytest.raises(NearRpcBadResponse):
                await c.fee()
            await c.close()  # a caller's session is left open
            assert not session.closed
    finally:
        await runner.cleanup()
