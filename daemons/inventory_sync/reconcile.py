"""Reconciliation: after a funding is credited, is the credited balance what it should be?
(pure: no I/O, no clock; time comes in with the readings).

The service hands every successful sync in as a `Reading`: the credited balances, read first,
then the POA bridge's deposit lists, read *after* the balances. That order is what makes the
comparison sound, because the bridge marks a deposit COMPLETED only once the verifier has
credited it:

- a deposit the bridge still lists as PENDING or FAILED (or leaves out of a complete list) was
  not credited when the balances of that reading were read: the reading is a *confirmation*
  that it was uncredited, a possible baseline;
- a deposit listed COMPLETED/CREDITED by the bridge read of reading N (at `bridge_read_at`) was
  credited before the balances of the first *covering* reading whose head block was taken after
  that instant (`covers_until`): a `final` read trails the chain, so only a reading whose
  balances come from a block at or past a head read later is known to hold it (`hi`); a funding
  liquidity-manager marked credited at time t likewise. Until such a reading exists the credit
  is seen but not placed, and the service makes its next reading a covering one.

So each transfer is known to have been credited between the balance reads of its latest
confirmation (`lo`) and `hi`. For a credited funding F, a baseline reading b (one of F's
confirmations) and the comparison reading c ≥ hi(F) bound a window. Every other transfer of the
same asset is *in* the window (lo ≥ b and hi ≤ c), *out* of it (hi ≤ b, lo ≥ c, or it can never
have been credited), or *ambiguous*. With no ambiguous transfer:

    expected = balance[b] + Σ amounts in the window (F's among them),   credited = balance[c]

and `credited < expected` is flagged `credited_lower_than_expected` with both figures. The
latest baseline that leaves nothing ambiguous is used; an ambiguity a later reading could settle
waits for it (a bounded number of readings). Our own settled trades or a withdrawal of the same
asset inside the window move the balance by amounts this service does not know: the result is
`inconclusive`, with the reason, never a false alarm or a false all-clear; those windows reach
`LAG_MARGIN` before the baseline's read, since a balance read at `final` may not yet hold what
settled just before it.

Transfers credited before the service's first reading were never watched: they produce no entry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from daemons.core.events import Reconciliation, ReconciliationStatus
from daemons.inventory_sync.ledger import NEVER_CREDITED, ActionView
from daemons.inventory_sync.snapshot import BridgeRead

Key = tuple[str, ...]
Placement = Literal["in", "out", "ambiguous", "unsettled"]

# how far back a reading's balances may trail its read (a `final` read is a few blocks behind the
# head; generous, as a wider window only makes a result inconclusive, never wrong)
LAG_MARGIN = timedelta(seconds=30)

_SEVERITY: dict[ReconciliationStatus, int] = {
    "ok": 0,
    "awaiting_credit": 1,
    "inconclusive": 2,
    "credited_lower_than_expected": 3,
}


def summary_status(entries: Iterable[Reconciliation]) -> ReconciliationStatus:
    """The most serious status among the entries (`ok` when there are none)."""
    worst: ReconciliationStatus = "ok"
    for e in entries:
        if _SEVERITY[e.status] > _SEVERITY[worst]:
            worst = e.status
    return worst


@dataclass(frozen=True)
class Reading:
    """One successful sync: balances read between `started_at` and `finished_at`, then the
    bridge's deposit lists per chain (None: that chain's read failed), done at `bridge_read_at`.
    `covers_until`: for a covering reading, the instant before its head block was read (every
    change executed before it is in these balances); None for a reading that proves nothing."""

    seq: int
    started_at: datetime
    finished_at: datetime
    balances: Mapping[str, int]
    bridge: Mapping[str, BridgeRead | None]
    bridge_read_at: datetime | None = None
    covers_until: datetime | None = None


@dataclass
class _Transfer:
    """One inbound transfer: a funding action (its duplicates share it) and/or a bridge deposit."""

    key: Key
    asset_id: str
    chain: str | None
    tx_hash: str | None
    confirmed: deque[int]  # readings after whose balance read it was still uncredited, oldest first
    hi: int | None = None  # credited before the balance read of reading `hi`
    credit_seen_at: datetime | None = None  # known credited by this instant
    actions: list[ActionView] = field(default_factory=list)
    bridge_amount: int | None = None
    listed: bool = False  # the bridge has listed it at least once
    result: Reconciliation | None = None
    silent: bool = False  # credited before the first reading: never watched, no entry
    waits: int = 0

    @property
    def lo(self) -> int | None:
        return self.confirmed[-1] if self.confirmed else None

    @property
    def primary(self) -> ActionView | None:
        """The action that speaks for the transfer: not a duplicate or refusal, first recorded."""
        live = [a for a in self.actions if a.status not in NEVER_CREDITED] or self.actions
        return min(live, key=lambda a: a.first_at) if live else None

    @property
    def amount(self) -> int | None:
        primary = self.primary
        if primary is not None and primary.amount is not None:
            return primary.amount
        return self.bridge_amount

    @property
    def never_credited(self) -> bool:
        return (
            self.hi is None
            and not self.listed
            and bool(self.actions)
            and all(a.status in NEVER_CREDITED for a in self.actions)
        )

    def label(self) -> str:
        primary = self.primary
        if primary is not None:
            return primary.liquidity_action_id
        return f"bridge:{self.chain}:{self.tx_hash}"


@dataclass(frozen=True)
class Outcome:
    entries: list[Reconciliation]  # awaiting, then resolved (newest first)
    resolved: list[Reconciliation]  # resolved by this reading
    wants_reading: bool  # a credit was seen: another reading right away settles it


def _key(chain: str | None, tx_hash: str | None, action_id: str) -> Key:
    return ("tx", chain, tx_hash) if chain and tx_hash else ("action", action_id)


class Reconciler:
    """Tracks inbound transfers of the pair's assets across readings.

    `baselines`: confirmations kept per transfer; `keep_results`: resolved entries kept for the
    snapshot; `max_waits`: readings a comparison may wait for an ambiguity to settle.
    """

    def __init__(
        self, asset_ids: Iterable[str], *, baselines: int = 8, keep_results: int = 20, max_waits: int = 5
    ) -> None:
        self.asset_ids = frozenset(asset_ids)
        self.baselines = baselines
        self.max_waits = max_waits
        self._readings: dict[int, Reading] = {}
        self._first_seq: int | None = None
        self._transfers: dict[Key, _Transfer] = {}
        self._results: deque[Reconciliation] = deque(maxlen=keep_results)

    @property
    def oldest_reading_at(self) -> datetime | None:
        """Start of the oldest reading still kept: older trade settlements no longer matter."""
        return min((r.started_at for r in self._readings.values()), default=None)

    # --- one reading ----------------------------------------------------------------------

    def observe(
        self,
        reading: Reading,
        fundings: Iterable[ActionView],
        withdrawals: Sequence[ActionView],
        trades_settled_at: Sequence[datetime],
        now: datetime,
    ) -> Outcome:
        if self._readings and reading.seq <= max(self._readings):
            raise ValueError("readings must come in increasing seq order")
        self._readings[reading.seq] = reading
        if self._first_seq is None:
            self._first_seq = reading.seq
        present = self._gather(reading, fundings)
        for t in self._transfers.values():
            self._update(t, reading)
        resolved: list[Reconciliation] = []
        wants = False
        for t in self._transfers.values():
            if t.result is not None or t.silent or t.primary is None:
                continue
            if t.hi is None:
                wants = wants or t.credit_seen_at is not None  # a covering reading will place it
                continue
            if t.hi <= self._first_seq:
                t.silent = True
                continue
            if t.hi > reading.seq:
                wants = True  # credited after this reading's balances may have been read
                continue
            result = self._compare(t, reading, withdrawals, trades_settled_at, now)
            if result is None:
                wants = True
                continue
            t.result = result
            self._results.append(result)
            resolved.append(result)
        self._prune(present, reading.seq)
        return Outcome(entries=self.entries(), resolved=resolved, wants_reading=wants)

    def entries(self) -> list[Reconciliation]:
        awaiting = []
        for t in self._transfers.values():
            primary = t.primary
            if primary is None or t.result is not None or t.silent:
                continue
            if t.hi is None and not primary.pending:
                continue  # failed, refused or duplicate without a credit: nothing to wait for
            awaiting.append(
                Reconciliation(
                    asset_id=t.asset_id,
                    status="awaiting_credit",
                    liquidity_action_id=primary.liquidity_action_id,
                    tx_hash=t.tx_hash,
                    amount=t.amount,
                    reason=None if t.credit_seen_at is None else "credit seen; compared at the next reading",
                )
            )
        return awaiting + list(reversed(self._results))

    # --- bookkeeping ----------------------------------------------------------------------

    def _gather(self, reading: Reading, fundings: Iterable[ActionView]) -> set[Key]:
        """Bring every transfer the inputs name into `_transfers`; return the keys present."""
        groups: dict[Key, list[ActionView]] = {}
        for f in fundings:
            if f.asset_id in self.asset_ids:
                groups.setdefault(_key(f.chain, f.tx_hash, f.liquidity_action_id), []).append(f)
        listed: dict[Key, tuple[str, int]] = {}
        for chain, read in reading.bridge.items():
            if read is None:
                continue
            for d in read.deposits:
                if d.tx_hash and d.asset_id in self.asset_ids:
                    listed[("tx", chain, d.tx_hash)] = (d.asset_id, d.amount)
        for key in groups.keys() | listed.keys():
            t = self._transfers.get(key)
            actions = groups.get(key, [])
            if t is None:
                where = key[1] if key[0] == "tx" else (actions[0].chain if actions else None)
                tx = key[2] if key[0] == "tx" else None
                asset = actions[0].asset_id if actions else listed[key][0]
                assert asset is not None
                t = _Transfer(
                    key=key,
                    asset_id=asset,
                    chain=where,
                    tx_hash=tx,
                    confirmed=deque(self._absent_from(where, reading.seq), maxlen=self.baselines),
                )
                self._transfers[key] = t
            if actions:
                t.actions = actions
            if key in listed:
                t.listed = True
                t.bridge_amount = listed[key][1]
        return groups.keys() | listed.keys()

    def _absent_from(self, chain: str | None, before: int) -> list[int]:
        """Earlier complete lists of `chain` did not hold a transfer first seen now: it was not
        credited at any of those readings."""
        if chain is None:
            return []
        seqs = [
            s
            for s, r in sorted(self._readings.items())
            if s < before and (read := r.bridge.get(chain)) is not None and read.complete
        ]
        return seqs[-self.baselines :]

    def _update(self, t: _Transfer, reading: Reading) -> None:
        seq = reading.seq
        bridge_says: bool | None = None  # True credited, False uncredited, None unknown
        read = reading.bridge.get(t.chain) if t.chain and t.tx_hash else None
        if read is not None:
            deposit = read.find(t.tx_hash)
            if deposit is not None:
                bridge_says = deposit.credited
            elif read.complete:
                bridge_says = False
        seen = t.credit_seen_at
        if bridge_says:
            at = reading.bridge_read_at or reading.finished_at
            seen = at if seen is None else min(seen, at)
        for a in t.actions:
            if a.credited_at is not None:
                seen = a.credited_at if seen is None else min(seen, a.credited_at)
        t.credit_seen_at = seen
        hi = self._first_covering_after(seen) if seen is not None else None
        if hi is not None and t.hi is not None:
            hi = min(hi, t.hi)
        t.hi = hi if hi is not None else t.hi
        # a confirmation contradicting a known earlier credit is noise, not a baseline
        if bridge_says is False and (hi is None or hi > seq):
            t.confirmed.append(seq)

    def _first_covering_after(self, at: datetime) -> int | None:
        """The first kept reading whose head block was read after `at` (a credit made by then is
        in its balances); None until there is one."""
        later = [s for s, r in self._readings.items() if r.covers_until is not None and r.covers_until >= at]
        return min(later) if later else None

    def _prune(self, present: set[Key], seq: int) -> None:
        for key in [k for k, t in self._transfers.items() if k not in present and not t.actions]:
            del self._transfers[key]  # a bridge-only deposit that left the list
        needed = {s for t in self._transfers.values() if t.result is None for s in t.confirmed}
        keep_recent = max(2 * self.baselines, 16)
        for s in [s for s in self._readings if s not in needed and s <= seq - keep_recent]:
            del self._readings[s]
        for t in self._transfers.values():
            while t.confirmed and t.confirmed[0] not in self._readings:
                t.confirmed.popleft()

    # --- the comparison -------------------------------------------------------------------

    def _place(self, g: _Transfer, b: int, c: int) -> Placement:
        """Where transfer `g`'s credit falls relative to the window (balance[b], balance[c])."""
        lo, hi = g.lo, g.hi
        if (hi is not None and hi <= b) or (lo is not None and lo >= c) or g.never_credited:
            return "out"
        if lo is not None and lo >= b and hi is not None and hi <= c:
            return "in"
        if hi is None or hi > c:
            return "unsettled"  # a later comparison reading may place it
        return "ambiguous"

    def _compare(
        self,
        f: _Transfer,
        reading: Reading,
        withdrawals: Sequence[ActionView],
        trades_settled_at: Sequence[datetime],
        now: datetime,
    ) -> Reconciliation | None:
        """F's result at comparison reading c = this one, or None to wait for another reading."""
        assert f.hi is not None and f.primary is not None
        c = reading.seq
        others = [g for g in self._transfers.values() if g is not f and g.asset_id == f.asset_id]
        baselines = [b for b in reversed(f.confirmed) if b < f.hi and b in self._readings]
        if not baselines:
            return self._result(f, "inconclusive", now, reason="no reading saw it uncredited before its credit")
        waitable = False  # some baseline is held up only by credits a later reading can place
        blocking: list[str] = []
        for b in baselines:
            placed = {g.key: self._place(g, b, c) for g in others}
            stuck = [g for g in others if placed[g.key] in ("ambiguous", "unsettled")]
            if not stuck:
                inside = [f] + [g for g in others if placed[g.key] == "in"]
                return self._figures(f, inside, self._readings[b], reading, withdrawals, trades_settled_at, now)
            blocking = sorted({g.label() for g in stuck})
            waitable = waitable or all(placed[g.key] == "unsettled" for g in stuck)
        if waitable and f.waits < self.max_waits:
            f.waits += 1
            return None
        return self._result(
            f, "inconclusive", now, reason="credits of unknown timing in the window: " + ", ".join(blocking)
        )

    def _figures(
        self,
        f: _Transfer,
        inside: list[_Transfer],
        base: Reading,
        comp: Reading,
        withdrawals: Sequence[ActionView],
        trades_settled_at: Sequence[datetime],
        now: datetime,
    ) -> Reconciliation:
        window_ids = [t.label() for t in inside]
        start, end = base.started_at - LAG_MARGIN, comp.finished_at
        trades = sum(1 for at in trades_settled_at if start <= at <= end)
        if trades:
            return self._result(
                f,
                "inconclusive",
                now,
                window=window_ids,
                reads=(base, comp),
                reason=f"{trades} settled trade(s) of ours moved the balance in the window",
            )
        moving = [
            w.liquidity_action_id
            for w in withdrawals
            if w.asset_id == f.asset_id and _withdrawal_in_window(w, start, end)
        ]
        if moving:
            return self._result(
                f,
                "inconclusive",
                now,
                window=window_ids,
                reads=(base, comp),
                reason="withdrawal(s) under way in the window: " + ", ".join(sorted(moving)),
            )
        unknown = [t.label() for t in inside if t.amount is None]
        if unknown:
            return self._result(
                f,
                "inconclusive",
                now,
                window=window_ids,
                reads=(base, comp),
                reason="amount unknown for: " + ", ".join(unknown),
            )
        baseline = base.balances[f.asset_id]
        expected = baseline + sum(t.amount or 0 for t in inside)
        credited = comp.balances[f.asset_id]
        lower = credited < expected
        return self._result(
            f,
            "credited_lower_than_expected" if lower else "ok",
            now,
            window=window_ids,
            baseline=baseline,
            expected=expected,
            credited=credited,
            shortfall=expected - credited if lower else None,
            reads=(base, comp),
        )

    def _result(
        self,
        f: _Transfer,
        status: ReconciliationStatus,
        now: datetime,
        *,
        reason: str | None = None,
        window: list[str] | None = None,
        baseline: int | None = None,
        expected: int | None = None,
        credited: int | None = None,
        shortfall: int | None = None,
        reads: tuple[Reading, Reading] | None = None,
    ) -> Reconciliation:
        primary = f.primary
        assert primary is not None
        return Reconciliation(
            asset_id=f.asset_id,
            status=status,
            liquidity_action_id=primary.liquidity_action_id,
            tx_hash=f.tx_hash,
            amount=f.amount,
            baseline=baseline,
            expected=expected,
            credited=credited,
            shortfall=shortfall,
            window_action_ids=window or [],
            reason=reason,
            resolved_at=now,
            baseline_read_at=reads[0].started_at if reads else None,
            credited_read_at=reads[1].started_at if reads else None,
        )


def _withdrawal_in_window(w: ActionView, start: datetime, end: datetime) -> bool:
    """Could this withdrawal's burn have moved the credited balance between `start` and `end`?"""
    if w.first_at > end:
        return False  # asked for after the window
    if w.burned_at is not None:
        return w.burned_at >= start  # a burn reported before the window was in the baseline already
    done_at = w.done_at
    # ended (failed, refused) before the window without ever burning
    return not (done_at is not None and done_at < start)
