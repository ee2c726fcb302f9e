"""NEP-413 signing for `intents.near`: the exact bytes the verifier hashes, NEAR ed25519 keys,
versioned nonces, deadlines and the `token_diff` message, on PyNaCl + base58.

Wire truth, with its sources: `docs/verifier.md` (§n below).
The solver signs with this module, and the simulated verifier (`simulators/verifier.py`) checks
with it, so both ends share one implementation of the byte layout; the test vectors of §6 pin it.
Secret key material never leaves `SignerKey`: it is not logged, repr'd or put in an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import base58
from nacl.exceptions import BadSignatureError
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.signing import SigningKey, VerifyKey

from daemons.core.secrets import PrivateFileProblem, read_private_file

__all__ = [
    "DEFAULT_RECIPIENT",
    "NEP413_TAG",
    "VERSIONED_MAGIC",
    "InvalidKey",
    "InvalidNonce",
    "InvalidSignature",
    "KeyFileError",
    "KeyFileInsecure",
    "KeyFileInvalid",
    "KeyFileMissing",
    "LegacyNonce",
    "MalformedPayload",
    "SignedIntent",
    "SignerKey",
    "VersionedNonce",
    "b64_nonce",
    "datetime_to_ns",
    "deadline_str",
    "implicit_account_id",
    "intents_message",
    "load_signer_key",
    "nep413_digest",
    "ns_to_datetime",
    "parse_deadline_ns",
    "parse_nonce",
    "parse_public_key",
    "quote_hash",
    "sign_intent",
    "signed_data_digest",
    "token_diff_message",
    "verify_signed_data",
    "versioned_nonce",
]

DEFAULT_RECIPIENT = "intents.near"
# NEP-461 prefix tag for off-chain messages: (1 << 31) + 413, borsh u32 LE = 9d 01 00 80 (§1).
NEP413_TAG = (1 << 31) + 413
# sha256(b"versioned_nonce")[:4] (§3).
VERSIONED_MAGIC = bytes.fromhex("5628f6c6")
VERSIONED_NONCE_V1 = 0
NONCE_LEN = 32
_RANDOM_LEN = 15
_ED25519 = "ed25519:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_MS = 1_000_000


# --- errors ----------------------------------------------------------------------------------


class InvalidKey(ValueError):
    """A secret or public key string that is not a NEAR ed25519 key. Never carries the secret."""


class InvalidNonce(ValueError):
    """Nonce bytes that are not 32 long, or carry the versioned magic with a bad body."""


class MalformedPayload(ValueError):
    """A `signed_data` (MultiPayload) that is not a well-formed NEP-413 payload."""


class InvalidSignature(ValueError):
    """The ed25519 signature does not verify against the NEP-413 digest of the payload."""


class KeyFileError(Exception):
    """The signer key file cannot be used; subclasses say exactly why."""


class KeyFileMissing(KeyFileError):
    pass


class KeyFileInsecure(KeyFileError):
    """The file is accessible to group or others (its mode is named in the message)."""


class KeyFileInvalid(KeyFileError):
    """The file exists and is private, but holds no valid ed25519 secret key."""


# --- digest and hashes (§1, §5) -----------------------------------------------------------------


def _borsh_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def nep413_digest(message: str, nonce: bytes, recipient: str, callback_url: str | None = None) -> bytes:
    """SHA-256 of borsh((u32 tag, {message, nonce:[u8;32], recipient, callback_url:Option})), §1.

    The 32-byte digest itself is what ed25519 signs (no second hash), and its base58 is the
    intent hash / quote hash (§5).
    """
    if len(nonce) != NONCE_LEN:
        raise InvalidNonce(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    preimage = struct.pack("<I", NEP413_TAG) + _borsh_string(message) + nonce + _borsh_string(recipient)
    preimage += b"\x00" if callback_url is None else b"\x01" + _borsh_string(callback_url)
    return hashlib.sha256(preimage).digest()


def quote_hash(digest: bytes) -> str:
    """base58 of a NEP-413 digest: the verifier's intent hash, and the relay's quote_hash (§5)."""
    if len(digest) != 32:
        raise ValueError(f"digest must be 32 bytes, got {len(digest)}")
    return base58.b58encode(digest).decode("ascii")


# --- keys ------------------------------------------------------------------------------------


def _b58decode(text: str, what: str) -> bytes:
    try:
        return base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        # The decoder's own message can quote a character of the input, which may be a secret.
        raise InvalidKey(f"{what} is not valid base58") from None


def parse_public_key(public_key: object) -> bytes:
    """The 32 raw bytes of an `ed25519:<base58>` public key."""
    if not isinstance(public_key, str) or not public_key.startswith(_ED25519):
        raise InvalidKey("public key must be a string 'ed25519:<base58>'")
    raw = _b58decode(public_key.removeprefix(_ED25519), "public key")
    if len(raw) != 32:
        raise InvalidKey(f"ed25519 public key must be 32 bytes, got {len(raw)}")
    return raw


def _format_public_key(raw: bytes) -> str:
    return _ED25519 + base58.b58encode(raw).decode("ascii")


def implicit_account_id(public_key: str) -> str:
    """The NEAR implicit account of an ed25519 key: 64 lowercase hex of its 32 bytes (§10)."""
    return parse_public_key(public_key).hex()


class SignerKey:
    """A NEAR ed25519 signing key. Holds the secret privately; repr and str show the public key only."""

    __slots__ = ("_signing_key", "public_key")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: str = _format_public_key(bytes(signing_key.verify_key))

    @classmethod
    def from_secret(cls, secret: str) -> SignerKey:
        """Parse NEAR's `ed25519:<base58(seed32 || pubkey32)>` secret-key form.

        A bare 32-byte seed is accepted too (the seed alone signs, §6; the public half is only
        cross-checked when it is present). For the 64-byte form the embedded public key must
        match the seed, which catches a truncated or spliced secret.
        """
        if not isinstance(secret, str):
            raise InvalidKey("secret key must be a string 'ed25519:<base58>'")
        text = secret.strip()
        if not text.startswith(_ED25519):
            raise InvalidKey("secret key must start with 'ed25519:'")
        raw = _b58decode(text.removeprefix(_ED25519), "secret key")
        if len(raw) not in (32, 64):
            raise InvalidKey(f"ed25519 secret key must be 32 or 64 bytes, got {len(raw)}")
        signing_key = SigningKey(raw[:32])
        if len(raw) == 64 and raw[32:] != bytes(signing_key.verify_key):
            raise InvalidKey("secret key does not match its embedded public key")
        return cls(signing_key)

    @classmethod
    def generate(cls) -> SignerKey:
        return cls(SigningKey.generate())

    @property
    def implicit_account_id(self) -> str:
        return bytes(self._signing_key.verify_key).hex()

    def sign(self, digest: bytes) -> str:
        """`ed25519:<base58 64-byte signature>` over the 32-byte digest, as-is (§1)."""
        if len(digest) != 32:
            raise ValueError(f"sign a 32-byte NEP-413 digest, got {len(digest)} bytes")
        return _ED25519 + base58.b58encode(self._signing_key.sign(digest).signature).decode("ascii")

    def secret_for_export(self) -> str:
        """The `ed25519:<base58 64 bytes>` secret; for writing a key file in tests and tooling only."""
        raw = bytes(self._signing_key) + bytes(self._signing_key.verify_key)
        return _ED25519 + base58.b58encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"SignerKey(public_key={self.public_key!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would write the secret wherever the pickle goes (caches, queues, crash dumps).
        raise TypeError("SignerKey is not picklable")


def _secret_from_file_text(text: str) -> str:
    """The secret from a key file: a bare `ed25519:...` line, or a near-cli credentials JSON
    (`{"account_id", "public_key", "private_key"}`, some tools write `secret_key`)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            raise KeyFileInvalid("key file is neither 'ed25519:<base58>' nor valid JSON") from None
        secret = (doc.get("private_key") or doc.get("secret_key")) if isinstance(doc, dict) else None
        if not isinstance(secret, str):
            raise KeyFileInvalid("key file JSON has no 'private_key' (or 'secret_key') string")
        return secret
    return stripped


def load_signer_key(path: Path) -> SignerKey:
    """Load the signer key from a file that only its owner can access.

    Refuses, with distinct `KeyFileError` subclasses: a missing file (`KeyFileMissing`), a file
    with any group or other permission bit (`KeyFileInsecure`, naming the mode), and content that
    is not a valid key (`KeyFileInvalid`). The mode is read from the opened descriptor, so the
    file checked is the file read.
    """
    path = Path(path)
    try:
        data = read_private_file(path)
    except PrivateFileProblem as exc:
        where = f"signer key file {str(path)!r}"
        if exc.kind == "missing":
            raise KeyFileMissing(f"{where} does not exist") from None
        if exc.kind == "insecure":
            # group/other write is as bad as read: someone could swap in their own key
            raise KeyFileInsecure(
                f"{where} has mode {exc.mode or 0:04o}; it must not be accessible by group or others (chmod 600)"
            ) from None
        raise KeyFileInvalid(
            {
                "directory": f"{where} is a directory",
                "unreadable": f"{where} is not readable by this user",
                "not_regular": f"{where} is not a regular file",
            }[exc.kind]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileInvalid(f"signer key file {str(path)!r} is not UTF-8 text") from None
    secret = _secret_from_file_text(text)
    try:
        return SignerKey.from_secret(secret)
    except InvalidKey as exc:
        # InvalidKey messages never contain key material, so they are safe to pass on.
        raise KeyFileInvalid(f"signer key file {str(path)!r}: {exc}") from None


# --- time (§3, §4) ---------------------------------------------------------------------------


def _require_aware(dt: datetime) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("deadline datetimes must be timezone-aware (UTC)")


def datetime_to_ns(dt: datetime) -> int:
    """Exact nanoseconds since the Unix epoch (datetime has microsecond resolution)."""
    _require_aware(dt)
    return ((dt - _EPOCH) // timedelta(microseconds=1)) * 1_000


def ns_to_datetime(ns: int) -> datetime:
    """UTC datetime for epoch nanoseconds, truncated to microseconds."""
    return _EPOCH + timedelta(microseconds=ns // 1_000)


def _floor_ms(dt: datetime) -> int:
    return datetime_to_ns(dt) // _NS_PER_MS


def floor_ms(dt: datetime) -> datetime:
    """`dt` truncated to the millisecond: the precision a nonce deadline carries (§3), so a
    deadline built from it is the same in the nonce and in the intent."""
    return ns_to_datetime(_floor_ms(dt) * _NS_PER_MS)


def deadline_str(dt: datetime) -> str:
    """RFC 3339 in JS `toISOString()` form, `2024-10-14T12:53:40.000Z` (§4).

    Truncated to the millisecond, exactly like `versioned_nonce`, so an intent deadline and a
    nonce deadline made from the same datetime are equal and pass `deadline is greater than
    nonce` (§3 precision pitfall).
    """
    ms = _floor_ms(dt)
    whole = _EPOCH + timedelta(milliseconds=ms)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_deadline_ns(text: str) -> int:
    """Parse an RFC 3339 deadline (fractions up to ns, `Z` or an offset, §4) to epoch ns."""
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"deadline {text!r} is not RFC 3339")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        base = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"deadline {text!r} is not a valid date/time: {exc}") from None
    frac_ns = int((m.group(7) or "").ljust(9, "0") or "0")
    offset_s = 0
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"deadline {text!r} has an invalid UTC offset")
        offset_s = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
    return datetime_to_ns(base) + frac_ns - offset_s * 1_000_000_000


# --- nonces (§3) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionedNonce:
    """`magic ‖ version 0 ‖ salt(4) ‖ deadline ns (i64 LE) ‖ random(15)`."""

    salt_hex: str
    deadline: datetime  # UTC, truncated to microseconds; `deadline_ns` is exact
    random: bytes
    deadline_ns: int
    version: int = VERSIONED_NONCE_V1


@dataclass(frozen=True)
class LegacyNonce:
    """Any 32 bytes without the versioned magic: accepted by the verifier for now (§3)."""

    raw: bytes


def versioned_nonce(
    salt_hex: str, deadline: datetime, random_bytes: Callable[[int], bytes] = secrets.token_bytes
) -> bytes:
    """A V1 versioned nonce (32 raw bytes; base64 it with `b64_nonce` for the wire).

    The deadline is written in nanoseconds at millisecond precision (SDK convention, §3), so
    use the same datetime for the intent deadline (`deadline_str`).
    """
    try:
        salt = bytes.fromhex(salt_hex)
    except (ValueError, TypeError):
        raise ValueError(f"salt {salt_hex!r} is not hex") from None
    if len(salt) != 4:
        raise ValueError(f"salt must be 4 bytes (8 hex chars), got {len(salt)}")
    rand = random_bytes(_RANDOM_LEN)
    if len(rand) != _RANDOM_LEN:
        raise ValueError(f"random_bytes returned {len(rand)} bytes, need {_RANDOM_LEN}")
    deadline_ns = _floor_ms(deadline) * _NS_PER_MS
    return VERSIONED_MAGIC + bytes([VERSIONED_NONCE_V1]) + salt + struct.pack("<q", deadline_ns) + rand


def parse_nonce(nonce: bytes) -> VersionedNonce | LegacyNonce:
    """Classify a 32-byte nonce. With the magic prefix it must be a well-formed V1 body, as the
    verifier borsh-decodes it (an unknown version is `InvalidNonce`)."""
    if len(nonce) != NONCE_LEN:
        raise InvalidNonce(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    if nonce[:4] != VERSIONED_MAGIC:
        return LegacyNonce(raw=bytes(nonce))
    version = nonce[4]
    if version != VERSIONED_NONCE_V1:
        raise InvalidNonce(f"unknown versioned nonce version {version}")
    salt = nonce[5:9]
    (deadline_ns,) = struct.unpack("<q", nonce[9:17])
    try:
        deadline = ns_to_datetime(deadline_ns)
    except OverflowError:
        raise InvalidNonce(f"nonce deadline {deadline_ns} ns is out of range") from None
    return VersionedNonce(salt_hex=salt.hex(), deadline=deadline, random=bytes(nonce[17:]), deadline_ns=deadline_ns)


def b64_nonce(nonce: bytes) -> str:
    """Standard, padded base64: the JSON form of `Nonce` (§3)."""
    return base64.b64encode(nonce).decode("ascii")


def _decode_b64_nonce(text: Any) -> bytes:
    if not isinstance(text, str):
        raise MalformedPayload("payload.nonce must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedPayload("payload.nonce is not standard padded base64") from None
    if len(raw) != NONCE_LEN:
        raise MalformedPayload(f"payload.nonce must decode to {NONCE_LEN} bytes, got {len(raw)}")
    if b64_nonce(raw) != text:
        raise MalformedPayload("payload.nonce is not canonical padded base64")
    return raw


# --- messages (§2) -----------------------------------------------------------------------------


def _compact(obj: Any) -> str:
    # Same bytes as JS JSON.stringify for these shapes (no spaces, non-ASCII unescaped); the
    # signature covers the exact string, so it is produced once and never re-serialized.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def intents_message(signer_id: str, deadline: datetime, intents: list[dict[str, Any]]) -> str:
    """The NEP-413 `message` JSON: keys in the docs' order deadline, intents, signer_id
    (docs/near-intents-relay.md §4)."""
    return _compact({"deadline": deadline_str(deadline), "intents": intents, "signer_id": signer_id})


def token_diff_message(signer_id: str, deadline: datetime, diff: Mapping[str, int]) -> str:
    """A message with one `token_diff` intent; deltas as decimal strings, negative with '-'.

    Refuses what the verifier would refuse as `invalid intent` (an empty diff or a zero delta).
    """
    if not diff:
        raise ValueError("token_diff needs at least one delta")
    rendered: dict[str, str] = {}
    for token_id, delta in diff.items():
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta for {token_id} must be an int in base units, got {type(delta).__name__}")
        if delta == 0:
            raise ValueError(f"delta for {token_id} is zero")
        rendered[token_id] = str(delta)
    return intents_message(signer_id, deadline, [{"intent": "token_diff", "diff": rendered}])


# --- signing and verifying ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIntent:
    signed_data: dict[str, Any]  # the MultiPayload JSON, exactly as sent
    quote_hash: str  # base58 NEP-413 digest (= intent hash)
    digest: bytes


def sign_intent(key: SignerKey, message: str, nonce: bytes, recipient: str = DEFAULT_RECIPIENT) -> SignedIntent:
    """Sign `message` as a NEP-413 MultiPayload for `recipient` (§1; docs/near-intents-relay.md §4)."""
    digest = nep413_digest(message, nonce, recipient)
    signed_data = {
        "standard": "nep413",
        "payload": {"message": message, "nonce": b64_nonce(nonce), "recipient": recipient},
        "public_key": key.public_key,
        "signature": key.sign(digest),
    }
    return SignedIntent(signed_data=signed_data, quote_hash=quote_hash(digest), digest=digest)


@dataclass(frozen=True)
class _Parsed:
    message: str
    nonce: bytes
    recipient: str
    callback_url: str | None
    public_key: bytes
    signature: bytes


def _parse_signed_data(signed_data: Any) -> _Parsed:
    if not isinstance(signed_data, Mapping):
        raise MalformedPayload("signed_data must be an object")
    standard = signed_data.get("standard")
    if standard != "nep413":
        raise MalformedPayload(f"unsupported standard {standard!r}; expected 'nep413'")
    payload = signed_data.get("payload")
    if not isinstance(payload, Mapping):
        raise MalformedPayload("payload must be an object")
    message, recipient = payload.get("message"), payload.get("recipient")
    if not isinstance(message, str):
        raise MalformedPayload("payload.message must be a string")
    if not isinstance(recipient, str):
        raise MalformedPayload("payload.recipient must be a string")
    nonce = _decode_b64_nonce(payload.get("nonce"))
    # The contract's Nep413Payload is serde camelCase: only `callbackUrl` reaches the digest (§1).
    callback_url = payload.get("callbackUrl")
    if callback_url is not None and not isinstance(callback_url, str):
        raise MalformedPayload("payload.callbackUrl must be a string or absent")
    try:
        public_key = parse_public_key(signed_data.get("public_key"))
    except InvalidKey as exc:
        raise MalformedPayload(str(exc)) from None
    sig_text = signed_data.get("signature")
    if not isinstance(sig_text, str) or not sig_text.startswith(_ED25519):
        raise MalformedPayload("signature must be a string 'ed25519:<base58>'")
    try:
        signature = _b58decode(sig_text.removeprefix(_ED25519), "signature")
    except InvalidKey as exc:
        raise MalformedPayload(str(exc)) from None
    if len(signature) != 64:
        raise MalformedPayload(f"ed25519 signature must be 64 bytes, got {len(signature)}")
    return _Parsed(message, nonce, recipient, callback_url, public_key, signature)


def signed_data_digest(signed_data: Mapping[str, Any]) -> bytes:
    """The NEP-413 digest of a MultiPayload, without checking its signature."""
    p = _parse_signed_data(signed_data)
    return nep413_digest(p.message, p.nonce, p.recipient, p.callback_url)


def verify_signed_data(signed_data: Mapping[str, Any]) -> bytes:
    """Verify a NEP-413 MultiPayload's ed25519 signature; returns its digest.

    Raises `MalformedPayload` for a structurally bad payload and `InvalidSignature` when the
    signature does not verify over the digest (§1).
    """
    p = _parse_signed_data(signed_data)
    digest = nep413_digest(p.message, p.nonce, p.recipient, p.callback_url)
    try:
        VerifyKey(p.public_key).verify(digest, p.signature)
    except (BadSignatureError, _NaclCryptoError, ValueError):
        raise InvalidSignature("invalid signature") from None
    return digest
