"""Live answers and how each is resolved (pure).

`LiveBook` holds every command the executor has reserved inventory for: from the moment its
checks pass (before signing) until it is resolved. Resolution follows the venue, never a guess:

- a `quote_status` whose `quote_hash` is a live answer's → settled (`intent_hash`, `tx_hash`);
- a live answer whose deadline (+ a grace for finality) has passed → `is_nonce_used` on its
  nonce: used → settled (its status was missed), unused → expired;
- an uncertain answer (no relay answer in time, or a restart after signing) is resolved the same
  way, never by resubmitting.

A signed answer that is withheld (never sent: disarmed, late, stale inputs while signing) keeps
holding its give-amount until its deadline has passed: its signature stays valid until then, so
it could still execute if it ever left (`withheld`, released by `release_withheld`).

Settled answers keep holding their give-amount until an inventory snapshot proves it holds the
settlement: a `final` read trails the chain, so a snapshot read after the settlement can still
predate it (docs/near-rpc.md, "Finality"). The proof is the snapshot's `results_through`: once it
passes the offset of the settled result this executor published, the balances hold that
settlement (`results_cover` in daemons/core/events.py). Until the result is published the hold
has no offset and stays. An answer expired by the relay's silence is held the same way (it may
have executed unseen; `held_until_covered`), listed in `silent`.
`recovery_step` says what a start does with each unresolved ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from daemons.core.events import held_until_covered, results_cover
from daemons.trade_executor.ledger import LIVE, LedgerRow, LedgerState

S = LedgerState


@dataclass(frozen=True)
class LiveAnswer:
    command_id: str
    quote_id: str
    asset_out: str
    amount_out: int  # what quoteloop gives: the reserved amount
    state: LedgerState
    signer_id: str | None = None
    nonce: str | None = None
    deadline: datetime | None = None
    quote_hash: str | None = None
    cancel_requested: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "quote_id": self.quote_id,
            "state": self.state.value,
            "asset_id": self.asset_out,
            "reserved": str(self.amount_out),
            "deadline": self.deadline,
            "quote_hash": self.quote_hash,
            "nonce": self.nonce,
            "cancel_requested": self.cancel_requested,
        }

    @classmethod
    def from_row(cls, row: LedgerRow) -> LiveAnswer:
        return cls(
            command_id=row.command_id,
            quote_id=row.quote_id,
            asset_out=row.asset_out,
            amount_out=row.amount_out,
            state=row.state,
            signer_id=row.signer_id,
            nonce=row.nonce,
            deadline=row.deadline,
            quote_hash=row.quote_hash,
            cancel_requested=cancel_succeeded(row.cancel_response),
        )


@dataclass
class LiveBook:
    answers: dict[str, LiveAnswer] = field(default_factory=dict)
    by_hash: dict[str, str] = field(default_factory=dict)
    by_quote: dict[str, str] = field(default_factory=dict)
    # command_id -> (needs, asset_id, amount): gone from the verifier (or perhaps gone: `silent`),
    # maybe not yet from the inventory snapshot; `needs` is what a snapshot's `results_through`
    # must reach (None: unknown yet)
    settled: dict[str, tuple[dict[int, int] | None, str, int]] = field(default_factory=dict)
    # the entries of `settled` that are expiries by relay silence, not settlements
    silent: set[str] = field(default_factory=set)
    # command_id -> (deadline, asset_id, amount): signed, never sent, valid until the deadline
    withheld: dict[str, tuple[datetime | None, str, int]] = field(default_factory=dict)
    # the sum of the three maps per asset, kept as they change: the inventory check of every
    # command reads it, and must not cost more with thousands of answers waiting for deadlines
    _totals: dict[str, int] = field(default_factory=dict)
    # the same for what can still execute (answers and withheld ones, not settled ones): the
    # live exposure the ceilings bound
    _live: dict[str, int] = field(default_factory=dict)

    def _add(self, asset_id: str, amount: int, *, live: bool = True) -> None:
        self._totals[asset_id] = self._totals.get(asset_id, 0) + amount
        if live:
            self._live[asset_id] = self._live.get(asset_id, 0) + amount

    def hold(self, answer: LiveAnswer) -> None:
        old = self.answers.get(answer.command_id)
        if old is not None and old.quote_hash and old.quote_hash != answer.quote_hash:
            self.by_hash.pop(old.quote_hash, None)
        if old is not None:
            self._add(old.asset_out, -old.amount_out)
        self._add(answer.asset_out, answer.amount_out)
        self.answers[answer.command_id] = answer
        self.by_quote[answer.quote_id] = answer.command_id
        if answer.quote_hash:
            self.by_hash[answer.quote_hash] = answer.command_id

    def update(self, command_id: str, **changes: Any) -> LiveAnswer | None:
        old = self.answers.get(command_id)
        if old is None:
            return None
        new = replace(old, **changes)
        self.hold(new)
        return new

    def release(self, command_id: str, *, settled: bool = False) -> LiveAnswer | None:
        """Stop holding; a settled answer keeps its amount held as `settled` (see module doc)."""
        answer = self.answers.pop(command_id, None)
        if answer is None:
            return None
        self._add(answer.asset_out, -answer.amount_out)
        if answer.quote_hash:
            self.by_hash.pop(answer.quote_hash, None)
        self.by_quote.pop(answer.quote_id, None)
        if settled:
            self.note_settled(command_id, answer.asset_out, answer.amount_out)
        return answer

    def apply(self, row: LedgerRow, *, settled_hold: bool = True) -> None:
        """Mirror the ledger row a transition returned: what the book holds follows the row.

        Refused, rejected, expired: released (a withheld answer was moved aside by `withhold`
        before its write and keeps its hold there). Settled, and expired by relay silence: held
        as settled until a snapshot holds it (`settled_hold=False`: released outright, for an
        operator's verdict on an answer old enough to be in every snapshot). Live states: held as
        the row says."""
        cid = row.command_id
        covered = row.state in (LedgerState.SETTLED, LedgerState.EXPIRED) and held_until_covered(
            row.state.value, row.resolved_by
        )
        if covered and settled_hold:
            if self.release(cid, settled=True) is None:
                self.note_settled(cid, row.asset_out, row.amount_out)
            if row.state is LedgerState.EXPIRED:
                self.silent.add(cid)
            else:
                self.silent.discard(cid)
        elif row.state in (LedgerState.REFUSED, LedgerState.REJECTED, LedgerState.EXPIRED, LedgerState.SETTLED):
            self.release(cid)
            self.forget(cid)
        elif row.state in LIVE:
            self.hold(LiveAnswer.from_row(row))

    def withhold(self, command_id: str) -> LiveAnswer | None:
        """A signed answer that will not be sent: held until its deadline passes."""
        answer = self.release(command_id)
        if answer is not None:
            self.note_withheld(command_id, answer.deadline, answer.asset_out, answer.amount_out)
        return answer

    def note_withheld(self, command_id: str, deadline: datetime | None, asset_id: str, amount: int) -> None:
        if command_id in self.withheld:
            return
        self._add(asset_id, amount)
        self.withheld[command_id] = (deadline, asset_id, amount)

    def release_withheld(self, now: datetime, grace_ms: int) -> list[str]:
        """Drop the withheld answers that can no longer execute (deadline + grace passed)."""
        gone = [
            cid
            for cid, (deadline, _, _) in self.withheld.items()
            if deadline is None or is_due(deadline, now, grace_ms)
        ]
        for cid in gone:
            _, asset, amount = self.withheld.pop(cid)
            self._add(asset, -amount)
        return gone

    def note_settled(self, command_id: str, asset_id: str, amount: int, needs: dict[int, int] | None = None) -> None:
        old = self.settled.get(command_id)
        if old is not None:
            self._add(old[1], -old[2], live=False)
            needs = needs if needs is not None else old[0]
        self._add(asset_id, amount, live=False)
        self.settled[command_id] = (needs, asset_id, amount)

    def place_settled(self, command_id: str, needs: dict[int, int]) -> None:
        """The settled result is on the topic: a snapshot whose `results_through` reaches
        `needs` on every partition named holds the settlement."""
        held = self.settled.get(command_id)
        if held is not None:
            self.settled[command_id] = (needs, held[1], held[2])

    def unplaced(self) -> list[str]:
        return [cid for cid, s in self.settled.items() if s[0] is None]

    def forget_covered(self, results_through: dict[int, int] | None) -> None:
        """Release the settled holds that a snapshot with `results_through` holds."""
        if results_through is None:
            return
        for cid in [c for c, s in self.settled.items() if results_cover(results_through, s[0])]:
            self.forget(cid)

    def forget(self, command_id: str) -> None:
        """Drop a settled (or silent) hold."""
        held = self.settled.pop(command_id, None)
        self.silent.discard(command_id)
        if held is not None:
            self._add(held[1], -held[2], live=False)

    def reserved(self, asset_id: str) -> int:
        return self._totals.get(asset_id, 0)

    def live_exposure(self, asset_id: str) -> int:
        """What the answers that can still execute give of `asset_id` (live and withheld)."""
        return self._live.get(asset_id, 0)

    def reserved_by_asset(self) -> dict[str, int]:
        return {asset: total for asset, total in self._totals.items() if total}

    def due(self, now: datetime, grace_ms: int, skip: set[str] | frozenset[str] = frozenset()) -> list[LiveAnswer]:
        """Live answers past deadline + grace, to resolve with `is_nonce_used`."""
        return [
            a
            for a in self.answers.values()
            if a.command_id not in skip
            and a.nonce is not None
            and a.state in LIVE
            and is_due(a.deadline, now, grace_ms)
        ]


def cancel_succeeded(response: Any) -> bool:
    return isinstance(response, dict) and response.get("status") == "OK"


def is_due(deadline: datetime | None, now: datetime, grace_ms: int) -> bool:
    """True once nothing can settle any more: the verifier refuses an intent past its deadline,
    and `grace_ms` lets a transaction included just before it reach finality."""
    return deadline is not None and now >= deadline + timedelta(milliseconds=grace_ms)


def expiry_reason(answer: LiveAnswer) -> str:
    if answer.cancel_requested:
        return "cancelled: the nonce was burned through the relay; deadline passed, nonce unused"
    if answer.state is S.UNCERTAIN:
        return "deadline passed and the nonce is unused: the uncertain answer was not used"
    return "deadline passed and the nonce is unused: the answer was not picked"


class RecoveryStep(StrEnum):
    REFUSE = "refuse"  # received: nothing was signed
    RESOLVE_NOW = "resolve_now"  # signing: never sent (submitted is written before sending)
    MARK_UNCERTAIN = "mark_uncertain"  # submitted: the frame may or may not have gone out
    WATCH = "watch"  # acknowledged / uncertain: live until status or deadline


def recovery_step(state: LedgerState) -> RecoveryStep | None:
    return {
        S.RECEIVED: RecoveryStep.REFUSE,
        S.SIGNING: RecoveryStep.RESOLVE_NOW,
        S.SUBMITTED: RecoveryStep.MARK_UNCERTAIN,
        S.ACKNOWLEDGED: RecoveryStep.WATCH,
        S.UNCERTAIN: RecoveryStep.WATCH,
    }.get(state)
