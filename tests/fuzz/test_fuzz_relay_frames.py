"""Fuzz `relay_ws.parse_frame`: its contract is "pure, never raises" — every input, however
broken, becomes a typed `Frame` (a `Reject` with a reason code for anything unusable), and a
valid quote or quote_status round-trips in both envelopes (nested `params.data`, flat:
docs/near-intents-relay.md §3)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.venues.near_intents.relay_ws import (
    QuoteRequest,
    QuoteStatus,
    Reject,
    RpcReply,
    SubscriptionInfo,
    parse_frame,
)
from tests.fuzz.strategies import GARBAGE_BYTES, GARBAGE_TEXT, JSON, dumps, mutated

U128_MAX = 2**128 - 1
SUBS = {"sub-q": SubscriptionInfo("quote"), "sub-s": SubscriptionInfo("quote_status", guaranteed=True)}
AT = datetime(2026, 1, 1, tzinfo=UTC)
FRAME_TYPES = (QuoteRequest, QuoteStatus, Reject, RpcReply)

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
amounts = st.integers(1, U128_MAX)


def parse(raw: str | bytes) -> object:
    frame = parse_frame(raw, subscriptions=SUBS, received_at=AT, max_frame_bytes=1 << 20)
    assert isinstance(frame, FRAME_TYPES)
    return frame


def quote_frame(data: dict[str, object], nested: bool, seq: object = 7) -> dict[str, object]:
    params: dict[str, object] = {"subscription": "sub-q", "seq": seq}
    params |= {"data": data} if nested else data
    return {"jsonrpc": "2.0", "method": "event" if nested else "subscribe", "params": params}


@st.composite
def valid_quote(draw: st.DrawFn) -> dict[str, object]:
    side = draw(st.sampled_from(["exact_amount_in", "exact_amount_out"]))
    amount = draw(amounts)
    return {
        "quote_id": draw(ids),
        "defuse_asset_identifier_in": draw(ids),
        "defuse_asset_identifier_out": draw(ids),
        side: draw(st.sampled_from([str(amount), amount])),
        "min_deadline_ms": draw(st.one_of(st.integers(0, 10**9), st.integers(0, 10**9).map(str))),
    }


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(GARBAGE_TEXT)
def test_any_text_is_a_frame_never_an_exception(raw: str) -> None:
    parse(raw)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(GARBAGE_BYTES)
def test_any_bytes_are_a_frame_never_an_exception(raw: bytes) -> None:
    parse(raw)


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(JSON)
def test_any_json_value_is_a_frame(doc: object) -> None:
    parse(dumps(doc))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data())
def test_mutated_quote_frames_are_a_quote_or_a_reject(data: st.DataObject) -> None:
    frame_doc = quote_frame(data.draw(valid_quote()), data.draw(st.booleans()))
    broken = data.draw(mutated(frame_doc))
    frame = parse(dumps(broken))
    if isinstance(frame, QuoteRequest):
        # anything accepted still honours the invariants the strategy relies on
        assert (frame.exact_amount_in is None) != (frame.exact_amount_out is None)
        amount = frame.exact_amount_in or frame.exact_amount_out
        assert amount is not None and 0 < amount <= U128_MAX
        assert frame.min_deadline_ms >= 0 and frame.quote_id


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(st.data())
def test_mutated_seq_and_status_frames_never_raise(data: st.DataObject) -> None:
    status = {"quote_hash": data.draw(ids), "intent_hash": data.draw(ids), "tx_hash": data.draw(ids)}
    doc = {
        "jsonrpc": "2.0",
        "method": "event",
        "params": {"subscription": "sub-s", "seq": data.draw(st.one_of(JSON, st.integers().map(str))), "data": status},
    }
    parse(dumps(data.draw(mutated(doc))) if data.draw(st.booleans()) else dumps(doc))


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(valid_quote(), st.booleans(), st.integers(0, 2**63))
def test_valid_quote_round_trips_in_both_envelopes(data: dict[str, object], nested: bool, seq: int) -> None:
    frame = parse(dumps(quote_frame(data, nested, seq)))
    assert isinstance(frame, QuoteRequest), frame
    assert frame.quote_id == data["quote_id"]
    assert frame.asset_in == data["defuse_asset_identifier_in"]
    assert frame.asset_out == data["defuse_asset_identifier_out"]
    for side in ("exact_amount_in", "exact_amount_out"):
        expected = data.get(side)
        assert getattr(frame, side) == (None if expected is None else int(expected))  # type: ignore[arg-type]
    assert frame.min_deadline_ms == int(data["min_deadline_ms"])  # type: ignore[arg-type]
    assert frame.seq == seq and frame.envelope == ("event" if nested else "subscribe")


@settings(parent=settings.get_profile("quoteloop-fuzz"))
@given(ids, st.one_of(st.none(), ids), st.one_of(st.none(), ids), st.integers(0, 2**63))
def test_valid_quote_status_round_trips(quote_hash: str, intent: str | None, tx: str | None, seq: int) -> None:
    doc = {
        "jsonrpc": "2.0",
        "method": "event",
        "params": {
            "subscription": "sub-s",
            "seq": seq,
            "data": {"quote_hash": quote_hash, "intent_hash": intent, "tx_hash": tx},
        },
    }
    frame = parse(dumps(doc))
    assert isinstance(frame, QuoteStatus), frame
    assert (frame.quote_hash, frame.intent_hash, frame.tx_hash, frame.seq) == (quote_hash, intent, tx, seq)
    assert frame.guaranteed


def test_unicode_digit_seq_is_not_a_crash() -> None:
    # Found by the fuzzer: "²".isdigit() is True but int("²") raises; a seq like that must not
    # escape parse_frame (whose contract is "never raises").
    frame = parse(
        dumps(
            {
                "jsonrpc": "2.0",
                "method": "event",
                "params": {"subscription": "sub-s", "seq": "²", "data": {"quote_hash": "h"}},
            }
        )
    )
    assert isinstance(frame, QuoteStatus) and frame.seq is None


def test_deeply_nested_frame_is_a_reject() -> None:
    frame = parse("[" * 100_000 + "]" * 100_000)
    assert isinstance(frame, Reject) and frame.code in ("invalid_json", "unknown_frame")
