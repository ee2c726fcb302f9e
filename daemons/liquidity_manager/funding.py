"""The funding state machine: an operator-recorded external transfer, followed at the POA bridge
until the verifier credits it. Pure: no I/O, the service feeds it what the bridge said.

Stages only move forward: recorded → notified (`notify_deposit` accepted) → seen (the bridge
lists the deposit, not yet credited) → credited | failed; failed → credited is allowed because
the bridge's operators complete failed deposits by hand (docs/poa-bridge.md §4). Being late is a
flag beside the stage, not a stage: past the credit bound a pending attempt is `delayed` and stays
so (later sightings are reported as `delayed` too) until it is credited or fails. The event status is
derived from stage and flag, so one poll yields at most one event per attempt.

Duplicates are decided on the (chain, tx hash) normalised by `normalize_tx_hash`
(daemons/core/tx_hash.py, which inventory-sync matches the bridge's deposits with too): hex hashes
compare without case or a `0x` difference in case, so the same transfer typed twice is caught.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from daemons.core.events import LiquidityAction
from daemons.core.tx_hash import normalize_tx_hash

Stage = Literal["recorded", "notified", "seen", "credited", "failed"]
FundingStatus = Literal["requested", "notified", "pending", "credited", "delayed", "failed"]
BridgeDepositStatus = Literal["PENDING", "CREDITED", "COMPLETED", "FAILED"]

_STAGE_STATUS: dict[Stage, FundingStatus] = {
    "recorded": "requested",
    "notified": "notified",
    "seen": "pending",
    "credited": "credited",
    "failed": "failed",
}
_HEX = frozenset(string.hexdigits)


def tx_hash_fits_chain(chain: str, tx_hash: str) -> bool:
    """EVM chains: `0x` + 64 hex; bitcoin: 64 hex (a txid); other chains: non-empty, no spaces."""
    text = normalize_tx_hash(tx_hash)
    if chain.startswith("eth:"):
        return len(text) == 66 and text.startswith("0x") and all(c in _HEX for c in text[2:])
    if chain.startswith("btc:"):
        return len(text) == 64 and all(c in _HEX for c in text)
    return bool(text) and len(text) <= 200 and not any(c.isspace() for c in text)


@dataclass(frozen=True)
class BridgeDeposit:
    """What the bridge's `recent_deposits` says about one transfer."""

    tx_hash: str  # normalised
    chain: str
    status: BridgeDepositStatus
    amount: int
    asset_id: str | None
    address: str


@dataclass(frozen=True)
class FundingAttempt:
    liquidity_action_id: str
    account_id: str
    asset_id: str
    chain: str
    amount: int  # what the operator recorded, base units
    tx_hash: str  # normalised
    recorded_at: datetime
    deposit_address: str | None = None
    wallet_label: str | None = None
    operator: str | None = None
    note: str | None = None  # the operator's reason when recording
    stage: Stage = "recorded"
    delayed_at: datetime | None = None
    notified_at: datetime | None = None
    seen_at: datetime | None = None
    settled_at: datetime | None = None  # credited or failed
    credited_amount: int | None = None
    venue_status: str | None = None
    reason: str | None = None  # why the last transition happened

    @property
    def status(self) -> FundingStatus:
        if self.stage in ("credited", "failed"):
            return _STAGE_STATUS[self.stage]
        return "delayed" if self.delayed_at is not None else _STAGE_STATUS[self.stage]

    @property
    def pending(self) -> bool:
        """Still expected to be credited: non-spendable, reported as pending inbound."""
        return self.stage not in ("credited", "failed")

    @property
    def watched(self) -> bool:
        """Still followed at the bridge (a failed deposit may yet be completed by hand)."""
        return self.stage != "credited"

    def event(self) -> LiquidityAction:
        return LiquidityAction(
            liquidity_action_id=self.liquidity_action_id,
            kind="funding",
            status=self.status,
            asset_id=self.asset_id,
            chain=self.chain,
            amount=self.amount,
            address=self.deposit_address,
            tx_hash=self.tx_hash,
            wallet_label=self.wallet_label,
            reason=self.reason,
            operator=self.operator,
            credited_amount=self.credited_amount,
            venue_status=self.venue_status,
        )


def record(
    *,
    liquidity_action_id: str,
    account_id: str,
    asset_id: str,
    chain: str,
    amount: int,
    tx_hash: str,
    now: datetime,
    deposit_address: str | None = None,
    wallet_label: str | None = None,
    operator: str | None = None,
    note: str | None = None,
) -> FundingAttempt:
    if amount <= 0:
        raise ValueError("a funding amount is positive")
    return FundingAttempt(
        liquidity_action_id=liquidity_action_id,
        account_id=account_id,
        asset_id=asset_id,
        chain=chain,
        amount=amount,
        tx_hash=normalize_tx_hash(tx_hash),
        recorded_at=now,
        deposit_address=deposit_address,
        wallet_label=wallet_label,
        operator=operator,
        note=note,
        reason=note,
    )


def notified(attempt: FundingAttempt, now: datetime) -> FundingAttempt | None:
    """`notify_deposit` was accepted; only a freshly recorded attempt moves."""
    if attempt.stage != "recorded":
        return None
    return replace(attempt, stage="notified", notified_at=now, reason="notify_deposit accepted by the bridge")


def observe(attempt: FundingAttempt, deposit: BridgeDeposit | None, now: datetime) -> FundingAttempt | None:
    """Apply what the bridge lists for this transfer (None: not listed); None when nothing changes."""
    if attempt.stage == "credited" or deposit is None:
        return None
    if deposit.status in ("COMPLETED", "CREDITED"):
        notes = []
        if deposit.amount != attempt.amount:
            notes.append(f"credited {deposit.amount} base units, recorded {attempt.amount}")
        if deposit.asset_id is not None and deposit.asset_id != attempt.asset_id:
            notes.append(f"the bridge credited {deposit.asset_id}, recorded {attempt.asset_id}")
        return replace(
            attempt,
            stage="credited",
            settled_at=now,
            credited_amount=deposit.amount,
            venue_status=deposit.status,
            seen_at=attempt.seen_at or now,
            reason="; ".join(notes) or None,
        )
    if deposit.status == "FAILED":
        if attempt.stage == "failed":
            return None
        return replace(
            attempt,
            stage="failed",
            settled_at=now,
            venue_status="FAILED",
            seen_at=attempt.seen_at or now,
            reason="the bridge reports the deposit FAILED (its operators may still complete it)",
        )
    if attempt.stage in ("recorded", "notified"):
        late = " (still not credited, past the bound)" if attempt.delayed_at is not None else ""
        return replace(
            attempt,
            stage="seen",
            seen_at=now,
            venue_status=deposit.status,
            reason=f"seen by the bridge, not yet credited{late}",
        )
    return None


def check_delay(attempt: FundingAttempt, now: datetime, bound: timedelta) -> FundingAttempt | None:
    """Flag a pending attempt not credited within `bound` of being recorded (once)."""
    if not attempt.pending or attempt.delayed_at is not None:
        return None
    age = now - attempt.recorded_at
    if age < bound:
        return None
    seen = "seen by the bridge but " if attempt.stage == "seen" else ""
    return replace(
        attempt,
        delayed_at=now,
        reason=(
            f"{seen}not credited {int(age.total_seconds())} s after it was recorded (bound {bound.total_seconds():g} s)"
        ),
    )


def advance(
    attempt: FundingAttempt, deposit: BridgeDeposit | None, now: datetime, bound: timedelta
) -> FundingAttempt | None:
    """One poll's worth: what the bridge lists, then the delay bound; None when nothing changes."""
    seen = observe(attempt, deposit, now) or attempt
    late = check_delay(seen, now, bound) or seen
    return None if late == attempt else late


def deposits_by_tx(deposits: Iterable[BridgeDeposit]) -> dict[tuple[str, str], BridgeDeposit]:
    """Index by (chain, tx hash); the first listing wins (the bridge lists newest first)."""
    index: dict[tuple[str, str], BridgeDeposit] = {}
    for d in deposits:
        index.setdefault((d.chain, d.tx_hash), d)
    return index


def pending_by_asset(attempts: Iterable[FundingAttempt]) -> dict[str, int]:
    """Recorded amounts still awaiting credit, per asset: never spendable."""
    totals: dict[str, int] = {}
    for a in attempts:
        if a.pending:
            totals[a.asset_id] = totals.get(a.asset_id, 0) + a.amount
    return totals


def unmatched(
    deposits: Mapping[tuple[str, str], BridgeDeposit], attempts: Iterable[FundingAttempt]
) -> list[BridgeDeposit]:
    """Deposits the bridge lists that no operator recorded (shown, never acted on)."""
    known = {(a.chain, a.tx_hash) for a in attempts}
    return [d for key, d in deposits.items() if key not in known]
