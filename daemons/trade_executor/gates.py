"""The executor's checks on a command before anything is signed (pure).

A failed check is a `Refusal` with a typed code and a sentence, never an exception: the service
records it in the ledger (`refused`) and publishes it. The inventory check is the executor's own
late re-check of the asset it gives: spendable in the latest `state.intent_inventory` snapshot
minus what its own live answers already hold. A shortfall is an explicit failure ("insufficient
internal inventory detected late"): the executor never tops up, bridges or moves treasury.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from daemons.core.assets import ActivePair
from daemons.core.events import ExecuteTrade

REFUSAL_CODES = (
    "paused", "disarmed", "draining", "signer_unavailable", "relay_disconnected",
    "invalid_command", "answer_by_passed", "deadline_too_long", "inventory_missing", "inventory_stale",
    "inventory_wrong_account", "insufficient_inventory", "salt_unavailable", "quote_already_answered", "executor_restarted",
    "internal_error",
)


@dataclass(frozen=True)
class Refusal:
    code: str
    reason: str
    inventory_id: str | None = None
    spendable: int | None = None
    reserved: int | None = None


@dataclass(frozen=True)
class InventoryView:
    """What the executor keeps of the latest inventory snapshot."""

    inventory_id: str
    spendable: Mapping[str, int]  # asset_id -> credited base units
    stale: bool
    stale_reason: str | None
    age_ms: int  # as the snapshot said when it was published
    observed_at: datetime  # when it was published (envelope)
    account_id: str | None = None  # whose balances these are
    block_height: int | None = None  # the final block the balances were read at

    def age_ms_at(self, now: datetime) -> int:
        since = max(0, int((now - self.observed_at).total_seconds() * 1000))
        return self.age_ms + since


@dataclass(frozen=True)
class InventoryCheck:
    ok: bool
    refusal: Refusal | None
    inventory_id: str | None
    spendable: int | None
    reserved: int


def check_inventory(
    view: InventoryView | None, asset_id: str, amount: int, reserved: int, now: datetime, max_age_ms: int,
    account_id: str | None = None,
) -> InventoryCheck:
    """Is `amount` of `asset_id` available: spendable − reserved ≥ amount, on a fresh snapshot of
    the signer's own account."""
    if view is None:
        return InventoryCheck(False, Refusal("inventory_missing", "no state.intent_inventory snapshot seen yet"),
                              None, None, reserved)
    if account_id is not None and view.account_id is not None and view.account_id != account_id:
        reason = f"inventory snapshot {view.inventory_id} is for {view.account_id}, not the signer {account_id}"
        return InventoryCheck(False, Refusal("inventory_wrong_account", reason, view.inventory_id), view.inventory_id,
                              None, reserved)
    age = view.age_ms_at(now)
    if view.stale or age > max_age_ms:
        why = (view.stale_reason or "marked stale") if view.stale else f"{age} ms old (limit {max_age_ms} ms)"
        return InventoryCheck(False, Refusal("inventory_stale", f"inventory snapshot {view.inventory_id} is stale: {why}",
                                             view.inventory_id, view.spendable.get(asset_id), reserved),
                              view.inventory_id, view.spendable.get(asset_id), reserved)
    spendable = view.spendable.get(asset_id, 0)
    if spendable - reserved < amount:
        reason = (f"insufficient internal inventory detected late: {asset_id} spendable {spendable} − reserved "
                  f"{reserved} = {spendable - reserved} < {amount} to give (no top-up, bridge or treasury move)")
        return InventoryCheck(False, Refusal("insufficient_inventory", reason, view.inventory_id, spendable, reserved),
                              view.inventory_id, spendable, reserved)
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


def command_refusal(cmd: ExecuteTrade, pair: ActivePair, g: GateInputs) -> Refusal | None:
    """Every check but inventory, in order; the first that fails."""
    if g.draining:
        return Refusal("draining", "the executor is draining: no new answers")
    if g.paused:
        return Refusal("paused", "the executor is paused")
    if not g.armed:
        return Refusal("disarmed", "the executor is disarmed")
    if g.signer_problem is not None:
        return Refusal("signer_unavailable", g.signer_problem)
    if not g.relay_connected:
        return Refusal("relay_disconnected", "no live relay connection to answer on")
    problem = command_problem(cmd, pair)
    if problem is not None:
        return Refusal("invalid_command", problem)
    if g.now >= cmd.answer_by:
        late = int((g.now - cmd.answer_by).total_seconds() * 1000)
        return Refusal("answer_by_passed", f"answer_by {cmd.answer_by.isoformat()} passed {late} ms ago")
    if cmd.min_deadline_ms > g.max_min_deadline_ms:
        return Refusal("deadline_too_long", f"min_deadline_ms {cmd.min_deadline_ms} is over the limit "
                                            f"{g.max_min_deadline_ms}")
    return None
