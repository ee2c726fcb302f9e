"""The signing authority: each key-file problem named exactly, and authorization asked of the
verifier (through the NEAR RPC simulator) unless the account is the key's implicit one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemons.trade_executor.signer import authorize, load_key
from daemons.venues.near_intents.near_rpc import NearRpcClient
from daemons.venues.near_intents.nep413 import SignerKey
from simulators.near_rpc import NearRpcSimulator
from simulators.verifier import VerifierState

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def key_file(tmp_path: Path, key: SignerKey, mode: int = 0o600, text: str | None = None) -> Path:
    path = tmp_path / "signer.key"
    path.write_text(key.secret_for_export() if text is None else text)
    path.chmod(mode)
    return path


def test_a_good_key_loads_unverified(tmp_path: Path) -> None:
    key = SignerKey.generate()
    loaded, status = load_key("solver.near", key_file(tmp_path, key))
    assert loaded is not None and loaded.public_key == key.public_key
    assert status.status == "unverified" and not status.ready and status.public_key == key.public_key


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "key_missing"),
        ("world_readable", "key_insecure"),
        ("group_writable", "key_insecure"),
        ("malformed", "key_invalid"),
        ("wrong_json", "key_invalid"),
        ("no_file_setting", "key_file_not_set"),
        ("no_account", "account_not_set"),
    ],
)
def test_each_key_problem_is_named(tmp_path: Path, case: str, expected: str) -> None:
    key = SignerKey.generate()
    account: str | None = "solver.near"
    path: Path | None
    if case == "missing":
        path = tmp_path / "nope.key"
    elif case == "world_readable":
        path = key_file(tmp_path, key, 0o644)
    elif case == "group_writable":
        path = key_file(tmp_path, key, 0o620)
    elif case == "malformed":
        path = key_file(tmp_path, key, text="ed25519:0OIl-not-base58")
    elif case == "wrong_json":
        path = key_file(tmp_path, key, text='{"account_id": "solver.near"}')
    elif case == "no_file_setting":
        path = None
    else:
        path, account = key_file(tmp_path, key), None
    loaded, status = load_key(account, path)
    assert loaded is None and status.status == expected and not status.ready and status.detail
    assert key.secret_for_export() not in status.model_dump_json()
    if case == "world_readable":
        assert "0644" in status.detail


@pytest.fixture
async def near() -> AsyncIterator[tuple[VerifierState, NearRpcClient]]:
    state = VerifierState()
    sim = NearRpcSimulator(state)
    await sim.start()
    client = NearRpcClient(sim.base_url)
    yield state, client
    await client.close()
    await sim.stop()


async def test_a_registered_key_is_authorized(near: tuple[VerifierState, NearRpcClient]) -> None:
    state, client = near
    key = SignerKey.generate()
    status = await authorize("solver.near", key, client, NOW)
    assert status.status == "not_authorized" and "has_public_key is false" in status.detail
    state.add_public_key("solver.near", key.public_key)
    status = await authorize("solver.near", key, client, NOW)
    assert status.ready and status.checked_at == NOW and not status.implicit_account


async def test_the_keys_implicit_account_needs_no_registration(near: tuple[VerifierState, NearRpcClient]) -> None:
    _, client = near
    key = SignerKey.generate()
    status = await authorize(key.implicit_account_id, key, client, NOW)
    assert status.ready and status.implicit_account


async def test_an_unreachable_verifier_leaves_the_signer_unverified() -> None:
    key = SignerKey.generate()
    client = NearRpcClient("http://127.0.0.1:9", timeout_s=1)
    try:
        status = await authorize("solver.near", key, client, NOW)
    finally:
        await client.close()
    assert status.status == "unverified" and not status.ready and "has_public_key" in status.detail
