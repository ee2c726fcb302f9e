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
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
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

from daemons.core.amounts import parse_u128


def _parse_u128(value: Any) -> int:
    # zero allowed; a JSON integer too (quoteloop's own producers send strings, but an int is exact)
    return parse_u128(value, allow_int=True)


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
    """`ref.market_price`: the fair BTC/EURe rate per direction, both sources behind it and their
    health. Published on every change and at a steady interval, so the event itself says how
    fresh the price is.

    Fair rates are EURe per BTC (docs/design.md §3): `fair_rate_buy_btc` is what BTC
    received is worth (Kraken best bid), `fair_rate_sell_btc` what BTC given costs (best ask),
    `fair_rate_mid` between; each is the EUR price divided by `eure_eur_rate`, rounded in
    quoteloop's favour. On the CoinGecko fallback (`fallback_used`) the single aggregate price is
    widened by a configured half-spread. `source`, the fair rates, `source_time` and
    `freshness_ms` are null when no source is usable. Act only when `decisionable`;
    `status_reason` says why not (`BOTH_STALE`, `FALLBACK_DISABLED`, `SOURCE_CONFLICT`,
    `EURE_EUR_OUT_OF_TOLERANCE`). `bid`/`ask`/`mid` are Kraken's own EUR quotes; ages are
    measured from our receive time (Kraken) or CoinGecko's `last_updated_at`.
    """

    # the fair rate and where it came from
    source: Literal["kraken", "coingecko"] | None
    fallback_used: bool
    fair_rate_buy_btc: Dec | None
    fair_rate_sell_btc: Dec | None
    fair_rate_mid: Dec | None = None
    source_time: AwareDatetime | None
    freshness_ms: int | None = Field(ge=0)
    # EURe/EUR basis: the rate applied, how it was established, and what CoinGecko said
    eure_eur_rate: Dec
    eure_basis: Literal["assumed_1_to_1", "sanity_checked"]
    eure_state: Literal["ok", "no_data", "stale", "out_of_tolerance"] = "no_data"
    eure_eur_observed: Dec | None = None
    eure_eur_observed_age_ms: int | None = Field(default=None, ge=0)
    # Kraken BTC/EUR (primary): latest valid top of book
    bid: Dec | None
    ask: Dec | None
    mid: Dec | None
    kraken_source_time: AwareDatetime | None = None
    kraken_age_ms: int | None = Field(default=None, ge=0)
    kraken_fresh: bool = False
    # ok | no_data | stale | disconnected | system_<status> | subscription_rejected | data_stale
    kraken_state: str = "no_data"
    # CoinGecko BTC/EUR (fallback and cross-check)
    coingecko_price: Dec | None = None
    coingecko_last_updated_at: AwareDatetime | None = None
    coingecko_age_ms: int | None = Field(default=None, ge=0)
    coingecko_fresh: bool = False
    coingecko_state: Literal["ok", "no_data", "stale"] = "no_data"
    coingecko_poll_error: str | None = None  # kind of the latest poll's failure, null after a success
    # cross-check: |kraken mid - coingecko| / coingecko, in percent, when both are fresh
    cross_check_divergence_pct: Dec | None = None
    source_conflict: bool = False
    decisionable: bool
    status_reason: Literal["BOTH_STALE", "FALLBACK_DISABLED", "SOURCE_CONFLICT", "EURE_EUR_OUT_OF_TOLERANCE"] | None = (
        None
    )


class PendingMovement(_Model):
    """One treasury movement still under way: funding on its way in (a liquidity action, or a
    deposit the POA bridge shows before it is credited) or a withdrawal on its way out. Reported
    so it is visible; never counted as spendable."""

    direction: Literal["in", "out"]
    asset_id: str | None
    amount: U128 | None
    source: Literal["liquidity_action", "bridge"]
    status: str  # the action's latest status, or the bridge's deposit status verbatim
    liquidity_action_id: str | None = None
    chain: str | None = None
    tx_hash: str | None = None


class AssetInventory(_Model):
    """One asset of the pair. `spendable` = `credited` − `reserved_out`: the verifier's credited
    balance less pending withdrawals whose burn has not settled yet (they are still inside the
    credited balance but already committed to leave). Pending inbound funding is never in it."""

    asset_id: str
    decimals: int = Field(ge=0, le=38)
    spendable: U128
    credited: U128 | None = None  # `mt_batch_balance_of` for the signer account, as read
    reserved_out: U128 = 0
    pending_in: U128 = 0
    pending_out: U128 = 0  # every pending withdrawal, burned or not


ReconciliationStatus = Literal["awaiting_credit", "ok", "credited_lower_than_expected", "inconclusive"]
LiquidityActionKind = Literal["deposit_address", "funding", "withdrawal", "freeze", "unfreeze"]


class Reconciliation(_Model):
    """A funding action's credit checked against the credited balance.

    `baseline` is the credited balance read while the deposit was still uncredited, `credited`
    the balance read after the credit; `expected` = `baseline` + every credit known to have
    landed between the two readings (`window_action_ids`; this action's `amount` among them).
    `credited` < `expected` is `credited_lower_than_expected` with the `shortfall`. When other
    balance movements (our own settled trades, a withdrawal, a credit of unknown timing) fall in
    the window, the figures cannot be attributed: `inconclusive`, with the `reason`.
    """

    asset_id: str
    status: ReconciliationStatus
    liquidity_action_id: str | None = None
    tx_hash: str | None = None
    amount: U128 | None = None
    baseline: U128 | None = None
    expected: U128 | None = None
    credited: U128 | None = None
    shortfall: U128 | None = None
    window_action_ids: list[str] = Field(default_factory=list)
    baseline_read_at: AwareDatetime | None = None
    credited_read_at: AwareDatetime | None = None
    reason: str | None = None
    resolved_at: AwareDatetime | None = None


class IntentInventory(_Model):
    """`state.intent_inventory`: credited (spendable) balances apart from pending movements.

    Published after every successful sync and whenever staleness changes. `inventory_id` is
    unique per published snapshot (decisions cite it); `sync_id` names the verifier reading the
    balances come from, so a stale re-publication of the same reading keeps its `sync_id`.
    `age_ms` is the reading's age at publication: consumers refuse a snapshot that is `stale` or
    too old by their own bound. Nothing is published before the first successful reading, so
    balances are never invented. `pending_complete` is false while the liquidity history is still
    being read or the bridge could not be asked.

    `block_height` / `block_hash` name the `final` block the balances were read at; heights never
    go back from one snapshot to the next. `results_through` (partition -> offset of
    `exec.trade_result`) says which settlements the balances hold: every result below those offsets
    was published before the chain head was read, and the balances come from a block at or past
    that head, so each settlement those results report is in them. A consumer releases a settled
    answer's hold only on a snapshot whose `results_through` passes that result's offset
    (docs/near-rpc.md, "Finality"). None: this snapshot proves nothing about settlements.
    """

    inventory_id: str
    account_id: str
    assets: list[AssetInventory]
    synced_at: AwareDatetime | None
    block_height: int | None = None
    block_hash: str | None = None
    results_through: dict[int, int] | None = None
    # the verifier's protocol fee (view `fee`, pips) when read with these balances
    fee_pips: int | None = Field(default=None, ge=0)
    age_ms: int = Field(ge=0)
    stale: bool
    stale_since: AwareDatetime | None = None
    stale_reason: str | None = None
    freshness_bound_ms: int | None = Field(default=None, ge=1)
    sync_id: str | None = None
    trigger: (
        Literal[
            "startup",
            "interval",
            "refresh",
            "trade_settled",
            "liquidity_action",
            "credit_observed",
            "history_caught_up",
            "resume",
            "staleness_change",
            "finality",
        ]
        | None
    ) = None
    pending_complete: bool = True
    pending: list[PendingMovement] = Field(default_factory=list)
    reconciliation_status: ReconciliationStatus = "ok"
    reconciliation: list[Reconciliation] = Field(default_factory=list)


def input_age_ms(
    origin: datetime | None, published_age_ms: int | None, observed_at: datetime, now: datetime
) -> int | None:
    """An input's age at `now` in whole milliseconds, rounded up. From its own origin timestamp
    when it has one (a snapshot's `synced_at`, a price's `source_time`): the figure an auditor
    computes from the stored events, whatever publishing and delivery took. Without one, the age
    it was published with plus the time since its envelope's `observed_at`."""
    if origin is not None:
        micros = (now - origin) // timedelta(microseconds=1)
        return max(0, -(-micros // 1000))
    if published_age_ms is None:
        return None
    return published_age_ms + max(0, int((now - observed_at).total_seconds() * 1000))


def results_cover(results_through: dict[int, int] | None, needs: dict[int, int] | None) -> bool:
    """Whether a snapshot with `results_through` holds the settlements `needs` names (partition ->
    the offset just past the settled result, as `EventProducer.publish` placed it + 1): every
    partition named has been read past it. None on either side proves nothing."""
    return (
        results_through is not None
        and needs is not None
        and all(results_through.get(p, 0) >= o for p, o in needs.items())
    )


def held_until_covered(status: str, resolved_by: str | None) -> bool:
    """Whether a result's give-amount stays held until a snapshot covers it (`results_cover`)
    rather than being released at once: `settled` (gone from the verifier, perhaps not yet from a
    `final` read), and `expired` for want of a `quote_status` (`no_quote_status`): relay silence is
    not proof that the intent did not execute, so its amount is released only by balances read
    after the result was published, which hold any execution up to the deadline
    (docs/design.md §7)."""
    return status == "settled" or (status == "expired" and resolved_by == "no_quote_status")


def read_behind(
    account_id: str | None, block_height: int | None, held_account_id: str | None, held_block_height: int | None
) -> bool:
    """Whether a snapshot of `account_id` read at `block_height` was read at a block behind the
    snapshot held for the same account. Such a one (an inventory-sync restarted on a lagging node)
    may predate fills whose holds the held snapshot already released: its consumer keeps the held
    one, which ages, rather than step back. Unknown heights compare as not behind."""
    return (
        held_account_id == account_id
        and block_height is not None
        and held_block_height is not None
        and block_height < held_block_height
    )


class LiquidityAction(_Model):
    """`ops.liquidity_action`: one treasury action and its current status.

    Each transition is a new event with the same `liquidity_action_id`. Per kind:

    - `deposit_address`: requested → issued (`address`) | failed; refused for an unsupported
      asset or chain.
    - `funding`: requested → notified → pending (the bridge sees the deposit) → credited; delayed
      (past the credit bound, still pending); failed (the bridge says FAILED; its operators may
      still complete it, so credited can follow); duplicate (the same chain and tx hash was
      already recorded: `duplicate_of`); refused. `amount` is what the operator recorded,
      `credited_amount` what the bridge credited; `tx_hash` is the external chain transaction,
      `address` the deposit address.
    - `withdrawal`: requested → issued (the signed `ft_withdraw` intent was published:
      `intent_hash`) → pending (the burn settled on NEAR: `tx_hash`) → completed
      (`transfer_tx_hash` on the destination chain) | failed; delayed past the bound; refused
      (frozen, unsupported, unknown destination). `amount` is what leaves the intents account
      (`net_amount` + the bridge `fee`); `address` is the destination.
    - `freeze` / `unfreeze`: frozen / unfrozen, with `operator` and `reason`.
    """

    liquidity_action_id: str
    kind: LiquidityActionKind
    status: Literal[
        "requested",
        "issued",
        "notified",
        "pending",
        "credited",
        "delayed",
        "failed",
        "duplicate",
        "refused",
        "completed",
        "frozen",
        "unfrozen",
    ]
    asset_id: str | None = None
    chain: str | None = None
    amount: U128 | None = None
    address: str | None = None
    tx_hash: str | None = None
    wallet_label: str | None = None
    reason: str | None = None
    operator: str | None = None
    net_amount: U128 | None = None
    fee: U128 | None = None
    credited_amount: U128 | None = None
    intent_hash: str | None = None
    transfer_tx_hash: str | None = None
    # the venue's own status word behind this transition (POA bridge or relay), verbatim
    venue_status: str | None = None
    duplicate_of: str | None = None


class TradeDecision(_Model):
    """`decision.trade_decision`: the strategy's auditable verdict on one quote request.

    Made for every request, answered or skipped: `decision_reason` is the first gate that failed
    (`EXECUTE` when all passed; `DISARMED` when only the arm state stopped it). The price and
    inventory behind it are named by id and copied in the figures used; `request_received_at`
    and `decided_at` are the stage timestamps. A request never priced (rejected before pricing,
    `UNPRICEABLE`, or `NOTIONAL_BELOW_MIN`, whose amounts are all rounding) has null
    `implied_rate`, `reference_rate`, `gross_edge_pct` and amounts.
    """

    decision_id: str
    quote_id: str
    pair: str
    direction: Direction | None
    decision: Literal["execute", "reject"]
    decision_reason: str
    decision_detail: str | None = None
    implied_rate: Dec | None = None
    reference_rate: Dec | None = None
    gross_edge_pct: Dec | None = None
    threshold_pct: Dec
    target_edge_pct: Dec | None = None
    price_freshness_ms: int | None = None
    price_event_id: uuid.UUID | None = None
    price_source: str | None = None
    fallback_used: bool | None = None
    eure_eur_rate: Dec | None = None
    eure_basis: str | None = None
    inventory_snapshot_id: str | None = None
    # the figures used for the asset quoteloop would give: credited, reserved, buffer, pending
    inventory_snapshot: dict[str, Any] | None = None
    fixed_side: FixedSide | None = None
    amount_in: U128 | None = None
    amount_out: U128 | None = None
    notional_eure: Dec | None = None
    protocol_fee_pips: int | None = None
    armed: bool
    request_received_at: AwareDatetime | None = None
    decided_at: AwareDatetime | None = None


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
    request_received_at: AwareDatetime | None = None
    # the answer must leave quoteloop before this (the request's receive time + answer window)
    answer_by: AwareDatetime


class RefusalCode(StrEnum):
    """Why trade-executor did not answer a command, or withheld a signed answer: the
    `reason_code` of a `refused` result (and of a `rejected` one it never sent). Reports count by
    these codes; a venue's own rejection codes are free text beside them."""

    DRAINING = "draining"
    PAUSED = "paused"
    DISARMED = "disarmed"
    SIGNER_UNAVAILABLE = "signer_unavailable"
    RELAY_DISCONNECTED = "relay_disconnected"
    INVALID_COMMAND = "invalid_command"
    ANSWER_BY_PASSED = "answer_by_passed"
    DEADLINE_TOO_LONG = "deadline_too_long"
    AUDIT_IMPAIRED = "audit_impaired"
    OVER_GIVE_CEILING = "over_give_ceiling"
    OVER_NOTIONAL_CEILING = "over_notional_ceiling"
    OVER_EXPOSURE_CEILING = "over_exposure_ceiling"
    PRICE_MISSING = "price_missing"
    PRICE_STALE = "price_stale"
    PRICE_NOT_DECISIONABLE = "price_not_decisionable"
    EDGE_BELOW_FLOOR = "edge_below_floor"
    INVENTORY_MISSING = "inventory_missing"
    INVENTORY_STALE = "inventory_stale"
    INVENTORY_WRONG_ACCOUNT = "inventory_wrong_account"
    INSUFFICIENT_INVENTORY = "insufficient_inventory"
    SALT_UNAVAILABLE = "salt_unavailable"
    QUOTE_ALREADY_ANSWERED = "quote_already_answered"
    EXECUTOR_RESTARTED = "executor_restarted"
    INTERNAL_ERROR = "internal_error"


class TradeResult(_Model):
    """`exec.trade_result`: what happened to a command, each state change one event.

    The trade-executor publishes one for every command it was given, whatever happened, built
    from its ledger row (so a republished result is the same record):

    - `refused`: refused before anything was signed (`reason_code` names the gate: `paused`,
      `disarmed`, `answer_by_passed`, `inventory_stale`, `insufficient_inventory`, ...).
    - `acknowledged`: the relay answered OK to the signed `quote_response`; the answer is live
      until `deadline` (its `amount_out` stays reserved).
    - `rejected`: the relay refused the answer; `reason` is the venue's text verbatim.
    - `uncertain`: the answer went out and no answer came in time (or the executor restarted
      after signing): never assumed failed, resolved later by `quote_status` or `is_nonce_used`.
    - `settled`: a `quote_status` (`intent_hash`, `tx_hash`) or the verifier's `is_nonce_used`
      (`resolved_by`) says the answer was used. `expired`: its deadline passed and either the
      relay's guaranteed-delivery stream, connected well past it, gave no quote_status for an
      acknowledged answer (`no_quote_status`), or the nonce was unused at the last block at or
      before the deadline (`is_nonce_used`).

    `execution_id` is the same for every result of one command. Stage times: the command
    received, the answer signed, sent, and the venue's answer; `resolved_at` for settled/expired.
    `inventory_id`, `spendable_at_check` and `reserved_at_check` are the executor's own late
    inventory check of the asset it gives (`asset_out`).
    """

    execution_id: str
    command_id: str
    quote_id: str
    decision_id: str | None = None
    status: Literal["refused", "acknowledged", "rejected", "uncertain", "settled", "expired"]
    reason: str | None = None
    reason_code: str | None = None
    venue_response: Any = None
    quote_hash: str | None = None
    intent_hash: str | None = None
    tx_hash: str | None = None
    nonce: str | None = None
    deadline: AwareDatetime | None = None
    direction: Direction | None = None
    asset_in: str | None = None  # quoteloop receives it
    asset_out: str | None = None  # quoteloop gives it
    amount_in: U128 | None = None
    amount_out: U128 | None = None
    signer_id: str | None = None
    command_received_at: AwareDatetime | None = None
    signed_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    venue_answered_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    resolved_by: Literal["quote_status", "is_nonce_used", "no_quote_status", "operator"] | None = None
    cancel_requested_at: AwareDatetime | None = None
    inventory_id: str | None = None
    spendable_at_check: U128 | None = None
    reserved_at_check: U128 | None = None


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
        TopicSpec("state.intent_inventory", IntentInventory, 1, "intent_inventory_snapshots", ("inventory_id",)),
        TopicSpec("ops.liquidity_action", LiquidityAction, 1, "liquidity_actions", ("liquidity_action_id", "status")),
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


def ms_since(then: datetime, now: datetime) -> int:
    """Whole milliseconds from `then` to `now`, rounded down and exact (no float on the way); 0
    when `then` is not before `now`, so a clock that stepped back never makes an age negative."""
    return max(0, (now - then) // timedelta(milliseconds=1))


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
    # Envelope[type(payload)]: pydantic caches each parametrised class, so it is this same one
    return _ENVELOPES[topic](
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
    # parametrised at run time by each topic's payload class, which mypy sees as a value only
    topic: Envelope[spec.payload]  # type: ignore[name-defined]
    for topic, spec in TOPICS.items()
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
