"""The simulated verifier's rules, as functions of their inputs: the contract's and the relay's
error strings, the parsing of a NEP-413 payload and its intents, the engine's payload checks in
their order, the relay's check of a quote answer, and the §8 fee arithmetic of a settlement.

What these rules read from the verifier's state (public keys, salts, nonces, balances) comes in
as callables, so the order of the checks is the contract's and lives in one place; `VerifierState`
(`simulators/verifier.py`) supplies its state and applies what they decide. Section numbers are
those of `docs/verifier.md` (§n below); relay-level refusals have no documented wording
(docs/near-intents-relay.md §4, UNCONFIRMED): their strings are this module's own and are marked so.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemons.venues.near_intents.nep413 import (
    InvalidNonce,
    InvalidSignature,
    LegacyNonce,
    MalformedPayload,
    datetime_to_ns,
    ns_to_datetime,
    parse_deadline_ns,
    parse_nonce,
    quote_hash,
    verify_signed_data,
)

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
class Verified:
    """A signed payload that passed every engine check, with its parsed message."""

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


# --- payload verification (§2 engine order) ---------------------------------------------------


def verify_payload(
    signed_data: Any,
    now: datetime,
    *,
    contract_id: str,
    has_public_key: Callable[[str, str], bool],
    is_valid_salt: Callable[[str], bool],
    nonce_taken: Callable[[str, bytes], bool],
) -> Verified:
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
    signer_id, deadline_ns, intents = parse_message(payload["message"])
    if payload["recipient"] != contract_id:
        raise VerifierError(ERR_WRONG_CONTRACT)
    now_ns = datetime_to_ns(now)
    if now_ns > deadline_ns:
        raise VerifierError(ERR_DEADLINE_EXPIRED)
    public_key = signed_data["public_key"]
    if not has_public_key(signer_id, public_key):
        raise VerifierError(err_public_key_missing(signer_id, public_key))
    nonce = base64.b64decode(payload["nonce"])
    try:
        parsed = parse_nonce(nonce)
    except InvalidNonce:
        raise VerifierError(ERR_INVALID_NONCE) from None
    if not isinstance(parsed, LegacyNonce):
        # Versioned nonce rules (§3, `verify_intent_nonce`); legacy nonces skip them.
        if not is_valid_salt(parsed.salt_hex):
            raise VerifierError(ERR_INVALID_SALT)
        if deadline_ns > parsed.deadline_ns:
            raise VerifierError(ERR_DEADLINE_GT_NONCE)
        if parsed.deadline_ns < now_ns:
            raise VerifierError(ERR_NONCE_EXPIRED)
    if nonce_taken(signer_id, nonce):
        raise VerifierError(ERR_NONCE_USED)
    return Verified(digest, quote_hash(digest), signer_id, public_key, nonce, deadline_ns, intents)


def parse_message(message: str) -> tuple[str, int, list[dict[str, Any]]]:
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


def parse_token_diff(intent: dict[str, Any]) -> dict[str, int]:
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


def parse_ft_withdraw(intent: dict[str, Any]) -> tuple[str, str, int, str | None]:
    """(token, receiver_id, amount, memo) of one `ft_withdraw` intent (§10): unprefixed token and
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


def parse_nonce_b64(nonce_b64: str) -> bytes:
    """A nonce as the `is_nonce_used` view takes it: standard base64 of exactly 32 bytes."""
    try:
        raw = base64.b64decode(nonce_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise VerifierError(err_json("nonce is not standard base64")) from None
    if len(raw) != 32:
        raise VerifierError(err_json(f"nonce must be 32 bytes, got {len(raw)}"))
    return raw


def cleanable_before(nonce: bytes, limit_ns: int) -> bool:
    """A versioned nonce whose own deadline is before `limit_ns` (legacy nonces carry none)."""
    try:
        parsed = parse_nonce(nonce)
    except InvalidNonce:
        return False
    return not isinstance(parsed, LegacyNonce) and parsed.deadline_ns < limit_ns


# --- the relay's check of a quote answer ------------------------------------------------------


def check_quote_answer(
    quote: Mapping[str, Any],
    response: Mapping[str, Any],
    now: datetime,
    *,
    verify: Callable[[Any, datetime], Verified],
    balance: Callable[[str, str], int],
) -> CheckedAnswer:
    """Everything the verifier and the relay check on a solver's `quote_response` params[0]
    against its quote request (docs/near-intents-relay.md §3, §4), `verify` being the engine's
    payload checks and `balance` the signer's balance of a token. Raises `VerifierError`."""
    asset_in = quote["defuse_asset_identifier_in"]
    asset_out = quote["defuse_asset_identifier_out"]
    exact_in, exact_out = quote.get("exact_amount_in"), quote.get("exact_amount_out")
    if (exact_in is None) == (exact_out is None):
        raise ValueError("quote request needs exactly one of exact_amount_in / exact_amount_out")
    fixed = _parse_u128(exact_in if exact_in is not None else exact_out, "exact amount")
    min_deadline_ms = int(quote.get("min_deadline_ms", 60_000))  # int or str (docs/near-intents-relay.md §3)

    if not isinstance(response, Mapping) or response.get("quote_id") != quote["quote_id"]:
        raise VerifierError(ERR_QUOTE_ID_MISMATCH)
    v = verify(response.get("signed_data"), now)

    # UNCONFIRMED relay rule: a quote must live at least min_deadline_ms from now, or the
    # taker cannot use it. Compared at millisecond precision, the deadline's own precision.
    if v.deadline_ns // 1_000_000 < datetime_to_ns(now) // 1_000_000 + min_deadline_ms:
        raise VerifierError(ERR_DEADLINE_TOO_SHORT)

    if len(v.intents) != 1 or v.intents[0].get("intent") != "token_diff":
        raise VerifierError(ERR_NOT_ONE_TOKEN_DIFF)
    diff = parse_token_diff(v.intents[0])
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
    if balance(v.signer_id, asset_out) < amount_out:
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


# --- settlement arithmetic (§8) ---------------------------------------------------------------


@dataclass(frozen=True)
class SettlementTerms:
    """How a settlement moves each side's balance: the solver receives `amount_in` of `token_in`
    and gives `amount_out` of `token_out`; the taker gives `taker_gives` of `token_in` and gets
    `taker_gets` of `token_out`; `fees` (non-zero only) go to the fee collector."""

    token_in: str
    amount_in: int
    token_out: str
    amount_out: int
    taker_gives: int
    taker_gets: int
    fees: dict[str, int]


def settlement_terms(diff: Mapping[str, int], fee_pips: int) -> SettlementTerms:
    """The taker's side of the solver's two-token `diff`: the closure of it under the §8 fee. The
    taker receives the solver's `amount_out` net of the fee on that negative delta, and gives
    `gross_up(amount_in)` so the solver's `amount_in` arrives exactly. Raises `VerifierError`."""
    if len(diff) != 2:
        raise VerifierError(ERR_NOT_ONE_TOKEN_DIFF)
    gains = [(t, d) for t, d in diff.items() if d > 0]
    losses = [(t, -d) for t, d in diff.items() if d < 0]
    if len(gains) != 1 or len(losses) != 1:
        raise VerifierError(ERR_DIFF_SIGNS)
    (token_in, amount_in), (token_out, amount_out) = gains[0], losses[0]

    fee_out = fee_ceil(amount_out, token_fee_pips(token_out, amount_out, fee_pips))
    taker_gives = gross_up(amount_in, token_fee_pips(token_in, amount_in, fee_pips))
    fee_in = fee_ceil(taker_gives, token_fee_pips(token_in, taker_gives, fee_pips))
    taker_gets = amount_out - fee_out
    # Per-token invariant: sum(deltas) + fees == 0 (§8).
    if amount_in - taker_gives + fee_in != 0 or -amount_out + taker_gets + fee_out != 0:
        raise VerifierError(f"invariant violated: {json.dumps({token_in: str(amount_in - taker_gives + fee_in)})}")
    fees = {t: f for t, f in ((token_in, fee_in), (token_out, fee_out)) if f}
    return SettlementTerms(token_in, amount_in, token_out, amount_out, taker_gives, taker_gets, fees)
