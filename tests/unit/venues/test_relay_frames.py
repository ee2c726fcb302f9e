"""Relay WebSocket frame parsing (docs/near-intents-relay.md §3–§5, §9): both event envelopes,
tolerant field forms, and every malformed frame turned into a typed Reject, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from daemons.venues.near_intents.relay_ws import (
    QuoteFilter,
    QuoteRequest,
    QuoteStatus,
    Reject,
    RpcReply,
    SubscriptionInfo,
    answer_from_reply,
    parse_frame,
)

BTC = "nep141:btc.omft.near"
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
SUBS = {
    "sub-q": SubscriptionInfo("quote"),
    "sub-s": SubscriptionInfo("quote_status", guaranteed=True),
    "sub-s-plain": SubscriptionInfo("quote_status"),
}


def quote_data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "quote_id": "q-1",
        "defuse_asset_identifier_in": BTC,
        "defuse_asset_identifier_out": EURE,
        "exact_amount_in": "100000",
        "min_deadline_ms": 60000,
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not ...}


def event(data: dict[str, Any], sub: str = "sub-q", **params: Any) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "method": "event", "params": {"subscription": sub, "data": data, **params}},
        ensure_ascii=False,
    )


def flat(data: dict[str, Any], sub: str = "sub-q") -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscribe", "params": {"subscription": sub, **data}})


def parse(raw: str | bytes, **kw: Any) -> Any:
    return parse_frame(raw, subscriptions=SUBS, received_at=NOW, **kw)


def test_event_envelope_quote() -> None:
    raw = event(quote_data(), metadata={"partner_id": "1click", "traceparent": "00-abc"})
    q = parse(raw, epoch=3)
    assert isinstance(q, QuoteRequest)
    assert (q.quote_id, q.asset_in, q.asset_out) == ("q-1", BTC, EURE)
    assert q.exact_amount_in == 100000 and q.exact_amount_out is None
    assert q.min_deadline_ms == 60000
    assert q.metadata == {"partner_id": "1click", "traceparent": "00-abc"}
    assert (q.subscription, q.envelope, q.seq, q.epoch) == ("sub-q", "event", None, 3)
    assert q.raw == raw and q.received_at == NOW


def test_documented_flat_subscribe_envelope_with_string_deadline() -> None:
    # the docs' websocket.mdx example, with the old gitbook's string min_deadline_ms
    # (docs/near-intents-relay.md §3)
    q = parse(flat(quote_data(exact_amount_in=..., exact_amount_out="1000", min_deadline_ms="60000")))
    assert isinstance(q, QuoteRequest)
    assert q.envelope == "subscribe"
    assert q.exact_amount_out == 1000 and q.exact_amount_in is None
    assert q.min_deadline_ms == 60000
    assert q.metadata == {}


def test_u128_amounts_stay_exact() -> None:
    big = str((1 << 128) - 1)
    q = parse(event(quote_data(exact_amount_in=big)))
    assert isinstance(q, QuoteRequest) and q.exact_amount_in == (1 << 128) - 1


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (quote_data(quote_id=...), "missing_fields", "quote_id"),
        (quote_data(defuse_asset_identifier_out=...), "missing_fields", "defuse_asset_identifier_out"),
        (quote_data(min_deadline_ms=...), "missing_fields", "min_deadline_ms"),
        (quote_data(exact_amount_in=...), "missing_fields", "exact_amount_in|exact_amount_out"),
        (quote_data(exact_amount_out="5"), "invalid_field", "both"),
        (quote_data(exact_amount_in=1.5), "invalid_field", "exact_amount_in"),
        (quote_data(exact_amount_in="-5"), "invalid_field", "exact_amount_in"),
        (quote_data(exact_amount_in="0"), "invalid_field", "exact_amount_in"),
        (quote_data(exact_amount_in=str(1 << 128)), "invalid_field", "range"),
        (quote_data(min_deadline_ms="soon"), "invalid_field", "min_deadline_ms"),
    ],
)
def test_bad_quotes_are_rejects(data: dict[str, Any], code: str, needle: str) -> None:
    raw = event(data)
    r = parse(raw)
    assert isinstance(r, Reject)
    assert r.code == code
    assert needle in r.reason
    assert r.raw == raw and r.subscription == "sub-q"


def test_quote_status_both_envelopes() -> None:
    data = {"quote_hash": "QH", "intent_hash": "IH", "tx_hash": "TX"}
    s = parse(event(data, sub="sub-s", seq=17))
    assert isinstance(s, QuoteStatus)
    assert (s.quote_hash, s.intent_hash, s.tx_hash, s.seq, s.guaranteed) == ("QH", "IH", "TX", 17, True)
    f = parse(flat(data, sub="sub-s-plain"))
    assert isinstance(f, QuoteStatus)
    assert (f.envelope, f.seq, f.guaranteed) == ("subscribe", None, False)


def test_status_without_quote_hash_is_reject_that_keeps_seq_for_ack() -> None:
    r = parse(event({"intent_hash": "IH"}, sub="sub-s", seq=4))
    assert isinstance(r, Reject)
    assert r.code == "missing_fields" and "quote_hash" in r.reason
    assert (r.seq, r.guaranteed) == (4, True)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[1, 2]", "unknown_frame"),
        (json.dumps({"jsonrpc": "2.0", "method": "hello", "params": {}}), "unknown_frame"),
        (json.dumps({"jsonrpc": "2.0", "method": "event", "params": {"data": {}}}), "unknown_frame"),
        (json.dumps({"jsonrpc": "2.0"}), "unknown_frame"),
        (event(quote_data(), sub="sub-other"), "unknown_subscription"),
    ],
)
def test_unusable_frames(raw: str | bytes, code: str) -> None:
    r = parse(raw)
    assert isinstance(r, Reject) and r.code == code


def test_oversize_frame_is_reject_with_truncated_raw() -> None:
    raw = event(quote_data(padding="x" * 5000))
    r = parse(raw, max_frame_bytes=1000)
    assert isinstance(r, Reject) and r.code == "oversize"
    assert len(r.raw) <= 512
    # multi-byte text is measured in bytes, not characters
    wide = event(quote_data(padding="€" * 300))
    assert len(wide) < 1000 < len(wide.encode())
    assert isinstance(parse(wide, max_frame_bytes=1000), Reject)
    assert isinstance(parse(wide, max_frame_bytes=10_000), QuoteRequest)


def test_client_side_pair_filter() -> None:
    flt = QuoteFilter(tokens_in=(BTC, EURE), tokens_out=(BTC, EURE))
    assert isinstance(parse(event(quote_data()), quote_filter=flt), QuoteRequest)
    r = parse(event(quote_data(defuse_asset_identifier_out="nep141:wrap.near")), quote_filter=flt)
    assert isinstance(r, Reject) and r.code == "filtered"


def test_replies_and_answers() -> None:
    ok = parse('{"jsonrpc":"2.0","id":7,"result":"OK"}')
    assert isinstance(ok, RpcReply) and ok.id == 7
    assert answer_from_reply(ok).ok
    obj = parse('{"jsonrpc":"2.0","id":8,"error":{"code":-32000,"message":"invalid signature"}}')
    a = answer_from_reply(obj)
    assert (a.ok, a.error, a.error_code) == (False, "invalid signature", -32000)
    s = answer_from_reply(parse('{"jsonrpc":"2.0","id":9,"error":"nonce was already used"}'))
    assert (s.ok, s.error) == (False, "nonce was already used")
    odd = answer_from_reply(parse('{"jsonrpc":"2.0","id":10,"result":"MAYBE"}'))
    assert not odd.ok and odd.error is not None and "MAYBE" in odd.error
