"""Validated request bodies of liquidity-manager's own control endpoints.

Amounts come either as integer base units (`amount`, a decimal string) or as exact asset units
(`amount_units`, a decimal string such as "250.5"), never both and never a float; units become
base units once the asset (and so its decimals) is known, and refuse rounding.
"""

from __future__ import annotations

import uuid

from pydantic import ConfigDict, Field, field_validator, model_validator

from daemons.core.control import OperatorAction
from daemons.core.events import U128, Dec


def _action_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("liquidity_action_id must be a UUID") from None


class _Amount(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    amount: U128 | None = None
    amount_units: Dec | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> _Amount:
        if (self.amount is None) == (self.amount_units is None):
            raise ValueError("give exactly one of amount (base units) or amount_units")
        if self.amount == 0 or (self.amount_units is not None and self.amount_units <= 0):
            raise ValueError("the amount must be positive")
        return self


class DepositAddressBody(OperatorAction):
    """Ask the bridge for (or show) the deposit address of an asset's funding chain."""

    model_config = ConfigDict(extra="forbid")
    asset_id: str = Field(min_length=1, max_length=200)
    chain: str | None = Field(default=None, min_length=1, max_length=64)
    # ask the bridge again even when an address is already held
    renew: bool = False


class FundingBody(_Amount):
    """An external transfer the operator made into the deposit address: record and follow it.
    A client-chosen `liquidity_action_id` makes a retried request idempotent."""

    asset_id: str = Field(min_length=1, max_length=200)
    chain: str | None = Field(default=None, min_length=1, max_length=64)
    tx_hash: str = Field(min_length=1, max_length=200)
    wallet_label: str | None = Field(default=None, min_length=1, max_length=64)
    liquidity_action_id: str | None = None

    _id = field_validator("liquidity_action_id")(_action_id)


class WithdrawalBody(_Amount):
    """Withdraw `amount` (what the destination receives; the bridge fee is added) to a labelled
    treasury wallet, named by `wallet_label` or by `address`."""

    asset_id: str = Field(min_length=1, max_length=200)
    wallet_label: str | None = Field(default=None, min_length=1, max_length=64)
    address: str | None = Field(default=None, min_length=1, max_length=128)
    liquidity_action_id: str | None = None
    # the operator checked that no withdrawal whose outcome the chain could not decide has left
    # (needs a reason; audited)
    confirm_unknown: bool = False

    _id = field_validator("liquidity_action_id")(_action_id)

    @model_validator(mode="after")
    def _destination(self) -> WithdrawalBody:
        if self.wallet_label is None and self.address is None:
            raise ValueError("name the destination: wallet_label or address")
        if self.confirm_unknown and not (self.reason and self.reason.strip()):
            raise ValueError("confirm_unknown needs a reason: the evidence that nothing left")
        return self
