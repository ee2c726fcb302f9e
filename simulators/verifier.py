"""The simulated `intents.near` verifier: balances, public keys, nonces, salts and the fee, plus
the checks the real verifier and the solver relay apply to a solver's quote answer.

Shared by the relay, NEAR RPC and POA bridge simulators, so one in-memory state backs the views
a solver reads and the settlements it is paid by. It is test infrastructure, but it refuses
exactly what the real contract would, with the contract's verbatim `DefuseError` strings
(`docs/verifier.md` (§n below) §14).
Relay-level refusals have no documented wording (docs/near-intents-relay.md §4, UNCONFIRMED): their
strings are this module's own and are marked so.

Signatures and byte layouts come from `daemons.venues.near_intents.nep413`, the same code the
solver signs with; the test vectors of §6 pin that module.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import base58

from daemons.venues.near_intents.nep413 import (
    InvalidNonce,
    InvalidSignature,
    LegacyNonce,
    MalformedPayload,
    b64_nonce,
    datetime_to_ns,
    implicit_account_id,
    ns_to_datetime,
    parse_deadline_ns,
    parse_nonce,
    parse_public_key,
    quote_hash,
    verify_signed_data,
)
from simulators.chain import Chain

# --- verbatim contract errors (§14, §2, §3) ---------------------------------------------------
ERR_INVALID_SIGNATURE = "invalid signature"
ERR_NONCE_USED = "nonce was already used"
ERR_NONCE_EXPIRED = "nonce was already expired"
ERR_INVALID_NONCE = "invalid nonce"
ERR_DEADLINE_EXPIRED = "deadline has expired"
ERR_DEADLINE_GT_NONCE = "deadline is greater than nonce"
ERR_INVALID_SALT = "invalid salt"
ERR_INSUFFICIENT_BALANCE = "insufficient balance or overflow"
ERR_INVALID_INTENT = "invalid intent"
ERR_WRONG_CONTRACT = "wrong verifying_contract"


def err_public_key_missing(account_id: str, public_key: str) -> str:
    return f"public key '{public_key}' doesn't exist for account '{account_id}'"


def err_public_key_exists(account_id: str, public_key: str) -> str:
    return f"public key '{public_key}' already exists for account '{account_id}'"


def err_json(detail: str) -> str:
    # The `JSON: {…}` prefix is the contract's; the detail after it is ours (serde's text differs).
    return f"JSON: {detail}"


# --- our own strings (no documented wording) --------------------------------------------------
# OWN CHOICE: the simulator only implements nep413; the real contract also takes erc191 etc.
ERR_UNSUPPORTED_STANDARD = "unsupported standard: the simulated verifier accepts nep413 only"
# OWN CHOICE (relay-level, docs/near-intents-relay.md §4): how the relay refuses a misfit answer.
ERR_QUOTE_ID_MISMATCH = "quote_id does not match the quote request"
ERR_NOT_ONE_TOKEN_DIFF = "quote must carry exactly one token_diff intent"
ERR_TOKENS_MISMATCH = "token_diff tokens do not match the quote request"
ERR_DIFF_SIGNS = (
    "token_diff signs are wrong: the solver receives defuse_asset_identifier_in (positive) "
    "and gives defuse_asset_identifier_out (negative)"
)
ERR_FIXED_AMOUNT_CHANGED = "the fixed amount does not match the quote request"
ERR_QUOTE_OUTPUT_MISMATCH = "quote_output does not match token_diff"
ERR_DEADLINE_TOO_SHORT = "quote deadline is sooner than min_deadline_ms"
ERR_BURN_NOT_EMPTY = "nonce invalidation payloads must carry no intents"
# OWN CHOICE: the simulator executes published payloads only when they are nonce burns (no
# intents) or withdrawals (only `ft_withdraw` intents); anything else is refused with this.
ERR_ONLY_FT_WITHDRAW = "the simulated relay executes only ft_withdraw intents"

PIPS_MAX = 1_000_000  # 100 % in pips (§8)
U128_MAX = (1 << 128) - 1
I128_MIN, I128_MAX = -(1 << 127), (1 << 127) - 1

# Intent tags the contract knows (§2); anything else fails to deserialize.
_KNOWN_INTENTS = frozenset(
    {
        "add_public_key",
        "remove_public_key",
        "transfer",
        "ft_withdraw",
        "nft_withdraw",
        "mt_withdraw",
        "native_withdraw",
        "storage_deposit",
        "token_diff",
        "set_auth_by_predecessor_id",
        "auth_call",
        "imt_mint",
        "imt_burn",
    }
)
_ACCOUNT_ID = re.compile(r"^(([a-z\d]+[-_])*[a-z\d]+\.)*([a-z\d]+[-_])*[a-z\d]+$")
_IMPLICIT = re.compile(r"^[0-9a-f]{64}$")
_I128 = re.compile(r"^[+-]?[0-9]+$")
_U128 = re.compile(r"^[0-9]+$")
_TOKEN_PREFIXES = ("nep141:", "nep171:", "nep245:", "imt:")


class VerifierError(Exception):
    """A refusal; `.message` is the verifier's (or relay's) verbatim error string."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _is_account_id(value: Any) -> bool:
    return isinstance(value, str) and 2 <= len(value) <= 64 and _ACCOUNT_ID.match(value) is not None


def _parse_token_id(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(_TOKEN_PREFIXES) or len(value) > 127 + 7:
        raise VerifierError(err_json(f"token_id: invalid token id {value!r}"))
    return value


def _parse_i128(token_id: str, value: Any) -> int:
    # i128 as a decimal string (serde DisplayFromStr, §2); a JSON number is a type error.
    if not isinstance(value, str) or not _I128.match(value):
        raise VerifierError(err_json(f"invalid delta for {token_id}: expected an i128 decimal string"))
    n = int(value)
    if not I128_MIN <= n <= I128_MAX:
        raise VerifierError(err_json(f"delta for {token_id} is out of i128 range"))
    return n


def _parse_u128(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _U128.match(value):
        raise ValueError(f"{what} must be a u128 decimal string, got {value!r}")
    n = int(value)
    if n > U128_MAX:
        raise ValueError(f"{what} is out of u128 range")
    return n


def token_fee_pips(token_id: str, amount: int, fee_pips: int) -> int:
    """The fee rate applied to a token (§8): NEP-141 always; NEP-245 (and IMT, also a
    multi-token) only when |delta| > 1; NEP-171 (NFTs) never."""
    if token_id.startswith("nep141:"):
        return fee_pips
    if token_id.startswith(("nep245:", "imt:")) and amount > 1:
        return fee_pips
    return 0


def fee_ceil(amount: int, pips: int) -> int:
    """ceil(amount * pips / 1e6), the fee on a negative delta of |amount| (§8)."""
    return (amount * pips + PIPS_MAX - 1) // PIPS_MAX


def gross_up(amount: int, pips: int) -> int:
    """What a counterparty must give so that, net of the fee, exactly `amount` arrives.

    The contract's closure (`TokenDiff::closure_supply_delta`): ceil(amount * 1e6 / (1e6 - fee)).
    net = T - ceil(T*f/1e6) rises by 0 or 1 per unit of T, so the smallest T reaching `amount`
    hits it exactly and the per-token invariant (sum of deltas + fees == 0) holds.
    """
    m = PIPS_MAX - pips
    return (amount * PIPS_MAX + m - 1) // m


@dataclass
class _Verified:
    digest: bytes
    intent_hash: str
    signer_id: str
    public_key: str
    nonce: bytes
    deadline_ns: int
    intents: list[dict[str, Any]]


@dataclass
class CheckedAnswer:
    """A solver's quote answer that passed every check, with its parsed terms."""

    quote_id: str
    quote_hash: str
    signer_id: str
    public_key: str
    nonce: bytes
    deadline: datetime
    diff: dict[str, int]  # as signed: positive on asset_in (solver receives), negative on asset_out
    amount_in: int  # what the solver receives
    amount_out: int  # what the solver gives
    signed_data: dict[str, Any]


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


def _cleanable_before(nonce: bytes, limit_ns: int) -> bool:
    """A versioned nonce whose own deadline is before `limit_ns` (legacy nonces carry none)."""
    try:
        parsed = parse_nonce(nonce)
    except InvalidNonce:
        return False
    return not isinstance(parsed, LegacyNonce) and parsed.deadline_ns < limit_ns


def _dip4_event(event: str, data: Any) -> str:
    """A NEP-297 log line as the verifier emits it (standard `dip4`, version 0.3.0; NEAR Intents docs, events)."""
    return "EVENT_JSON:" + json.dumps(
        {"standard": "dip4", "version": "0.3.0", "event": event, "data": data}, separators=(",", ":")
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
        self._balances: dict[str, dict[str, int]] = {}
        # (account, token) -> [(height, delta)] for the kept blocks: reads at an older block
        self._history: dict[tuple[str, str], deque[tuple[int, int]]] = {}
        self._keys: dict[str, dict[str, None]] = {}  # insertion-ordered sets
        self._implicit_removed: set[str] = set()
        # account -> nonce -> the height it was committed at
        self._nonces: dict[str, dict[bytes, int]] = {}
        # cleaned nonces, kept for reads at older blocks: (account, nonce) -> (committed, cleaned)
        self._cleaned: dict[tuple[str, bytes], tuple[int, int]] = {}
        self.nonces_cleaned = 0
        # Nonces the relay invalidated in memory only (docs/near-intents-relay.md §7.5): they block settlement
        # through the relay, but the on-chain `is_nonce_used` view does not see them.
        self._relay_burned: dict[str, set[bytes]] = {}
        current = salt_hex if salt_hex is not None else secrets.token_bytes(4).hex()
        self._check_salt_format(current)
        self._current_salt = current
        self._valid_salts: dict[str, None] = {current: None}
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
        return self._balances.get(account_id, {}).get(token_id, 0)

    async def settled(self, finality: str = "final") -> None:
        """Return once every change made so far is visible to reads at `finality`."""
        await self.chain.reached(self.chain.pending_height(), finality)

    def balance_at(self, account_id: str, token_id: str, height: int) -> int:
        """The balance as a read at block `height` sees it (changes executed after it undone)."""
        later = sum(d for h, d in self._history.get((account_id, token_id), ()) if h > height)
        return self.balance(account_id, token_id) - later

    def balances_of(self, account_id: str) -> dict[str, int]:
        return {t: a for t, a in self._balances.get(account_id, {}).items() if a}

    def _add(self, account_id: str, token_id: str, delta: int) -> None:
        new = self.balance(account_id, token_id) + delta
        if not 0 <= new <= U128_MAX:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)
        self._balances.setdefault(account_id, {})[token_id] = new
        history = self._history.setdefault((account_id, token_id), deque())
        history.append((self.chain.pending_height(), delta))
        oldest = self.chain.oldest_kept()
        while history and history[0][0] < oldest:
            history.popleft()

    # --- public keys ---------------------------------------------------------------------

    @staticmethod
    def _implicit_owner(account_id: str, public_key: str) -> bool:
        if not _IMPLICIT.match(account_id):
            return False
        try:
            return implicit_account_id(public_key) == account_id
        except ValueError:
            return False

    def add_public_key(self, account_id: str, public_key: str) -> None:
        parse_public_key(public_key)
        if self.has_public_key(account_id, public_key):
            raise VerifierError(err_public_key_exists(account_id, public_key))
        if self._implicit_owner(account_id, public_key):
            self._implicit_removed.discard(account_id)  # re-activating the implicit key
        else:
            self._keys.setdefault(account_id, {})[public_key] = None

    def remove_public_key(self, account_id: str, public_key: str) -> None:
        if not self.has_public_key(account_id, public_key):
            raise VerifierError(err_public_key_missing(account_id, public_key))
        if self._implicit_owner(account_id, public_key):
            # An implicit account can opt out of its own key (contract comment, §10).
            self._implicit_removed.add(account_id)
        else:
            self._keys[account_id].pop(public_key, None)

    def has_public_key(self, account_id: str, public_key: str) -> bool:
        """Registered keys, plus the implicit account's own key unless it was removed (§10)."""
        if public_key in self._keys.get(account_id, {}):
            return True
        return self._implicit_owner(account_id, public_key) and account_id not in self._implicit_removed

    def public_keys_of(self, account_id: str) -> list[str]:
        # UNCONFIRMED whether the real view lists an implicit account's own key; the contract
        # source we read returns only stored keys (an account never touched yields []), so do we.
        return list(self._keys.get(account_id, {}))

    # --- salts (§3) ----------------------------------------------------------------------

    @staticmethod
    def _check_salt_format(salt_hex: str) -> None:
        try:
            ok = len(bytes.fromhex(salt_hex)) == 4 and salt_hex == salt_hex.lower()
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"salt must be 8 lowercase hex chars, got {salt_hex!r}")

    def current_salt(self) -> str:
        return self._current_salt

    def is_valid_salt(self, salt_hex: str) -> bool:
        return salt_hex in self._valid_salts

    def rotate_salt(self, new_salt_hex: str | None = None) -> str:
        """`update_current_salt`: a new current salt; previous salts stay valid (contract
        SaltManager doc comment: "previous salt remains valid"). Returns the new salt."""
        new = new_salt_hex if new_salt_hex is not None else secrets.token_bytes(4).hex()
        self._check_salt_format(new)
        while new_salt_hex is None and new in self._valid_salts:
            new = secrets.token_bytes(4).hex()
        self._current_salt = new
        self._valid_salts[new] = None
        return new

    def invalidate_salts(self, salts: Iterable[str]) -> str:
        """`invalidate_salts`: drop the given salts; a new current one if the current went.
        Returns the current salt."""
        for salt in salts:
            self._valid_salts.pop(salt, None)
        if self._current_salt not in self._valid_salts:
            self._current_salt = ""
            self.rotate_salt()
        return self._current_salt

    # --- nonces and fee --------------------------------------------------------------------

    def is_nonce_used(self, account_id: str, nonce_b64: str, height: int | None = None) -> bool:
        """The on-chain view: committed nonces only (not the relay's in-memory invalidations),
        as of block `height` (the latest by default). A nonce the garbage collector cleaned
        reads as unused from the block it was cleaned in on."""
        try:
            raw = base64.b64decode(nonce_b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise VerifierError(err_json("nonce is not standard base64")) from None
        if len(raw) != 32:
            raise VerifierError(err_json(f"nonce must be 32 bytes, got {len(raw)}"))
        self.collect_nonces()
        at = height if height is not None else self.chain.pending_height()
        committed = self._nonces.get(account_id, {}).get(raw)
        if committed is not None:
            return committed <= at
        cleaned = self._cleaned.get((account_id, raw))
        return cleaned is not None and cleaned[0] <= at < cleaned[1]

    def collect_nonces(self, now: datetime | None = None) -> int:
        """The garbage collector's `cleanup_nonces`: versioned nonces whose deadline passed
        `nonce_cleanup_after_s` ago are removed. Returns how many were cleaned now."""
        if self.nonce_cleanup_after_s is None:
            return 0
        now_ns = datetime_to_ns(now or self.chain.now())
        limit_ns = now_ns - int(self.nonce_cleanup_after_s * 1e9)
        height = self.chain.pending_height()
        oldest = self.chain.oldest_kept()
        cleaned = 0
        for account_id, nonces in self._nonces.items():
            for nonce in [n for n in nonces if _cleanable_before(n, limit_ns)]:
                self._cleaned[(account_id, nonce)] = (nonces.pop(nonce), height)
                cleaned += 1
        for key in [k for k, (_c, gone) in self._cleaned.items() if gone < oldest]:
            del self._cleaned[key]
        self.nonces_cleaned += cleaned
        return cleaned

    def _nonce_taken(self, account_id: str, nonce: bytes) -> bool:
        return nonce in self._nonces.get(account_id, {}) or nonce in self._relay_burned.get(account_id, set())

    def _commit_nonce(self, account_id: str, nonce: bytes) -> None:
        self._nonces.setdefault(account_id, {})[nonce] = self.chain.pending_height()
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

    def _verify_payload(self, signed_data: Any, now: datetime) -> _Verified:
        """The checks `execute_signed_intent` makes, in its order: signature, verifying
        contract, deadline, public key, versioned-nonce rules, nonce unused."""
        if not isinstance(signed_data, Mapping):
            raise VerifierError(err_json("signed_data must be an object"))
        if "standard" not in signed_data:
            raise VerifierError(err_json("missing field `standard`"))
        if signed_data["standard"] != "nep413":
            raise VerifierError(ERR_UNSUPPORTED_STANDARD)
        try:
            digest = verify_signed_data(signed_data)
        except InvalidSignature:
            raise VerifierError(ERR_INVALID_SIGNATURE) from None
        except MalformedPayload as exc:
            raise VerifierError(err_json(str(exc))) from None
        payload = signed_data["payload"]
        signer_id, deadline_ns, intents = self._parse_message(payload["message"])
        if payload["recipient"] != self.contract_id:
            raise VerifierError(ERR_WRONG_CONTRACT)
        now_ns = datetime_to_ns(now)
        if now_ns > deadline_ns:
            raise VerifierError(ERR_DEADLINE_EXPIRED)
        public_key = signed_data["public_key"]
        if not self.has_public_key(signer_id, public_key):
            raise VerifierError(err_public_key_missing(signer_id, public_key))
        nonce = base64.b64decode(payload["nonce"])
        try:
            parsed = parse_nonce(nonce)
        except InvalidNonce:
            raise VerifierError(ERR_INVALID_NONCE) from None
        if not isinstance(parsed, LegacyNonce):
            # Versioned nonce rules (§3, `verify_intent_nonce`); legacy nonces skip them.
            if not self.is_valid_salt(parsed.salt_hex):
                raise VerifierError(ERR_INVALID_SALT)
            if deadline_ns > parsed.deadline_ns:
                raise VerifierError(ERR_DEADLINE_GT_NONCE)
            if parsed.deadline_ns < now_ns:
                raise VerifierError(ERR_NONCE_EXPIRED)
        if self._nonce_taken(signer_id, nonce):
            raise VerifierError(ERR_NONCE_USED)
        return _Verified(digest, quote_hash(digest), signer_id, public_key, nonce, deadline_ns, intents)

    @staticmethod
    def _parse_message(message: str) -> tuple[str, int, list[dict[str, Any]]]:
        """`Nep413DefuseMessage` (§2): signer_id, deadline (RFC 3339), intents (default [])."""
        try:
            doc = json.loads(message)
        except ValueError as exc:
            raise VerifierError(err_json(f"message is not JSON: {exc}")) from None
        if not isinstance(doc, dict):
            raise VerifierError(err_json("message must be a JSON object"))
        signer_id = doc.get("signer_id")
        if not _is_account_id(signer_id):
            raise VerifierError(err_json(f"invalid signer_id {signer_id!r}"))
        try:
            deadline_ns = parse_deadline_ns(doc.get("deadline"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise VerifierError(err_json(str(exc))) from None
        intents = doc.get("intents", [])
        if not isinstance(intents, list):
            raise VerifierError(err_json("intents must be an array"))
        for intent in intents:
            if not isinstance(intent, dict) or intent.get("intent") not in _KNOWN_INTENTS:
                tag = intent.get("intent") if isinstance(intent, dict) else intent
                raise VerifierError(err_json(f"unknown intent variant {tag!r}"))
        return signer_id, deadline_ns, intents  # type: ignore[return-value]

    @staticmethod
    def _token_diff(intent: dict[str, Any]) -> dict[str, int]:
        """Parse a token_diff intent; empty diff or a zero delta is `invalid intent` (§2)."""
        diff = intent.get("diff")
        if not isinstance(diff, dict):
            raise VerifierError(err_json("token_diff.diff must be an object"))
        for key in ("memo",):
            if intent.get(key) is not None and not isinstance(intent[key], str):
                raise VerifierError(err_json(f"token_diff.{key} must be a string"))
        if intent.get("referral") is not None and not _is_account_id(intent["referral"]):
            raise VerifierError(err_json("token_diff.referral must be an account id"))
        parsed = {_parse_token_id(t): _parse_i128(t, v) for t, v in diff.items()}
        if not parsed or any(d == 0 for d in parsed.values()):
            raise VerifierError(ERR_INVALID_INTENT)
        return parsed

    # --- the relay's check of a quote answer --------------------------------------------------

    def check_quote_response(
        self, quote: Mapping[str, Any], response: Mapping[str, Any], now: datetime
    ) -> CheckedAnswer:
        """Everything the verifier and the relay check on a solver's `quote_response` params[0]
        against its quote request (docs/near-intents-relay.md §3, §4). Raises `VerifierError`."""
        asset_in = quote["defuse_asset_identifier_in"]
        asset_out = quote["defuse_asset_identifier_out"]
        exact_in, exact_out = quote.get("exact_amount_in"), quote.get("exact_amount_out")
        if (exact_in is None) == (exact_out is None):
            raise ValueError("quote request needs exactly one of exact_amount_in / exact_amount_out")
        fixed = _parse_u128(exact_in if exact_in is not None else exact_out, "exact amount")
        min_deadline_ms = int(quote.get("min_deadline_ms", 60_000))  # int or str (docs/near-intents-relay.md §3)

        if not isinstance(response, Mapping) or response.get("quote_id") != quote["quote_id"]:
            raise VerifierError(ERR_QUOTE_ID_MISMATCH)
        v = self._verify_payload(response.get("signed_data"), now)

        # UNCONFIRMED relay rule: a quote must live at least min_deadline_ms from now, or the
        # taker cannot use it. Compared at millisecond precision, the deadline's own precision.
        if v.deadline_ns // 1_000_000 < datetime_to_ns(now) // 1_000_000 + min_deadline_ms:
            raise VerifierError(ERR_DEADLINE_TOO_SHORT)

        if len(v.intents) != 1 or v.intents[0].get("intent") != "token_diff":
            raise VerifierError(ERR_NOT_ONE_TOKEN_DIFF)
        diff = self._token_diff(v.intents[0])
        if asset_in == asset_out or set(diff) != {asset_in, asset_out}:
            raise VerifierError(ERR_TOKENS_MISMATCH)
        # docs/near-intents-relay.md §4: + on what the solver receives (asset_in), - on what it gives.
        if not (diff[asset_in] > 0 and diff[asset_out] < 0):
            raise VerifierError(ERR_DIFF_SIGNS)
        amount_in, amount_out = diff[asset_in], -diff[asset_out]

        # docs/near-intents-relay.md §4: the fixed side is echoed unchanged; quote_output names the other side.
        output = response.get("quote_output")
        if not isinstance(output, Mapping):
            raise VerifierError(ERR_QUOTE_OUTPUT_MISMATCH)
        if exact_in is not None:
            fixed_ok, out_key, out_amount = amount_in == fixed, "amount_out", amount_out
        else:
            fixed_ok, out_key, out_amount = amount_out == fixed, "amount_in", amount_in
        if not fixed_ok:
            raise VerifierError(ERR_FIXED_AMOUNT_CHANGED)
        try:
            reported = _parse_u128(output.get(out_key), f"quote_output.{out_key}")
        except ValueError:
            raise VerifierError(ERR_QUOTE_OUTPUT_MISMATCH) from None
        if reported != out_amount:
            raise VerifierError(ERR_QUOTE_OUTPUT_MISMATCH)

        # The signer's balance moves by exactly its delta (`internal_apply_deltas`); the §8 fee
        # on its negative delta is not drawn from the signer but withheld from the counterparty,
        # so covering `amount_out` is sufficient.
        if self.balance(v.signer_id, asset_out) < amount_out:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)

        return CheckedAnswer(
            quote_id=str(quote["quote_id"]),
            quote_hash=v.intent_hash,
            signer_id=v.signer_id,
            public_key=v.public_key,
            nonce=v.nonce,
            deadline=ns_to_datetime(v.deadline_ns),
            diff=diff,
            amount_in=amount_in,
            amount_out=amount_out,
            signed_data=copy.deepcopy(dict(response["signed_data"])),
        )

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
        diff = self._token_diff(v.intents[0]) if len(v.intents) == 1 else {}
        if len(diff) != 2:
            raise VerifierError(ERR_NOT_ONE_TOKEN_DIFF)
        gains = [(t, d) for t, d in diff.items() if d > 0]
        losses = [(t, -d) for t, d in diff.items() if d < 0]
        if len(gains) != 1 or len(losses) != 1:
            raise VerifierError(ERR_DIFF_SIGNS)
        (token_in, amount_in), (token_out, amount_out) = gains[0], losses[0]

        fee_out = fee_ceil(amount_out, token_fee_pips(token_out, amount_out, self.fee_pips))
        taker_gives = gross_up(amount_in, token_fee_pips(token_in, amount_in, self.fee_pips))
        fee_in = fee_ceil(taker_gives, token_fee_pips(token_in, taker_gives, self.fee_pips))
        taker_gets = amount_out - fee_out
        # Per-token invariant: sum(deltas) + fees == 0 (§8).
        if amount_in - taker_gives + fee_in != 0 or -amount_out + taker_gets + fee_out != 0:
            raise VerifierError(f"invariant violated: {json.dumps({token_in: str(amount_in - taker_gives + fee_in)})}")

        if self.balance(v.signer_id, token_out) < amount_out:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)
        if self.balance(taker_account_id, token_in) < taker_gives:
            raise VerifierError(ERR_INSUFFICIENT_BALANCE)

        self._add(v.signer_id, token_out, -amount_out)
        self._add(taker_account_id, token_in, -taker_gives)
        self._add(v.signer_id, token_in, amount_in)
        if taker_gets:
            self._add(taker_account_id, token_out, taker_gets)
        fees = {t: f for t, f in ((token_in, fee_in), (token_out, fee_out)) if f}
        for token_id, amount in fees.items():
            self._add(self.fee_collector, token_id, amount)
        self._commit_nonce(v.signer_id, v.nonce)

        settlement = Settlement(
            intent_hash=taker_intent_hash or _fresh_hash(),
            tx_hash=_fresh_hash(),
            quote_hash=v.intent_hash,
            solver_account_id=v.signer_id,
            taker_account_id=taker_account_id,
            solver_diff=dict(diff),
            taker_diff={token_in: -taker_gives, token_out: taker_gets},
            fees_collected=fees,
        )
        self.settlements.append(settlement)
        self.record_tx(
            settlement.tx_hash,
            taker_account_id,
            "execute_intents",
            [
                _dip4_event(
                    "intents_executed",
                    [
                        {"account_id": v.signer_id, "intent_hash": v.intent_hash, "nonce": b64_nonce(v.nonce)},
                    ],
                )
            ],
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
        checked: list[_Verified] = []
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
                self._relay_burned.setdefault(v.signer_id, set()).add(v.nonce)
                self._nonce_spent(v.signer_id, v.nonce)
        if on_chain and checked:
            self.record_tx(_fresh_hash(), checked[0].signer_id, "execute_intents")
        return [v.intent_hash for v in checked]

    # --- withdrawals (§10; docs/poa-bridge.md §8) -----------------------------------------------

    @staticmethod
    def _parse_ft_withdraw(intent: dict[str, Any]) -> tuple[str, str, int, str | None]:
        """(token, receiver_id, amount, memo) of one `ft_withdraw` intent: unprefixed token and
        receiver account ids, a u128 decimal-string amount, optional string memo and msg."""
        if intent.get("intent") != "ft_withdraw":
            raise VerifierError(ERR_ONLY_FT_WITHDRAW)
        token, receiver = intent.get("token"), intent.get("receiver_id")
        if not _is_account_id(token) or not _is_account_id(receiver):
            raise VerifierError(err_json("ft_withdraw.token and receiver_id must be account ids"))
        try:
            amount = _parse_u128(intent.get("amount"), "ft_withdraw.amount")
        except ValueError as exc:
            raise VerifierError(err_json(str(exc))) from None
        if amount == 0:
            raise VerifierError(ERR_INVALID_INTENT)  # OWN CHOICE: the contract's wording is unread
        for key in ("memo", "msg"):
            if intent.get(key) is not None and not isinstance(intent[key], str):
                raise VerifierError(err_json(f"ft_withdraw.{key} must be a string"))
        return str(token), str(receiver), amount, intent.get("memo")

    def execute_ft_withdrawals(self, signed_datas: list[dict[str, Any]], now: datetime) -> list[FtWithdrawal]:
        """`execute_intents` with payloads that carry only `ft_withdraw` intents, as one batch
        (one transaction): every payload is verified (§2 order) and every balance checked before
        anything moves; then the signers are debited, their nonces committed, and the listeners
        told. A POA token burns when `receiver_id` is the token and the memo is `WITHDRAW_TO:…`
        (docs/poa-bridge.md §8); the simulator leaves that reading to its listeners."""
        checked: list[tuple[_Verified, list[tuple[str, str, int, str | None]]]] = []
        seen: set[tuple[str, bytes]] = set()
        debits: dict[tuple[str, str], int] = {}
        for signed_data in signed_datas:
            v = self._verify_payload(signed_data, now)
            if not v.intents:
                raise VerifierError(ERR_ONLY_FT_WITHDRAW)
            if (v.signer_id, v.nonce) in seen:
                raise VerifierError(ERR_NONCE_USED)
            seen.add((v.signer_id, v.nonce))
            parsed = [self._parse_ft_withdraw(i) for i in v.intents]
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
            [
                _dip4_event(
                    "intents_executed",
                    [
                        {"account_id": v.signer_id, "intent_hash": v.intent_hash, "nonce": b64_nonce(v.nonce)}
                        for v, _parsed in checked
                    ],
                )
            ],
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
            "current_salt": self._current_salt,
            "valid_salts": list(self._valid_salts),
            "balances": {a: {t: str(v) for t, v in b.items() if v} for a, b in self._balances.items()},
            "public_keys": {a: list(k) for a, k in self._keys.items()},
            "used_nonces": {a: sorted(b64_nonce(n) for n in s) for a, s in self._nonces.items()},
            "nonces_cleaned": self.nonces_cleaned,
            "head_height": self.chain.head(),
            "final_height": self.chain.final(),
            "relay_burned_nonces": {a: sorted(b64_nonce(n) for n in s) for a, s in self._relay_burned.items()},
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
