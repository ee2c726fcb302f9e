"""The relay's taker JSON-RPC client against the relay simulator (docs/near-intents-relay.md §7): auth
headers, publish_intents burning nonces (so a live answer can no longer settle), get_status with
every status of docs/near-intents-relay.md §7.4, and typed errors for FAILED results, JSON-RPC errors and
HTTP trouble."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemons.venues.near_intents.nep413 import SignerKey, intents_message, sign_intent, versioned_nonce
from daemons.venues.near_intents.relay_rpc import (
    IntentStatusKind,
    RelayPublishFailed,
    RelayRpcClient,
    RelayRpcError,
    RelayRpcUnavailable,
)
from daemons.venues.near_intents.relay_ws import Connected, QuoteRequest, QuoteStatus
from simulators import verifier as V
from simulators.relay import RelaySimulator
from simulators.verifier import VerifierState
from tests.integration.venues.test_relay_ws import (  # noqa: F401 - shared fixtures and helpers
    JWT,
    SALT,
    SOLVER,
    MakeClient,
    SimHttp,
    build_answer,
    http,
    key,
    make_client,
    sim,
    verifier,
)


@pytest.fixture
async def rpc(sim: RelaySimulator) -> AsyncIterator[RelayRpcClient]:
    async with RelayRpcClient(sim.rpc_url, JWT, timeout_s=5.0) as client:
        yield client


def burn_payload(key: SignerKey, nonce: bytes, deadline: datetime | None = None) -> dict[str, Any]:
    """The SDK's `invalidateNonces` payload: one empty-intents message per nonce
    (docs/near-intents-relay.md §7.5)."""
    deadline = deadline or datetime.now(UTC) + timedelta(seconds=60)
    return sign_intent(key, intents_message(SOLVER, deadline, []), nonce).signed_data


def rpc_frames(seen: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in seen["seen"] if f["kind"] == "rpc_in"]


async def test_sends_both_auth_headers_and_unauthorised_is_unavailable(
    sim: RelaySimulator, http: SimHttp, rpc: RelayRpcClient
) -> None:
    status = await rpc.get_status("nothing")
    assert status.status is IntentStatusKind.NOT_FOUND_OR_NOT_VALID
    [frame] = rpc_frames(await http.seen())
    assert frame["authorized"] and frame["has_bearer"] and frame["has_api_key"]
    assert frame["query"] == {"method": "get_status"}
    assert JWT not in json.dumps((await http.seen())["seen"])
    assert JWT not in repr(rpc)

    async with RelayRpcClient(sim.rpc_url, "wrong") as bad:
        with pytest.raises(RelayRpcUnavailable) as exc:
            await bad.get_status("x")
    assert exc.value.http_status == 401


async def test_publish_burns_a_nonce_so_the_live_answer_cannot_settle(
    http: SimHttp, key: SignerKey, verifier: VerifierState, rpc: RelayRpcClient, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-cancel", exact_amount_in=30_000)
    q: QuoteRequest = await feed.next(QuoteRequest)
    signed, output, nonce = build_answer(key, q)
    assert (await client.send_quote_response(q.quote_id, output, signed.signed_data)).ok

    burn = burn_payload(key, nonce)
    published = await rpc.publish_intents([burn], quote_hashes=[])
    assert len(published.intent_hashes) == 1 and not published.already_processed
    [frame] = rpc_frames(await http.seen())
    body = json.loads(frame["text"])
    assert body["method"] == "publish_intents"
    assert body["params"] == [{"quote_hashes": [], "signed_datas": [burn]}]

    outcome = await http.post("/_sim/settle", {"quote_id": "q-cancel"})
    assert not outcome["settled"] and outcome["error"] == V.ERR_NONCE_USED
    assert verifier.balance(SOLVER, q.asset_in) == 10**12  # nothing moved
    # the relay's invalidation is in memory only: the on-chain view does not show it (docs/near-intents-relay.md §7.5)
    assert not verifier.is_nonce_used(SOLVER, burn["payload"]["nonce"])

    # a retried publish is "already processed", which is success
    again = await rpc.publish_intents([burn])
    assert again.already_processed and again.intent_hashes == published.intent_hashes


async def test_publish_failures_are_typed_with_the_reason_verbatim(key: SignerKey, rpc: RelayRpcClient) -> None:
    nonce = versioned_nonce(SALT, datetime.now(UTC) + timedelta(seconds=60))
    burn = burn_payload(key, nonce)
    forged = {**burn, "signature": burn_payload(SignerKey.generate(), nonce)["signature"]}
    with pytest.raises(RelayPublishFailed) as exc:
        await rpc.publish_intents([forged])
    assert (exc.value.reason, exc.value.code) == (V.ERR_INVALID_SIGNATURE, "SIGNATURE_INVALID")
    assert len(exc.value.intent_hashes) == 1

    stale_salt = burn_payload(key, versioned_nonce("deadbeef", datetime.now(UTC) + timedelta(seconds=60)))
    with pytest.raises(RelayPublishFailed) as exc:
        await rpc.publish_intent(stale_salt)
    assert (exc.value.reason, exc.value.code) == (V.ERR_INVALID_SALT, "INVALID_SALT")


async def test_get_status_after_settlement_and_every_status(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, rpc: RelayRpcClient, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-settle", exact_amount_out=6 * 10**18)
    q = await feed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    assert (await client.send_quote_response(q.quote_id, output, signed.signed_data)).ok
    await http.post("/_sim/settle", {"quote_id": "q-settle"})
    status: QuoteStatus = await feed.next(QuoteStatus)
    assert status.intent_hash is not None

    settled = await rpc.get_status(status.intent_hash)
    assert settled.status is IntentStatusKind.SETTLED and settled.tx_hash == status.tx_hash
    assert settled.intent_hash == status.intent_hash and settled.is_final

    cases: list[tuple[dict[str, Any], IntentStatusKind, str | None, bool]] = [
        ({"status": "PENDING"}, IntentStatusKind.PENDING, None, False),
        ({"status": "TX_BROADCASTED", "hash": "TXB"}, IntentStatusKind.TX_BROADCASTED, "TXB", False),
        ({"status": "NOT_FOUND_OR_NOT_VALID"}, IntentStatusKind.NOT_FOUND_OR_NOT_VALID, None, False),
        (
            {"status": "NOT_FOUND_OR_NOT_VALID", "status_details": "FAILED"},
            IntentStatusKind.NOT_FOUND_OR_NOT_VALID,
            None,
            True,
        ),
        ({"status": "NOT_FOUND_OR_NOT_VALID_ANYMORE"}, IntentStatusKind.NOT_FOUND_OR_NOT_VALID, None, False),
        ({"status": "SOMETHING_NEW"}, IntentStatusKind.UNKNOWN, None, False),
    ]
    for i, (body, kind, tx, final) in enumerate(cases):
        await http.post("/_sim/status", {"intent_hash": f"ih-{i}", **body})
        got = await rpc.get_status(f"ih-{i}")
        assert (got.status, got.tx_hash, got.is_final, got.status_raw) == (kind, tx, final, body["status"])
    unknown = await rpc.get_status("never-seen")
    assert unknown.status is IntentStatusKind.NOT_FOUND_OR_NOT_VALID and not unknown.is_final


async def test_transport_and_protocol_errors(sim: RelaySimulator, http: SimHttp, rpc: RelayRpcClient) -> None:
    with pytest.raises(RelayRpcError) as err:
        await rpc.call("no_such_method", [])
    assert (err.value.message, err.value.code) == ("method not found", -32601)

    await http.fault("rpc_http_500", count=1)
    with pytest.raises(RelayRpcUnavailable) as exc:
        await rpc.get_status("x")
    assert exc.value.http_status == 500

    await http.fault("rpc_hang", count=1)
    async with RelayRpcClient(sim.rpc_url, JWT, timeout_s=0.2) as quick:
        with pytest.raises(RelayRpcUnavailable) as exc:
            await quick.get_status("x")
    assert exc.value.http_status is None and "no answer" in str(exc.value)

    async with RelayRpcClient("http://127.0.0.1:9/rpc", JWT, timeout_s=2.0) as closed:
        with pytest.raises(RelayRpcUnavailable):
            await closed.get_status("x")
