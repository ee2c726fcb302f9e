"""What one inventory snapshot says, computed from its inputs (pure: no I/O, no clock).

- Spendable is credited only: the verifier's balance for the signer account, less withdrawals
  that are committed but whose burn is not in that balance yet (still inside the credited
  balance, but leaving). A burn is in the balance only when the event reporting it was folded
  before the reading's head block was taken (`covered_seq`): a `final` read trails the chain,
  so a reading made after the burn was reported can still predate it (docs/near-rpc.md,
  "Finality"). Nothing on its way in ever counts.
- Pending inbound per asset: every funding action not yet credited, failed, duplicate or
  refused, plus every deposit the POA bridge lists as PENDING that no live action covers (a
  transfer seen externally but not recorded). One transfer is counted once: actions and bridge
  deposits are matched by (chain, normalised tx hash). A funding the bridge already lists as
  COMPLETED/CREDITED is in the credited balance, so it is not pending any more even before
  liquidity-manager records the credit.
- Pending outbound per asset: every withdrawal not completed, failed or refused.
- Freshness: the age of the last successful verifier reading; stale when older than the bound
  or when there has never been one; `stale_reason` says why in words.

`Synced` is the last successful reading with everything computed from it: what the next
snapshot, `/state` and `/metrics` show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from daemons.core.assets import Asset
from daemons.core.events import AssetInventory, PendingMovement, Reconciliation, ms_since
from daemons.core.tx_hash import normalize_tx_hash
from daemons.inventory_sync.ledger import ActionView
from daemons.venues.poa_bridge import RecentDeposits

CREDITED_DEPOSIT = frozenset({"COMPLETED", "CREDITED"})


@dataclass(frozen=True, slots=True)
class BridgeDeposit:
    chain: str
    tx_hash: str  # normalised
    asset_id: str | None
    amount: int
    status: str

    @property
    def credited(self) -> bool:
        return self.status in CREDITED_DEPOSIT


@dataclass(frozen=True)
class BridgeRead:
    """One `recent_deposits` answer for the signer account on one chain. `complete`: the list
    holds every deposit the bridge knows there, so a transfer missing from it is not credited."""

    chain: str
    deposits: tuple[BridgeDeposit, ...]
    complete: bool
    _by_tx: dict[str, BridgeDeposit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_tx", {d.tx_hash: d for d in self.deposits if d.tx_hash})

    def find(self, tx_hash: str | None) -> BridgeDeposit | None:
        return self._by_tx.get(tx_hash) if tx_hash else None


def bridge_read(chain: str, result: RecentDeposits, limit: int) -> BridgeRead:
    """Normalise a `recent_deposits` answer (asked with `limit`, no offset)."""
    deposits = tuple(
        BridgeDeposit(
            chain=d.chain or chain,
            tx_hash=normalize_tx_hash(d.tx_hash) if d.tx_hash else "",
            asset_id=d.intents_token_id,
            amount=d.amount,
            status=d.status,
        )
        for d in result.deposits
    )
    if result.total is not None:
        complete = result.total <= len(deposits)
    else:
        complete = len(deposits) < limit
    return BridgeRead(chain=chain, deposits=deposits, complete=complete)


@dataclass(frozen=True)
class Synced:
    """The last successful reading and everything computed from it."""

    sync_id: str
    seq: int
    synced_at: datetime
    duration_ms: int
    block_height: int | None
    block_hash: str | None
    results_through: dict[int, int] | None
    trigger: str
    assets: list[AssetInventory]
    pending: list[PendingMovement]
    pending_complete: bool
    reconciliation: list[Reconciliation]
    fee_pips: int | None = None


@dataclass(frozen=True)
class Holdings:
    assets: list[AssetInventory]
    pending: list[PendingMovement]


def _bridge_credited(action: ActionView, bridge: Mapping[str, BridgeRead | None]) -> bool:
    read = bridge.get(action.chain) if action.chain else None
    found = read.find(action.tx_hash) if read is not None else None
    return found is not None and found.credited


def pending_movements(
    fundings: Iterable[ActionView], withdrawals: Iterable[ActionView], bridge: Mapping[str, BridgeRead | None]
) -> list[PendingMovement]:
    """Every movement under way, each transfer once (see the module docstring)."""
    out: list[PendingMovement] = []
    covered: set[tuple[str, str]] = set()  # (chain, tx) a live or credited action speaks for
    for f in fundings:
        if f.chain and f.tx_hash and (f.pending or f.status == "credited"):
            covered.add((f.chain, f.tx_hash))
        if not f.pending or _bridge_credited(f, bridge):
            continue
        out.append(
            PendingMovement(
                direction="in",
                asset_id=f.asset_id,
                amount=f.amount,
                source="liquidity_action",
                status=f.status,
                liquidity_action_id=f.liquidity_action_id,
                chain=f.chain,
                tx_hash=f.tx_hash,
            )
        )
    for chain in sorted(c for c, r in bridge.items() if r is not None):
        read = bridge[chain]
        assert read is not None
        for d in read.deposits:
            if d.status == "PENDING" and (d.chain, d.tx_hash) not in covered:
                out.append(
                    PendingMovement(
                        direction="in",
                        asset_id=d.asset_id,
                        amount=d.amount,
                        source="bridge",
                        status=d.status,
                        chain=d.chain,
                        tx_hash=d.tx_hash or None,
                    )
                )
    for w in withdrawals:
        if w.pending:
            out.append(
                PendingMovement(
                    direction="out",
                    asset_id=w.asset_id,
                    amount=w.amount,
                    source="liquidity_action",
                    status=w.status,
                    liquidity_action_id=w.liquidity_action_id,
                    chain=w.chain,
                    tx_hash=w.tx_hash,
                )
            )
    return out


def holdings(
    assets: Sequence[Asset],
    balances: Mapping[str, int],
    fundings: Iterable[ActionView],
    withdrawals: Iterable[ActionView],
    bridge: Mapping[str, BridgeRead | None],
    covered_seq: int | None = None,
) -> Holdings:
    """Per pair asset: credited, spendable, pending in and out; and the movements behind them.
    `covered_seq`: the liquidity ledger's `events_applied` when the reading's head block was
    taken; None keeps every burned withdrawal that is still pending reserved."""
    withdrawals = list(withdrawals)
    movements = pending_movements(fundings, withdrawals, bridge)
    rows = []
    for asset in assets:
        credited = balances[asset.asset_id]
        reserved = sum(
            w.amount or 0
            for w in withdrawals
            if w.pending and not burn_in_balance(w, covered_seq) and w.asset_id == asset.asset_id
        )
        rows.append(
            AssetInventory(
                asset_id=asset.asset_id,
                decimals=asset.decimals,
                credited=credited,
                reserved_out=reserved,
                spendable=max(0, credited - reserved),
                pending_in=sum(
                    m.amount or 0 for m in movements if m.direction == "in" and m.asset_id == asset.asset_id
                ),
                pending_out=sum(
                    m.amount or 0 for m in movements if m.direction == "out" and m.asset_id == asset.asset_id
                ),
            )
        )
    return Holdings(assets=rows, pending=movements)


def burn_in_balance(withdrawal: ActionView, covered_seq: int | None) -> bool:
    """The withdrawal's burn is in a reading whose head block was taken at ledger count
    `covered_seq` (a burn folded later may still be missing from the balance)."""
    if not withdrawal.burned:
        return False
    if covered_seq is None or withdrawal.burned_seq is None:
        return False
    return withdrawal.burned_seq <= covered_seq


@dataclass(frozen=True, slots=True)
class Freshness:
    age_ms: int | None
    stale: bool


def freshness(synced_at: datetime | None, now: datetime, bound_ms: int) -> Freshness:
    """Stale when there was never a reading or the last one is older than `bound_ms`. A clock
    that stepped back makes the age 0, never negative."""
    if synced_at is None:
        return Freshness(age_ms=None, stale=True)
    age = ms_since(synced_at, now)
    return Freshness(age_ms=age, stale=age > bound_ms)


def stale_at(synced_at: datetime | None, bound_ms: int) -> datetime | None:
    """The first instant at which a reading taken at `synced_at` counts as stale."""
    if synced_at is None:
        return None
    return synced_at + timedelta(milliseconds=bound_ms + 1)


def stale_reason(synced_at: datetime | None, now: datetime, bound_ms: int, *, error: str | None, paused: bool) -> str:
    """Why inventory is stale, in words: since when no reading succeeded, the verifier's last
    error, and the operator's pause."""
    if synced_at is None:
        reason = "no successful verifier reading since start"
    else:
        age = (now - synced_at) // timedelta(milliseconds=1)
        reason = f"no successful verifier reading for {age} ms (bound {bound_ms} ms)"
    if error:
        reason += f"; last error: {error}"
    if paused:
        reason += "; readings paused by the operator"
    return reason
