"""The venue's own record: every quote request the relay simulator sent and every `quote_response`
it received, with what the simulated `intents.near` held at that instant.

This is the evidence the fault matrix judges the market maker by, from the other side: it shares
no code or belief with the daemons. For each answer it keeps the signed terms as the verifier
parsed them (signer, nonce, deadline, what the signer gives), the signer's credited balances in
the verifier when the frame arrived, and, filled in later, when the answer's nonce was consumed
(settled, or burned by a cancel) — after that the answer can no longer execute. Refused answers
are kept too (they still show what was sent, and when).

Times are the relay's wall clock (`time.time()`, the same host clock the tests read).
`GET /_sim/book?answers_from=N&requests_from=M` pages through both lists.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ReceivedAnswer:
    seq: int
    at: float  # relay wall clock when the frame arrived
    quote_id: str
    accepted: bool
    error: str | None = None
    signer_id: str | None = None
    nonce: str | None = None  # standard base64, as signed
    deadline: float | None = None  # Unix seconds, as signed
    gives: dict[str, str] = field(default_factory=dict)  # token -> base units the signer gives
    credited: dict[str, str] = field(default_factory=dict)  # the signer's balances at `at`
    spent_at: float | None = None  # when its nonce was consumed (settled or burned); None: never
    settled_tx: str | None = None  # the taker executed it in this transaction


@dataclass
class SentRequest:
    at: float
    quote_id: str
    connections: int  # how many subscriptions the frame went out on


class AnswerBook:
    def __init__(self) -> None:
        self.answers: list[ReceivedAnswer] = []
        self.requests: list[SentRequest] = []
        self._by_nonce: dict[tuple[str, bytes], ReceivedAnswer] = {}

    def clear(self) -> None:
        self.answers.clear()
        self.requests.clear()
        self._by_nonce.clear()

    def request_sent(self, quote_id: str, connections: int) -> None:
        self.requests.append(SentRequest(time.time(), quote_id, connections))

    def refused(self, quote_id: str, error: str) -> None:
        self.answers.append(ReceivedAnswer(len(self.answers), time.time(), quote_id, False, error=error))

    def accepted(
        self,
        quote_id: str,
        signer_id: str,
        nonce: bytes,
        deadline: float,
        gives: dict[str, int],
        credited: dict[str, int],
    ) -> None:
        record = ReceivedAnswer(
            len(self.answers),
            time.time(),
            quote_id,
            True,
            signer_id=signer_id,
            nonce=base64.b64encode(nonce).decode(),
            deadline=deadline,
            gives={t: str(a) for t, a in gives.items()},
            credited={t: str(a) for t, a in credited.items()},
        )
        self.answers.append(record)
        self._by_nonce.setdefault((signer_id, nonce), record)

    def nonce_spent(self, account_id: str, nonce: bytes) -> None:
        """The verifier consumed this nonce: its answer (if one was received) can no longer run."""
        record = self._by_nonce.get((account_id, nonce))
        if record is not None and record.spent_at is None:
            record.spent_at = time.time()

    def settled(self, account_id: str, nonce: bytes, tx_hash: str) -> None:
        record = self._by_nonce.get((account_id, nonce))
        if record is not None:
            record.settled_tx = tx_hash

    def page(self, answers_from: int, requests_from: int) -> dict[str, Any]:
        return {
            "answers": [asdict(a) for a in self.answers[answers_from:]],
            "requests": [asdict(r) for r in self.requests[requests_from:]],
            "answers_total": len(self.answers),
            "requests_total": len(self.requests),
        }
