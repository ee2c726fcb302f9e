"""The NEAR RPC client against the simulated node: every view, the finality / block_id it sends,
both contract-error shapes, node refusals, and the venue-down cases (HTTP 500, timeout, refused
connection, garbage); `block` and `tx` against nearcore-shaped answers and the simulator; and the
metering: failover along the endpoint list on HTTP 429 / 5xx / refused connection / timeout,
Retry-After honoured, the per-endpoint budget never exceeded, `NearRpcRateLimited` when no
endpoint may be asked, and `usage()`. Budget and cooldown run on an injected clock: no sleeps.
No PostgreSQL or Kafka needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemons.venues.near_intents.near_rpc import (
    BlockHeader,
    NearContractError,
    NearMethodNotFound,
    NearRpcBadResponse,
    NearRpcClient,
    NearRpcRateLimited,
    NearRpcRequestError,
    NearRpcUnavailable,
    NearRpcUnknownAccount,
    NearTxUnknown,
)
from daemons.venues.near_intents.nep413 import (
    SignerKey,
    b64_nonce,
    intents_message,
    sign_intent,
    versioned_nonce,
)
from simulators.chain import Chain
from simulators.near_rpc import NearRpcSimulator
from simulators.verifier import VerifierState

BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
BIG = 123_456_789 * 10**18 + 7  # beyond 2^64: must survive as an exact u128


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settle(state: VerifierState, blocks: int | None = None) -> None:
    """Let the simulated chain produce blocks until what executed so far is final."""
    chain = state.chain
    clock = chain.clock
    assert isinstance(clock, Clock)
    clock.advance(chain.block_time_s * (blocks if blocks is not None else chain.final_lag_blocks + 2))


@pytest.fixture
async def state() -> VerifierState:
    s = VerifierState(fee_pips=1, salt_hex="252812b3", chain=Chain(clock=Clock()))
    s.deposit("solver.near", EURE, BIG)
    s.deposit("solver.near", BTC, 42)
    settle(s)
    return s


@pytest.fixture
async def sim(state: VerifierState) -> AsyncIterator[NearRpcSimulator]:
    server = NearRpcSimulator(state, rate_limit_per_min=None)
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
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=60)
    nonce = versioned_nonce("252812b3", deadline)
    assert await client.is_nonce_used(key.implicit_account_id, b64_nonce(nonce)) is False
    signed = sign_intent(key, intents_message(key.implicit_account_id, deadline, []), nonce)
    state.burn_nonces([signed.signed_data], now, on_chain=True)
    settle(state)
    assert await client.is_nonce_used(key.implicit_account_id, b64_nonce(nonce)) is True


async def test_query_returns_value_and_block(client: NearRpcClient, state: VerifierState) -> None:
    first = await client.query("current_salt", {})
    settle(state, blocks=1)
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
    server = NearRpcSimulator(other, rate_limit_per_min=None)
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
    error = {
        "name": "HANDLER_ERROR",
        "cause": {"name": "NO_SYNCED_BLOCKS", "info": {}},
        "code": -32000,
        "message": "Server error",
        "data": "There are no fully synchronized blocks on the node yet",
    }
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


async def test_is_nonce_used_reads_at_the_finality_or_block_given(sim: NearRpcSimulator) -> None:
    async with NearRpcClient(sim.base_url) as c:
        nonce = b64_nonce(bytes(32))
        await c.is_nonce_used("solver.near", nonce)
        await c.is_nonce_used("solver.near", nonce, finality="optimistic")
        height = (await c.query("fee")).block_height
        await c.is_nonce_used("solver.near", nonce, block_id=height)
    sent = [q for q in queries(sim) if q["method_name"] == "is_nonce_used"]
    assert [(q["finality"], q["block_id"]) for q in sent] == [("final", None), ("optimistic", None), (None, height)]


# --- blocks and transactions ------------------------------------------------------------------------------
#
# Answers shaped as nearcore sends them (docs/near-rpc.md, "block" and "tx"): the header's
# `timestamp_nanosec` is a decimal string (`dec_format`), `timestamp` the same number as JSON.

WALL = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
Answer = Callable[[dict[str, Any]], Awaitable[web.StreamResponse] | web.StreamResponse]


class Node:
    """A local NEAR RPC endpoint: answers with whatever the test puts in `answer`, and records
    each request's body and the test clock's time when it arrived."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.answer: Answer = view(1)
        self.released = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def hits(self) -> int:
        return len(self.bodies)

    async def start(self) -> Node:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.times.append(self.clock())
        answer = self.answer(body)
        return await answer if isinstance(answer, Awaitable) else answer


def view(value: Any, height: int = 170_000_000) -> Answer:
    def answer(body: dict[str, Any]) -> web.StreamResponse:
        raw = list(json.dumps(value).encode())
        return web.json_response(
            {
                "jsonrpc": "2.0",
                "id": body.get("id"),
                "result": {"result": raw, "logs": [], "block_height": height, "block_hash": "BlockHash111"},
            }
        )

    return answer


def result(value: Any) -> Answer:
    return lambda body: web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": value})


def rpc_error(error: dict[str, Any], status: int = 200) -> Answer:
    return lambda body: web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "error": error}, status=status)


def http(status: int, headers: dict[str, str] | None = None, text: str = "") -> Answer:
    return lambda _body: web.Response(status=status, headers=headers, text=text or f"HTTP {status}")


def held(node: Node) -> Answer:
    async def answer(_body: dict[str, Any]) -> web.StreamResponse:
        await node.released.wait()
        return web.Response(status=500)

    return answer


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def a(clock: Clock) -> AsyncIterator[Node]:
    node = await Node(clock).start()
    yield node
    await node.stop()


@pytest.fixture
async def b(clock: Clock) -> AsyncIterator[Node]:
    node = await Node(clock).start()
    yield node
    await node.stop()


def client_of(clock: Clock, *nodes: Node | str, **kwargs: Any) -> NearRpcClient:
    urls = [n if isinstance(n, str) else n.url for n in nodes]
    kwargs.setdefault("timeout_s", 5.0)
    return NearRpcClient(urls, clock=clock, wall_clock=lambda: WALL, **kwargs)


HEADER = {  # abridged from a mainnet answer; the client reads height, hash, prev_hash, timestamp_nanosec
    "height": 170_000_123,
    "prev_height": 170_000_122,
    "epoch_id": "EpochId111",
    "hash": "5Hpj1PeCi32ZkNXgiD1DrW4wvW4Xtic74DJKfyJ9XL3a",
    "prev_hash": "9MzuZrRPW1BGpFnZJUJg6SzCrixPpJDfjsNeUobRXsLe",
    "timestamp": 1777636800123456789,
    "timestamp_nanosec": "1777636800123456789",
    "gas_price": "100000000",
    "total_supply": "1300000000000000000000000000000000",
    "last_final_block": "CbwEqMpPcu6KwqVpBM3Ry83k6M4H1FrJjES9kBXThcRd",
    "latest_protocol_version": 78,
}


async def test_block_parses_the_header_and_sends_finality_or_block_id(a: Node, clock: Clock) -> None:
    a.answer = result({"author": "pool.poolv1.near", "header": HEADER, "chunks": []})
    async with client_of(clock, a) as c:
        header = await c.block()
        await c.block(finality="optimistic")
        await c.block(block_id=170_000_000)
        await c.block(block_id=HEADER["prev_hash"])
    async with client_of(clock, a, finality="near-final") as c:
        await c.block()
    assert header == BlockHeader(
        height=170_000_123, hash=HEADER["hash"], timestamp_ns=1777636800123456789, prev_hash=HEADER["prev_hash"]
    )
    assert header.timestamp == datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert [b["method"] for b in a.bodies] == ["block"] * 5
    assert [b["params"] for b in a.bodies] == [
        {"finality": "final"},
        {"finality": "optimistic"},
        {"block_id": 170_000_000},
        {"block_id": HEADER["prev_hash"]},
        {"finality": "near-final"},
    ]


async def test_block_takes_the_legacy_timestamp_when_nanosec_is_absent(a: Node, clock: Clock) -> None:
    a.answer = result({"header": {k: v for k, v in HEADER.items() if k != "timestamp_nanosec"}})
    async with client_of(clock, a) as c:
        assert (await c.block()).timestamp_ns == 1777636800123456789


@pytest.mark.parametrize(
    "header",
    [
        None,
        {**HEADER, "height": "170000123"},
        {**HEADER, "height": True},
        {**HEADER, "hash": ""},
        {k: v for k, v in HEADER.items() if k != "prev_hash"},
        {**HEADER, "timestamp_nanosec": "12e9"},
        {**HEADER, "timestamp_nanosec": None, "timestamp": None},
        {**HEADER, "timestamp_nanosec": "9" * 40},
    ],
    ids=[
        "no-header",
        "height-str",
        "height-bool",
        "empty-hash",
        "no-prev",
        "nanos-not-digits",
        "no-time",
        "nanos-huge",
    ],
)
async def test_block_with_the_wrong_shape_is_a_bad_response(a: Node, clock: Clock, header: Any) -> None:
    a.answer = result({"header": header} if header is not None else {"chunks": []})
    async with client_of(clock, a) as c:
        with pytest.raises(NearRpcBadResponse):
            await c.block()


TX = "6zgh2u9DqHHiXzdy9ouTP7oGky2T4nugqzqt9wJZwNFm"
EVENT = 'EVENT_JSON:{"standard":"dip4","version":"0.3.0","event":"token_diff","data":[]}'


def tx_result(status: Any, final: str = "FINAL") -> dict[str, Any]:
    return {
        "final_execution_status": final,
        "status": status,
        "transaction": {
            "signer_id": "solver.near",
            "receiver_id": "intents.near",
            "nonce": 15,
            "hash": TX,
            "actions": [
                {
                    "FunctionCall": {
                        "method_name": "execute_intents",
                        "args": "e30=",
                        "gas": 300000000000000,
                        "deposit": "0",
                    }
                }
            ],
        },
        "transaction_outcome": {
            "proof": [],
            "block_hash": "TxBlock111",
            "id": TX,
            "outcome": {
                "logs": [],
                "receipt_ids": ["Receipt1"],
                "gas_burnt": 223182562500,
                "tokens_burnt": "22318256250000000000",
                "executor_id": "solver.near",
                "status": {"SuccessReceiptId": "Receipt1"},
            },
        },
        "receipts_outcome": [
            {
                "proof": [],
                "block_hash": "ReceiptBlock1",
                "id": "Receipt1",
                "outcome": {
                    "logs": [EVENT, "second line"],
                    "receipt_ids": ["Refund1"],
                    "gas_burnt": 1,
                    "tokens_burnt": "0",
                    "executor_id": "intents.near",
                    "status": status,
                },
            },
            {
                "proof": [],
                "block_hash": "ReceiptBlock2",
                "id": "Refund1",
                "outcome": {
                    "logs": [],
                    "receipt_ids": [],
                    "gas_burnt": 0,
                    "tokens_burnt": "0",
                    "executor_id": "solver.near",
                    "status": {"SuccessValue": ""},
                },
            },
        ],
    }


async def test_tx_status_success(a: Node, clock: Clock) -> None:
    a.answer = result(tx_result({"SuccessValue": "bnVsbA=="}))
    async with client_of(clock, a) as c:
        st = await c.tx_status(TX, "solver.near")
    assert a.bodies[0]["method"] == "tx"
    assert a.bodies[0]["params"] == {"tx_hash": TX, "sender_account_id": "solver.near", "wait_until": "FINAL"}
    assert (st.tx_hash, st.sender_account_id, st.final_execution_status, st.is_final) == (
        TX,
        "solver.near",
        "FINAL",
        True,
    )
    assert (st.outcome, st.success_value, st.failure) == ("success", "bnVsbA==", None)
    assert st.block_hash == "TxBlock111"
    assert st.receipt_block_hashes == ["ReceiptBlock1", "ReceiptBlock2"]
    assert st.logs == [EVENT, "second line"]
    assert st.receipts_outcome[0].executor_id == "intents.near"
    dumped = st.model_dump(mode="json")  # the derived fields travel with it (e.g. into /state)
    assert dumped["block_hash"] == "TxBlock111" and dumped["logs"] == [EVENT, "second line"]


async def test_tx_status_failure_and_pending(a: Node, clock: Clock) -> None:
    failure = {
        "ActionError": {"index": 0, "kind": {"FunctionCallError": {"ExecutionError": "Smart contract panicked: nope"}}}
    }
    a.answer = result(tx_result({"Failure": failure}, final="EXECUTED_OPTIMISTIC"))
    async with client_of(clock, a) as c:
        st = await c.tx_status(TX, "solver.near", wait_until="EXECUTED_OPTIMISTIC")
        assert (st.outcome, st.failure, st.success_value, st.is_final) == ("failure", failure, None, False)
        assert a.bodies[-1]["params"]["wait_until"] == "EXECUTED_OPTIMISTIC"
        a.answer = result({"final_execution_status": "NONE"})  # a weak wait_until: nothing executed yet
        st = await c.tx_status(TX, "solver.near", wait_until="NONE")
        assert (st.outcome, st.final_execution_status, st.block_hash, st.logs) == ("pending", "NONE", None, [])
        a.answer = result({**tx_result("Started", final="INCLUDED"), "receipts_outcome": []})
        assert (await c.tx_status(TX, "solver.near")).outcome == "pending"


async def test_unknown_transaction_is_typed_and_not_failed_over(a: Node, b: Node, clock: Clock) -> None:
    error = {
        "name": "HANDLER_ERROR",
        "cause": {"name": "UNKNOWN_TRANSACTION", "info": {"requested_transaction_hash": TX}},
        "code": -32000,
        "message": "Server error",
        "data": f"Transaction {TX} doesn't exist",
    }
    a.answer = rpc_error(error)
    async with client_of(clock, a, b) as c:
        with pytest.raises(NearTxUnknown) as info:
            await c.tx_status(TX, "solver.near")
    assert isinstance(info.value, NearRpcRequestError) and not isinstance(info.value, NearRpcUnavailable)
    assert info.value.cause == "UNKNOWN_TRANSACTION" and info.value.info == {"requested_transaction_hash": TX}
    assert info.value.message == f"Transaction {TX} doesn't exist"
    assert b.hits == 0


async def test_a_node_timing_out_on_tx_is_tried_elsewhere(a: Node, b: Node, clock: Clock) -> None:
    # nearcore answers TIMEOUT_ERROR with HTTP 408: the node gave up waiting, another may not
    a.answer = rpc_error(
        {
            "name": "HANDLER_ERROR",
            "cause": {"name": "TIMEOUT_ERROR", "info": {}},
            "code": -32000,
            "message": "Server error",
            "data": "Timeout",
        },
        status=408,
    )
    b.answer = result(tx_result({"SuccessValue": ""}))
    async with client_of(clock, a, b) as c:
        assert (await c.tx_status(TX, "solver.near")).outcome == "success"
        assert c.url == b.url


@pytest.mark.parametrize(
    "doc",
    [
        {**tx_result({"SuccessValue": ""}), "final_execution_status": 3},
        {**tx_result({"SuccessValue": 5})},
        {**tx_result({"Weird": 1})},
        {**tx_result({"SuccessValue": ""}), "receipts_outcome": {}},
        {**tx_result({"SuccessValue": ""}), "transaction_outcome": {"id": TX, "outcome": {"logs": []}}},
        {
            **tx_result({"SuccessValue": ""}),
            "receipts_outcome": [{"id": "r", "block_hash": "b", "outcome": {"logs": [1]}}],
        },
    ],
    ids=["status-not-str", "value-not-str", "unknown-status", "receipts-not-list", "no-block-hash", "log-not-str"],
)
async def test_tx_status_with_the_wrong_shape_is_a_bad_response(a: Node, clock: Clock, doc: dict[str, Any]) -> None:
    a.answer = result(doc)
    async with client_of(clock, a) as c:
        with pytest.raises(NearRpcBadResponse):
            await c.tx_status(TX, "solver.near")


async def test_block_and_tx_against_the_simulator(sim: NearRpcSimulator, state: VerifierState) -> None:
    async with NearRpcClient(sim.base_url) as c:
        final = await c.block()
        head = await c.block(finality="optimistic")
        assert (final.height, head.height) == (state.chain.final(), state.chain.head())
        assert await c.block(block_id=final.hash) == final
        assert (await c.block(block_id=final.prev_hash)).height == final.height - 1
        with pytest.raises(NearTxUnknown):
            await c.tx_status("UnknownTx111", "solver.near")
        tx = state.record_tx("SimTx111", "solver.near", "execute_intents", [EVENT])
        settle(state)
        st = await c.tx_status(tx.tx_hash, "solver.near")
    assert (st.outcome, st.final_execution_status, st.tx_hash) == ("success", "FINAL", "SimTx111")
    assert EVENT in st.logs and st.receipt_block_hashes


# --- endpoints, failover and 429 ------------------------------------------------------------------------------


async def test_endpoints_come_as_a_string_a_list_or_a_sequence(a: Node, b: Node, clock: Clock) -> None:
    for spec in (f"{a.url}, {b.url}", [a.url, b.url], (a.url, f"{b.url},{a.url}/")):
        async with NearRpcClient(spec, clock=clock) as c:  # type: ignore[arg-type]
            assert c.urls == (a.url, b.url) and c.url == a.url
            assert await c.fee() == 1
    assert (a.hits, b.hits) == (3, 0)  # in order of preference: the first that answers


async def test_429_fails_over_and_retry_after_is_honoured(a: Node, b: Node, clock: Clock) -> None:
    a.answer = http(429, {"Retry-After": "30"}, '{"error": "rate limited"}')
    async with client_of(clock, a, b) as c:
        assert await c.fee() == 1
        assert (a.hits, b.hits) == (1, 1) and c.url == b.url
        usage = c.usage()
        ua, ub = usage.endpoints
        assert usage.url == b.url and ub.in_use and not ua.in_use
        assert (ua.rate_limited_total, ua.failovers, ua.requests_total, ua.failures_total) == (1, 1, 1, 0)
        assert ua.cooling_until == WALL + timedelta(seconds=30) and ub.cooling_until is None

        a.answer = view(1)  # it would answer now, but it asked for 30 s
        clock.advance(29.9)
        assert await c.fee() == 1
        assert (a.hits, b.hits) == (1, 2)
        clock.advance(0.1)
        assert await c.fee() == 1
        assert (a.hits, b.hits) == (2, 2) and c.url == a.url
        assert c.usage().endpoints[0].cooling_until is None


async def test_429_without_retry_after_backs_off_1_2_4_and_resets(a: Node, b: Node, clock: Clock) -> None:
    a.answer = http(429)
    async with client_of(clock, a, b) as c:
        cooled = []
        for wait in (0.0, 1.0, 2.0):
            clock.advance(wait)
            await c.fee()
            cooled.append(c.usage().endpoints[0].cooling_until)
        assert cooled == [WALL + timedelta(seconds=s) for s in (1, 2, 4)]
        assert (a.hits, b.hits) == (3, 3)
        a.answer = view(1)
        clock.advance(4.0)
        await c.fee()  # a answers: the backoff starts over
        a.answer = http(429)
        await c.fee()
        assert c.usage().endpoints[0].cooling_until == WALL + timedelta(seconds=1)


async def test_retry_after_as_an_http_date(a: Node, b: Node, clock: Clock) -> None:
    a.answer = http(429, {"Retry-After": format_datetime(WALL + timedelta(seconds=45), usegmt=True)})
    async with client_of(clock, a, b) as c:
        await c.fee()
        assert c.usage().endpoints[0].cooling_until == WALL + timedelta(seconds=45)
        clock.advance(44.0)
        await c.fee()
        assert a.hits == 1
        clock.advance(1.0)
        a.answer = view(1)
        await c.fee()
        assert a.hits == 2


async def test_the_simulators_429_fault_is_honoured(sim: NearRpcSimulator, b: Node, clock: Clock) -> None:
    async with aiohttp.ClientSession() as http_session:
        fault = f"{sim.base_url}/_sim/fault"
        await http_session.post(fault, json={"name": "http_429", "on": True, "value": 7})
        async with client_of(clock, sim.base_url, b) as c:
            # an endpoint's counters are shared by URL in the process: an earlier test's
            # simulator may have had this port, so count from here
            before = c.usage().endpoints[0].rate_limited_total
            assert await c.fee() == 1
            assert c.url == b.url
            sim_usage = c.usage().endpoints[0]
            assert sim_usage.rate_limited_total == before + 1
            assert sim_usage.cooling_until == WALL + timedelta(seconds=7)
            await http_session.post(fault, json={"name": "http_429", "on": False})
            clock.advance(6.9)
            assert await c.fee() == 1 and c.url == b.url  # still cooling: not asked
            clock.advance(0.1)
            assert await c.fee() == 1 and c.url == sim.base_url
    assert len([q for q in queries(sim) if q["method_name"] == "fee"]) == 2


@pytest.mark.parametrize("kind", ["http_500", "refused", "timeout", "garbage"])
async def test_unavailable_fails_over_and_is_tried_after_the_others(a: Node, b: Node, clock: Clock, kind: str) -> None:
    first: Node | str = a
    if kind == "http_500":
        a.answer = http(500)
    elif kind == "garbage":
        a.answer = http(200, text="<html>gateway</html>")
    elif kind == "timeout":
        a.answer = held(a)
    else:
        gone = await Node(clock).start()
        await gone.stop()
        first = gone.url
    async with client_of(clock, first, b, timeout_s=0.2 if kind == "timeout" else 5.0) as c:
        assert await c.fee() == 1 and c.url == b.url
        ua = c.usage().endpoints[0]
        assert (ua.failures_total, ua.failovers, ua.rate_limited_total) == (1, 1, 0)
        assert ua.cooling_until is None  # not rate-limited: no cooldown
        assert ua.demoted_until == WALL + timedelta(seconds=1)
        hits = a.hits
        assert await c.fee() == 1  # the healthy endpoint first while a is demoted
        assert a.hits == hits and b.hits == 2
        a.answer = view(1)
        clock.advance(1.0)
        await c.fee()
        assert c.url == (a.url if kind != "refused" else b.url)


async def test_every_endpoint_failing_raises_the_last_failure(a: Node, b: Node, clock: Clock) -> None:
    a.answer, b.answer = http(500), http(503)
    async with client_of(clock, a, b) as c:
        with pytest.raises(NearRpcUnavailable) as info:
            await c.fee()
        assert info.value.status == 503 and not isinstance(info.value, NearRpcRateLimited)
        assert (a.hits, b.hits) == (1, 1)  # at most one attempt per endpoint per call
        a.answer = view(1)
        assert await c.fee() == 1  # no cooldown: asked again on the next call


@pytest.mark.parametrize(
    "answer,error",
    [
        (
            rpc_error(
                {
                    "name": "HANDLER_ERROR",
                    "cause": {"name": "UNKNOWN_ACCOUNT", "info": {}},
                    "code": -32000,
                    "message": "Server error",
                    "data": "account intents.near does not exist while viewing",
                }
            ),
            NearRpcUnknownAccount,
        ),
        (
            rpc_error(
                {
                    "name": "REQUEST_VALIDATION_ERROR",
                    "cause": {"name": "PARSE_ERROR", "info": {}},
                    "code": -32700,
                    "message": "Parse error",
                    "data": "bad",
                },
                status=400,
            ),
            NearRpcRequestError,
        ),
        (
            result(
                {
                    "error": "wasm execution failed with error: MethodResolveError(MethodNotFound)",
                    "logs": [],
                    "block_height": 1,
                    "block_hash": "h",
                }
            ),
            NearMethodNotFound,
        ),
    ],
    ids=["unknown-account", "validation-400", "contract-panic"],
)
async def test_the_venue_saying_no_is_not_failed_over(
    a: Node, b: Node, clock: Clock, answer: Answer, error: type[Exception]
) -> None:
    a.answer = answer
    async with client_of(clock, a, b) as c:
        with pytest.raises(error):
            await c.fee()
        assert (a.hits, b.hits) == (1, 0) and c.url == a.url
        assert c.usage().endpoints[0].failovers == 0


async def test_rate_limited_when_every_endpoint_is_cooling(a: Node, b: Node, clock: Clock) -> None:
    a.answer = http(429, {"Retry-After": "5"})
    b.answer = http(429, {"Retry-After": "8"})
    async with client_of(clock, a, b) as c:
        with pytest.raises(NearRpcRateLimited) as info:
            await c.fee()
        assert info.value.status == 429 and info.value.retry_after_s == 5.0
        assert isinstance(info.value, NearRpcUnavailable)
        assert (a.hits, b.hits) == (1, 1)
        clock.advance(2.0)
        with pytest.raises(NearRpcRateLimited) as info:  # at once, nothing sent
            await c.fee()
        assert info.value.status is None and info.value.retry_after_s == 3.0
        assert (a.hits, b.hits) == (1, 1)
        a.answer = view(1)
        clock.advance(3.0)
        assert await c.fee() == 1 and c.url == a.url


# --- the budget --------------------------------------------------------------------------------------------


async def test_an_endpoint_out_of_budget_passes_to_the_next(a: Node, b: Node, clock: Clock) -> None:
    async with client_of(clock, a, b, budget_per_min=6, budget_burst=2) as c:
        for _ in range(4):
            assert await c.fee() == 1
        assert (a.hits, b.hits) == (2, 2)
        with pytest.raises(NearRpcRateLimited) as info:
            await c.fee()
        assert info.value.retry_after_s == pytest.approx(10.0) and info.value.status is None  # 60 s / 6
        assert (a.hits, b.hits) == (2, 2)  # nothing sent over the budget
        ua, ub = c.usage().endpoints
        assert (ua.budget_per_min, ua.budget_burst, ua.tokens_available, ua.failovers) == (6, 2, 0, 2)
        assert (ub.tokens_available, ub.failovers, ub.requests_last_60s) == (0, 0, 2)
        clock.advance(10.0)
        assert await c.fee() == 1 and c.url == a.url


async def test_the_budget_is_never_exceeded(a: Node, b: Node, clock: Clock) -> None:
    per_min, burst = 6, 3
    served = limited = 0
    async with client_of(clock, a, b, budget_per_min=per_min, budget_burst=burst) as c:
        # concurrent requests at one instant: each takes its token before it is sent
        results = await asyncio.gather(*(c.fee() for _ in range(20)), return_exceptions=True)
        assert sum(r == 1 for r in results) == 2 * burst
        assert all(isinstance(r, NearRpcRateLimited) for r in results if r != 1)
        # then a caller asking every half second for ten minutes
        for _ in range(1_200):
            clock.advance(0.5)
            try:
                await c.fee()
                served += 1
            except NearRpcRateLimited as exc:
                assert exc.retry_after_s > 0
                limited += 1
    for node in (a, b):
        in_any_minute = max(sum(1 for t in node.times if start <= t < start + 60.0) for start in node.times)
        at_once = max(node.times.count(t) for t in node.times)
        assert in_any_minute <= per_min and at_once <= burst
    assert served >= 2 * per_min * 9 and limited > 0  # and it did not starve either


async def test_the_budget_is_shared_by_every_client_of_an_endpoint(a: Node, clock: Clock) -> None:
    async with (
        client_of(clock, a, budget_per_min=10, budget_burst=3) as first,
        client_of(clock, a, budget_per_min=4, budget_burst=2) as second,
        client_of(clock, a) as unlimited,
    ):
        for c in (first, second, unlimited):  # the lowest figures win, for all of them
            assert (c.usage().endpoints[0].budget_per_min, c.usage().endpoints[0].budget_burst) == (4, 2)
        assert await first.fee() == 1
        assert await unlimited.fee() == 1  # adds no limit of its own, but is charged
        with pytest.raises(NearRpcRateLimited):
            await second.fee()
        assert a.hits == 2
        assert first.usage().endpoints[0].requests_total == second.usage().endpoints[0].requests_total == 2


async def test_usage_counts_the_last_minute_and_in_total(a: Node, clock: Clock) -> None:
    async with client_of(clock, a) as c:
        for _ in range(3):
            await c.fee()
        clock.advance(61.0)
        await c.fee()
        (ua,) = c.usage().endpoints
    assert (ua.requests_last_60s, ua.requests_total, ua.in_use) == (1, 4, True)
    assert (ua.budget_per_min, ua.budget_burst, ua.tokens_available) == (None, None, None)
    assert (ua.rate_limited_total, ua.failures_total, ua.failovers) == (0, 0, 0)
    assert ua.cooling_until is None and ua.demoted_until is None
