"""Reading a secret (a JWT, an API key) from a file; under systemd the file is a credential
(`LoadCredential=`, the setting pointing into `%d`).

The file must exist, be non-empty and be readable by its owner only: a group- or world-readable
secret is refused with a message naming the mode. Secrets are returned, never logged.
Signing keys have their own loader (`daemons.venues.near_intents.nep413.load_signer_key`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def forbidden_mode_bits(path: Path) -> int:
    """Permission bits a secret file must not have.

    Owner-only (no group or other bits), except for a systemd credential: systemd 254 and later
    present credentials as 0440 (the service user reads them through an ACL) inside a
    per-unit directory nobody else can enter, so group read is allowed there and only there.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        try:
            Path(path).resolve().relative_to(Path(directory).resolve())
            return 0o037
        except ValueError:
            pass
    return 0o077


class SecretFileError(Exception):
    """Why a secret could not be read, in one line naming the setting and the file."""


def read_secret_file(path: Path | None, setting: str) -> str:
    if path is None:
        raise SecretFileError(f"{setting} is not set")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise SecretFileError(f"{setting}: {path} does not exist") from None
    except PermissionError:
        raise SecretFileError(f"{setting}: {path} is not readable by this user") from None
    if mode & forbidden_mode_bits(path):
        raise SecretFileError(f"{setting}: {path} has mode {mode:04o}; a secret must be 0600 or 0400")
    secret = path.read_text().strip()
    if not secret:
        raise SecretFileError(f"{setting}: {path} is empty")
    return secret
