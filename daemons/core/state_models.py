"""The `/state` bodies of the seven daemons, typed: one home for the keys the daemons publish and
the front ends (qlctl, its TUI) read.

Each body is the runtime's common part (`ServiceState`, from `Service.base_state`) merged with the
daemon's own part (`<Daemon>Fields`, from the daemon's `state()`); `STATE_MODELS` holds the whole
body's model per service name.

Daemon side: every model here forbids unknown keys and requires every key it names, so a daemon
that renames, adds or drops a key fails its own `state()` (see `conform`) and the test that
validates every daemon's `/state`. Only what the front ends read is typed precisely; the rest is
`Any` (a free-form dict or a value nobody reads), so a type nobody relies on never breaks `/state`.
Nested dicts that the front ends read are typed with `extra="allow"`: their named keys are
required, anything else passes.

Client side (`qlctl`): `client_model(service)` is the same model ignoring unknown keys, so an
older qlctl still reads a newer daemon.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Part(BaseModel):
    """A nested dict: the keys named are required, others are allowed."""

    model_config = ConfigDict(extra="allow")


# --- the common part (daemons/core/runtime.py `Service.base_state`) --------------------------------


class ServiceState(_Body):
    service: str
    instance: str
    pid: int
    healthy: bool
    reasons: list[str]
    paused: bool
    pause_effective: bool
    draining: bool
    started_at: datetime
    last_success_at: datetime | None
    dead_letters: Any
    side_records_queued: int
    kafka_unreachable: str | None
    kafka_unreachable_since: datetime | None


class ArmFields(_Body):
    """daemons/core/arming.py `ArmSwitch.state`: strategy-engine and trade-executor."""

    armed: bool
    arm_changed_at: datetime | None
    arm_changed_by: str | None
    arm_change_reason: str | None


class GateFields(_Body):
    """What every daemon's own part says about its gate: its connections (name -> up, or per
    chain), whether its data may be acted on, and why it does nothing, if it does not."""

    connected: dict[str, Any]
    authoritative: bool
    blocked_reason: str | None


# --- nested parts the front ends read -------------------------------------------------------------


class StrategyLimits(_Part):
    threshold_pct: str
    target_edge_pct: str
    min_notional_eure: str
    max_notional_eure: str
    answer_window_ms: int
    max_deadline_ms: int
    price_max_age_ms: int
    inventory_max_age_ms: int
    buffer: dict[str, str]


class FundingView(_Part):
    liquidity_action_id: Any
    asset_id: Any
    amount: Any
    status: Any
    recorded_at: Any


class WithdrawalView(_Part):
    liquidity_action_id: Any
    asset_id: Any
    amount: Any
    net_amount: Any
    status: Any
    requested_at: Any


class DepositAddress(_Part):
    chain: Any
    asset_ids: list[Any]
    address: Any
    memo: Any
    issued_at: Any
    liquidity_action_id: Any


class InventoryAsset(_Part):
    asset_id: Any
    decimals: Any
    spendable: Any
    credited: Any
    pending_in: Any
    pending_out: Any


class LastSync(_Part):
    sync_id: Any
    synced_at: Any


class Reservation(_Part):
    command_id: Any
    quote_id: Any
    asset_id: Any
    amount: Any
    expires_at: Any
    settled_at: Any


class LiquidityFunding(_Part):
    recent: list[FundingView]
    pending: list[FundingView]
    delayed: list[Any]


class LiquidityWithdrawals(_Part):
    frozen: bool
    blocked_reason: str | None
    recent: list[WithdrawalView]
    in_flight: list[WithdrawalView]
    undecided: list[Any]


class ReferencePrice(_Part):
    source: Any
    fair_rate_buy_btc: Any
    fair_rate_sell_btc: Any
    fair_rate_mid: Any
    freshness_ms: Any
    eure_eur_rate: Any
    eure_basis: Any
    status_reason: Any = None  # not published today: read when a daemon does


class KrakenLatest(_Part):
    bid: Any
    ask: Any
    age_ms: Any


class KrakenView(_Part):
    state: Any
    fresh: Any
    latest: KrakenLatest | None


class CoinGeckoLatest(_Part):
    btc_eur: Any
    age_ms: Any


class CoinGeckoView(_Part):
    state: Any
    fresh: Any
    latest: CoinGeckoLatest | None


class EureView(_Part):
    basis: Any
    rate: Any
    state: Any


class Publishing(_Part):
    last_published_at: Any


class PriceInput(_Part):
    age_ms: Any
    decisionable: Any
    source: Any
    reason: Any
    stale: Any


class StrategyInputs(_Part):
    price: PriceInput | None
    inventory: dict[str, Any] | None


class LiveAnswer(_Part):
    command_id: Any
    quote_id: Any
    state: str
    asset_id: Any
    reserved: str
    deadline: Any
    cancel_requested: Any


class SignerView(_Part):
    status: str
    detail: str | None = None
    account_id: str | None = None


# --- each daemon's own part -----------------------------------------------------------------------


class HistoryWriterFields(GateFields):
    audit_history_impaired: bool
    database_error: str | None
    database_down_since: datetime | None
    last_write_at: datetime | None
    rows_written: int
    duplicates_skipped: int
    dead_letters: Any
    batches: int
    last_committed_offsets: Any
    lag: Any


class InventorySyncFields(GateFields):
    account_id: str | None
    active_pair: dict[str, str]
    stale: bool
    stale_since: datetime | None
    stale_reason: str | None
    age_ms: int | None
    freshness_bound_ms: int
    last_sync: LastSync | None
    finality: dict[str, Any]
    fee: dict[str, Any]
    near_rpc: dict[str, Any]
    last_attempt_at: datetime | None
    verifier_error: str | None
    verifier_down_since: datetime | None
    consecutive_failures: int
    next_reading_in_ms: int | None
    interval_s: Any
    inventory: list[InventoryAsset]
    pending: list[dict[str, Any]]
    pending_complete: bool
    reconciliation_status: Any
    reconciliation: list[dict[str, Any]]
    liquidity_history: dict[str, Any]
    bridge: dict[str, Any]
    last_trade_settled_at: datetime | None
    last_snapshot: Any
    kafka_error: str | None
    consumer_error: str | None
    counts: dict[str, Any]
    triggers: dict[str, Any]


class MarketReferenceFields(GateFields):
    decisionable: bool
    fallback_in_use: bool
    source: Any
    evaluated_at: datetime | None
    price: ReferencePrice | None
    conflict: dict[str, Any]
    kraken: KrakenView
    coingecko: CoinGeckoView
    eure: EureView
    publishing: Publishing
    counts: dict[str, Any]
    policy: dict[str, Any]


class NearIntentsIngestFields(GateFields):
    connected_since: datetime | None
    disconnected_since: datetime | None
    gaps: Any
    last_gap: Any
    subscriptions: Any
    last_frame_at: datetime | None
    last_active_pair_request_at: datetime | None
    pair_silent_for_ms: int | None
    pair_silent: bool
    counts: dict[str, Any]
    reconnects_in_window: Any
    reconnect_budget: Any
    relay: dict[str, Any]
    pair_filter: dict[str, Any]
    active_pair: dict[str, str]


class StrategyEngineFields(ArmFields, GateFields):
    limits: StrategyLimits
    ceilings: dict[str, Any]
    inputs: StrategyInputs
    latest_decision: Any
    latest_rejection: Any
    reason_counters: dict[str, Any]
    reserved: dict[str, str]
    reservations: list[Reservation]
    inventory_snapshots_behind: Any


class TradeExecutorFields(ArmFields, GateFields):
    signer: SignerView
    ledger: dict[str, Any]
    relay: dict[str, Any]
    near_rpc_error: str | None
    near_rpc: dict[str, Any]
    inputs: dict[str, Any]
    last_command_seen: Any
    last_request_sent: Any
    last_venue_response: Any
    in_flight: int
    undecided: list[Any]
    silence_audit: dict[str, Any]
    completed: Any
    live_answers: list[LiveAnswer]
    settled_holds: list[dict[str, Any]]
    withheld: list[dict[str, Any]]
    reserved: dict[str, str]
    live_exposure: dict[str, str]
    ceilings: dict[str, Any]
    errors: dict[str, Any]
    refusals: dict[str, Any]
    results: dict[str, Any]
    pending_statuses: int
    limits: dict[str, Any]


class LiquidityManagerFields(GateFields):
    stale: bool
    account_id: str | None
    last_poll_at: datetime | None
    last_successful_poll_at: datetime | None
    poll_interval_s: Any
    venue_errors: dict[str, Any]
    treasury: Any
    deposit_addresses: list[DepositAddress]
    deposit_address_errors: dict[str, Any]
    funding: LiquidityFunding
    pending_credits: dict[str, str]
    withdrawals: LiquidityWithdrawals
    near_rpc: dict[str, Any]
    withdrawals_frozen: bool
    pending_withdrawals: dict[str, str]
    rebalance: dict[str, Any]
    recent_refusals: list[Any]
    outbox: dict[str, Any]
    counts: dict[str, Any]
    thresholds: dict[str, Any]


# --- whole bodies: the common part and the daemon's own (the daemon's wins on a shared key) --------


class DaemonState(GateFields, ServiceState):
    """What every one of the seven bodies holds: the runtime's part and the gate fields."""


class HistoryWriterState(HistoryWriterFields, DaemonState):
    pass


class InventorySyncState(InventorySyncFields, DaemonState):
    pass


class MarketReferenceState(MarketReferenceFields, DaemonState):
    pass


class NearIntentsIngestState(NearIntentsIngestFields, DaemonState):
    pass


class StrategyEngineState(StrategyEngineFields, DaemonState):
    pass


class TradeExecutorState(TradeExecutorFields, DaemonState):
    pass


class LiquidityManagerState(LiquidityManagerFields, DaemonState):
    pass


AnyState = (
    HistoryWriterState
    | InventorySyncState
    | MarketReferenceState
    | NearIntentsIngestState
    | StrategyEngineState
    | TradeExecutorState
    | LiquidityManagerState
)

# keyed by service name, in qlctl's display order (qlctl.client.SERVICES)
STATE_MODELS: dict[str, type[DaemonState]] = {
    "near-intents-ingest": NearIntentsIngestState,
    "market-reference-ingest": MarketReferenceState,
    "inventory-sync": InventorySyncState,
    "liquidity-manager": LiquidityManagerState,
    "history-writer": HistoryWriterState,
    "strategy-engine": StrategyEngineState,
    "trade-executor": TradeExecutorState,
}


_DRIFT_LOGGED: set[str] = set()


def conform(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """A daemon's `state()` part checked against its model, returned as built: the wire JSON stays
    exactly what orjson makes of the daemon's own values (a dump would reformat datetimes and
    reorder keys). A drift from the model is logged once per model and the body served anyway:
    an operator never loses `/state` to a type gone wrong in a rare state. The drift itself is
    caught before release by tests/integration/test_state_models.py, which validates each body."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        if model.__name__ not in _DRIFT_LOGGED:
            _DRIFT_LOGGED.add(model.__name__)
            structlog.get_logger().error(
                "state_model_drift", model=model.__name__, errors=exc.errors(include_url=False, include_input=False)[:5]
            )
    return body


def _lenient_annotation(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _lenient(annotation)
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin in (Union, UnionType) and args:
        return Union[tuple(_lenient_annotation(a) for a in args)]  # noqa: UP007
    if origin is list and args:
        return list[_lenient_annotation(args[0])]  # type: ignore[misc]
    return annotation


@cache
def _lenient(model: type[M]) -> type[M]:
    """`model` read by a front end: every key optional (None when the body lacks it), unknown keys
    ignored; the names and the types of the values that are there stay the model's."""
    model.model_rebuild()  # forward references resolved before the fields are read
    config = ConfigDict(extra="allow") if model.model_config.get("extra") == "allow" else ConfigDict(extra="ignore")
    ignoring = type(f"{model.__name__}Read", (model,), {"model_config": config})
    fields: dict[str, Any] = {
        name: (_lenient_annotation(info.annotation) | None, None) for name, info in model.model_fields.items()
    }
    built: type[M] = create_model(f"{model.__name__}Read", __base__=ignoring, **fields)
    return built


def client_model(service: str) -> type[DaemonState]:
    """The service's model as qlctl reads it: keys it does not name are ignored and a key it names
    but the body lacks reads as None (an older or newer daemon, a partial body), so the front ends
    read attributes, never dict keys, and a renamed key is a type error there (mypy), not a silent
    blank."""
    return _lenient(STATE_MODELS.get(service, DaemonState))


def empty_state(service: str) -> DaemonState:
    """The service's model with nothing known (every key None): a daemon that did not answer."""
    return client_model(service).model_validate({})


def read_state(service: str, body: Any) -> DaemonState | None:
    """`body` (a `/state` answer) as the service's model, or None when it is not a mapping or a
    value has a type the model does not allow."""
    if not isinstance(body, dict):
        return None
    try:
        return client_model(service).model_validate(body)
    except ValidationError:
        return None
