"""The fault matrix's venue-side judgement of over-commitment, on hand-made venue records."""

from __future__ import annotations

from typing import Any

from tests.faults.invariants import Judged, answered_twice, over_commitment

BTC = "nep141:nbtc.bridge.near"


def answer(
    at: float,
    give: int,
    credited: int,
    *,
    deadline: float = 100.0,
    spent_at: float | None = None,
    quote_id: str | None = None,
    accepted: bool = True,
) -> dict[str, Any]:
    return {
        "at": at,
        "quote_id": quote_id or f"q{at}",
        "accepted": accepted,
        "signer_id": "mm.near",
        "deadline": deadline,
        "gives": {BTC: str(give)},
        "credited": {BTC: str(credited)},
        "spent_at": spent_at,
        "settled_tx": None,
    }


def test_two_live_answers_beyond_the_credited_balance_are_over_commitment() -> None:
    judged = over_commitment([answer(1.0, 3, 5), answer(2.0, 3, 5)], 0.0, 10.0)
    assert judged.samples == 2
    assert (
        len(judged.problems) == 1 and "6 of nep141:nbtc.bridge.near committed in 2 live answers" in judged.problems[0]
    )
    assert judged.margin == "worst margin BTC -0.00000001"


def test_an_answer_whose_nonce_was_spent_or_whose_deadline_passed_no_longer_counts() -> None:
    # settled at 1.5: the balance fell from 5 to 2 and the first answer can no longer run
    spent = over_commitment([answer(1.0, 3, 5, spent_at=1.5), answer(2.0, 2, 2)], 0.0, 10.0)
    expired = over_commitment([answer(1.0, 3, 5, deadline=1.9), answer(2.0, 3, 5)], 0.0, 10.0)
    assert not spent.problems and not expired.problems
    assert spent.margin == "worst margin BTC 0.00000000"


def test_answers_before_the_window_still_count_while_live_but_are_not_samples() -> None:
    judged = over_commitment([answer(1.0, 3, 5), answer(6.0, 3, 5)], 5.0, 10.0)
    assert judged.samples == 1 and judged.problems


def test_refused_answers_commit_nothing() -> None:
    judged = over_commitment([answer(1.0, 3, 5, accepted=False), answer(2.0, 3, 5)], 0.0, 10.0)
    assert judged.samples == 1 and not judged.problems


def test_too_few_samples_is_a_failure() -> None:
    assert Judged("x", 0, [], min_samples=1).all_problems() == ["x: only 0 samples (at least 1 needed)"]
    assert Judged("x", 3, [], min_samples=3).all_problems() == []


def test_a_quote_answered_twice_is_found_even_across_windows() -> None:
    judged = answered_twice([answer(1.0, 1, 5, quote_id="a"), answer(6.0, 1, 5, quote_id="a")], 5.0, 10.0)
    assert judged.samples == 1 and judged.problems
