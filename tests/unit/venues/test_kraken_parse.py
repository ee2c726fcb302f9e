"""Kraken v2 frames parse into typed messages with Decimal prices and UTC times; the book keeps
depth and its CRC32 matches Kraken's own recorded checksums (`docs/kraken.md` (§n below))."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from daemons.venues.kraken import (
    AckMessage,
    BareError,
    BookData,
    BookLevel,
    BookMessage,
    ChannelMessage,
    HeartbeatMessage,
    KrakenParseError,
    OrderBook,
    PongMessage,
    StatusMessage,
    TickerMessage,
    UnknownMessage,
    book_checksum,
    checksum_field,
    parse_message,
)

# §5, the docs' ticker snapshot example, verbatim
TICKER_SNAPSHOT = """{
  "channel": "ticker", "type": "snapshot",
  "data": [{"symbol": "ALGO/USD", "bid": 0.10025, "bid_qty": 740.0, "ask": 0.10036,
            "ask_qty": 1361.44813783, "last": 0.10035, "volume": 997038.98383185, "vwap": 0.10148,
            "low": 0.09979, "high": 0.10285, "change": -0.00017, "change_pct": -0.17,
            "timestamp": "2023-09-25T09:04:31.742648Z"}]
}"""


def test_status_with_uint64_connection_id() -> None:
    msg = parse_message(
        '{"channel": "status", "data": [{"api_version": "v2", "connection_id": 13834774380200032777,'
        ' "system": "online", "version": "2.0.0"}], "type": "update"}'
    )
    assert isinstance(msg, StatusMessage)
    assert msg.system == "online"
    assert msg.data[0].connection_id == 13834774380200032777


def test_heartbeat() -> None:
    assert isinstance(parse_message('{"channel": "heartbeat"}'), HeartbeatMessage)


def test_ticker_snapshot_keeps_exact_decimals_and_utc_time() -> None:
    msg = parse_message(TICKER_SNAPSHOT)
    assert isinstance(msg, TickerMessage) and msg.type == "snapshot"
    data = msg.data[0]
    assert data.bid == Decimal("0.10025") and isinstance(data.bid, Decimal)
    assert data.ask_qty == Decimal("1361.44813783")
    assert str(data.bid_qty) == "740.0"  # the wire text survives, no float round trip
    assert data.change == Decimal("-0.00017")
    assert data.timestamp == datetime(2023, 9, 25, 9, 4, 31, 742648, tzinfo=UTC)


def test_ticker_update_without_timestamp_or_last() -> None:
    # §5/§16: ccxt's captured ticker has no timestamp; last is only guaranteed after a trade
    msg = parse_message(
        '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/EUR", "bid": 108359.8,'
        ' "bid_qty": 0.1, "ask": 108359.9, "ask_qty": 2}]}'
    )
    assert isinstance(msg, TickerMessage)
    data = msg.data[0]
    assert data.timestamp is None and data.last is None
    assert data.ask_qty == Decimal(2)


def test_ticker_missing_bid_is_a_parse_error() -> None:
    with pytest.raises(KrakenParseError):
        parse_message(
            '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/EUR", "ask": 1, "ask_qty": 1}]}'
        )


def test_subscribe_ack_shapes() -> None:
    # §5: nautilus fixture, and python-kraken-sdk's live ack with the echoed event_trigger
    ack = parse_message(
        '{"method": "subscribe", "result": {"channel": "ticker", "symbol": "BTC/USD", "snapshot": true},'
        ' "success": true, "time_in": "2023-09-25T09:04:31.742599Z", "time_out": "2023-09-25T09:04:31.742648Z",'
        ' "req_id": 1}'
    )
    assert isinstance(ack, AckMessage) and ack.success
    assert ack.channel == "ticker" and ack.subject_symbol == "BTC/USD" and ack.req_id == 1
    assert ack.time_out is not None and ack.time_out.tzinfo is not None
    ack2 = parse_message(
        '{"method": "subscribe", "req_id": 12345678, "result": {"channel": "ticker", "event_trigger": "trades",'
        ' "snapshot": true, "symbol": "BTC/USD"}, "success": true, "warnings": ["tick_size is deprecated"]}'
    )
    assert isinstance(ack2, AckMessage) and ack2.result is not None
    assert ack2.result["event_trigger"] == "trades" and ack2.warnings


def test_error_ack_names_symbol_at_top_level() -> None:
    # §8: python-kraken-sdk's negative ack (the "subscribe" method on a failed unsubscribe)
    ack = parse_message(
        '{"error": "Subscription Not Found", "method": "subscribe", "req_id": 123456789, "success": false,'
        ' "symbol": "BTC/USD", "time_in": "2023-09-25T09:04:31.742599Z"}'
    )
    assert isinstance(ack, AckMessage)
    assert not ack.success and ack.error == "Subscription Not Found"
    assert ack.subject_symbol == "BTC/USD" and ack.channel is None


def test_method_error_without_req_id() -> None:
    ack = parse_message(
        '{"error": "Unsupported field: \'price\' for the given msg type: add order", "method": "add_order",'
        ' "success": false, "time_in": "2025-05-13T08:59:44.803511Z", "time_out": "2025-05-13T08:59:44.803542Z"}'
    )
    assert isinstance(ack, AckMessage) and ack.req_id is None and not ack.success


def test_bare_rate_error_with_capital_e() -> None:
    # §8: third-party shape, UNCONFIRMED; accepted in both spellings
    msg = parse_message('{"Error": "Exceeded msg rate"}')
    assert isinstance(msg, BareError) and msg.error == "Exceeded msg rate"
    assert isinstance(parse_message('{"error": "Malformed request"}'), BareError)


def test_pong() -> None:
    msg = parse_message(
        '{"method": "pong", "req_id": 101, "time_in": "2023-09-24T14:10:23.799685Z",'
        ' "time_out": "2023-09-24T14:10:23.799703Z"}'
    )
    assert isinstance(msg, PongMessage) and msg.req_id == 101


def test_book_snapshot_and_update() -> None:
    snap = parse_message(
        '{"channel": "book", "type": "snapshot", "data": [{"symbol": "MATIC/USD",'
        ' "bids": [{"price": 0.5666, "qty": 4831.75496356}, {"price": 0.5665, "qty": 6658.22734739}],'
        ' "asks": [{"price": 0.5668, "qty": 4410.79769741}, {"price": 0.5669, "qty": 4655.40412487}],'
        ' "checksum": 2439117997}]}'
    )
    assert isinstance(snap, BookMessage)
    assert snap.data[0].bids[0].price == Decimal("0.5666") and snap.data[0].timestamp is None
    update = parse_message(
        '{"channel": "book", "type": "update", "data": [{"symbol": "BTC/USD", "bids": [],'
        ' "asks": [{"price": 29431.1, "qty": 0.0}, {"price": 29433.3, "qty": 0.8}],'
        ' "checksum": 3547452596, "timestamp": "2023-07-30T15:29:58.343415Z"}]}'
    )
    assert isinstance(update, BookMessage) and update.data[0].checksum == 3547452596
    assert update.data[0].asks[0].qty == 0


def test_other_channels_unknown_shapes_and_garbage() -> None:
    assert isinstance(parse_message('{"channel": "trade", "type": "update", "data": []}'), ChannelMessage)
    assert isinstance(parse_message('{"hello": 1}'), UnknownMessage)
    with pytest.raises(KrakenParseError):
        parse_message("not json")
    with pytest.raises(KrakenParseError):
        parse_message('[0, {}, "ticker"]')  # a v1 array frame


def test_checksum_field_formatting_from_the_docs() -> None:
    # Kraken's book-checksum-v2 guide: "45285.2" -> "452852", "0.00100000" -> "100000"
    assert checksum_field(Decimal("45285.2")) + checksum_field(Decimal("0.00100000")) == "452852100000"
    assert checksum_field(Decimal("1E-8")) == "1"  # never exponent notation


# Recorded Kraken BTC/USD book (python-kraken-sdk tests/spot/fixture/orderbook.json, a v1 capture;
# the string algorithm is the same in v2, §6). The docs' own book example, as ccxt copies it, is
# cut to 2 levels, so its checksum cannot be reproduced; this capture's can.
ASKS = [
    ("27918.60000", "0.10013466"),
    ("27921.40000", "0.04476644"),
    ("27921.70000", "0.00200000"),
    ("27922.60000", "0.00744600"),
    ("27922.70000", "0.03909756"),
    ("27922.80000", "0.01570717"),
    ("27922.90000", "0.01933877"),
    ("27923.10000", "0.03165398"),
    ("27923.20000", "2.68594216"),
    ("27924.10000", "0.03123600"),
]
BIDS = [
    ("27918.50000", "0.44201019"),
    ("27918.20000", "2.68641244"),
    ("27918.10000", "0.01920189"),
    ("27917.30000", "0.10000000"),
    ("27916.60000", "0.04794621"),
    ("27916.00000", "2.57867480"),
    ("27915.90000", "0.10736874"),
    ("27914.40000", "2.68678413"),
    ("27914.00000", "0.01734074"),
    ("27913.90000", "0.04475898"),
]


def _levels(pairs: list[tuple[str, str]]) -> list[BookLevel]:
    return [BookLevel(price=Decimal(p), qty=Decimal(q)) for p, q in pairs]


def test_book_checksum_matches_recorded_kraken_updates() -> None:
    book = OrderBook("BTC/USD", depth=10)
    book.apply_snapshot(BookData(symbol="BTC/USD", bids=_levels(BIDS), asks=_levels(ASKS)))
    book.apply_update(BookData(symbol="BTC/USD", asks=_levels([("27918.60000", "0.19013466")])))
    assert book.checksum() == 3509641781
    book.apply_update(BookData(symbol="BTC/USD", asks=_levels([("27918.60000", "0.19313466")])))
    assert book.checksum() == 3537477593
    # a removal (qty 0) and a level coming back into the top 10 in one message
    book.apply_update(
        BookData(symbol="BTC/USD", asks=_levels([("27922.90000", "0.00000000"), ("27925.20000", "0.40000000")]))
    )
    assert book.checksum() == 2130071711
    assert book.best_ask() == (Decimal("27918.60000"), Decimal("0.19313466"))
    assert book.best_bid() == (Decimal("27918.50000"), Decimal("0.44201019"))


def test_book_truncates_to_depth_without_qty_zero() -> None:
    book = OrderBook("BTC/USD", depth=10)
    book.apply_snapshot(BookData(symbol="BTC/USD", bids=_levels(BIDS), asks=_levels(ASKS)))
    # a better bid pushes the worst one out of depth; Kraken sends no delete for it (§6)
    book.apply_update(BookData(symbol="BTC/USD", bids=_levels([("27918.55000", "1.00000000")])))
    bids = book.bids()
    assert len(bids) == 10
    assert bids[0][0] == Decimal("27918.55") and Decimal("27913.9") not in {p for p, _ in bids}
    assert book.checksum() == book_checksum(book.asks(), bids)


def test_book_same_level_twice_in_one_message_applies_in_order() -> None:
    book = OrderBook("BTC/USD", depth=10)
    book.apply_snapshot(BookData(symbol="BTC/USD", bids=_levels(BIDS), asks=_levels(ASKS)))
    book.apply_update(
        BookData(symbol="BTC/USD", asks=_levels([("27918.60000", "0.10000000"), ("27918.60000", "0.09658466")]))
    )
    assert book.best_ask() == (Decimal("27918.60000"), Decimal("0.09658466"))
