"""Reservations keep running totals and an expiry heap; any sequence of operations must leave
exactly what the plain rules (module docstring of reservations.py) would: checked against a
direct model that scans every reservation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.strategy_engine.reservations import OVER, Reservations

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ASSETS = ("btc", "eure")


class Model:
    def __init__(self) -> None:
        self.live: dict[str, dict] = {}

    def reserve(self, cid: str, asset: str, amount: int, expires: datetime) -> None:
        self.live[cid] = {"asset": asset, "amount": amount, "expires": expires, "settled": None}

    def on_result(
        self, cid: str, status: str, at: tuple[int, int], deadline: datetime | None, resolved_by: str | None
    ) -> None:
        r = self.live.get(cid)
        if r is None:
            return
        # settled, or expired by relay silence (it may have executed unseen): held until covered
        if status == "settled" or (status == "expired" and resolved_by == "no_quote_status"):
            r["settled"] = at
        elif status in OVER:
            del self.live[cid]
        elif deadline is not None:
            r["expires"] = max(r["expires"], deadline)

    def on_inventory(self, through: dict[int, int]) -> None:
        # a settled result at (partition, offset) is held by a snapshot whose offsets pass it
        self.live = {
            c: r
            for c, r in self.live.items()
            if not (r["settled"] is not None and through.get(r["settled"][0], 0) > r["settled"][1])
        }

    def expire(self, now: datetime) -> None:
        self.live = {c: r for c, r in self.live.items() if not (r["settled"] is None and now > r["expires"])}

    def reserved(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.live.values():
            out[r["asset"]] = out.get(r["asset"], 0) + r["amount"]
        return out


seconds = st.integers(min_value=0, max_value=120).map(lambda s: T0 + timedelta(seconds=s))
placed = st.tuples(st.integers(0, 1), st.integers(0, 20))
through = st.dictionaries(st.integers(0, 1), st.integers(0, 22), max_size=2)
command_ids = st.sampled_from([f"c{i}" for i in range(6)])
operations = st.one_of(
    st.tuples(st.just("reserve"), command_ids, st.sampled_from(ASSETS), st.integers(1, 1000), seconds),
    st.tuples(
        st.just("result"),
        command_ids,
        st.sampled_from(["acknowledged", "uncertain", "settled", *OVER]),
        placed,
        st.none() | seconds,
        st.sampled_from([None, "quote_status", "is_nonce_used", "no_quote_status", "operator"]),
    ),
    st.tuples(st.just("inventory"), through),
    st.tuples(st.just("expire"), seconds),
)


@settings(max_examples=300)
@given(st.lists(operations, max_size=40))
def test_any_sequence_leaves_what_the_plain_rules_leave(ops: list[tuple]) -> None:
    book, model = Reservations(), Model()
    for op in ops:
        if op[0] == "reserve":
            _, cid, asset, amount, expires = op
            book.reserve(cid, "q-" + cid, asset, amount, expires)
            model.reserve(cid, asset, amount, expires)
        elif op[0] == "result":
            _, cid, status, at, deadline, resolved_by = op
            book.on_result(cid, status, at, deadline, resolved_by)
            model.on_result(cid, status, at, deadline, resolved_by)
        elif op[0] == "inventory":
            book.on_inventory(op[1])
            model.on_inventory(op[1])
        else:
            book.expire(op[1])
            model.expire(op[1])
        assert book.reserved() == model.reserved()
        assert set(book.live) == set(model.live)


def test_clear_forgets_everything() -> None:
    book = Reservations()
    book.reserve("c", "q", "btc", 5, T0)
    book.clear()
    assert book.reserved() == {} and not book.live
    book.expire(T0 + timedelta(seconds=1))  # no stale heap entry left to trip over
    assert book.reserved() == {}
