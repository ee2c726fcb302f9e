"""Secret files: owner-only, except systemd credentials, which newer systemd shows as 0440."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.venues.near_intents.nep413 import KeyFileInsecure, SignerKey, load_signer_key


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_owner_only_is_required_outside_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_secret_file(_write(tmp_path / "jwt", "t0ken", 0o600), "QL_RELAY_JWT_FILE") == "t0ken"
    with pytest.raises(SecretFileError, match="mode 0440"):
        read_secret_file(_write(tmp_path / "jwt2", "t0ken", 0o440), "QL_RELAY_JWT_FILE")
    with pytest.raises(SecretFileError, match="is not set"):
        read_secret_file(None, "QL_RELAY_JWT_FILE")
    with pytest.raises(SecretFileError, match="is empty"):
        read_secret_file(_write(tmp_path / "jwt3", "  \n", 0o600), "QL_RELAY_JWT_FILE")


def test_a_systemd_credential_may_be_group_readable_but_never_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret_file(_write(creds / "relay-jwt", "t0ken", 0o440), "QL_RELAY_JWT_FILE") == "t0ken"
    key = SignerKey.generate()
    assert load_signer_key(_write(creds / "signer-key", key.secret_for_export(), 0o440)).public_key == key.public_key
    with pytest.raises(KeyFileInsecure):
        load_signer_key(_write(creds / "signer-key2", key.secret_for_export(), 0o444))
    with pytest.raises(SecretFileError):  # the same mode outside the credentials directory
        read_secret_file(_write(tmp_path / "jwt", "t0ken", 0o440), "QL_RELAY_JWT_FILE")
