"""Event schemas: the envelope and one typed, versioned payload per topic.

Every Kafka message is one JSON object: the envelope fields plus `payload`. Money is integer base
units carried as decimal strings on the wire (`U128`) or `Decimal` carried as strings (`Dec`);
a float is refused wherever money is expected. `decode()` is the one way bytes become an event:
it raises `EventDecodeError` with a reason for anything malformed or unknown, and never anything
else, so consumers can dead-letter instead of crashing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

U128_MAX = 2**128 - 1


def _parse_u128(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("amount must be an integer in base units (a decimal string), never float or bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"amount must be a string of decimal digits, got {value!r}")
        number = int(value)
    else:
        raise ValueError(f"amount must be a decimal string, got {type(value).__name__}")
    if number < 0 or number > U128_MAX:
        raise ValueError("amount out of u128 range")
    return number


def _parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("decimal values are strings on the wire, never float or bool")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, (int, str)):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"decimal must be a string, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError("decimal must be finite")
    return number


# Integer base units; a decimal string on the wire.
U128 = Annotated[
    int,
    BeforeValidator(_parse_u128),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+$"}),
]
# Exact decimal (rates, percentages); a string on the wire.
Dec = Annotated[
    Decimal,
    BeforeValidator(_parse_decimal),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}),
]

Direction = Literal["SELL_BTC", "BUY_BTC"]
FixedSide = Literal["exact_amount_in", "exact_amount_out"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- payloads, one per topic -----------------------------------------------------------------


class RawQuote(_Model):
    """`raw.near_intents.quote`: every quote frame the relay sent, kept verbatim."""

    raw_frame: str
    subscription: str | None
    received_at: AwareDatetime
    classification: Literal["active_pair", "other_pair", "invalid"]
    quote_id: str | None = None
    repeat: bool = False


class SwapDemand(_Model):
    """`norm.swap_demand`: one active-pair quote request, normalised."""

    quote_id: str
    direction: Direction
    asset_in: str  # defuse_asset_identifier_in: what the taker pays, what quoteloop receives
    asset_out: str  # defuse_asset_identifier_out: what quoteloop gives
    asset_in_decimals: int = Field(ge=0, le=38)
    asset_out_decimals: int = Field(ge=0, le=38)
    fixed_side: FixedSide
    fixed_amount: U128
    min_deadline_ms: int = Field(ge=0)
    partner: dict[str, Any] = Field(default_factory=dict)
    received_at: AwareDatetime
    repeat: bool = False


class MarketPrice(_Model):
    """`ref.market_price`: the fair BTC/EURe rates per direction and the sources behind them.

    Rates are EURe per BTC. `fair_rate_buy_btc` is what BTC received is worth (Kraken best bid),
    `fair_rate_sell_btc` what BTC given costs (best ask); see architecture "Prices and edge".
    """

    source: Literal["kraken", "coingecko"]
    fallback_used: bool
    bid: Dec | None
    ask: Dec | None
    mid: Dec
    fair_rate_buy_btc: Dec
    fair_rate_sell_btc: Dec
    source_time: AwareDatetime
    freshness_ms: int = Field(ge=0)
    eure_eur_rate: Dec
    eure_basis: Literal["assumed_1_to_1", "sanity_checked"]
    cross_check_price: Dec | None = None
    cross_check_divergence_pct: Dec | None = None
    decisionable: bool
    status_reason: str | None = None


class AssetInventory(_Model):
    asset_id: str
    decimals: int = Field(ge=0, le=38)
    spendable: U128  # credited inside the verifier, nothing else
    pending_in: U128 = 0
    pending_out: U128 = 0


class Reconciliation(_Model):
    asset_id: str
    status: Literal["ok", "credited_lower_than_expected", "awaiting_credit"]
    expected: U128 | None = None
    credited: U128 | None = None
    liquidity_action_id: str | None = None


class IntentInventory(_Model):
    """`state.intent_inventory`: credited (spendable) balances apart from pending movements."""

    inventory_id: str
    account_id: str
    assets: list[AssetInventory]
    synced_at: AwareDatetime | None
    block_height: int | None = None
    age_ms: int = Field(ge=0)
    stale: bool
    stale_reason: str | None = None
    reconciliation: list[Reconciliation] = Field(default_factory=list)


class LiquidityAction(_Model):
    """`ops.liquidity_action`: one treasury action and its current status."""

    liquidity_action_id: str
    kind: Literal["deposit_address", "funding", "withdrawal", "freeze", "unfreeze"]
    status: Literal[
        "requested", "issued", "notified", "pending", "credited", "delayed", "failed",
        "duplicate", "refused", "completed", "frozen", "unfrozen",
    ]
    asset_id: str | None = None
    chain: str | None = None
    amount: U128 | None = None
    address: str | None = None
    tx_hash: str | None = None
    wallet_label: str | None = None
    reason: str | None = None
    operator: str | None = None


class TradeDecision(_Model):
    """`decision.trade_decision`: the strategy's auditable verdict on one quote request."""

    decision_id: str
    quote_id: str
    pair: str
    direction: Direction | None
    decision: Literal["execute", "reject"]
    decision_reason: str
    implied_rate: Dec | None = None
    reference_rate: Dec | None = None
    gross_edge_pct: Dec | None = None
    threshold_pct: Dec
    price_freshness_ms: int | None = None
    price_event_id: uuid.UUID | None = None
    price_source: str | None = None
    fallback_used: bool | None = None
    eure_eur_rate: Dec | None = None
    eure_basis: str | None = None
    inventory_snapshot_id: str | None = None
    inventory_snapshot: dict[str, Any] | None = None
    amount_in: U128 | None = None
    amount_out: U128 | None = None
    notional_eure: Dec | None = None
    protocol_fee_pips: int | None = None
    armed: bool


class ExecuteTrade(_Model):
    """`cmd.execute_trade`: an armed strategy's order to answer one quote request."""

    command_id: str
    decision_id: str
    quote_id: str
    direction: Direction
    asset_in: str
    asset_out: str
    amount_in: U128
    amount_out: U128
    fixed_side: FixedSide
    min_deadline_ms: int = Field(ge=0)
    answer_by: AwareDatetime


class TradeResult(_Model):
    """`exec.trade_result`: what happened to a command, each state change one event."""

    execution_id: str
    command_id: str
    quote_id: str
    decision_id: str | None = None
    status: Literal["refused", "acknowledged", "rejected", "uncertain", "settled", "expired"]
    reason: str | None = None
    venue_response: Any = None
    quote_hash: str | None = None
    intent_hash: str | None = None
    tx_hash: str | None = None
    nonce: str | None = None
    deadline: AwareDatetime | None = None


# --- topics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    topic: str
    payload: type[_Model]
    schema_version: int
    table: str
    # payload fields copied to indexed columns of the history table, in column order
    link_fields: tuple[str, ...]


TOPICS: dict[str, TopicSpec] = {
    spec.topic: spec
    for spec in (
        TopicSpec("raw.near_intents.quote", RawQuote, 1, "raw_near_intents_quotes", ("quote_id",)),
        TopicSpec("norm.swap_demand", SwapDemand, 1, "swap_demand_events", ("quote_id",)),
        TopicSpec("ref.market_price", MarketPrice, 1, "market_price_events", ("source",)),
        TopicSpec(
            "state.intent_inventory", IntentInventory, 1, "intent_inventory_snapshots", ("inventory_id",)
        ),
        TopicSpec(
            "ops.liquidity_action", LiquidityAction, 1, "liquidity_actions", ("liquidity_action_id", "status")
        ),
        TopicSpec(
            "decision.trade_decision",
            TradeDecision,
            1,
            "trade_decisions",
            ("decision_id", "quote_id", "price_event_id", "inventory_snapshot_id", "decision", "decision_reason"),
        ),
        TopicSpec(
            "cmd.execute_trade", ExecuteTrade, 1, "execute_trade_commands", ("command_id", "decision_id", "quote_id")
        ),
        TopicSpec(
            "exec.trade_result",
            TradeResult,
            1,
            "trade_execution_results",
            ("execution_id", "command_id", "quote_id", "status"),
        ),
    )
}
PAYLOAD_TOPIC: dict[type[_Model], str] = {spec.payload: topic for topic, spec in TOPICS.items()}

P = TypeVar("P", bound=_Model)


class Producer(_Model):
    service: str
    instance: str


class Envelope(_Model, Generic[P]):
    event_id: uuid.UUID
    event_type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    observed_at: AwareDatetime
    producer: Producer
    pair: str
    correlation_id: str | None = None
    causation_id: uuid.UUID | None = None
    payload: P

    @property
    def topic(self) -> str:
        return self.event_type


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_event(
    payload: P,
    *,
    producer: Producer,
    pair: str,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
    causation_id: uuid.UUID | None = None,
) -> Envelope[P]:
    """Wrap a payload in a fresh envelope; the topic follows from the payload's type."""
    topic = PAYLOAD_TOPIC[type(payload)]
    observed = now_utc()
    return Envelope[type(payload)](  # type: ignore[index]
        event_id=uuid.uuid4(),
        event_type=topic,
        schema_version=TOPICS[topic].schema_version,
        occurred_at=occurred_at or observed,
        observed_at=observed,
        producer=producer,
        pair=pair,
        correlation_id=correlation_id,
        causation_id=causation_id,
        payload=payload,
    )


def encode(event: Envelope[Any]) -> bytes:
    return event.model_dump_json().encode()


class EventDecodeError(Exception):
    """A message that is not a valid event of its topic; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ENVELOPES: dict[str, type[Envelope[Any]]] = {
    topic: Envelope[spec.payload] for topic, spec in TOPICS.items()  # type: ignore[name-defined]
}


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "<root>"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def decode(topic: str, raw: bytes | None) -> Envelope[Any]:
    """Parse and validate one message of `topic`; raise `EventDecodeError` on anything wrong."""
    spec = TOPICS.get(topic)
    if spec is None:
        raise EventDecodeError(f"unknown topic {topic!r}")
    if raw is None:
        raise EventDecodeError("empty message (tombstone)")
    try:
        # fast path: pydantic-core parses and validates the JSON in one pass
        event = _ENVELOPES[topic].model_validate_json(raw)
    except ValidationError:
        _diagnose(topic, spec, raw)  # raises with the most useful reason
        raise AssertionError("unreachable") from None
    if event.event_type != topic:
        raise EventDecodeError(f"event_type {event.event_type!r} does not match topic {topic!r}")
    if event.schema_version != spec.schema_version:
        raise EventDecodeError(
            f"unsupported schema_version {event.schema_version!r} for {topic} (expected {spec.schema_version})"
        )
    return event


def _diagnose(topic: str, spec: TopicSpec, raw: bytes) -> None:
    """Say why `raw` is not a valid event of `topic`, checking the envelope head first."""
    try:
        head = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(head, dict):
        raise EventDecodeError("message is not a JSON object")
    if head.get("event_type") != topic:
        raise EventDecodeError(f"event_type {head.get('event_type')!r} does not match topic {topic!r}")
    if head.get("schema_version") != spec.schema_version:
        raise EventDecodeError(
            f"unsupported schema_version {head.get('schema_version')!r} for {topic} (expected {spec.schema_version})"
        )
    try:
        _ENVELOPES[topic].model_validate(head)
    except ValidationError as exc:
        raise EventDecodeError(f"invalid {topic} event: {_first_error(exc)}") from None
    raise EventDecodeError(f"invalid {topic} event")


def link_values(event: Envelope[Any]) -> tuple[Any, ...]:
    """The payload's linking ids for the history table's indexed columns."""
    payload = event.payload
    return tuple(getattr(payload, name) for name in TOPICS[event.event_type].link_fields)
