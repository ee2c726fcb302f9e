"""Withdrawals out of the intents account through the POA bridge: the `ft_withdraw` intent and the
state machine that follows it. Pure: the service signs with the key it holds and feeds in what the
relay and the bridge said.

The intent (docs/poa-bridge.md §8): `token` and `receiver_id` are the unprefixed POA token contract
(the token burns when it is its own receiver), `memo` is `WITHDRAW_TO:<destination>`, `amount` is
what the destination should receive plus the bridge's `withdrawalFee` (from
`withdrawal_estimate`), and `msg` is left out so a failed transfer can be refunded. It is signed
as NEP-413 with a versioned nonce whose deadline equals the intent deadline (docs/verifier.md §3).

Stages only move forward: signed (written before anything is sent) → published (the relay took
it: `intent_hash`) → burned (settled on NEAR: `tx_hash`) → completed | failed. A publish whose
outcome is unknown leaves the stage at signed; the same signed payload is published again (a
duplicate is "already processed", docs/near-intents-relay.md §7.3), never re-signed with a fresh
nonce. Once the deadline has passed, `is_nonce_used` at the last block at or before the deadline
tells whether it ever executed. Late is a flag (`delayed`) as in funding.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from daemons.core.assets import Asset
from daemons.core.events import LiquidityAction
from daemons.venues.near_intents.nep413 import SignedIntent, SignerKey, intents_message, sign_intent, versioned_nonce

Stage = Literal["signed", "published", "burned", "completed", "failed"]
WithdrawalStatus = Literal["requested", "issued", "pending", "completed", "failed", "delayed"]

WITHDRAW_TO = "WITHDRAW_TO:"
_STAGE_STATUS: dict[Stage, WithdrawalStatus] = {
    "signed": "requested",
    "published": "issued",
    "burned": "pending",
    "completed": "completed",
    "failed": "failed",
}
# Bridge statuses (docs/poa-bridge.md §6) that end a withdrawal without the transfer.
BRIDGE_FAILED = frozenset({"FAILED", "REJECTED", "RETURNED"})


def ft_withdraw_intent(asset: Asset, amount: int, address: str, min_gas: int | None = None) -> dict[str, Any]:
    """The POA withdrawal intent for `amount` base units (fee included) to `address`."""
    if amount <= 0:
        raise ValueError("a withdrawal amount is positive")
    token = asset.near_token_id
    intent: dict[str, Any] = {
        "intent": "ft_withdraw",
        "token": token,
        "receiver_id": token,
        "amount": str(amount),
        "memo": WITHDRAW_TO + address,
    }
    if min_gas is not None:
        intent["min_gas"] = str(min_gas)
    return intent


def sign_withdrawal(
    key: SignerKey,
    signer_id: str,
    intent: dict[str, Any],
    *,
    salt_hex: str,
    deadline: datetime,
    recipient: str,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> SignedIntent:
    """NEP-413 over `{deadline, intents: [intent], signer_id}` with a versioned nonce carrying the
    same deadline (millisecond precision, so the verifier's `deadline <= nonce` holds)."""
    nonce = versioned_nonce(salt_hex, deadline, random_bytes)
    return sign_intent(key, intents_message(signer_id, deadline, [intent]), nonce, recipient)


@dataclass(frozen=True)
class Withdrawal:
    liquidity_action_id: str
    account_id: str
    asset_id: str
    chain: str
    net_amount: int  # what the destination receives
    fee: int  # the bridge's withdrawal fee
    address: str
    requested_at: datetime
    deadline: datetime  # intent and nonce deadline
    wallet_label: str | None = None
    operator: str | None = None
    note: str | None = None
    intent_hash: str | None = None
    nonce: str | None = None  # base64, as signed
    signed_data: dict[str, Any] | None = None
    stage: Stage = "signed"
    delayed_at: datetime | None = None
    published_at: datetime | None = None
    burned_at: datetime | None = None
    settled_at: datetime | None = None  # completed or failed
    tx_hash: str | None = None  # the NEAR burn transaction
    transfer_tx_hash: str | None = None  # on the destination chain
    venue_status: str | None = None
    reason: str | None = None

    @property
    def amount(self) -> int:
        """What leaves the intents account: the net amount plus the bridge fee."""
        return self.net_amount + self.fee

    @property
    def status(self) -> WithdrawalStatus:
        if self.stage in ("completed", "failed"):
            return _STAGE_STATUS[self.stage]
        return "delayed" if self.delayed_at is not None else _STAGE_STATUS[self.stage]

    @property
    def open(self) -> bool:
        return self.stage not in ("completed", "failed")

    def event(self) -> LiquidityAction:
        return LiquidityAction(
            liquidity_action_id=self.liquidity_action_id,
            kind="withdrawal",
            status=self.status,
            asset_id=self.asset_id,
            chain=self.chain,
            amount=self.amount,
            address=self.address,
            tx_hash=self.tx_hash,
            wallet_label=self.wallet_label,
            reason=self.reason,
            operator=self.operator,
            net_amount=self.net_amount,
            fee=self.fee,
            intent_hash=self.intent_hash,
            transfer_tx_hash=self.transfer_tx_hash,
            venue_status=self.venue_status,
        )


def signed(
    *,
    liquidity_action_id: str,
    account_id: str,
    asset: Asset,
    chain: str,
    net_amount: int,
    fee: int,
    address: str,
    now: datetime,
    deadline: datetime,
    signed_intent: SignedIntent,
    wallet_label: str | None = None,
    operator: str | None = None,
    note: str | None = None,
) -> Withdrawal:
    """The ledger row written before the intent is sent anywhere."""
    if net_amount <= 0 or fee < 0:
        raise ValueError("a withdrawal has a positive net amount and a non-negative fee")
    payload = signed_intent.signed_data["payload"]
    return Withdrawal(
        liquidity_action_id=liquidity_action_id,
        account_id=account_id,
        asset_id=asset.asset_id,
        chain=chain,
        net_amount=net_amount,
        fee=fee,
        address=address,
        requested_at=now,
        deadline=deadline,
        wallet_label=wallet_label,
        operator=operator,
        note=note,
        intent_hash=signed_intent.quote_hash,
        nonce=payload["nonce"],
        signed_data=signed_intent.signed_data,
        reason=note,
    )


def published(w: Withdrawal, now: datetime, *, already_processed: bool = False) -> Withdrawal | None:
    if w.stage != "signed":
        return None
    note = "published again: the relay had it already" if already_processed else "published to the relay"
    return replace(w, stage="published", published_at=now, reason=note)


def publish_refused(w: Withdrawal, reason: str, now: datetime) -> Withdrawal | None:
    """The relay answered FAILED: the nonce was not consumed and nothing moved."""
    if w.stage != "signed":
        return None
    return replace(w, stage="failed", settled_at=now, venue_status="FAILED", reason=f"relay refused: {reason}")


def withheld(w: Withdrawal, reason: str, now: datetime) -> Withdrawal | None:
    """Signed but never sent (e.g. a freeze landed before the publish): nothing can have moved.
    Only for a withdrawal this process has not handed to the relay."""
    if w.stage != "signed":
        return None
    return replace(w, stage="failed", settled_at=now, venue_status="NOT_SENT", reason=f"not sent: {reason}")


def on_intent_status(
    w: Withdrawal, status: str, now: datetime, *, tx_hash: str | None = None, status_details: str | None = None
) -> Withdrawal | None:
    """Apply the relay's `get_status` (docs/near-intents-relay.md §7.4). Only SETTLED (with the tx hash) and
    NOT_FOUND_OR_NOT_VALID with `status_details: FAILED` are final; anything else waits."""
    if w.stage not in ("signed", "published"):
        return None
    if status == "SETTLED" and tx_hash:
        return replace(
            w,
            stage="burned",
            burned_at=now,
            published_at=w.published_at or now,
            tx_hash=tx_hash,
            venue_status=status,
            reason="the burn settled on NEAR; waiting for the bridge",
        )
    if status == "NOT_FOUND_OR_NOT_VALID" and status_details == "FAILED":
        return replace(
            w, stage="failed", settled_at=now, venue_status=status, reason="the relay reports the intent FAILED"
        )
    return None


def past_deadline(w: Withdrawal, now: datetime, grace: timedelta) -> bool:
    return w.stage in ("signed", "published") and now > w.deadline + grace


def on_expired(w: Withdrawal, nonce_used: bool, now: datetime) -> Withdrawal | None:
    """The deadline has passed without SETTLED. A nonce unused at the last block at or before the
    deadline can never execute any more, so nothing moved: failed (positive evidence; read
    later, a cleaned-up nonce reads as unused and proves nothing, see `nonce_outcome`). A used
    nonce means it executed; the tx hash must come from elsewhere."""
    if w.stage not in ("signed", "published") or nonce_used:
        return None
    return replace(
        w,
        stage="failed",
        settled_at=now,
        venue_status="EXPIRED",
        reason="the intent deadline passed and its nonce was never used: nothing moved",
    )


def match_recent_burn(
    w: Withdrawal, recent: Iterable[tuple[str, str | None, int | None, str | None]], known_tx_hashes: set[str]
) -> str | None:
    """For an executed intent the relay gave no tx hash for: the bridge's `recent_withdrawals`
    entry (tx hash, intents token id, amount, address) with this asset, amount and destination
    that no other withdrawal claims."""
    for tx_hash, token_id, amount, address in recent:
        if (
            tx_hash
            and tx_hash not in known_tx_hashes
            and token_id == w.asset_id
            and amount == w.amount
            and address is not None
            and address.lower() == w.address.lower()
        ):
            return tx_hash
    return None


def on_nonce_used(w: Withdrawal, tx_hash: str, now: datetime) -> Withdrawal | None:
    if w.stage not in ("signed", "published"):
        return None
    return replace(
        w,
        stage="burned",
        burned_at=now,
        tx_hash=tx_hash,
        venue_status="NONCE_USED",
        reason="the nonce was used on chain; the burn was found in the bridge's recent withdrawals",
    )


def on_bridge_status(
    w: Withdrawal, status: str | None, now: datetime, *, transfer_tx_hash: str | None = None
) -> Withdrawal | None:
    """Apply `withdrawal_status` (docs/poa-bridge.md §6); None status: the bridge has not indexed
    the burn yet."""
    if w.stage != "burned" or status is None:
        return None
    if status == "COMPLETED":
        return replace(
            w,
            stage="completed",
            settled_at=now,
            venue_status=status,
            transfer_tx_hash=transfer_tx_hash,
            reason="the bridge sent the transfer",
        )
    if status in BRIDGE_FAILED:
        returned = " (returned to the intents account)" if status == "RETURNED" else ""
        return replace(
            w,
            stage="failed",
            settled_at=now,
            venue_status=status,
            transfer_tx_hash=transfer_tx_hash,
            reason=f"the bridge reports {status}{returned}",
        )
    return None


def check_delay(w: Withdrawal, now: datetime, bound: timedelta) -> Withdrawal | None:
    if not w.open or w.delayed_at is not None:
        return None
    age = now - w.requested_at
    if age < bound:
        return None
    return replace(
        w,
        delayed_at=now,
        reason=(
            f"not completed {int(age.total_seconds())} s after it was requested "
            f"(bound {bound.total_seconds():g} s; stage {w.stage})"
        ),
    )


def pending_by_asset(ws: Iterable[Withdrawal]) -> dict[str, int]:
    """What open withdrawals take out of the intents account, per asset."""
    totals: dict[str, int] = {}
    for w in ws:
        if w.open:
            totals[w.asset_id] = totals.get(w.asset_id, 0) + w.amount
    return totals


__all__ = [
    "BRIDGE_FAILED",
    "WITHDRAW_TO",
    "Withdrawal",
    "check_delay",
    "ft_withdraw_intent",
    "match_recent_burn",
    "on_bridge_status",
    "on_expired",
    "on_intent_status",
    "on_nonce_used",
    "past_deadline",
    "pending_by_asset",
    "publish_refused",
    "published",
    "sign_withdrawal",
    "signed",
    "withheld",
]
