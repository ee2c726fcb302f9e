"""The reconciler: explicit scenarios, then a model of the world it watches (hypothesis) checking
that whatever it concludes is true and that, without confounding movements, it always concludes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.events import Reconciliation
from daemons.inventory_sync.ledger import ActionView
from daemons.inventory_sync.reconcile import Reading, Reconciler, summary_status
from daemons.inventory_sync.snapshot import BridgeDeposit, BridgeRead

CHAIN = "eth:100"
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
E = 10**18


def at(step: int) -> datetime:
    return T0 + timedelta(seconds=step)


AFTER = timedelta(microseconds=1)  # the bridge is read just after the balances


def funding(
    action_id: str,
    tx: str,
    amount: int | None,
    *,
    status: str = "pending",
    first: int = 0,
    credited_at: int | None = None,
    asset: str = EURE_ID,
) -> ActionView:
    return ActionView(
        liquidity_action_id=action_id,
        kind="funding",
        status=status,
        asset_id=asset,
        chain=CHAIN,
        amount=amount,
        tx_hash=tx,
        first_at=at(first),
        status_at=at(first),
        credited_at=None if credited_at is None else at(credited_at),
    )


def withdrawal(
    action_id: str, *, first: int, status: str = "requested", burned: int | None = None, done: int | None = None
) -> ActionView:
    return ActionView(
        liquidity_action_id=action_id,
        kind="withdrawal",
        status=status,
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=5 * E,
        tx_hash=None,
        first_at=at(first),
        status_at=at(done if done is not None else first),
        burned_at=None if burned is None else at(burned),
    )


def bridge(*deposits: tuple[str, int, str], complete: bool = True) -> dict[str, BridgeRead | None]:
    return {
        CHAIN: BridgeRead(
            CHAIN, tuple(BridgeDeposit(CHAIN, tx, EURE_ID, amount, status) for tx, amount, status in deposits), complete
        )
    }


def reading(
    seq: int, step: int, eure: int, br: dict[str, BridgeRead | None] | None = None, *, covering: bool = True
) -> Reading:
    """A reading at `step`: its head block taken as it starts (a covering one), the bridge read
    just after its balances."""
    return Reading(
        seq=seq,
        started_at=at(step),
        finished_at=at(step),
        balances={EURE_ID: eure, NBTC_ID: 0},
        bridge=br if br is not None else bridge(),
        bridge_read_at=at(step) + AFTER,
        covers_until=at(step) if covering else None,
    )


def rec(**kw: int) -> Reconciler:
    return Reconciler((NBTC_ID, EURE_ID), **kw)


def only(entries: list[Reconciliation], action_id: str) -> Reconciliation:
    [entry] = [e for e in entries if e.liquidity_action_id == action_id]
    return entry


# --- scenarios ---------------------------------------------------------------------------------


def test_an_exact_credit_is_ok_with_both_figures() -> None:
    r = rec()
    r.observe(reading(1, 0, 100 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 50 * E, first=1)
    out = r.observe(reading(2, 2, 100 * E, bridge(("0xa", 50 * E, "PENDING"))), [f], [], [], at(2))
    assert only(out.entries, "f1").status == "awaiting_credit" and not out.resolved
    out = r.observe(reading(3, 4, 150 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [f], [], [], at(4))
    assert out.wants_reading and not out.resolved  # credited after the balances may have been read
    out = r.observe(reading(4, 6, 150 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [f], [], [], at(6))
    [res] = out.resolved
    assert (res.status, res.baseline, res.expected, res.credited, res.shortfall) == (
        "ok",
        100 * E,
        150 * E,
        150 * E,
        None,
    )
    assert res.window_action_ids == ["f1"] and res.amount == 50 * E
    assert res.baseline_read_at == at(2) and res.credited_read_at == at(6)
    assert not out.wants_reading and summary_status(out.entries) == "ok"


def test_credited_lower_than_expected_is_flagged_with_both_figures() -> None:
    r = rec()
    r.observe(reading(1, 0, 7 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 100 * E, first=1)  # the operator recorded 100; the bridge credited 90
    r.observe(reading(2, 2, 7 * E, bridge(("0xa", 90 * E, "PENDING"))), [f], [], [], at(2))
    # liquidity-manager marks it credited before the next reading: no extra reading needed
    credited = funding("f1", "0xa", 100 * E, status="credited", first=1, credited_at=3)
    out = r.observe(reading(3, 4, 97 * E, bridge(("0xa", 90 * E, "COMPLETED"))), [credited], [], [], at(4))
    [res] = out.resolved
    assert res.status == "credited_lower_than_expected"
    assert (res.expected, res.credited, res.shortfall) == (107 * E, 97 * E, 10 * E)
    assert summary_status(out.entries) == "credited_lower_than_expected"


def test_our_settled_trades_in_the_window_make_it_inconclusive_never_a_false_alarm() -> None:
    r = rec()
    r.observe(reading(1, 0, 100 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 50 * E, first=1)
    r.observe(reading(2, 2, 100 * E, bridge(("0xa", 50 * E, "PENDING"))), [f], [], [], at(2))
    done = funding("f1", "0xa", 50 * E, status="credited", first=1, credited_at=3)
    # a trade gave away 20 EURe in the same window: the balance says 130, not 150
    out = r.observe(reading(3, 4, 130 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [done], [], [at(3)], at(4))
    [res] = out.resolved
    assert res.status == "inconclusive" and "settled trade" in (res.reason or "")
    assert res.expected is None and res.credited is None


@pytest.mark.parametrize(("trade_step", "confounds"), [(-60, False), (1, True)])
def test_a_trade_settled_well_before_the_baseline_is_not_a_confound(trade_step: int, confounds: bool) -> None:
    """One settled just before the baseline's read may be missing from its `final` balance."""
    r = rec()
    r.observe(reading(1, 0, 100 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 50 * E, first=1)
    r.observe(reading(2, 2, 100 * E, bridge(("0xa", 50 * E, "PENDING"))), [f], [], [at(trade_step)], at(2))
    done = funding("f1", "0xa", 50 * E, status="credited", first=1, credited_at=3)
    out = r.observe(reading(3, 4, 150 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [done], [], [at(trade_step)], at(4))
    assert (out.resolved[0].status == "inconclusive") is confounds


@pytest.mark.parametrize(
    ("w", "confounds"),
    [
        (withdrawal("w1", first=1), True),  # requested, may burn any moment
        (withdrawal("w1", first=-61, status="pending", burned=-60), False),  # burned well before the baseline
        (withdrawal("w1", first=1, status="pending", burned=1), True),  # just before: maybe not in it yet
        (withdrawal("w1", first=3, status="pending", burned=3), True),  # burned inside the window
        (withdrawal("w1", first=-62, status="refused", done=-61), False),  # refused well before the window
        (withdrawal("w1", first=5), False),  # asked for after the window
    ],
)
def test_withdrawals_of_the_asset_in_the_window(w: ActionView, confounds: bool) -> None:
    r = rec()
    r.observe(reading(1, 0, 100 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 50 * E, first=1)
    r.observe(reading(2, 2, 100 * E, bridge(("0xa", 50 * E, "PENDING"))), [f], [w], [], at(2))
    done = funding("f1", "0xa", 50 * E, status="credited", first=1, credited_at=3)
    out = r.observe(reading(3, 4, 150 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [done], [w], [], at(4))
    [res] = out.resolved
    assert (res.status == "inconclusive") is confounds
    if confounds:
        assert "w1" in (res.reason or "")


def test_two_credits_in_one_window_are_counted_together() -> None:
    r = rec()
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    f1, f2 = funding("f1", "0x1", 10 * E, first=1), funding("f2", "0x2", 20 * E, first=1)
    pending = bridge(("0x1", 10 * E, "PENDING"), ("0x2", 20 * E, "PENDING"))
    r.observe(reading(2, 2, 0, pending), [f1, f2], [], [], at(2))
    completed = bridge(("0x1", 10 * E, "COMPLETED"), ("0x2", 15 * E, "COMPLETED"))
    r.observe(reading(3, 4, 25 * E, completed), [f1, f2], [], [], at(4))
    out = r.observe(reading(4, 6, 25 * E, completed), [f1, f2], [], [], at(6))
    assert {x.liquidity_action_id for x in out.resolved} == {"f1", "f2"}
    for res in out.resolved:
        assert res.status == "credited_lower_than_expected"
        assert (res.expected, res.credited, res.shortfall) == (30 * E, 25 * E, 5 * E)
        assert sorted(res.window_action_ids) == ["f1", "f2"]


def test_an_external_deposit_credited_in_the_window_counts_toward_expected() -> None:
    r = rec()
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    f = funding("f1", "0x1", 10 * E, first=1)
    r.observe(reading(2, 2, 0, bridge(("0x1", 10 * E, "PENDING"), ("0xext", 3 * E, "PENDING"))), [f], [], [], at(2))
    completed = bridge(("0x1", 10 * E, "COMPLETED"), ("0xext", 3 * E, "COMPLETED"))
    r.observe(reading(3, 4, 13 * E, completed), [f], [], [], at(4))
    [res] = r.observe(reading(4, 6, 13 * E, completed), [f], [], [], at(6)).resolved
    assert (res.status, res.expected, res.credited) == ("ok", 13 * E, 13 * E)
    assert sorted(res.window_action_ids) == ["bridge:eth:100:0xext", "f1"]


def test_a_credit_landing_between_the_balance_and_bridge_reads_is_placed_by_an_earlier_baseline() -> None:
    r = rec()
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    g = funding("g", "0x9", 5 * E, first=1)
    r.observe(reading(2, 2, 0, bridge(("0x9", 5 * E, "PENDING"))), [g], [], [], at(2))
    f = funding("f", "0x1", 10 * E, first=3)
    # reading 3: balances read at step 4 (nothing credited), then g is credited, then the bridge is read
    r.observe(reading(3, 4, 0, bridge(("0x9", 5 * E, "COMPLETED"), ("0x1", 10 * E, "PENDING"))), [g, f], [], [], at(4))
    both = bridge(("0x9", 5 * E, "COMPLETED"), ("0x1", 10 * E, "COMPLETED"))
    r.observe(reading(4, 6, 15 * E, both), [g, f], [], [], at(6))
    out = r.observe(reading(5, 8, 15 * E, both), [g, f], [], [], at(8))
    res = only(out.resolved, "f")
    # baseline 3 cannot place g (credited around it); baseline 2 (f absent from a complete list) can
    assert (res.status, res.baseline, res.expected, res.credited) == ("ok", 0, 15 * E, 15 * E)
    assert res.baseline_read_at == at(2)


def test_funding_credited_before_the_first_reading_was_never_watched_and_has_no_entry() -> None:
    r = rec()
    old = funding("old", "0xo", E, status="credited", first=-100, credited_at=-90)
    out = r.observe(reading(1, 0, E, bridge(("0xo", E, "COMPLETED"))), [old], [], [], at(0))
    out = r.observe(reading(2, 2, E, bridge(("0xo", E, "COMPLETED"))), [old], [], [], at(2))
    assert out.entries == [] and out.resolved == [] and not out.wants_reading


def test_awaiting_while_pending_and_no_entry_for_a_failed_funding() -> None:
    r = rec()
    f = funding("f", "0x1", E, first=0)
    failed = funding("x", "0x2", E, status="failed", first=0)
    refused = funding("y", "0x3", E, status="refused", first=0)
    out = r.observe(
        reading(1, 1, 0, bridge(("0x1", E, "PENDING"), ("0x2", E, "FAILED"))), [f, failed, refused], [], [], at(1)
    )
    assert [(e.liquidity_action_id, e.status) for e in out.entries] == [("f", "awaiting_credit")]
    assert summary_status(out.entries) == "awaiting_credit"


def test_no_reading_saw_it_uncredited_is_inconclusive() -> None:
    r = rec()
    r.observe(reading(1, 0, 0, {CHAIN: None}), [], [], [], at(0))  # the bridge did not answer
    f = funding("f", "0x1", E, first=1)
    r.observe(reading(2, 2, E, bridge(("0x1", E, "COMPLETED"))), [f], [], [], at(2))
    [res] = r.observe(reading(3, 4, E, bridge(("0x1", E, "COMPLETED"))), [f], [], [], at(4)).resolved
    assert res.status == "inconclusive" and "uncredited" in (res.reason or "")


def test_unknown_timing_waits_then_gives_up() -> None:
    r = rec(max_waits=2)
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    f = funding("f", "0x1", E, first=1)
    g = ActionView(
        liquidity_action_id="g",
        kind="funding",
        status="pending",
        asset_id=EURE_ID,
        chain=None,
        amount=E,
        tx_hash=None,
        first_at=at(1),
        status_at=at(1),
    )  # no tx: the bridge cannot place it
    r.observe(reading(2, 2, 0, bridge(("0x1", E, "PENDING"))), [f, g], [], [], at(2))
    done = funding("f", "0x1", E, status="credited", first=1, credited_at=3)
    waits = [
        r.observe(reading(s, 2 * s, E, bridge(("0x1", E, "COMPLETED"))), [done, g], [], [], at(2 * s))
        for s in (3, 4, 5)
    ]
    assert [bool(w.resolved) for w in waits] == [False, False, True] and waits[0].wants_reading
    res = waits[-1].resolved[0]
    assert res.status == "inconclusive" and "g" in (res.reason or "")


def test_a_duplicate_record_shares_the_transfer_and_the_original_speaks_for_it() -> None:
    r = rec()
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    f = funding("orig", "0x1", 4 * E, first=1)
    dup = funding("dup", "0x1", 4 * E, status="duplicate", first=2)
    r.observe(reading(2, 3, 0, bridge(("0x1", 4 * E, "PENDING"))), [f, dup], [], [], at(3))
    r.observe(reading(3, 5, 4 * E, bridge(("0x1", 4 * E, "COMPLETED"))), [f, dup], [], [], at(5))
    [res] = r.observe(reading(4, 7, 4 * E, bridge(("0x1", 4 * E, "COMPLETED"))), [f, dup], [], [], at(7)).resolved
    assert (res.liquidity_action_id, res.status, res.expected) == ("orig", "ok", 4 * E)


def test_resolved_entries_are_kept_newest_first_up_to_the_limit() -> None:
    r = rec(keep_results=2)
    r.observe(reading(1, 0, 0), [], [], [], at(0))
    balance, fundings, seq, step = 0, [], 2, 1
    for i in range(3):
        fundings.append(funding(f"f{i}", f"0x{i}", E, first=step))
        listed = [(f.tx_hash or "", E, "COMPLETED") for f in fundings[:-1]] + [(f"0x{i}", E, "PENDING")]
        r.observe(reading(seq, step, balance, bridge(*listed)), fundings, [], [], at(step))
        balance += E
        done = bridge(*[(f.tx_hash or "", E, "COMPLETED") for f in fundings])
        r.observe(reading(seq + 1, step + 1, balance, done), fundings, [], [], at(step + 1))
        out = r.observe(reading(seq + 2, step + 2, balance, done), fundings, [], [], at(step + 2))
        seq, step = seq + 3, step + 3
    assert [e.liquidity_action_id for e in out.entries] == ["f2", "f1"]


def test_readings_must_move_forward() -> None:
    r = rec()
    r.observe(reading(2, 0, 0), [], [], [], at(0))
    with pytest.raises(ValueError):
        r.observe(reading(2, 1, 0), [], [], [], at(1))


def test_summary_status_is_the_most_serious() -> None:
    def e(status: str) -> Reconciliation:
        return Reconciliation(asset_id=EURE_ID, status=status)  # type: ignore[arg-type]

    assert summary_status([]) == "ok"
    assert summary_status([e("ok"), e("awaiting_credit")]) == "awaiting_credit"
    assert summary_status([e("inconclusive"), e("awaiting_credit"), e("ok")]) == "inconclusive"
    assert summary_status([e("ok"), e("credited_lower_than_expected"), e("inconclusive")]) == (
        "credited_lower_than_expected"
    )


# --- a model of the world ----------------------------------------------------------------------


@dataclass
class _Dep:
    action_id: str
    tx: str
    recorded: int
    actual: int
    created: int
    credited: int | None = None  # step at which the verifier credited it
    marked: int | None = None  # step at which liquidity-manager said so


class _World:
    """One EURe balance, deposits that the bridge credits (possibly short), our trades, and
    liquidity-manager lagging behind; every action is one step of a global clock."""

    def __init__(self, balance: int, max_waits: int) -> None:
        self.rec = Reconciler((NBTC_ID, EURE_ID), max_waits=max_waits)
        self.step = 0
        self.balance = balance
        self.deps: list[_Dep] = []
        self.trade_steps: list[int] = []
        self.read_balance: dict[int, int] = {}
        self.seq = 0
        self.results: dict[str, Reconciliation] = {}
        self.bridge_outages = 0

    def tick(self) -> int:
        self.step += 1
        return self.step

    def new(self, recorded: int, short: int) -> None:
        n = len(self.deps)
        self.deps.append(_Dep(f"f{n}", f"0x{n:04x}", recorded, max(1, recorded - short), self.tick()))

    def credit(self, dep: _Dep) -> None:
        self.balance += dep.actual
        dep.credited = self.tick()

    def mark(self, dep: _Dep) -> None:
        dep.marked = self.tick()

    def trade(self, delta: int) -> None:
        self.balance = max(0, self.balance + delta)
        self.trade_steps.append(self.tick())

    def views(self) -> list[ActionView]:
        return [
            funding(
                d.action_id,
                d.tx,
                d.recorded,
                status="credited" if d.marked else "pending",
                first=d.created,
                credited_at=d.marked,
            )
            for d in self.deps
        ]

    def sync(self, interleaved: _Dep | None, bridge_down: bool) -> None:
        read_step = self.tick()
        self.read_balance[read_step] = self.balance
        if interleaved is not None:
            self.credit(interleaved)  # lands after the balances were read, before the bridge is
        now = self.tick()
        br: dict[str, BridgeRead | None]
        if bridge_down:
            self.bridge_outages += 1
            br = {CHAIN: None}
        else:
            br = bridge(*[(d.tx, d.actual, "COMPLETED" if d.credited else "PENDING") for d in self.deps])
        self.seq += 1
        out = self.rec.observe(
            Reading(
                seq=self.seq,
                started_at=at(read_step),
                finished_at=at(read_step),
                balances={EURE_ID: self.read_balance[read_step], NBTC_ID: 0},
                bridge=br,
                bridge_read_at=at(read_step) + AFTER,
                covers_until=at(read_step),
            ),
            self.views(),
            [],
            [at(s) for s in self.trade_steps],
            at(now),
        )
        for r in out.resolved:
            assert r.liquidity_action_id not in self.results, "resolved twice"
            self.results[r.liquidity_action_id or ""] = r
            self.check(r)

    def check(self, r: Reconciliation) -> None:
        dep = next(d for d in self.deps if d.action_id == r.liquidity_action_id)
        assert dep.credited is not None, "resolved before it was credited"
        if r.status == "inconclusive":
            return
        assert r.baseline_read_at is not None and r.credited_read_at is not None
        b = int((r.baseline_read_at - T0).total_seconds())
        c = int((r.credited_read_at - T0).total_seconds())
        assert r.baseline == self.read_balance[b] and r.credited == self.read_balance[c]
        window = [d for d in self.deps if d.credited is not None and b < d.credited < c]
        assert dep in window
        assert not [s for s in self.trade_steps if b < s < c], "a trade in the window went unnoticed"
        assert sorted(r.window_action_ids) == sorted(d.action_id for d in window)
        assert r.expected == r.baseline + sum(d.recorded for d in window)
        short = sum(d.recorded - d.actual for d in window)
        assert (r.status == "credited_lower_than_expected") is (short > 0)
        assert r.shortfall == (short if short > 0 else None)


_OPS = st.sampled_from(
    ["new", "new", "credit", "credit", "mark", "sync", "sync", "sync_interleaved", "trade", "sync_bridge_down"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), trades=st.booleans(), outages=st.booleans(), balance=st.integers(min_value=0, max_value=10**24))
def test_model_every_conclusion_is_true_and_clean_windows_always_conclude(
    data: st.DataObject, trades: bool, outages: bool, balance: int
) -> None:
    world = _World(balance, max_waits=1000)
    world.sync(None, False)  # watching starts before any funding
    for _ in range(data.draw(st.integers(min_value=1, max_value=40), label="steps")):
        op = data.draw(_OPS, label="op")
        uncredited = [d for d in world.deps if d.credited is None]
        unmarked = [d for d in world.deps if d.credited is not None and d.marked is None]
        if op == "new":
            recorded = data.draw(st.integers(min_value=1, max_value=10**22), label="recorded")
            short = data.draw(st.sampled_from([0, 0, 1, 10**18]), label="short")
            world.new(recorded, short)
        elif op == "credit" and uncredited:
            world.credit(data.draw(st.sampled_from(uncredited), label="credit"))
        elif op == "mark" and unmarked:
            world.mark(data.draw(st.sampled_from(unmarked), label="mark"))
        elif op == "trade" and trades:
            world.trade(data.draw(st.integers(min_value=-(10**21), max_value=10**21), label="trade"))
        elif op == "sync_interleaved" and uncredited:
            world.sync(data.draw(st.sampled_from(uncredited), label="interleaved"), False)
        elif op == "sync_bridge_down" and outages:
            world.sync(None, True)
        elif op.startswith("sync"):
            world.sync(None, False)
    for _ in range(3):  # readings after the last credit settle every comparison
        world.sync(None, False)
    credited = {d.action_id for d in world.deps if d.credited is not None}
    assert set(world.results) == credited
    if not world.trade_steps and not world.bridge_outages:
        assert not [r for r in world.results.values() if r.status == "inconclusive"], world.results


def test_a_credit_is_placed_only_by_a_reading_whose_head_came_after_the_bridge_saw_it() -> None:
    """A `final` read trails the chain: a reading that is not covering, or whose head was read
    before the bridge listed the credit, may not hold it, so it never serves as the comparison."""
    r = rec()
    r.observe(reading(1, 0, 100 * E), [], [], [], at(0))
    f = funding("f1", "0xa", 50 * E, first=1)
    r.observe(reading(2, 2, 100 * E, bridge(("0xa", 50 * E, "PENDING"))), [f], [], [], at(2))
    seen = r.observe(reading(3, 4, 100 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [f], [], [], at(4))
    assert seen.wants_reading and not seen.resolved
    # the balance of this one still predates the credit (100): it must not be compared
    lagging = r.observe(
        reading(4, 6, 100 * E, bridge(("0xa", 50 * E, "COMPLETED")), covering=False), [f], [], [], at(6)
    )
    assert lagging.wants_reading and not lagging.resolved
    out = r.observe(reading(5, 8, 150 * E, bridge(("0xa", 50 * E, "COMPLETED"))), [f], [], [], at(8))
    assert [(x.status, x.credited) for x in out.resolved] == [("ok", 150 * E)]
