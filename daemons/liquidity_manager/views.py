"""How liquidity-manager shows its records in replies and `/state`: u128 base units as decimal
strings, as on the wire; a withdrawal without its signed payload."""

from __future__ import annotations

import dataclasses
from typing import Any

from daemons.liquidity_manager.funding import FundingAttempt
from daemons.liquidity_manager.withdrawals import Withdrawal


def amounts_as_text(view: dict[str, Any]) -> dict[str, Any]:
    for key in ("amount", "net_amount", "fee", "credited_amount"):
        if isinstance(view.get(key), int):
            view[key] = str(view[key])
    return view


def funding_view(a: FundingAttempt) -> dict[str, Any]:
    return amounts_as_text({**dataclasses.asdict(a), "status": a.status})


def withdrawal_view(w: Withdrawal) -> dict[str, Any]:
    view = dataclasses.asdict(w)
    view.pop("signed_data", None)
    return amounts_as_text({**view, "amount": w.amount, "status": w.status})
