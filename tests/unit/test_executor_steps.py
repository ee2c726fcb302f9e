"""One ledger step: the venue's answer mapped to the ledger (pure), and the live book derived
from the row a transition returns."""

from __future__ import annotations

from datetime import timedelta

import pytest

from daemons.trade_executor.ledger import LedgerState
from daemons.trade_executor.settlement import LiveAnswer, LiveBook
from daemons.trade_executor.steps import answer_outcome
from daemons.venues.near_intents.relay_ws import RelayAnswer, RelayConnectionLost, RelayNotConnected, RelayTimeout
from tests.unit.test_executor_ledger import T0, _row

S = LedgerState
EURE = "nep141:gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near"


def answer(ok: bool, error: str | None = None) -> RelayAnswer:
    return RelayAnswer(ok=ok, error=error, error_code=None if ok else -32000, error_data=None, raw="{}")


def test_the_venue_answer_maps_to_the_ledger() -> None:
    ok = answer_outcome(answer(True))
    assert (ok.state, ok.counter, ok.fields["reason_code"]) == (S.ACKNOWLEDGED, None, None)
    refused = answer_outcome(answer(False, "invalid salt"))
    assert refused.state is S.REJECTED and refused.salt_invalid and refused.fields["reason"] == "invalid salt"
    assert refused.counter == f"venue_rejected:{refused.fields['reason_code']}"
    assert answer_outcome(RelayTimeout("quote_response", 7, "no answer in 3 s")).state is S.UNCERTAIN
    lost = answer_outcome(RelayConnectionLost("quote_response", 8, "closed"))
    assert (lost.state, lost.counter) == (S.UNCERTAIN, "relay_connection_lost")
    unsent = answer_outcome(RelayNotConnected("no connection"))
    assert (unsent.state, unsent.counter, unsent.fields["reason_code"]) == (S.REJECTED, "not_sent", "not_sent")


def held(book: LiveBook, state: LedgerState = S.SUBMITTED) -> None:
    book.hold(LiveAnswer(command_id="c-1", quote_id="q-1", asset_out=EURE, amount_out=89 * 10**18, state=state))


@pytest.mark.parametrize("state", [S.REFUSED, S.REJECTED, S.EXPIRED])
def test_a_final_row_without_a_fill_releases_its_hold(state: LedgerState) -> None:
    book = LiveBook()
    held(book)
    book.apply(_row(state))
    assert book.reserved(EURE) == 0 and not book.answers and not book.settled


def test_a_settled_row_keeps_its_amount_held_as_settled_even_when_it_was_no_longer_live() -> None:
    book = LiveBook()
    held(book)
    book.apply(_row(S.SETTLED))
    assert not book.answers and book.settled["c-1"][1:] == (EURE, 89 * 10**18)
    late = LiveBook()  # expired first, then corrected by the chain: not in the book any more
    late.apply(_row(S.SETTLED))
    assert late.reserved(EURE) == 89 * 10**18


@pytest.mark.parametrize("resolved_by", ["is_nonce_used", "operator", None])
def test_an_expiry_proven_on_chain_or_by_an_operator_releases_at_once(resolved_by: str | None) -> None:
    book = LiveBook()
    held(book)
    book.apply(_row(S.EXPIRED, resolved_by=resolved_by))
    assert book.reserved(EURE) == 0 and not book.settled and not book.silent


def test_an_expiry_by_relay_silence_is_held_until_a_snapshot_covers_its_result() -> None:
    """Silence is no proof the intent did not execute: the amount stays held, as a settlement's
    is, until a snapshot's results_through passes the published expiry."""
    book = LiveBook()
    held(book, S.ACKNOWLEDGED)
    book.apply(_row(S.EXPIRED, resolved_by="no_quote_status"))
    assert not book.answers and book.reserved(EURE) == 89 * 10**18 and book.silent == {"c-1"}
    assert book.live_exposure(EURE) == 0  # it cannot execute any more: not live exposure
    book.forget_covered({0: 9})  # not placed yet: nothing proves it
    assert book.reserved(EURE) == 89 * 10**18
    book.place_settled("c-1", {0: 10})
    book.forget_covered({0: 9})
    assert book.reserved(EURE) == 89 * 10**18
    book.forget_covered({0: 10})
    assert book.reserved(EURE) == 0 and not book.settled and not book.silent


def test_an_expiry_by_silence_corrected_to_settled_stays_held_as_settled() -> None:
    book = LiveBook()
    held(book, S.ACKNOWLEDGED)
    book.apply(_row(S.EXPIRED, resolved_by="no_quote_status"))
    book.place_settled("c-1", {0: 10})
    book.apply(_row(S.SETTLED, resolved_by="quote_status"))
    assert book.reserved(EURE) == 89 * 10**18 and not book.silent and "c-1" in book.settled


def test_an_operator_verdict_releases_outright() -> None:
    book = LiveBook()
    held(book)
    book.apply(_row(S.SETTLED), settled_hold=False)
    assert book.reserved(EURE) == 0


def test_a_live_row_is_held_as_the_row_says() -> None:
    book = LiveBook()
    held(book)
    book.apply(_row(S.ACKNOWLEDGED, quote_hash="h-1", nonce="n", deadline=T0 + timedelta(seconds=60)))
    assert book.answers["c-1"].state is S.ACKNOWLEDGED and book.by_hash == {"h-1": "c-1"}
    assert book.reserved(EURE) == 89 * 10**18  # held once, not twice


def test_a_withheld_answer_keeps_its_hold_through_its_rejected_row() -> None:
    book = LiveBook()
    held(book)
    book.update("c-1", deadline=T0 + timedelta(seconds=60))
    book.withhold("c-1")
    book.apply(_row(S.REJECTED))
    assert book.reserved(EURE) == 89 * 10**18 and "c-1" in book.withheld
