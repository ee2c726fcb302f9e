"""The simulated `intents.near` verifier: balances, public keys, nonces, salts and the fee, plus
the checks the real verifier and the solver relay apply to a solver's quote answer.

Shared by the relay, NEAR RPC and POA bridge simulators, so one in-memory state backs the views
a solver reads and the settlements it is paid by. It is test infrastructure, but it refuses
exactly what the real contract would, with the contract's verbatim `DefuseError` strings
(`docs/verifier.md` (§n below) §14).
Relay-level refusals have no documented wording (docs/near-intents-relay.md §4, UNCONFIRMED): their
strings are this module's own and are marked so.

`VerifierState` is the shell: its records are the classes of `verifier_books.py`, and the checks
it makes, with their error strings, are the functions of `verifier_rules.py`; the error strings,
`VerifierError`, `CheckedAnswer` and the fee arithmetic are importable from here too.

Signatures and byte layouts come from `daemons.venues.near_intents.nep413`, the same code the
solver signs with; the test vectors of §6 pin that module.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import base58

from daemons.venues.near_intents.nep413 import b64_nonce, datetime_to_ns, parse_public_key
from simulators.chain import Chain
from simulators.verifier_books import KeyRing, Ledger, NonceBook, SaltBook
from simulators.verifier_rules import (
    ERR_BURN_NOT_EMPTY,
    ERR_DEADLINE_EXPIRED,
    ERR_DEADLINE_GT_NONCE,
    ERR_DEADLINE_TOO_SHORT,
    ERR_DIFF_SIGNS,
    ERR_FIXED_AMOUNT_CHANGED,
    ERR_INSUFFICIENT_BALANCE,
    ERR_INVALID_INTENT,
    ERR_INVALID_NONCE,
    ERR_INVALID_SALT,
    ERR_INVALID_SIGNATURE,
    ERR_NONCE_EXPIRED,
    ERR_NONCE_USED,
    ERR_NOT_ONE_TOKEN_DIFF,
    ERR_ONLY_FT_WITHDRAW,
    ERR_QUOTE_ID_MISMATCH,
    ERR_QUOTE_OUTPUT_MISMATCH,
    ERR_TOKENS_MISMATCH,
    ERR_UNSUPPORTED_STANDARD,
    ERR_WRONG_CONTRACT,
    I128_MAX,
    I128_MIN,
    PIPS_MAX,
    U128_MAX,
    CheckedAnswer,
    Verified,
    VerifierError,
    check_quote_answer,
    cleanable_before,
    err_json,
    err_public_key_exists,
    err_public_key_missing,
    fee_ceil,
    gross_up,
    parse_ft_withdraw,
    parse_nonce_b64,
    parse_token_diff,
    settlement_terms,
    token_fee_pips,
    verify_payload,
)

# importable from here: the error strings, the refusal, the checked answer and the fee arithmetic
__all__ = [
    "ERR_INVALID_SIGNATURE",
    "ERR_NONCE_USED",
    "ERR_NONCE_EXPIRED",
    "ERR_INVALID_NONCE",
    "ERR_DEADLINE_EXPIRED",
    "ERR_DEADLINE_GT_NONCE",
    "ERR_INVALID_SALT",
    "ERR_INSUFFICIENT_BALANCE",
    "ERR_INVALID_INTENT",
    "ERR_WRONG_CONTRACT",
    "ERR_UNSUPPORTED_STANDARD",
    "ERR_QUOTE_ID_MISMATCH",
    "ERR_NOT_ONE_TOKEN_DIFF",
    "ERR_TOKENS_MISMATCH",
    "ERR_DIFF_SIGNS",
    "ERR_FIXED_AMOUNT_CHANGED",
    "ERR_QUOTE_OUTPUT_MISMATCH",
    "ERR_DEADLINE_TOO_SHORT",
    "ERR_BURN_NOT_EMPTY",
    "ERR_ONLY_FT_WITHDRAW",
    "PIPS_MAX",
    "U128_MAX",
    "I128_MIN",
    "I128_MAX",
    "err_public_key_missing",
    "err_public_key_exists",
    "err_json",
    "token_fee_pips",
    "fee_ceil",
    "gross_up",
    "VerifierError",
    "CheckedAnswer",
    "DEFAULT_NONCE_CLEANUP_AFTER_S",
    "FtWithdrawal",
    "Settlement",
    "TxRecord",
    "VerifierState",
]


@dataclass
class Settlement:
    intent_hash: str  # the taker's intent hash (docs/near-intents-relay.md §5)
    tx_hash: str  # the simulated `execute_intents` transaction
    quote_hash: str = ""
    solver_account_id: str = ""
    taker_account_id: str = ""
    solver_diff: dict[str, int] = field(default_factory=dict)
    taker_diff: dict[str, int] = field(default_factory=dict)
    fees_collected: dict[str, int] = field(default_factory=dict)


@dataclass
class FtWithdrawal:
    """One executed `ft_withdraw` intent (§10): the signer's balance of `nep141:<token>` was
    debited by `amount` in the simulated `execute_intents` transaction `tx_hash`."""

    intent_hash: str
    tx_hash: str
    account_id: str
    token: str  # the unprefixed NEP-141 contract, as the intent names it
    receiver_id: str
    amount: int
    memo: str | None = None

    @property
    def token_id(self) -> str:
        return "nep141:" + self.token


def _dip4_event(event: str, data: Any) -> str:
    """A NEP-297 log line as the verifier emits it (standard `dip4`, version 0.3.0; NEAR Intents docs, events)."""
    return "EVENT_JSON:" + json.dumps(
        {"standard": "dip4", "version": "0.3.0", "event": event, "data": data}, separators=(",", ":")
    )


def _executed_event(verified: list[Verified]) -> str:
    """The `intents_executed` log line of an `execute_intents` transaction: each payload's signer,
    intent hash and nonce."""
    return _dip4_event(
        "intents_executed",
        [{"account_id": v.signer_id, "intent_hash": v.intent_hash, "nonce": b64_nonce(v.nonce)} for v in verified],
    )


def _fresh_hash() -> str:
    return base58.b58encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class TxRecord:
    """An executed transaction as NEAR RPC `tx` reports it: the block its receipt executed in,
    who signed it and the contract it called, and the NEP-297 logs it emitted."""

    tx_hash: str
    height: int
    signer_id: str
    receiver_id: str
    method_name: str
    logs: tuple[str, ...] = ()


# The garbage-collector role may clean a versioned nonce as soon as its deadline has passed
# (`is_nonce_cleanable`, near/intents `contracts/defuse/src/contract/accounts/account/nonces.rs`;
# see docs/near-rpc.md "Nonce clean-up"). How soon the real collector runs is not published: the
# simulator cleans this long after the deadline by default, so "not used" after a deadline
# really does stop meaning "never executed" within a test's lifetime.
DEFAULT_NONCE_CLEANUP_AFTER_S = 2.0


class VerifierState:
    """In-memory `intents.near`: everything the views report and every check settlement makes.

    All methods are synchronous and the simulators run on one event loop, so each call is atomic.
    """

    def __init__(
        self,
        contract_id: str = "intents.near",
        fee_pips: int = 1,
        salt_hex: str | None = None,
        *,
        fee_collector: str | None = None,
        chain: Chain | None = None,
        nonce_cleanup_after_s: float | None = DEFAULT_NONCE_CLEANUP_AFTER_S,
    ) -> None:
        if not 0 <= fee_pips < PIPS_MAX:
            raise ValueError(f"fee_pips must be in [0, {PIPS_MAX}), got {fee_pips}")
        self.contract_id = contract_id
        self.fee_pips = fee_pips
        self.fee_collector = fee_collector or contract_id
        self.chain = chain if chain is not None else Chain()
        # None: nonces are never cleaned up (a kinder chain than mainnet; only for unit tests)
        self.nonce_cleanup_after_s = nonce_cleanup_after_s
        self._ledger = Ledger()
        self._keys = KeyRing()
        # Nonces the relay invalidated in memory only (docs/near-intents-relay.md §7.5) block settlement
        # through the relay, but the on-chain `is_nonce_used` view does not see them.
        self._nonces = NonceBook()
        self.nonces_cleaned = 0
        self._salts = SaltBook(salt_hex)
        self.settlements: list[Settlement] = []
        self.ft_withdrawals: list[FtWithdrawal] = []
        self.transactions: dict[str, TxRecord] = {}
        # Called with each executed withdrawal, e.g. the POA bridge simulator seeing the burn.
        self.withdrawal_listeners: list[Callable[[FtWithdrawal], None]] = []
        # Called with (account, nonce) whenever a nonce is consumed, on chain or by the relay's
        # in-memory cancel: the venue's record of answers marks the answer unable to run.
        self.nonce_listeners: list[Callable[[str, bytes], None]] = []

    # --- balances ------------------------------------------------------------------------

    def deposit(self, account_id: str, token_id: str, amount: int) -> None:
        if amount <= 0:
            raise ValueError("deposit amount must be positive")
        self._add(account_id, token_id, amount)

    def withdraw(self, account_id: str, token_id: str, amount: int) -> None:
        if amount <= 0:
            raise ValueError("withdraw amount must be positive")
        self._add(account_id, token_id, -amount)

    def balance(self, account_id: str, token_id: str) -> int:
        """The balance once every executed transaction is in a block (what the next block holds)."""
        return self._ledger.balance(account_id, token_id)

    async def settled(self, finality: str = "final") -> None:
        """Return once every change made so far is visible to reads at `finality`."""
        await self.chain.reached(self.chain.pending_height(), finality)

    def balance_at(self, account_id: str, token_id: str, height: int) -> int:
        """The balance as a read at block `height` sees it (changes executed after it undone)."""
        return self._ledger.balance_at(account_id, token_id, height)

    def balances_of(self, account_id: str) -> dict[str, int]:
        return self._ledger.balances_of(account_id)

    def _add(self, account_id: str, token_id: str, delta: int) -> None:
        self._ledger.add(
            account_id, token_id, delta, height=self.chain.pending_height(), oldest_kept=self.chain.oldest_kept()
        )

    # --- public keys ---------------------------------------------------------------------

    def add_public_key(self, account_id: str, public_key: str) -> None:
        parse_public_key(public_key)
        if self.has_public_key(account_id, public_key):
            raise VerifierError(err_public_key_exists(account_id, public_key))
        self._keys.add(account_id, public_key)

    def remove_public_key(self, account_id: str, public_key: str) -> None:
        if not self.has_public_key(account_id, public_key):
            raise VerifierError(err_public_key_missing(account_id, public_key))
        self._keys.remove(account_id, public_key)

    def has_public_key(self, account_id: str, public_key: str) -> bool:
        """Registered keys, plus the implicit account's own key unless it was removed (§10)."""
        return self._keys.has(account_id, public_key)

    def public_keys_of(self, account_id: str) -> list[str]:
        # UNCONFIRMED whether the real view lists an implicit account's own key; the contract
        # source we read returns only stored keys (an account never touched yields []), so do we.
        return self._keys.stored(account_id)

    # --- salts (§3) ----------------------------------------------------------------------

    def current_salt(self) -> str:
        return self._salts.current

    def is_valid_salt(self, salt_hex: str) -> bool:
        return self._salts.is_valid(salt_hex)

    def rotate_salt(self, new_salt_hex: str | None = None) -> str:
        """`update_current_salt`: a new current salt; previous salts stay valid (contract
        SaltManager doc comment: "previous salt remains valid"). Returns the new salt."""
        return self._salts.rotate(new_salt_hex)

    def invalidate_salts(self, salts: Iterable[str]) -> str:
        """`invalidate_salts`: drop the given salts; a new current one if the current went.
        Returns the current salt."""
        return self._salts.invalidate(salts)

    # --- nonces and fee --------------------------------------------------------------------

    def is_nonce_used(self, account_id: str, nonce_b64: str, height: int | None = None) -> bool:
        """The on-chain view: committed nonces only (not the relay's in-memory invalidations),
        as of block `height` (the latest by default). A nonce the garbage collector cleaned
        reads as unused from the block it was cleaned in on."""
        raw = parse_nonce_b64(nonce_b64)
        self.collect_nonces()
        at = height if height is not None else self.chain.pending_height()
        return self._nonces.used_at(account_id, raw, at)

    def collect_nonces(self, now: datetime | None = None) -> int:
        """The garbage collector's `cleanup_nonces`: versioned nonces whose deadline passed
        `nonce_cleanup_after_s` ago are removed. Returns how many were cleaned now."""
        if self.nonce_cleanup_after_s is None:
            return 0
        now_ns = datetime_to_ns(now or self.chain.now())
        limit_ns = now_ns - int(self.nonce_cleanup_after_s * 1e9)
        cleaned = self._nonces.clean(
            lambda nonce: cleanable_before(nonce, limit_ns),
            height=self.chain.pending_height(),
            oldest_kept=self.chain.oldest_kept(),
        )
        self.nonces_cleaned += cleaned
        return cleaned

    def _nonce_taken(self, account_id: str, nonce: bytes) -> bool:
        return self._nonces.taken(account_id, nonce)

    def _commit_nonce(self, account_id: str, nonce: bytes) -> None:
        self._nonces.commit(account_id, nonce, self.chain.pending_height())
        self._nonce_spent(account_id, nonce)

    def _nonce_spent(self, account_id: str, nonce: bytes) -> None:
        for listener in list(self.nonce_listeners):
            listener(account_id, nonce)

    def record_tx(self, tx_hash: str, signer_id: str, method_name: str, logs: Iterable[str] = ()) -> TxRecord:
        tx = TxRecord(tx_hash, self.chain.pending_height(), signer_id, self.contract_id, method_name, tuple(logs))
        self.transactions[tx_hash] = tx
        return tx

    def fee(self) -> int:
        return self.fee_pips

    def set_fee(self, fee_pips: int) -> None:
        if not 0 <= fee_pips < PIPS_MAX:
            raise ValueError(f"fee_pips must be in [0, {PIPS_MAX})")
        self.fee_pips = fee_pips

    # --- payload verification (§2 engine order) ---------------------------------------------

    def _verify_payload(self, signed_data: Any, now: datetime) -> Verified:
        """The checks `execute_signed_intent` makes, in its order, against this state."""
        return verify_payload(
            signed_data,
            now,
            contract_id=self.contract_id,
            has_public_key=self.has_public_key,
            is_valid_salt=self.is_valid_salt,
            nonce_taken=self._nonce_taken,
        )

    # --- the relay's check of a quote answer --------------------------------------------------

    def check_quote_response(
        self, quote: Mapping[str, Any], response: Mapping[str, Any], now: datetime
    ) -> CheckedAnswer:
        """Everything the verifier and the relay check on a solver's `quote_response` params[0]
        against its quote request (docs/near-intents-relay.md §3, §4). Raises `VerifierError`."""
        return check_quote_answer(quote, response, now, verify=self._verify_payload, balance=self.balance)

    # --- settlement ---------------------------------------------------------------------------

    def settle(
        self, answer: CheckedAnswer, taker_account_id: str, now: datetime, *, taker_intent_hash: str | None = None
    ) -> Settlement:
        """Execute the solver's token_diff against a taker's matching one, as `execute_intents`
        would: every payload check again at `now`, then balances, then commit the nonce.

        The taker's diff is the closure of the solver's under the §8 fee: it receives the
        solver's `amount_out` net of the fee on that negative delta, and gives `gross_up(amount_in)`
        so the solver's `amount_in` arrives exactly (how the real relay folds the fee into the
        amounts it reports is UNCONFIRMED, §8). The taker must hold that balance.
        """
        v = self._verify_payload(answer.signed_data, now)
        diff = parse_token_diff(v.intents[0]) if len(v.intents) == 1 else {}
        t = settlement_terms(diff, self.fee_pips)

        if self.balance(v.signer_id, t.token_out) < t.amount_out:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)
        if self.balance(taker_account_id, t.token_in) < t.taker_gives:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)

        self._add(v.signer_id, t.token_out, -t.amount_out)
        self._add(taker_account_id, t.token_in, -t.taker_gives)
        self._add(v.signer_id, t.token_in, t.amount_in)
        if t.taker_gets:
            self._add(taker_account_id, t.token_out, t.taker_gets)
        for token_id, amount in t.fees.items():
            self._add(self.fee_collector, token_id, amount)
        self._commit_nonce(v.signer_id, v.nonce)

        settlement = Settlement(
            intent_hash=taker_intent_hash or _fresh_hash(),
            tx_hash=_fresh_hash(),
            quote_hash=v.intent_hash,
            solver_account_id=v.signer_id,
            taker_account_id=taker_account_id,
            solver_diff=dict(diff),
            taker_diff={t.token_in: -t.taker_gives, t.token_out: t.taker_gets},
            fees_collected=dict(t.fees),
        )
        self.settlements.append(settlement)
        self.record_tx(
            settlement.tx_hash,
            taker_account_id,
            "execute_intents",
            [_executed_event([v])],
        )
        return settlement

    # --- cancelling (docs/near-intents-relay.md §7.5) -------------------------------------------

    def burn_nonces(self, signed_datas: list[dict[str, Any]], now: datetime, *, on_chain: bool = False) -> list[str]:
        """Consume the nonces of empty-intent payloads (`publish_intents` with `intents: []`).

        All payloads are checked before any nonce is consumed, as one batch. By default this is
        the relay's in-memory invalidation (docs/near-intents-relay.md §7.5: no on-chain trace):
        later settlement and quote checks refuse the nonce with `nonce was already used`, but the
        `is_nonce_used` view stays false. `on_chain=True` models `execute_intents` with the same
        payloads, which commits the nonces on chain. Returns the payloads' intent hashes.
        """
        checked: list[Verified] = []
        seen: set[tuple[str, bytes]] = set()
        for signed_data in signed_datas:
            v = self._verify_payload(signed_data, now)
            if v.intents:
                raise VerifierError(ERR_BURN_NOT_EMPTY)
            if (v.signer_id, v.nonce) in seen:
                raise VerifierError(ERR_NONCE_USED)
            seen.add((v.signer_id, v.nonce))
            checked.append(v)
        for v in checked:
            if on_chain:
                self._commit_nonce(v.signer_id, v.nonce)
            else:
                self._nonces.burn(v.signer_id, v.nonce)
                self._nonce_spent(v.signer_id, v.nonce)
        if on_chain and checked:
            self.record_tx(_fresh_hash(), checked[0].signer_id, "execute_intents")
        return [v.intent_hash for v in checked]

    # --- withdrawals (§10; docs/poa-bridge.md §8) -----------------------------------------------

    def execute_ft_withdrawals(self, signed_datas: list[dict[str, Any]], now: datetime) -> list[FtWithdrawal]:
        """`execute_intents` with payloads that carry only `ft_withdraw` intents, as one batch
        (one transaction): every payload is verified (§2 order) and every balance checked before
        anything moves; then the signers are debited, their nonces committed, and the listeners
        told. A POA token burns when `receiver_id` is the token and the memo is `WITHDRAW_TO:…`
        (docs/poa-bridge.md §8); the simulator leaves that reading to its listeners."""
        checked: list[tuple[Verified, list[tuple[str, str, int, str | None]]]] = []
        seen: set[tuple[str, bytes]] = set()
        debits: dict[tuple[str, str], int] = {}
        for signed_data in signed_datas:
            v = self._verify_payload(signed_data, now)
            if not v.intents:
                raise VerifierError(ERR_ONLY_FT_WITHDRAW)
            if (v.signer_id, v.nonce) in seen:
                raise VerifierError(ERR_NONCE_USED)
            seen.add((v.signer_id, v.nonce))
            parsed = [parse_ft_withdraw(i) for i in v.intents]
            for token, _receiver, amount, _memo in parsed:
                key = (v.signer_id, "nep141:" + token)
                debits[key] = debits.get(key, 0) + amount
            checked.append((v, parsed))
        for (account_id, token_id), total in debits.items():
            if self.balance(account_id, token_id) < total:
                raise VerifierError(ERR_INSUFFICIENT_BALANCE)
        tx_hash = _fresh_hash()
        done: list[FtWithdrawal] = []
        for v, parsed in checked:
            for token, receiver, amount, memo in parsed:
                self._add(v.signer_id, "nep141:" + token, -amount)
                done.append(FtWithdrawal(v.intent_hash, tx_hash, v.signer_id, token, receiver, amount, memo))
            self._commit_nonce(v.signer_id, v.nonce)
        self.ft_withdrawals.extend(done)
        self.record_tx(
            tx_hash,
            checked[0][0].signer_id if checked else self.contract_id,
            "execute_intents",
            [_executed_event([v for v, _parsed in checked])],
        )
        for withdrawal in done:
            for listener in list(self.withdrawal_listeners):
                listener(withdrawal)
        return done

    # --- for /_sim/seen -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "contract_id": self.contract_id,
            "fee_pips": self.fee_pips,
            "fee_collector": self.fee_collector,
            "current_salt": self._salts.current,
            "valid_salts": self._salts.valid(),
            "balances": self._ledger.snapshot(),
            "public_keys": self._keys.snapshot(),
            "used_nonces": self._nonces.snapshot_committed(),
            "nonces_cleaned": self.nonces_cleaned,
            "head_height": self.chain.head(),
            "final_height": self.chain.final(),
            "relay_burned_nonces": self._nonces.snapshot_relay_burned(),
            "settlements": len(self.settlements),
            "ft_withdrawals": [
                {
                    "intent_hash": w.intent_hash,
                    "tx_hash": w.tx_hash,
                    "account_id": w.account_id,
                    "token": w.token,
                    "receiver_id": w.receiver_id,
                    "amount": str(w.amount),
                    "memo": w.memo,
                }
                for w in self.ft_withdrawals
            ],
        }
