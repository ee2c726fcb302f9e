"""What a consumer keeps of an inventory snapshot (`state.intent_inventory`): one view for the
strategy's inventory gate and the executor's late inventory check.

The architecture's words: `credited` is what the verifier holds for the account; `spendable` is
credited less the pending withdrawals whose burn has not settled yet (still inside the credited
balance, already committed to leave), as inventory-sync publishes it (`AssetInventory`);
`pending_in` is on its way in and never spendable; what live answers and commands hold is each
consumer's own `reserved`, subtracted by its gate, never here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from daemons.core.events import IntentInventory, input_age_ms


@dataclass(frozen=True)
class InventoryView:
    inventory_id: str
    spendable: Mapping[str, int]  # asset_id -> base units
    stale: bool
    age_ms: int  # as the snapshot said when it was published
    observed_at: datetime  # when it was published (envelope)
    pending_in: Mapping[str, int] = field(default_factory=dict)  # asset_id -> base units on the way in
    stale_reason: str | None = None
    account_id: str | None = None  # whose balances these are
    block_height: int | None = None  # the final block the balances were read at
    synced_at: datetime | None = None  # when the balances were read (its age counts from here)

    def age_ms_at(self, now: datetime) -> int:
        age = input_age_ms(self.synced_at, self.age_ms, self.observed_at, now)
        assert age is not None
        return age


def view_of(payload: IntentInventory, observed_at: datetime) -> InventoryView:
    return InventoryView(
        inventory_id=payload.inventory_id,
        spendable={a.asset_id: a.spendable for a in payload.assets},
        pending_in={a.asset_id: a.pending_in for a in payload.assets},
        stale=payload.stale,
        stale_reason=payload.stale_reason,
        age_ms=payload.age_ms,
        observed_at=observed_at,
        account_id=payload.account_id,
        block_height=payload.block_height,
        synced_at=payload.synced_at,
    )
