"""The relay WebSocket client against the relay simulator on loopback (docs/near-intents-relay.md §1–§8):
auth, subscriptions and filters, both event envelopes, malformed frames, reconnects under the
budget, request timeouts, and signed answers checked by the simulated verifier, settled by the
simulated taker and reported through (guaranteed) quote_status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from daemons.venues.backoff import Backoff
from daemons.venues.near_intents.nep413 import (
    SignedIntent,
    SignerKey,
    VersionedNonce,
    parse_nonce,
    sign_intent,
    token_diff_message,
    versioned_nonce,
)
from daemons.venues.near_intents.relay_ws import (
    Connected,
    Disconnected,
    LateRelayAnswer,
    QuoteFilter,
    QuoteRequest,
    QuoteStatus,
    Reject,
    RelayConnectionLost,
    RelayItem,
    RelayNotConnected,
    RelayTimeout,
    RelayWsClient,
    RelayWsConfig,
)
from simulators import verifier as V
from simulators.relay import BTC, EURE, RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState
from tests.conftest import eventually

JWT = "test-relay-jwt-not-a-secret"
SALT = "252812b3"
SOLVER = "solver.near"
PAIR = QuoteFilter(tokens_in=(BTC, EURE), tokens_out=(BTC, EURE))
EURE_PER_SAT = 6 * 10**14  # 60 000 EUR/BTC in base units: 1e-8 BTC -> 6e-4 EUR = 6e14 (18 dp)


class Feed:
    """Reads a client's items; `next(kind)` returns the next item of that kind and keeps every
    item seen in `items`. The timeout only guards against a hang."""

    def __init__(self, client: RelayWsClient) -> None:
        self.client = client
        self.items: list[RelayItem] = []

    async def next(self, *kinds: type, timeout: float = 10.0) -> Any:
        while True:
            item = await asyncio.wait_for(self.client.next_event(), timeout)
            assert item is not None, "client stopped"
            self.items.append(item)
            if not kinds or isinstance(item, kinds):
                return item


class SimHttp:
    def __init__(self, session: aiohttp.ClientSession, sim: RelaySimulator) -> None:
        self.session, self.sim = session, sim

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.session.post(f"{self.sim.base_url}{path}", json=body or {}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def seen(self) -> dict[str, Any]:
        async with self.session.get(f"{self.sim.base_url}/_sim/seen") as resp:
            return await resp.json()

    async def fault(self, name: str, **kw: Any) -> None:
        await self.post("/_sim/fault", {"name": name, **kw})

    async def quote(self, **kw: Any) -> dict[str, Any]:
        return await self.post("/_sim/quote", kw)


@pytest.fixture
def verifier() -> VerifierState:
    return VerifierState(salt_hex=SALT, fee_pips=1)


@pytest.fixture
def key(verifier: VerifierState) -> SignerKey:
    k = SignerKey.generate()
    verifier.add_public_key(SOLVER, k.public_key)
    verifier.deposit(SOLVER, EURE, 10**24)
    verifier.deposit(SOLVER, BTC, 10**12)
    return k


@pytest.fixture
async def sim(verifier: VerifierState) -> AsyncIterator[RelaySimulator]:
    # a long collection window: tests close quotes explicitly with /_sim/settle
    s = RelaySimulator(verifier, RelaySimConfig(jwt=JWT, collection_window_s=60, redelivery_s=None))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http(sim: RelaySimulator) -> AsyncIterator[SimHttp]:
    async with aiohttp.ClientSession() as session:
        yield SimHttp(session, sim)


MakeClient = Callable[..., Awaitable[tuple[RelayWsClient, Feed]]]


@pytest.fixture
async def make_client(sim: RelaySimulator) -> AsyncIterator[MakeClient]:
    made: list[RelayWsClient] = []

    async def make(*, backoff: Backoff | None = None, start: bool = True, **over: Any) -> tuple[RelayWsClient, Feed]:
        cfg: dict[str, Any] = {
            "url": sim.ws_url,
            "jwt": JWT,
            "quote_filter": PAIR,
            "request_timeout_s": 3.0,
            "answer_timeout_s": 3.0,
            "close_timeout_s": 1.0,
        }
        cfg.update(over)
        client = RelayWsClient(
            RelayWsConfig(**cfg), backoff=backoff or Backoff(initial_s=0.01, max_s=0.05, budget=100, window_s=60)
        )
        made.append(client)
        if start:
            await client.start()
        return client, Feed(client)

    yield make
    for c in made:
        await c.stop()


def build_answer(
    key: SignerKey,
    q: QuoteRequest,
    *,
    salt: str = SALT,
    price: int = EURE_PER_SAT,
    deadline: datetime | None = None,
    nonce_deadline: datetime | None = None,
    nonce: bytes | None = None,
    flip: bool = False,
    fixed_delta: int = 0,
) -> tuple[SignedIntent, dict[str, int], bytes]:
    """A solver answer as the daemon will build it (docs/near-intents-relay.md §4, docs/verifier.md
    §3): token_diff positive on asset_in, negative on asset_out, the fixed side echoed, a versioned
    nonce whose deadline is the intent's."""
    deadline = deadline or datetime.now(UTC) + timedelta(milliseconds=q.min_deadline_ms + 10_000)
    nonce = nonce or versioned_nonce(salt, nonce_deadline or deadline)
    btc_in = q.asset_in == BTC
    if q.exact_amount_in is not None:
        amount_in = q.exact_amount_in + fixed_delta
        amount_out = amount_in * price if btc_in else max(1, amount_in // price)
        output = {"amount_out": amount_out}
    else:
        assert q.exact_amount_out is not None
        amount_out = q.exact_amount_out + fixed_delta
        amount_in = max(1, amount_out // price) if btc_in else amount_out * price
        output = {"amount_in": amount_in}
    sign = -1 if flip else 1
    diff = {q.asset_in: sign * amount_in, q.asset_out: -sign * amount_out}
    return sign_intent(key, token_diff_message(SOLVER, deadline, diff), nonce), output, nonce


# --- auth and subscriptions ---------------------------------------------------------------------


async def test_upgrade_without_bearer_token_is_403(sim: RelaySimulator, make_client: MakeClient) -> None:
    with pytest.raises(InvalidStatus) as exc:
        async with connect(sim.ws_url, proxy=None):
            pass
    assert exc.value.response.status_code == 403

    client, _ = await make_client(jwt="wrong-token")
    state = await eventually(lambda: (s := client.state())["counts"].get("handshake_refused") and s)
    assert not state["connected"]
    assert "HTTP 403" in state["last_disconnect_reason"]
    assert "wrong-token" not in repr(client.config) and "wrong-token" not in str(state)
    with pytest.raises(RelayNotConnected):
        await client.send_quote_response("q", {"amount_out": 1}, {})


async def test_subscribes_with_pair_filter_and_status(
    sim: RelaySimulator, http: SimHttp, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    connected = await feed.next(Connected)
    assert sorted(connected.subscriptions.values()) == ["quote", "quote_status"]
    [conn] = (await http.seen())["connections"]
    subs = {v["kind"]: v for v in conn["subscriptions"].values()}
    assert subs["quote"]["filter"] == {"tokens_in": [BTC, EURE], "tokens_out": [BTC, EURE]}
    assert subs["quote_status"] == {"kind": "quote_status", "filter": None, "guaranteed": False}
    state = client.state()
    assert state["connected"] and set(state["subscriptions"]) == set(connected.subscriptions)
    assert state["filter"] == PAIR.wire()

    # the server filters: an unsubscribed pair is not sent at all
    assert (await http.quote(asset_in="nep141:wrap.near", asset_out=EURE, exact_amount_in=5))["sent"] == 0


async def test_quote_events_in_both_envelopes(http: SimHttp, make_client: MakeClient) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-event", exact_amount_in=100_000, metadata={"partner_id": "1click"})
    q1 = await feed.next(QuoteRequest)
    assert (q1.quote_id, q1.envelope, q1.asset_in, q1.asset_out) == ("q-event", "event", BTC, EURE)
    assert (q1.exact_amount_in, q1.exact_amount_out, q1.min_deadline_ms) == (100_000, None, 60_000)
    assert q1.metadata == {"partner_id": "1click"}
    assert q1.subscription in client.state()["subscriptions"]
    assert q1.received_at.tzinfo is not None

    # the docs' flat form, with the gitbook's string min_deadline_ms and an exact-out amount
    await http.quote(
        quote_id="q-flat",
        asset_in=EURE,
        asset_out=BTC,
        exact_amount_out=2500,
        min_deadline_ms="30000",
        envelope="subscribe",
    )
    q2 = await feed.next(QuoteRequest)
    assert (q2.quote_id, q2.envelope, q2.exact_amount_out, q2.exact_amount_in) == ("q-flat", "subscribe", 2500, None)
    assert q2.min_deadline_ms == 30_000

    # the relay ignoring our filter: still filtered client-side (docs/near-intents-relay.md §2)
    await http.quote(
        quote_id="q-other", asset_in="nep141:wrap.near", asset_out=EURE, exact_amount_in=5, ignore_filter=True
    )
    r = await feed.next(Reject)
    assert r.code == "filtered" and "q-other" in r.raw
    assert client.state()["counts"]["filtered"] == 1


async def test_malformed_frames_are_counted_and_the_stream_continues(
    sim: RelaySimulator, http: SimHttp, make_client: MakeClient
) -> None:
    client, feed = await make_client(max_frame_bytes=4096)
    await feed.next(Connected)
    sub = next(s for s, i in client.state()["subscriptions"].items() if i["kind"] == "quote")
    await http.post("/_sim/send", {"text": "{this is not json"})
    await http.fault("malformed_next", count=1)
    await http.quote(exact_amount_in=1)  # cut in half by the fault
    await http.quote(exact_amount_in=1, omit=["quote_id"])  # a quote missing a field
    await http.post("/_sim/send", {"text": '{"jsonrpc":"2.0","method":"surprise","params":{}}'})
    big = (
        '{"jsonrpc":"2.0","method":"event","params":{"subscription":"'
        + sub
        + '","data":{"pad":"'
        + "x" * 10_000
        + '"}}}'
    )
    await http.post("/_sim/send", {"text": big})
    await http.quote(quote_id="still-alive", exact_amount_in=7)

    q = await feed.next(QuoteRequest)
    assert q.quote_id == "still-alive"
    rejects = [i for i in feed.items if isinstance(i, Reject)]
    assert [r.code for r in rejects] == ["invalid_json", "invalid_json", "missing_fields", "unknown_frame", "oversize"]
    assert "quote_id" in rejects[2].reason
    counts = client.state()["counts"]
    assert counts["rejects"] == 5 and counts["invalid_json"] == 2 and counts["oversize"] == 1
    assert counts["unknown_frame"] == 1 and counts["missing_fields"] == 1
    assert client.state()["connected"]


async def test_frame_over_the_hard_limit_is_a_reject_and_a_reconnect(http: SimHttp, make_client: MakeClient) -> None:
    client, feed = await make_client(max_frame_bytes=1024, hard_max_frame_bytes=2048)
    first = await feed.next(Connected)
    await http.post("/_sim/send", {"text": '{"pad":"' + "x" * 5000 + '"}'})
    reject = await feed.next(Reject)
    assert reject.code == "oversize" and "hard limit" in reject.reason
    assert "1009" in (await feed.next(Disconnected)).reason
    assert (await feed.next(Connected)).epoch == first.epoch + 1
    assert client.state()["counts"]["oversize"] == 1


async def test_scenario_stream_mixes_everything(sim: RelaySimulator, http: SimHttp, make_client: MakeClient) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    frames_before = client.state()["counts"]["frames"]
    count = 120
    sid = (
        await http.post(
            "/_sim/scenario",
            {
                "count": count,
                "rate_per_s": 2000,
                "seed": 7,
                "malformed_ratio": 0.1,
                "repeat_ratio": 0.1,
                "other_pair_ratio": 0.15,
            },
        )
    )["scenario_id"]
    result = await sim.scenarios[sid]
    await eventually(lambda: client.state()["counts"]["frames"] - frames_before >= count, what="all scenario frames")
    items: list[RelayItem] = []
    while len(items) < count:
        items.append(await feed.next())
    quotes = [i for i in items if isinstance(i, QuoteRequest)]
    rejects = [i for i in items if isinstance(i, Reject)]
    by = result["by_kind"]
    assert len(quotes) == by.get("exact_in", 0) + by.get("exact_out", 0) + by.get("repeat", 0)
    assert len(rejects) == by["malformed"] + by["other_pair"]
    assert {q.envelope for q in quotes} == {"event", "subscribe"}
    assert any(q.exact_amount_out for q in quotes) and any(q.exact_amount_in for q in quotes)
    assert {(q.asset_in, q.asset_out) for q in quotes} == {(BTC, EURE), (EURE, BTC)}
    ids = [q.quote_id for q in quotes]
    assert len(ids) > len(set(ids))  # repeated quote ids reach the caller (dedupe is its business)
    assert {r.code for r in rejects} >= {"filtered", "invalid_json", "unknown_frame", "missing_fields"}
    assert client.state()["connected"]


# --- reconnects -----------------------------------------------------------------------------------


async def test_disconnect_reconnects_and_resubscribes_with_new_ids(
    sim: RelaySimulator, http: SimHttp, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    first = await feed.next(Connected)
    await http.post("/_sim/disconnect", {"code": 1012})
    gone = await feed.next(Disconnected)
    assert gone.epoch == first.epoch and "1012" in gone.reason
    second = await feed.next(Connected)
    assert second.epoch == first.epoch + 1
    assert set(second.subscriptions).isdisjoint(first.subscriptions)
    state = client.state()
    assert state["connected"] and set(state["subscriptions"]) == set(second.subscriptions)
    assert state["connects"] == 2 and state["epoch"] == 2
    assert state["reconnects_in_window"] == 1 and "1012" in state["last_disconnect_reason"]
    # routing uses the new ids
    await http.quote(quote_id="after", exact_amount_in=3)
    q = await feed.next(QuoteRequest)
    assert q.quote_id == "after" and q.subscription in second.subscriptions and q.epoch == second.epoch
    assert sum(isinstance(i, Reject) for i in feed.items) == 0


async def test_set_quote_filter_resubscribes_without_a_gap(
    sim: RelaySimulator, http: SimHttp, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    first = await feed.next(Connected)
    wrap_pair = QuoteFilter(tokens_in=("nep141:wrap.near", EURE), tokens_out=("nep141:wrap.near", EURE))
    await client.set_quote_filter(wrap_pair)
    [conn] = (await http.seen())["connections"]
    quote_subs = [v for v in conn["subscriptions"].values() if v["kind"] == "quote"]
    assert quote_subs == [{"kind": "quote", "filter": wrap_pair.wire(), "guaranteed": False}]
    state = client.state()
    assert state["filter"] == wrap_pair.wire()
    new_quote_sub = next(s for s, i in state["subscriptions"].items() if i["kind"] == "quote")
    assert new_quote_sub not in first.subscriptions

    await http.quote(quote_id="btc", exact_amount_in=1, ignore_filter=True)
    await http.quote(quote_id="wrap", asset_in="nep141:wrap.near", asset_out=EURE, exact_amount_in=1)
    assert (await feed.next(Reject)).code == "filtered"
    assert (await feed.next(QuoteRequest)).quote_id == "wrap"

    # a reconnect subscribes with the current filter
    await http.post("/_sim/disconnect")
    await feed.next(Connected)
    [conn] = (await http.seen())["connections"]
    assert [v["filter"] for v in conn["subscriptions"].values() if v["kind"] == "quote"] == [wrap_pair.wire()]


async def test_reconnect_storm_is_bounded_by_the_budget(
    sim: RelaySimulator, http: SimHttp, make_client: MakeClient
) -> None:
    await http.fault("refuse_upgrade", on=True)
    budget = 3
    client, _ = await make_client(backoff=Backoff(initial_s=0.001, max_s=0.002, budget=budget, window_s=120))
    # the first attempt plus `budget` retries, then the client waits for the window to free a slot
    await eventually(
        lambda: sim.counts.get("upgrades_refused", 0) == budget + 1 and client.state()["budget_exhausted"],
        what="budget spent",
    )
    state = client.state()
    assert not state["connected"]
    assert state["reconnects_in_window"] == budget + 1 and state["reconnect_budget"] == budget
    assert "HTTP 503" in state["last_disconnect_reason"]
    next_at = datetime.fromisoformat(state["next_attempt_at"])
    assert next_at - datetime.now(UTC) > timedelta(seconds=60)
    assert sim.counts["upgrades_refused"] == budget + 1


async def test_subscribe_timeout_reconnects(sim: RelaySimulator, http: SimHttp, make_client: MakeClient) -> None:
    await http.fault("drop_subscribe", count=1)
    client, feed = await make_client(request_timeout_s=0.2)
    connected = await feed.next(Connected)
    assert connected.epoch == 2
    state = client.state()
    assert "subscribe failed" in state["last_disconnect_reason"] and state["counts"]["request_timeouts"] == 1
    assert not any(isinstance(i, Disconnected) for i in feed.items)  # never announced, so no gap to report


# --- answering quotes -----------------------------------------------------------------------------


async def test_answer_timeout_is_uncertain_not_a_refusal(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    client, feed = await make_client(answer_timeout_s=0.2)
    await feed.next(Connected)
    await http.quote(quote_id="q-timeout", exact_amount_in=1000)
    q = await feed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    await http.fault("drop_responses", count=1)
    with pytest.raises(RelayTimeout) as exc:
        await client.send_quote_response(q.quote_id, output, signed.signed_data)
    assert exc.value.method == "quote_response"
    assert client.state()["counts"]["answer_timeouts"] == 1
    assert sim.counts["answers_ok"] == 1  # the relay did take it: only the reply was lost
    # the connection is still usable
    await http.quote(quote_id="q-next", exact_amount_in=1000)
    q2 = await feed.next(QuoteRequest)
    signed2, output2, _ = build_answer(key, q2)
    answer = await client.send_quote_response(q2.quote_id, output2, signed2.signed_data)
    assert answer.ok and answer.error is None


async def test_connection_lost_during_an_answer_is_uncertain(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    client, feed = await make_client(answer_timeout_s=60)
    await feed.next(Connected)
    await http.quote(quote_id="q-lost", exact_amount_in=1000)
    q = await feed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    await http.fault("hold_responses", count=1)
    sending = asyncio.create_task(client.send_quote_response(q.quote_id, output, signed.signed_data))
    await eventually(lambda: sim.counts.get("answers_ok") == 1, what="answer received")
    await http.post("/_sim/disconnect")
    with pytest.raises(RelayConnectionLost):  # a RelayTimeout: uncertain, raised without waiting 60 s
        await sending
    await feed.next(Connected)


async def test_late_answer_after_timeout_reaches_the_caller(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    client, feed = await make_client(answer_timeout_s=0.2)
    await feed.next(Connected)
    await http.quote(quote_id="q-late", exact_amount_in=1000)
    q = await feed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    await http.fault("hold_responses", count=1)
    with pytest.raises(RelayTimeout):
        await client.send_quote_response(q.quote_id, output, signed.signed_data)
    assert (await http.post("/_sim/release"))["released"] == 1
    late = await feed.next(LateRelayAnswer)
    assert late.quote_id == "q-late" and late.answer.ok
    counts = client.state()["counts"]
    assert counts["late_answers"] == 1 and counts["unmatched_reply"] == 0


async def test_signed_answer_settles_with_guaranteed_status_ack_and_redelivery(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, verifier: VerifierState, make_client: MakeClient
) -> None:
    client, feed = await make_client(instance_id="test-1", guaranteed_status=True, auto_ack=False)
    await feed.next(Connected)
    [conn] = (await http.seen())["connections"]
    assert conn["instance_id"] == "test-1"
    assert {"kind": "quote_status", "filter": None, "guaranteed": True} in conn["subscriptions"].values()

    await http.quote(quote_id="q-fill", exact_amount_in=50_000)
    q = await feed.next(QuoteRequest)
    signed, output, nonce = build_answer(key, q)
    answer = await client.send_quote_response(q.quote_id, output, signed.signed_data)
    assert answer.ok and answer.error is None
    outcome = await http.post("/_sim/settle", {"quote_id": "q-fill"})
    assert outcome["settled"] and outcome["quote_hash"] == signed.quote_hash

    status = await feed.next(QuoteStatus)
    assert status.quote_hash == signed.quote_hash  # base58 of our NEP-413 digest (docs/verifier.md §5)
    assert (status.intent_hash, status.tx_hash) == (outcome["intent_hash"], outcome["tx_hash"])
    assert status.guaranteed and status.seq == 1
    assert verifier.balance(SOLVER, BTC) == 10**12 + 50_000
    assert verifier.balance(SOLVER, EURE) == 10**24 - output["amount_out"]

    # not acknowledged: the relay keeps it and replays it on the next connection
    assert (await http.seen())["unacked"] == {"test-1": [1]}
    await http.post("/_sim/disconnect")
    await feed.next(Disconnected)
    await feed.next(Connected)
    again = await feed.next(QuoteStatus)
    assert (again.quote_hash, again.seq) == (status.quote_hash, 1)
    assert again.subscription != status.subscription and again.epoch == status.epoch + 1
    assert not await client.ack(status)  # its connection is gone; nothing sent
    assert await client.ack(again)
    seen = await http.seen()
    assert seen["unacked"] == {"test-1": []} and seen["acked"] == {"test-1": [1]}
    acks = [f for f in seen["seen"] if f["kind"] == "ws_in" and '"acknowledge"' in f.get("text", "")]
    assert len(acks) == 1 and f'["{again.subscription}",1]' in acks[0]["text"]


async def test_timing_summary_counts_what_the_full_timing_lists(
    http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    """The benchmark polls the summary while a load runs; it must agree with the full answer."""
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-answered", exact_amount_in=50_000)
    await http.quote(quote_id="q-left", exact_amount_in=50_000)
    q = await feed.next(QuoteRequest)
    await feed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    assert (await client.send_quote_response(q.quote_id, output, signed.signed_data)).ok
    async with http.session.get(f"{http.sim.base_url}/_sim/timing", params={"summary": "1"}) as resp:
        summary = await resp.json()
    async with http.session.get(f"{http.sim.base_url}/_sim/timing") as resp:
        full = await resp.json()
    assert (summary["sent"], summary["answered"], summary["unanswered"]) == (2, 1, 1)
    assert set(full["answers"]) == {q.quote_id}
    assert full["unanswered"] == list({"q-answered", "q-left"} - {q.quote_id})
    assert summary["loads"] == full["loads"]


async def test_auto_ack_and_periodic_redelivery(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    sim.config.redelivery_s = 0.05
    await sim.stop()
    await sim.start()  # restart with the redelivery timer on
    manual, mfeed = await make_client(instance_id="manual", guaranteed_status=True, auto_ack=False)
    auto, afeed = await make_client(instance_id="auto", guaranteed_status=True, quote_filter=None)
    await mfeed.next(Connected)
    await afeed.next(Connected)
    await http.quote(quote_id="q", exact_amount_out=6 * 10**17)
    q = await mfeed.next(QuoteRequest)
    await afeed.next(QuoteRequest)
    signed, output, _ = build_answer(key, q)
    assert (await manual.send_quote_response(q.quote_id, output, signed.signed_data)).ok
    await http.post("/_sim/settle", {"quote_id": "q"})

    a = await afeed.next(QuoteStatus)
    await eventually(lambda: sim.queues["auto"].acked == [a.seq], what="auto ack")
    first = await mfeed.next(QuoteStatus)
    second = await mfeed.next(QuoteStatus)  # redelivered on the same connection: not acked yet
    assert (first.quote_hash, first.seq) == (second.quote_hash, second.seq) == (signed.quote_hash, 1)
    assert await manual.ack(second)
    assert sim.queues["manual"].unacked == {} and auto.state()["counts"]["acks"] == 1


@pytest.mark.parametrize("rule", ["best", "first"])
async def test_taker_picks_by_rule(rule: str, http: SimHttp, key: SignerKey, make_client: MakeClient) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-pick", exact_amount_in=10_000)
    q = await feed.next(QuoteRequest)
    cheap, cheap_out, _ = build_answer(key, q, price=EURE_PER_SAT - 10**12)
    rich, rich_out, _ = build_answer(key, q, price=EURE_PER_SAT)
    assert (await client.send_quote_response(q.quote_id, cheap_out, cheap.signed_data)).ok
    assert (await client.send_quote_response(q.quote_id, rich_out, rich.signed_data)).ok
    outcome = await http.post("/_sim/settle", {"quote_id": "q-pick", "pick": rule})
    expected = rich if rule == "best" else cheap
    assert outcome["settled"] and outcome["quote_hash"] == expected.quote_hash
    assert (await feed.next(QuoteStatus)).quote_hash == expected.quote_hash


def _bad_signature(key: SignerKey, q: QuoteRequest) -> tuple[dict[str, Any], dict[str, int]]:
    signed, output, nonce = build_answer(key, q)
    forged = sign_intent(SignerKey.generate(), signed.signed_data["payload"]["message"], nonce)
    return {**signed.signed_data, "signature": forged.signed_data["signature"]}, output


def _wrong_salt(key: SignerKey, q: QuoteRequest) -> tuple[dict[str, Any], dict[str, int]]:
    signed, output, _ = build_answer(key, q, salt="deadbeef")
    return signed.signed_data, output


def _deadline_past_nonce(key: SignerKey, q: QuoteRequest) -> tuple[dict[str, Any], dict[str, int]]:
    deadline = datetime.now(UTC) + timedelta(milliseconds=q.min_deadline_ms + 10_000)
    signed, output, _ = build_answer(key, q, deadline=deadline, nonce_deadline=deadline - timedelta(seconds=1))
    return signed.signed_data, output


def _flipped_sign(key: SignerKey, q: QuoteRequest) -> tuple[dict[str, Any], dict[str, int]]:
    signed, output, _ = build_answer(key, q, flip=True)
    return signed.signed_data, output


def _changed_fixed_amount(key: SignerKey, q: QuoteRequest) -> tuple[dict[str, Any], dict[str, int]]:
    signed, output, _ = build_answer(key, q, fixed_delta=1)
    return signed.signed_data, output


@pytest.mark.parametrize(
    ("make_bad", "expected"),
    [
        (_bad_signature, V.ERR_INVALID_SIGNATURE),
        (_wrong_salt, V.ERR_INVALID_SALT),
        (_deadline_past_nonce, V.ERR_DEADLINE_GT_NONCE),
        (_flipped_sign, V.ERR_DIFF_SIGNS),
        (_changed_fixed_amount, V.ERR_FIXED_AMOUNT_CHANGED),
    ],
    ids=["bad-signature", "wrong-salt", "deadline-past-nonce", "flipped-diff-sign", "changed-fixed-amount"],
)
async def test_refused_answers_surface_the_verifier_string_verbatim(
    make_bad: Callable[[SignerKey, QuoteRequest], tuple[dict[str, Any], dict[str, int]]],
    expected: str,
    http: SimHttp,
    key: SignerKey,
    make_client: MakeClient,
) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-bad", exact_amount_in=20_000)
    q = await feed.next(QuoteRequest)
    signed_data, output = make_bad(key, q)
    answer = await client.send_quote_response(q.quote_id, output, signed_data)
    assert not answer.ok
    assert answer.error == expected
    assert answer.error_code == -32000 and expected in answer.raw
    assert client.state()["counts"]["answers_refused"] == 1


async def test_reused_nonce_is_refused_verbatim(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-1", exact_amount_in=20_000)
    q1 = await feed.next(QuoteRequest)
    signed, output, nonce = build_answer(key, q1)
    assert (await client.send_quote_response(q1.quote_id, output, signed.signed_data)).ok
    assert (await http.post("/_sim/settle", {"quote_id": "q-1"}))["settled"]
    await feed.next(QuoteStatus)

    await http.quote(quote_id="q-2", exact_amount_in=20_000)
    q2 = await feed.next(QuoteRequest)
    reused = parse_nonce(nonce)
    assert isinstance(reused, VersionedNonce)
    signed2, output2, _ = build_answer(key, q2, nonce=nonce, deadline=reused.deadline)
    answer = await client.send_quote_response(q2.quote_id, output2, signed2.signed_data)
    assert (answer.ok, answer.error) == (False, V.ERR_NONCE_USED)


async def test_string_error_shape_is_surfaced_verbatim(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, make_client: MakeClient
) -> None:
    await http.post("/_sim/config", {"error_shape": "string"})
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-s", exact_amount_in=20_000)
    q = await feed.next(QuoteRequest)
    signed_data, output = _wrong_salt(key, q)
    answer = await client.send_quote_response(q.quote_id, output, signed_data)
    assert (answer.ok, answer.error, answer.error_code) == (False, V.ERR_INVALID_SALT, None)


async def test_the_book_records_what_the_venue_received_and_held(
    sim: RelaySimulator, http: SimHttp, key: SignerKey, verifier: VerifierState, make_client: MakeClient
) -> None:
    """`/_sim/book`: each request sent, each answer with what it gives and the signer's credited
    balances when it arrived, and when its nonce was consumed (settled) — the venue's evidence."""
    client, feed = await make_client()
    await feed.next(Connected)
    await http.quote(quote_id="q-book", exact_amount_in=20_000)
    q = await feed.next(QuoteRequest)
    signed, output, nonce = build_answer(key, q)
    credited = verifier.balance(SOLVER, EURE)
    assert (await client.send_quote_response(q.quote_id, output, signed.signed_data)).ok
    refused = await client.send_quote_response("q-unknown", output, signed.signed_data)
    assert not refused.ok

    async with aiohttp.ClientSession() as s, s.get(f"{sim.base_url}/_sim/book") as resp:
        before = await resp.json()
    assert [r["quote_id"] for r in before["requests"]] == ["q-book"]
    first, second = before["answers"]
    assert first["accepted"] and first["signer_id"] == SOLVER and first["nonce"] == base64.b64encode(nonce).decode()
    assert first["gives"] == {EURE: str(output["amount_out"])} and first["credited"][EURE] == str(credited)
    assert first["spent_at"] is None and first["settled_tx"] is None
    assert not second["accepted"] and second["error"]

    outcome = await http.post("/_sim/settle", {"quote_id": "q-book"})
    async with aiohttp.ClientSession() as s, s.get(f"{sim.base_url}/_sim/book?answers_from=0&requests_from=1") as resp:
        after = await resp.json()
    assert after["requests"] == [] and after["requests_total"] == 1
    assert after["answers"][0]["spent_at"] >= first["at"] and after["answers"][0]["settled_tx"] == outcome["tx_hash"]
