"""The liquidity ledger: `ops.liquidity_action` folded into the latest view of every funding and
withdrawal (pure: no I/O, no clock).

liquidity-manager publishes each transition as a new event with the same `liquidity_action_id`.
The fold keeps, per action, the status of the latest event by `occurred_at` (a tie goes to the
later delivery), the first recorded `amount` (what the operator said was sent: the figure a
credit is reconciled against), the latest non-null asset, chain and tx hash, and when the action
was first credited. It is idempotent: the service re-reads the topic from the beginning on every
partition assignment, so a delivery seen before changes nothing.

Pending rules (the liquidity-manager contract): a funding is pending inbound until its latest
status is credited, failed, duplicate or refused; a withdrawal is pending outbound until
completed, failed or refused. Any status not listed (added later by liquidity-manager) counts as
still pending, the safe reading. A withdrawal whose burn has settled on NEAR (`tx_hash` known, or
status `pending`/`completed`) is already out of the credited balance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from daemons.core.events import LiquidityAction
from daemons.core.tx_hash import normalize_tx_hash

FUNDING_DONE = frozenset({"credited", "failed", "duplicate", "refused"})
WITHDRAWAL_DONE = frozenset({"completed", "failed", "refused"})
WITHDRAWAL_BURNED = frozenset({"pending", "completed"})
# a funding in one of these never moved money: it can be left out of any credit window
NEVER_CREDITED = frozenset({"duplicate", "refused"})
TRACKED_KINDS = frozenset({"funding", "withdrawal"})


@dataclass(frozen=True, slots=True)
class ActionView:
    """What the ledger knows about one funding or withdrawal."""

    liquidity_action_id: str
    kind: str
    status: str
    asset_id: str | None
    chain: str | None
    amount: int | None
    tx_hash: str | None  # normalised
    first_at: datetime
    status_at: datetime
    amount_at: datetime | None = None
    credited_at: datetime | None = None  # funding: the first `credited` event
    burned_at: datetime | None = None  # withdrawal: the first event saying the burn settled
    # withdrawal: the ledger's `events_applied` count once that event was folded (a reading whose
    # head block was read after this count holds the burn; see `snapshot.holdings`)
    burned_seq: int | None = None

    @property
    def done(self) -> bool:
        return self.status in (FUNDING_DONE if self.kind == "funding" else WITHDRAWAL_DONE)

    @property
    def pending(self) -> bool:
        return not self.done

    @property
    def done_at(self) -> datetime | None:
        return self.status_at if self.done else None

    @property
    def burned(self) -> bool:
        """A withdrawal whose burn settled: the credited balance no longer holds its amount."""
        return self.burned_at is not None


def _says_burned(action: LiquidityAction) -> bool:
    return action.kind == "withdrawal" and (action.tx_hash is not None or action.status in WITHDRAWAL_BURNED)


class LiquidityLedger:
    """Folds liquidity actions. `since`: actions first recorded before it are left out entirely
    (an operator's cut-over, e.g. after the treasury was reset)."""

    def __init__(self, since: datetime | None = None) -> None:
        self.since = since
        self._views: dict[str, ActionView] = {}
        self._ignored: set[str] = set()
        self._seen: set[uuid.UUID] = set()
        self.events_applied = 0

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self) -> Iterator[ActionView]:
        return iter(self._views.values())

    def get(self, liquidity_action_id: str) -> ActionView | None:
        return self._views.get(liquidity_action_id)

    @property
    def ignored(self) -> int:
        return len(self._ignored)

    def fundings(self) -> list[ActionView]:
        return [v for v in self._views.values() if v.kind == "funding"]

    def withdrawals(self) -> list[ActionView]:
        return [v for v in self._views.values() if v.kind == "withdrawal"]

    def apply(self, event_id: uuid.UUID, action: LiquidityAction, occurred_at: datetime) -> ActionView | None:
        """Fold one event. Returns the action's new view, or None when the event changes nothing
        the inventory cares about (a repeated delivery, an action before `since`, another kind)."""
        if event_id in self._seen or action.kind not in TRACKED_KINDS:
            return None
        self._seen.add(event_id)
        action_id = action.liquidity_action_id
        if action_id in self._ignored:
            return None
        tx = normalize_tx_hash(action.tx_hash) if action.tx_hash else None
        view = self._views.get(action_id)
        if view is None:
            if self.since is not None and occurred_at < self.since:
                self._ignored.add(action_id)
                return None
            view = ActionView(
                liquidity_action_id=action_id,
                kind=action.kind,
                status=action.status,
                asset_id=action.asset_id,
                chain=action.chain,
                amount=action.amount,
                tx_hash=tx,
                first_at=occurred_at,
                status_at=occurred_at,
                amount_at=occurred_at if action.amount is not None else None,
                credited_at=occurred_at if action.status == "credited" else None,
                burned_at=occurred_at if _says_burned(action) else None,
                burned_seq=self.events_applied + 1 if _says_burned(action) else None,
            )
        else:
            newer = occurred_at >= view.status_at
            earlier_amount = action.amount is not None and (view.amount_at is None or occurred_at < view.amount_at)
            credited_at = view.credited_at
            if action.status == "credited" and (credited_at is None or occurred_at < credited_at):
                credited_at = occurred_at
            burned_at = view.burned_at
            if _says_burned(action) and (burned_at is None or occurred_at < burned_at):
                burned_at = occurred_at
            burned_seq = view.burned_seq
            if _says_burned(action) and burned_seq is None:
                burned_seq = self.events_applied + 1
            view = replace(
                view,
                status=action.status if newer else view.status,
                status_at=occurred_at if newer else view.status_at,
                asset_id=action.asset_id or view.asset_id,
                chain=action.chain or view.chain,
                tx_hash=tx or view.tx_hash,
                amount=action.amount if earlier_amount else view.amount,
                amount_at=occurred_at if earlier_amount else view.amount_at,
                first_at=min(view.first_at, occurred_at),
                credited_at=credited_at,
                burned_at=burned_at,
                burned_seq=burned_seq,
            )
        self._views[action_id] = view
        self.events_applied += 1
        return view
