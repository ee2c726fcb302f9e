"""The signing authority: the `ed25519:` key from `QL_SIGNER_KEY_FILE` (a systemd credential path
works the same) for `QL_SIGNER_ACCOUNT_ID`, and whether the verifier accepts it for that account.

`load_key` never raises: it answers a `SignerStatus` saying exactly what is wrong (setting not
set, file missing, readable by others, not a key). `authorize` asks the verifier
(`has_public_key`) unless the account is the key's own implicit account, which needs no
registration. The executor stays up with any of these problems, disarmed, and shows the status.
The secret never appears in a status, a log line or an exception.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from daemons.venues.near_intents.near_rpc import NearRpcClient, NearRpcError
from daemons.venues.near_intents.nep413 import (
    KeyFileInsecure,
    KeyFileInvalid,
    KeyFileMissing,
    SignerKey,
    load_signer_key,
)

SignerState = Literal[
    "authorized",
    "account_not_set",
    "key_file_not_set",
    "key_missing",
    "key_insecure",
    "key_invalid",
    "not_authorized",
    "unverified",  # the key loaded but the verifier could not be asked
]


class SignerStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: SignerState
    detail: str
    account_id: str | None = None
    public_key: str | None = None
    implicit_account: bool = False
    checked_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.status == "authorized"


def load_key(account_id: str | None, key_file: Path | None) -> tuple[SignerKey | None, SignerStatus]:
    if not account_id:
        return None, SignerStatus(status="account_not_set", detail="QL_SIGNER_ACCOUNT_ID is not set")
    if key_file is None:
        return None, SignerStatus(
            status="key_file_not_set", detail="QL_SIGNER_KEY_FILE is not set", account_id=account_id
        )
    try:
        key = load_signer_key(key_file)
    except KeyFileMissing as exc:
        return None, SignerStatus(status="key_missing", detail=str(exc), account_id=account_id)
    except KeyFileInsecure as exc:
        return None, SignerStatus(status="key_insecure", detail=str(exc), account_id=account_id)
    except KeyFileInvalid as exc:
        return None, SignerStatus(status="key_invalid", detail=str(exc), account_id=account_id)
    return key, SignerStatus(
        status="unverified",
        detail="key loaded; not yet checked with the verifier",
        account_id=account_id,
        public_key=key.public_key,
    )


async def authorize(account_id: str, key: SignerKey, rpc: NearRpcClient, now: datetime) -> SignerStatus:
    """Is `key` allowed to sign for `account_id` in the verifier?"""
    if key.implicit_account_id == account_id:
        return SignerStatus(
            status="authorized",
            detail="the account is the key's implicit account",
            account_id=account_id,
            public_key=key.public_key,
            implicit_account=True,
            checked_at=now,
        )
    try:
        registered = await rpc.has_public_key(account_id, key.public_key)
    except NearRpcError as exc:
        return SignerStatus(
            status="unverified",
            detail=f"has_public_key could not be checked: {exc.message}",
            account_id=account_id,
            public_key=key.public_key,
            checked_at=now,
        )
    if not registered:
        return SignerStatus(
            status="not_authorized",
            detail=f"signer not authorized: {key.public_key} is not a public key of {account_id} in the verifier "
            f"(has_public_key is false)",
            account_id=account_id,
            public_key=key.public_key,
            checked_at=now,
        )
    return SignerStatus(
        status="authorized",
        detail="has_public_key is true",
        account_id=account_id,
        public_key=key.public_key,
        checked_at=now,
    )
