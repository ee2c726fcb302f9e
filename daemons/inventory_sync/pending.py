"""The pending pipeline of a reading: the POA bridge's deposit lists, read after the balances,
then the reconciliation of credited fundings and, per asset, credited, reserved, spendable and
pending in and out. `snapshot.holdings` and `reconcile.Reconciler` hold the rules; this is the
I/O and the bookkeeping around them.

Each chain with a POA route is read on its own and has its own health link, shown in `/state`
and `/metrics`. A chain whose read failed just now falls back to its last good read for the
pending figures, and the reading's pending list is then not complete; it is not complete either
until the liquidity history has been read to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from daemons.core.events import now_utc
from daemons.core.health import Link
from daemons.inventory_sync.reconcile import Outcome, Reading, Reconciler
from daemons.inventory_sync.snapshot import BridgeRead, Holdings, bridge_read, holdings
from daemons.venues.poa_bridge import PoaBridgeError

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync


@dataclass(frozen=True)
class Observed:
    """What one reading's balances and bridge reads add up to."""

    outcome: Outcome  # the reconciliation after this reading
    held: Holdings  # credited, reserved, spendable and pending per asset, and the movements
    complete: bool  # every movement under way is known (`pending_complete`)


class PendingPipeline:
    def __init__(self, ex: InventorySync) -> None:
        self.ex = ex
        cfg = ex.cfg
        self.reconciler = Reconciler(
            ex.pair.token_ids,
            baselines=cfg.inventory_reconciliation_baselines,
            keep_results=cfg.inventory_reconciliation_keep,
            max_waits=cfg.inventory_reconciliation_max_waits,
        )
        self.links = {
            c: Link(
                ex.log, down="bridge_unavailable", up="bridge_recovered", level="warning", venue="poa_bridge", chain=c
            )
            for c in ex.chains
        }
        self.reads: dict[str, BridgeRead] = {}  # the last good read per chain
        self.read_at: dict[str, datetime] = {}

    def connected(self, chain: str) -> bool:
        return chain in self.reads and self.links[chain].healthy

    async def read_bridge(self) -> dict[str, BridgeRead | None]:
        """Every chain's recent deposits for the signer account; None for a chain that failed."""
        assert self.ex.account_id is not None
        account = self.ex.account_id
        limit = self.ex.cfg.inventory_deposits_limit

        async def one(chain: str) -> BridgeRead | None:
            try:
                result = await self.ex.bridge.recent_deposits(account, chain, limit=limit)
            except PoaBridgeError as exc:
                self.ex.counts["bridge_failures"] += 1
                self.links[chain].fail(exc)
                return None
            read = bridge_read(chain, result, limit)
            self.links[chain].ok()
            self.reads[chain] = read
            self.read_at[chain] = now_utc()
            return read

        results = await asyncio.gather(*(one(c) for c in self.ex.chains))
        return dict(zip(self.ex.chains, results, strict=True))

    def observe(
        self,
        *,
        seq: int,
        started: datetime,
        finished: datetime,
        balances: Mapping[str, int],
        reads: Mapping[str, BridgeRead | None],
        covers_until: datetime | None,
    ) -> Observed:
        """Reconcile and total a reading: balances read between `started` and `finished`, then
        `reads` of the bridge; `covers_until` as `Settled.covers_until`."""
        ex = self.ex
        fundings, withdrawals = ex.ledger.fundings(), ex.ledger.withdrawals()
        outcome = self.reconciler.observe(
            Reading(
                seq=seq,
                started_at=started,
                finished_at=finished,
                balances=balances,
                bridge=reads,
                bridge_read_at=now_utc(),
                covers_until=covers_until,
            ),
            fundings,
            withdrawals,
            list(ex.inputs.trades_settled),
            finished,
        )
        ex.inputs.prune_trades(self.reconciler.oldest_reading_at)
        # pending figures fall back to the last good bridge read of a chain that failed just now
        known: dict[str, BridgeRead | None] = {c: reads.get(c) or self.reads.get(c) for c in ex.chains}
        held = holdings(ex.pair.assets, balances, fundings, withdrawals, known, ex.finality.liquidity_seq)
        complete = ex.inputs.history_caught_up and all(reads.get(c) is not None for c in ex.chains)
        return Observed(outcome=outcome, held=held, complete=complete)

    def view(self) -> dict[str, Any]:
        """`/state`'s `bridge`: per chain, the last error, the last good read and its size."""
        return {
            c: {
                "error": self.links[c].error,
                "read_at": self.read_at.get(c),
                "deposits": len(self.reads[c].deposits) if c in self.reads else None,
            }
            for c in self.ex.chains
        }
