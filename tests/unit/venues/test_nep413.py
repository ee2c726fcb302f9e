"""NEP-413 for intents.near: the three vectors of docs/verifier.md §6 (the contract vector, the
versioned nonce, the docs' quote_response), key loading, nonces, deadlines, messages and
sign/verify round trips."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from daemons.venues.near_intents.nep413 import (
    VERSIONED_MAGIC,
    InvalidKey,
    InvalidNonce,
    InvalidSignature,
    KeyFileError,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyFileMissing,
    LegacyNonce,
    MalformedPayload,
    SignerKey,
    VersionedNonce,
    b64_nonce,
    datetime_to_ns,
    deadline_str,
    implicit_account_id,
    load_signer_key,
    nep413_digest,
    parse_deadline_ns,
    parse_nonce,
    quote_hash,
    sign_intent,
    signed_data_digest,
    token_diff_message,
    verify_signed_data,
    versioned_nonce,
)

UTC = UTC

# docs/near-intents-relay.md §4: the docs' quote_response example, whose signature verifies
# (docs/verifier.md §6).
DOCS_SIGNED_DATA = {
    "standard": "nep413",
    "payload": {
        "recipient": "intents.near",
        "nonce": "Vij2xgAlKBKzAEiS6N1S/hcQLaHzX2s1fNKhBDblXT4=",
        "message": '{"deadline":"2024-10-14T12:53:40.000Z","intents":[{"intent":"token_diff","diff":'
        '{"nep141:ft2.near":"-300","nep141:ft1.near":"500"}}],"signer_id":"solver.near"}',
    },
    "public_key": "ed25519:C3jXhkGhEx88Gj7XKtUziJKXEBMRaJ67bWFkxJikVxZ2",
    "signature": "ed25519:WQXG37prMyT4f1vp6JSvamsjqDR5fSnDiinSPaCoq9sPcDgFGPRiMWX7csqqudDbzc8i6wrfpemgpVX2wQDmwww",
}
DOCS_QUOTE_HASH = "BeHFFMdrGwSefrVUgVccuo2L2yaf2cftcwMn8if43qZa"


def _key() -> SignerKey:
    return SignerKey.generate()


# --- the vectors of docs/verifier.md §6 --------------------------------------------------------


def test_contract_vector_digest_and_signature() -> None:
    # near/intents crates/signatures/nep413 `verify_ok` (docs/verifier.md §1, §6).
    digest = nep413_digest("Hello, world!", bytes(32), "intents.near")
    assert digest.hex() == "94648d7168d4a58d1eecd11fc2ecad210ef7cb5efce7a22d15a19e1764031f59"
    pk = bytes.fromhex("e2e9cb7ac57cb46d4da1ce1d1cc2c33bdfe17407c517916b522724a8ea2c6c50")
    sig = bytes.fromhex(
        "e2ff6254871a3fec1853c167b42f0f14248c4cf7fef5452dc24d8dbdc5c4bf18"
        "3ab707322b4d782d5f5a05571bae476c5f7ee41c473f3002e600865e46b75d0f"
    )
    signed = {
        "standard": "nep413",
        "payload": {"message": "Hello, world!", "nonce": b64_nonce(bytes(32)), "recipient": "intents.near"},
        "public_key": "ed25519:" + base58.b58encode(pk).decode(),
        "signature": "ed25519:" + base58.b58encode(sig).decode(),
    }
    assert verify_signed_data(signed) == digest


def test_preimage_starts_with_the_nep461_tag() -> None:
    # The tag bytes are 9d 01 00 80; a wrong tag changes the digest.
    import hashlib
    import struct

    msg, rec = "m", "intents.near"
    pre = (
        bytes.fromhex("9d010080")
        + struct.pack("<I", 1)
        + b"m"
        + bytes(32)
        + struct.pack("<I", 12)
        + rec.encode()
        + b"\x00"
    )
    assert nep413_digest(msg, bytes(32), rec) == hashlib.sha256(pre).digest()
    with_cb = nep413_digest(msg, bytes(32), rec, "https://cb")
    assert with_cb != nep413_digest(msg, bytes(32), rec)


def test_versioned_nonce_vector() -> None:
    # contracts/defuse/README.md byte example (docs/verifier.md §3, §6).
    nonce = versioned_nonce(
        "252812b3",
        datetime.fromtimestamp(2280047743, UTC),
        random_bytes=lambda n: bytes.fromhex("027015ec13dc11864973138fe6812f")[:n],
    )
    assert b64_nonce(nonce) == "Vij2xgAlKBKzADZykFdbpB8CcBXsE9wRhklzE4/mgS8="
    parsed = parse_nonce(nonce)
    assert isinstance(parsed, VersionedNonce)
    assert parsed.salt_hex == "252812b3"
    assert parsed.deadline == datetime.fromtimestamp(2280047743, UTC)
    assert parsed.random == bytes.fromhex("027015ec13dc11864973138fe6812f")


def test_docs_quote_response_verifies_and_hashes() -> None:
    digest = verify_signed_data(DOCS_SIGNED_DATA)
    assert quote_hash(digest) == DOCS_QUOTE_HASH
    assert signed_data_digest(DOCS_SIGNED_DATA) == digest
    parsed = parse_nonce(base64.b64decode(DOCS_SIGNED_DATA["payload"]["nonce"]))
    assert isinstance(parsed, VersionedNonce)
    assert parsed.salt_hex == "252812b3"
    assert parsed.deadline_ns == 1728910420000000000
    assert parsed.deadline == datetime(2024, 10, 14, 12, 53, 40, tzinfo=UTC)
    assert parse_deadline_ns("2024-10-14T12:53:40.000Z") == parsed.deadline_ns


def test_docs_message_is_what_token_diff_message_builds() -> None:
    msg = token_diff_message(
        "solver.near",
        datetime(2024, 10, 14, 12, 53, 40, tzinfo=UTC),
        {"nep141:ft2.near": -300, "nep141:ft1.near": 500},
    )
    assert msg == DOCS_SIGNED_DATA["payload"]["message"]


# --- tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["payload"].__setitem__("message", d["payload"]["message"].replace("500", "501")),
        lambda d: d["payload"].__setitem__("recipient", "other.near"),
        lambda d: d["payload"].__setitem__("nonce", b64_nonce(bytes(32))),
        lambda d: d["payload"].__setitem__("callbackUrl", "https://x"),
        lambda d: d.__setitem__("public_key", _key().public_key),
    ],
    ids=["message", "recipient", "nonce", "callback", "public_key"],
)
def test_any_change_breaks_the_signature(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(json.dumps(DOCS_SIGNED_DATA))
    mutate(doc)
    with pytest.raises(InvalidSignature, match="invalid signature"):
        verify_signed_data(doc)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__("standard", "raw_ed25519"),
        lambda d: d.__delitem__("payload"),
        lambda d: d["payload"].__setitem__("nonce", "not base64!"),
        lambda d: d["payload"].__setitem__("nonce", base64.b64encode(bytes(31)).decode()),
        lambda d: d["payload"].__setitem__("nonce", DOCS_SIGNED_DATA["payload"]["nonce"].rstrip("=")),
        lambda d: d["payload"].__setitem__("message", 5),
        lambda d: d.__setitem__("signature", "ed25519:abc"),
        lambda d: d.__setitem__("signature", "secp256k1:abc"),
        lambda d: d.__setitem__("public_key", "ed25519:0OIl"),
    ],
)
def test_malformed_payloads_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(json.dumps(DOCS_SIGNED_DATA))
    mutate(doc)
    with pytest.raises(MalformedPayload):
        verify_signed_data(doc)
    assert issubclass(MalformedPayload, ValueError) and issubclass(InvalidSignature, ValueError)


# --- keys --------------------------------------------------------------------------------------


def test_secret_key_forms_and_public_key() -> None:
    sk = SigningKey.generate()
    pk_raw = bytes(sk.verify_key)
    full = "ed25519:" + base58.b58encode(bytes(sk) + pk_raw).decode()
    seed = "ed25519:" + base58.b58encode(bytes(sk)).decode()
    a, b = SignerKey.from_secret(full), SignerKey.from_secret(seed)
    assert a.public_key == b.public_key == "ed25519:" + base58.b58encode(pk_raw).decode()
    assert a.implicit_account_id == implicit_account_id(a.public_key) == pk_raw.hex()
    assert len(a.implicit_account_id) == 64
    digest = nep413_digest("x", bytes(32), "intents.near")
    assert a.sign(digest) == b.sign(digest)  # ed25519 is deterministic


def test_secret_never_shows() -> None:
    key = _key()
    secret = key.secret_for_export()
    body = secret.removeprefix("ed25519:")
    assert body not in repr(key) and body not in str(key)
    assert key.public_key in repr(key)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(key)


@pytest.mark.parametrize(
    "secret",
    ["", "ed25519:", "ed25519:0OIl", "secp256k1:abc", "ed25519:" + base58.b58encode(bytes(40)).decode()],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(InvalidKey):
        SignerKey.from_secret(secret)


def test_spliced_secret_is_refused() -> None:
    sk, other = SigningKey.generate(), SigningKey.generate()
    spliced = "ed25519:" + base58.b58encode(bytes(sk) + bytes(other.verify_key)).decode()
    with pytest.raises(InvalidKey, match="does not match"):
        SignerKey.from_secret(spliced)


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_key_file_0600_loads(tmp_path: Path) -> None:
    key = _key()
    loaded = load_signer_key(_write(tmp_path / "k", key.secret_for_export() + "\n", 0o600))
    assert loaded.public_key == key.public_key


def test_key_file_near_cli_json_loads(tmp_path: Path) -> None:
    key = _key()
    doc = {"account_id": key.implicit_account_id, "public_key": key.public_key, "private_key": key.secret_for_export()}
    assert load_signer_key(_write(tmp_path / "k.json", json.dumps(doc), 0o400)).public_key == key.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = _key()
    path = _write(tmp_path / "k", key.secret_for_export(), mode)
    with pytest.raises(KeyFileInsecure, match=f"{mode:04o}") as info:
        load_signer_key(path)
    assert key.secret_for_export().removeprefix("ed25519:") not in str(info.value)


def test_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileMissing, match="does not exist"):
        load_signer_key(tmp_path / "nope")


@pytest.mark.parametrize("content", ["garbage", "ed25519:0OIl0OIl", "{}", '{"private_key": 5}', "{not json"])
def test_key_file_garbage(tmp_path: Path, content: str) -> None:
    with pytest.raises(KeyFileInvalid) as info:
        load_signer_key(_write(tmp_path / "k", content, 0o600))
    assert isinstance(info.value, KeyFileError)
    assert "0OIl" not in str(info.value)


def test_key_file_errors_are_distinct() -> None:
    kinds = {KeyFileMissing, KeyFileInsecure, KeyFileInvalid}
    assert all(issubclass(k, KeyFileError) for k in kinds)
    assert not any(issubclass(a, b) for a in kinds for b in kinds if a is not b)


# --- nonces and deadlines -------------------------------------------------------------------------


def test_nonce_deadline_is_millisecond_precision() -> None:
    dt = datetime(2026, 1, 2, 3, 4, 5, 254392, tzinfo=UTC)
    nonce = parse_nonce(versioned_nonce("00000001", dt))
    assert isinstance(nonce, VersionedNonce)
    assert nonce.deadline_ns == datetime_to_ns(datetime(2026, 1, 2, 3, 4, 5, 254000, tzinfo=UTC))
    assert deadline_str(dt) == "2026-01-02T03:04:05.254Z"
    assert parse_deadline_ns(deadline_str(dt)) == nonce.deadline_ns


def test_versioned_nonce_uses_the_random_source() -> None:
    calls: list[int] = []

    def rnd(n: int) -> bytes:
        calls.append(n)
        return bytes(range(n))

    nonce = versioned_nonce("deadbeef", datetime(2030, 1, 1, tzinfo=UTC), rnd)
    assert calls == [15] and nonce[17:] == bytes(range(15))
    assert nonce[:4] == VERSIONED_MAGIC and nonce[4] == 0 and nonce[5:9] == bytes.fromhex("deadbeef")
    a = versioned_nonce("deadbeef", datetime(2030, 1, 1, tzinfo=UTC))
    b = versioned_nonce("deadbeef", datetime(2030, 1, 1, tzinfo=UTC))
    assert a != b


def test_versioned_nonce_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        versioned_nonce("2528", datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        versioned_nonce("zzzzzzzz", datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        versioned_nonce("252812b3", datetime(2030, 1, 1))  # naive datetime
    with pytest.raises(ValueError):
        versioned_nonce("252812b3", datetime(2030, 1, 1, tzinfo=UTC), lambda n: b"short")


def test_parse_nonce_kinds() -> None:
    assert parse_nonce(bytes(32)) == LegacyNonce(raw=bytes(32))
    with pytest.raises(InvalidNonce):
        parse_nonce(bytes(31))
    bad_version = bytearray(versioned_nonce("252812b3", datetime(2030, 1, 1, tzinfo=UTC)))
    bad_version[4] = 1
    with pytest.raises(InvalidNonce):
        parse_nonce(bytes(bad_version))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-10-14T12:53:40.000Z", datetime(2024, 10, 14, 12, 53, 40, tzinfo=UTC)),
        ("1970-01-01T10:00:00+04:00", datetime(1970, 1, 1, 6, 0, 0, tzinfo=UTC)),
        ("2026-06-25T13:53:42.123456Z", datetime(2026, 6, 25, 13, 53, 42, 123456, tzinfo=UTC)),
    ],
)
def test_parse_deadline(text: str, expected: datetime) -> None:
    assert parse_deadline_ns(text) == datetime_to_ns(expected)


def test_parse_deadline_keeps_nanoseconds_and_refuses_junk() -> None:
    assert parse_deadline_ns("2026-06-25T13:53:42.123456789Z") % 1_000_000_000 == 123456789
    for junk in ["2024-10-14 12:53:40Z", "2024-10-14T12:53:40", "2024-13-01T00:00:00Z", "1728910420", ""]:
        with pytest.raises(ValueError):
            parse_deadline_ns(junk)


# --- messages ---------------------------------------------------------------------------------------


def test_token_diff_message_shape() -> None:
    msg = token_diff_message("a.near", datetime(2030, 1, 1, tzinfo=UTC), {"nep141:x": 10**30, "nep141:y": -(10**20)})
    assert msg == (
        '{"deadline":"2030-01-01T00:00:00.000Z","intents":[{"intent":"token_diff","diff":'
        '{"nep141:x":"1000000000000000000000000000000","nep141:y":"-100000000000000000000"}}],"signer_id":"a.near"}'
    )
    for bad in [{}, {"nep141:x": 0}]:
        with pytest.raises(ValueError):
            token_diff_message("a.near", datetime(2030, 1, 1, tzinfo=UTC), bad)
    with pytest.raises(TypeError):
        token_diff_message("a.near", datetime(2030, 1, 1, tzinfo=UTC), {"nep141:x": 1.5})  # type: ignore[dict-item]


# --- round trips ------------------------------------------------------------------------------------


def test_sign_intent_produces_the_multipayload() -> None:
    key = _key()
    nonce = versioned_nonce("252812b3", datetime(2030, 1, 1, tzinfo=UTC))
    msg = token_diff_message(key.implicit_account_id, datetime(2030, 1, 1, tzinfo=UTC), {"nep141:a": 5, "nep141:b": -7})
    signed = sign_intent(key, msg, nonce)
    assert set(signed.signed_data) == {"standard", "payload", "public_key", "signature"}
    assert signed.signed_data["standard"] == "nep413"
    assert signed.signed_data["payload"] == {"message": msg, "nonce": b64_nonce(nonce), "recipient": "intents.near"}
    assert signed.signed_data["public_key"] == key.public_key
    assert quote_hash(verify_signed_data(signed.signed_data)) == signed.quote_hash
    assert json.loads(json.dumps(signed.signed_data)) == signed.signed_data


@settings(max_examples=60, deadline=None)
@given(
    message=st.text(max_size=200),
    nonce=st.binary(min_size=32, max_size=32),
    recipient=st.text(min_size=1, max_size=40),
)
def test_round_trip_any_payload(message: str, nonce: bytes, recipient: str) -> None:
    key = SignerKey.generate()
    signed = sign_intent(key, message, nonce, recipient)
    assert verify_signed_data(signed.signed_data) == nep413_digest(message, nonce, recipient)
    assert base58.b58decode(signed.quote_hash) == nep413_digest(message, nonce, recipient)


@settings(max_examples=60, deadline=None)
@given(
    salt=st.binary(min_size=4, max_size=4),
    ms=st.integers(min_value=0, max_value=4_102_444_800_000),
    rand=st.binary(min_size=15, max_size=15),
)
def test_versioned_nonce_round_trip(salt: bytes, ms: int, rand: bytes) -> None:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    parsed = parse_nonce(versioned_nonce(salt.hex(), dt, lambda n: rand))
    assert isinstance(parsed, VersionedNonce)
    assert (parsed.salt_hex, parsed.deadline, parsed.random, parsed.deadline_ns) == (
        salt.hex(),
        dt,
        rand,
        ms * 1_000_000,
    )
    assert parse_deadline_ns(deadline_str(dt)) == parsed.deadline_ns
