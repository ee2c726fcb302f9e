"""The executor's checks on a command before anything is signed, and on a signed answer right
before its frame is written (pure).

A failed check is a `Refusal` with a typed code (`RefusalCode`) and a sentence, never an
exception: the service records it in the ledger (`refused`) and publishes it. The executor holds
on its own, whatever the command says: its ceilings (`daemons/core/ceilings.py`: what one answer
may give, its EURe notional, what all live answers may give together), its own price check (the
command's implied rate against the latest `ref.market_price`, never below the ceilings' edge
floor, never on a stale price), and its own late inventory check of the asset it gives
(spendable in the latest `state.intent_inventory` snapshot minus what its own live answers
already hold). A shortfall is an explicit failure ("insufficient internal inventory detected
late"): the executor never tops up, bridges or moves treasury.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from daemons.core.assets import ActivePair
from daemons.core.ceilings import Ceilings
from daemons.core.edge import PricingError, fair_rate_for, gross_edge_pct, units
from daemons.core.events import ExecuteTrade, RefusalCode, input_age_ms, ms_since
from daemons.core.inventory import InventoryView

C = RefusalCode


@dataclass(frozen=True)
class Refusal:
    code: RefusalCode
    reason: str
    inventory_id: str | None = None
    spendable: int | None = None
    reserved: int | None = None


@dataclass(frozen=True)
class PriceView:
    """What the executor keeps of the latest `ref.market_price`."""

    event_id: str
    fair_rate_buy_btc: Decimal | None
    fair_rate_sell_btc: Decimal | None
    decisionable: bool
    status_reason: str | None
    freshness_ms: int | None  # the price's age when it was published
    observed_at: datetime  # when it was published (envelope)

    def age_ms_at(self, now: datetime) -> int | None:
        # the freshness it was published with (from our receive time for Kraken, so the
        # exchange's clock never ages it; CoinGecko's own time) plus the time since its envelope
        return input_age_ms(None, self.freshness_ms, self.observed_at, now)


@dataclass(frozen=True)
class InventoryCheck:
    ok: bool
    refusal: Refusal | None
    inventory_id: str | None
    spendable: int | None
    reserved: int


def check_inventory(
    view: InventoryView | None,
    asset_id: str,
    amount: int,
    reserved: int,
    now: datetime,
    max_age_ms: int,
    account_id: str | None = None,
) -> InventoryCheck:
    """Is `amount` of `asset_id` available: spendable − reserved ≥ amount, on a fresh snapshot of
    the signer's own account."""
    if view is None:
        return InventoryCheck(
            False, Refusal(C.INVENTORY_MISSING, "no state.intent_inventory snapshot seen yet"), None, None, reserved
        )
    if account_id is not None and view.account_id is not None and view.account_id != account_id:
        reason = f"inventory snapshot {view.inventory_id} is for {view.account_id}, not the signer {account_id}"
        return InventoryCheck(
            False, Refusal(C.INVENTORY_WRONG_ACCOUNT, reason, view.inventory_id), view.inventory_id, None, reserved
        )
    age = view.age_ms_at(now)
    if view.stale or age > max_age_ms:
        why = (view.stale_reason or "marked stale") if view.stale else f"{age} ms old (limit {max_age_ms} ms)"
        return InventoryCheck(
            False,
            Refusal(
                C.INVENTORY_STALE,
                f"inventory snapshot {view.inventory_id} is stale: {why}",
                view.inventory_id,
                view.spendable.get(asset_id),
                reserved,
            ),
            view.inventory_id,
            view.spendable.get(asset_id),
            reserved,
        )
    spendable = view.spendable.get(asset_id, 0)
    if spendable - reserved < amount:
        reason = (
            f"insufficient internal inventory detected late: {asset_id} spendable {spendable} − reserved "
            f"{reserved} = {spendable - reserved} < {amount} to give (no top-up, bridge or treasury move)"
        )
        return InventoryCheck(
            False,
            Refusal(C.INSUFFICIENT_INVENTORY, reason, view.inventory_id, spendable, reserved),
            view.inventory_id,
            spendable,
            reserved,
        )
    return InventoryCheck(True, None, view.inventory_id, spendable, reserved)


def command_problem(cmd: ExecuteTrade, pair: ActivePair) -> str | None:
    """Why a command cannot be answered as given, or None."""
    direction = pair.direction_of(cmd.asset_in, cmd.asset_out)
    if direction is None:
        return f"{cmd.asset_in} -> {cmd.asset_out} is not the active pair"
    if direction != cmd.direction:
        return f"direction {cmd.direction} does not match {cmd.asset_in} -> {cmd.asset_out} ({direction})"
    if cmd.amount_in <= 0 or cmd.amount_out <= 0:
        return "amounts must be positive"
    return None


@dataclass(frozen=True)
class GateInputs:
    now: datetime
    paused: bool
    draining: bool
    armed: bool
    signer_problem: str | None
    relay_connected: bool
    max_min_deadline_ms: int
    audit_impaired: str | None = None  # strict audit mode: why history is impaired


def command_refusal(cmd: ExecuteTrade, pair: ActivePair, g: GateInputs) -> Refusal | None:
    """Every check but inventory, in order; the first that fails."""
    if g.draining:
        return Refusal(C.DRAINING, "the executor is draining: no new answers")
    if g.paused:
        return Refusal(C.PAUSED, "the executor is paused")
    if not g.armed:
        return Refusal(C.DISARMED, "the executor is disarmed")
    if g.audit_impaired is not None:
        return Refusal(C.AUDIT_IMPAIRED, f"strict audit mode: {g.audit_impaired}")
    if g.signer_problem is not None:
        return Refusal(C.SIGNER_UNAVAILABLE, g.signer_problem)
    if not g.relay_connected:
        return Refusal(C.RELAY_DISCONNECTED, "no live relay connection to answer on")
    problem = command_problem(cmd, pair)
    if problem is not None:
        return Refusal(C.INVALID_COMMAND, problem)
    if g.now >= cmd.answer_by:
        late = ms_since(cmd.answer_by, g.now)
        return Refusal(C.ANSWER_BY_PASSED, f"answer_by {cmd.answer_by.isoformat()} passed {late} ms ago")
    if cmd.min_deadline_ms > g.max_min_deadline_ms:
        return Refusal(
            C.DEADLINE_TOO_LONG, f"min_deadline_ms {cmd.min_deadline_ms} is over the limit {g.max_min_deadline_ms}"
        )
    return None


def _eure_and_btc(cmd: ExecuteTrade, pair: ActivePair) -> tuple[int, int]:
    """(EURe, BTC) base units of an answer, whichever side each is on."""
    if cmd.asset_in == pair.eure.asset_id:
        return cmd.amount_in, cmd.amount_out
    return cmd.amount_out, cmd.amount_in


def check_ceilings(cmd: ExecuteTrade, pair: ActivePair, ceilings: Ceilings, live_exposure: int) -> Refusal | None:
    """The answer within the root-owned ceilings: what it gives, its EURe notional, and what every
    answer able to execute would give with it (`live_exposure`: theirs, before this one)."""
    give_max = ceilings.give_per_answer(pair, cmd.asset_out)
    if cmd.amount_out > give_max:
        return Refusal(
            C.OVER_GIVE_CEILING,
            f"gives {cmd.amount_out} of {cmd.asset_out}, over the ceiling max_give_per_answer {give_max}",
        )
    eure, _ = _eure_and_btc(cmd, pair)
    notional = units(eure, pair.eure.decimals)
    if notional > ceilings.max_notional_eure_per_answer:
        return Refusal(
            C.OVER_NOTIONAL_CEILING,
            f"notional {notional} EURe is over the ceiling "
            f"max_notional_eure_per_answer {ceilings.max_notional_eure_per_answer}",
        )
    return check_exposure(cmd.asset_out, live_exposure + cmd.amount_out, pair, ceilings)


def check_exposure(asset_id: str, exposure: int, pair: ActivePair, ceilings: Ceilings) -> Refusal | None:
    """What every answer able to execute gives of `asset_id` together, within its ceiling."""
    limit = ceilings.live_exposure(pair, asset_id)
    if exposure > limit:
        return Refusal(
            C.OVER_EXPOSURE_CEILING,
            f"live answers would give {exposure} of {asset_id}, over the ceiling max_live_exposure {limit}",
        )
    return None


def price_problem(price: PriceView | None, now: datetime, max_age_ms: int) -> Refusal | None:
    """The executor's own reference price is there, decisionable and fresh."""
    if price is None:
        return Refusal(C.PRICE_MISSING, "no ref.market_price seen yet")
    if not price.decisionable:
        return Refusal(
            C.PRICE_NOT_DECISIONABLE, f"market price {price.event_id} is not decisionable ({price.status_reason})"
        )
    age = price.age_ms_at(now)
    if age is None or age > max_age_ms:
        return Refusal(
            C.PRICE_STALE, f"market price {price.event_id} is {age} ms old (ceiling max_price_age_ms {max_age_ms})"
        )
    return None


def check_price(
    cmd: ExecuteTrade, pair: ActivePair, price: PriceView | None, now: datetime, ceilings: Ceilings
) -> Refusal | None:
    """The command's implied rate gives quoteloop at least the ceilings' edge floor at the
    executor's own fresh reference price, whatever the strategy decided."""
    stale = price_problem(price, now, ceilings.max_price_age_ms)
    if stale is not None:
        return stale
    assert price is not None and price.fair_rate_buy_btc is not None and price.fair_rate_sell_btc is not None
    eure, btc = _eure_and_btc(cmd, pair)
    rate = fair_rate_for(cmd.direction, price.fair_rate_buy_btc, price.fair_rate_sell_btc)
    try:
        edge = gross_edge_pct(cmd.direction, btc, eure, rate, pair.btc.decimals, pair.eure.decimals)
    except PricingError as exc:
        return Refusal(C.INVALID_COMMAND, str(exc))
    if edge < ceilings.min_edge_pct:
        return Refusal(
            C.EDGE_BELOW_FLOOR,
            f"gross edge {edge:.4f}% at the reference {rate} (price "
            f"{price.event_id}) is below the ceiling min_edge_pct "
            f"{ceilings.min_edge_pct}%",
        )
    return None


@dataclass(frozen=True)
class SendInputs:
    """What must still hold at the instant a signed answer's frame is written."""

    now: datetime
    armed: bool
    price: PriceView | None
    inventory: InventoryView | None
    inventory_max_age_ms: int
    live_exposure: int  # of the asset given, this answer included


def send_refusal(cmd: ExecuteTrade, pair: ActivePair, ceilings: Ceilings, s: SendInputs) -> Refusal | None:
    """The last check, with no await between it and the write: armed, `answer_by` not passed,
    price and inventory still fresh, exposure still within its ceiling."""
    if not s.armed:
        return Refusal(C.DISARMED, "not sent: the executor was disarmed after the answer was signed")
    if s.now >= cmd.answer_by:
        return Refusal(C.ANSWER_BY_PASSED, f"not sent: answer_by {cmd.answer_by.isoformat()} passed while signing")
    stale = price_problem(s.price, s.now, ceilings.max_price_age_ms)
    if stale is not None:
        return Refusal(stale.code, f"not sent: {stale.reason}")
    inv = s.inventory
    if inv is None or inv.stale or inv.age_ms_at(s.now) > s.inventory_max_age_ms:
        return Refusal(C.INVENTORY_STALE, "not sent: the inventory snapshot went stale while signing")
    over = check_exposure(cmd.asset_out, s.live_exposure, pair, ceilings)
    if over is not None:
        return Refusal(over.code, f"not sent: {over.reason}")
    return None
