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


class PrivateFileProblem(Exception):
    """What is wrong with a private file, for the caller to word (`kind`: missing, unreadable,
    directory, not_regular, insecure; `mode` for insecure)."""

    def __init__(self, kind: str, mode: int | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.mode = mode


def read_private_file(path: Path, limit: int = 64 * 1024) -> bytes:
    """The bytes of a file only its owner may access, checked and read through one open
    descriptor: the file whose mode was checked is the file read (no swap in between)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PrivateFileProblem("missing") from None
    except IsADirectoryError:
        raise PrivateFileProblem("directory") from None
    except PermissionError:
        raise PrivateFileProblem("unreadable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileProblem("not_regular")
        mode = stat.S_IMODE(st.st_mode)
        if mode & forbidden_mode_bits(path):
            raise PrivateFileProblem("insecure", mode)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_secret_file(path: Path | None, setting: str) -> str:
    if path is None:
        raise SecretFileError(f"{setting} is not set")
    try:
        raw = read_private_file(path)
    except PrivateFileProblem as exc:
        raise SecretFileError(
            {
                "missing": f"{setting}: {path} does not exist",
                "unreadable": f"{setting}: {path} is not readable by this user",
                "directory": f"{setting}: {path} is a directory",
                "not_regular": f"{setting}: {path} is not a regular file",
                "insecure": f"{setting}: {path} has mode {exc.mode or 0:04o}; a secret must be 0600 or 0400",
            }[exc.kind]
        ) from None
    secret = raw.decode("utf-8", errors="replace").strip()
    if not secret:
        raise SecretFileError(f"{setting}: {path} is empty")
    return secret
