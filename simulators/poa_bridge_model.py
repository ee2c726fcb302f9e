"""The POA bridge simulator's model (`docs/poa-bridge.md` (§n below)): the tokens it bridges,
its simulated clock, the scripted deposits and withdrawals with their wire shapes, and the
addresses and hashes it makes up. `poa_bridge_book.BridgeBook` holds the live state;
`poa_bridge.PoaBridgeSimulator` serves it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Credit = Callable[[str, str, int], None]
DepositOutcome = Literal["credit", "fail", "never_credit"]
WithdrawalOutcome = Literal["complete", "fail", "pending"]
WithdrawalShape = Literal["withdrawals_list", "status_data"]


class ScriptError(ValueError):
    """A test scripted something the bridge could not have seen (unknown chain, duplicate…)."""


# --- the bridge's token list -------------------------------------------------------------------


@dataclass(frozen=True)
class SimToken:
    chain: str
    defuse_asset_identifier: str
    near_token_id: str
    asset_name: str
    decimals: int
    min_deposit_amount: int
    min_withdrawal_amount: int
    withdrawal_fee: int

    @property
    def intents_token_id(self) -> str:
        return "nep141:" + self.near_token_id

    def wire(self) -> dict[str, Any]:
        return {
            "defuse_asset_identifier": self.defuse_asset_identifier,
            "near_token_id": self.near_token_id,
            "decimals": self.decimals,
            "asset_name": self.asset_name,
            "min_deposit_amount": str(self.min_deposit_amount),
            "min_withdrawal_amount": str(self.min_withdrawal_amount),
            "withdrawal_fee": str(self.withdrawal_fee),
            "standard": "nep141",
            "intents_token_id": self.intents_token_id,
        }


DEFAULT_TOKENS: tuple[SimToken, ...] = (
    # BTC amounts are the SDK's test fixture (docs/assets.md §3); live values are UNCONFIRMED.
    SimToken("btc:mainnet", "btc:mainnet:native", "btc.omft.near", "BTC", 8, 10_000, 700, 1_500),
    # EURe limits are made up for the simulator (0.5 EURe fee, 1 EURe minimums).
    SimToken(
        "eth:100",
        "eth:100:0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430",
        "gnosis-0x420ca0f9b9b604ce0fd9c18ef134c705e5fa3430.omft.near",
        "EURe",
        18,
        10**18,
        10**18,
        5 * 10**17,
    ),
)


# --- simulated time ----------------------------------------------------------------------------


class SimClock:
    """Real UTC time plus an offset, or frozen at `start` so only `advance()` moves it."""

    def __init__(self, *, frozen: bool = False, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.frozen = frozen
        self._start = start or datetime.now(UTC)
        self._offset = timedelta()

    def now(self) -> datetime:
        base = self._start if self.frozen else datetime.now(UTC)
        return base + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        self._offset = timedelta()


def iso(t: datetime) -> str:
    """A UTC timestamp as the bridge writes it: milliseconds and `Z`."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- scripted state ----------------------------------------------------------------------------


@dataclass
class SimDeposit:
    tx_hash: str
    account_id: str
    chain: str
    token: SimToken
    amount: int
    address: str
    outcome: DepositOutcome
    created_at: datetime
    due_at: datetime | None  # when it settles as scripted; None: never
    sender: str | None = None
    status: Literal["PENDING", "COMPLETED", "FAILED"] = "PENDING"
    mint_tx_hash: str | None = None
    credited: bool = False
    mint_height: int | None = None  # the block the mint executes in (with a chain)

    def wire(self, *, amounts_as_strings: bool, status: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tx_hash": self.tx_hash,
            "mint_tx_hash": self.mint_tx_hash,
            "chain": self.chain,
            "defuse_asset_identifier": self.token.defuse_asset_identifier,
            "near_token_id": self.token.near_token_id,
            "decimals": self.token.decimals,
            # A JSON number in the new docs/SDK, a string in the old docs (§4).
            "amount": str(self.amount) if amounts_as_strings else self.amount,
            "account_id": self.account_id,
            "address": self.address,
            "status": status or self.status,
            "created_at": iso(self.created_at),
        }
        if self.sender is not None:
            out["from"] = self.sender
        return out


@dataclass
class SimWithdrawal:
    withdrawal_hash: str
    account_id: str
    chain: str
    token: SimToken
    amount: int
    address: str
    outcome: WithdrawalOutcome
    created_at: datetime
    visible_at: datetime
    due_at: datetime | None
    status: Literal["PENDING", "COMPLETED", "FAILED"] = "PENDING"
    transfer_tx_hash: str | None = None

    def data_list_shape(self) -> dict[str, Any]:
        # SDK `WithdrawalStatusResponseOk` (§6): numeric amount, `created`.
        return {
            "tx_hash": self.withdrawal_hash,
            "transfer_tx_hash": self.transfer_tx_hash,
            "chain": self.chain,
            "defuse_asset_identifier": self.token.defuse_asset_identifier,
            "near_token_id": self.token.near_token_id,
            "decimals": self.token.decimals,
            "amount": self.amount,
            "account_id": self.account_id,
            "address": self.address,
            "created": iso(self.created_at),
        }

    def data_docs_shape(self) -> dict[str, Any]:
        # Docs response (§6): string amounts, `created_at`, fee and net amount.
        fee = min(self.token.withdrawal_fee, self.amount)
        return {
            "tx_hash": self.withdrawal_hash,
            "transfer_tx_hash": self.transfer_tx_hash,
            "chain": self.chain,
            "defuse_asset_identifier": self.token.defuse_asset_identifier,
            "near_token_id": self.token.near_token_id,
            "decimals": self.token.decimals,
            "amount": str(self.amount),
            "account_id": self.account_id,
            "address": self.address,
            "created_at": iso(self.created_at),
            "withdrawal_fee": str(fee),
            "withdraw_amount": str(self.amount - fee),
        }


# --- made-up identifiers -----------------------------------------------------------------------


def deposit_address(account_id: str, chain: str) -> str:
    """Stable per (account, chain): derived, so it survives restarts like the real one."""
    digest = hashlib.sha256(f"poa-deposit|{account_id}|{chain}".encode()).digest()
    if chain.startswith("btc:"):
        charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # bech32 alphabet (checksum not modelled)
        more = digest + hashlib.sha256(digest).digest()
        return "bc1q" + "".join(charset[b % 32] for b in more[:38])
    return "0x" + digest[:20].hex()


def fake_hash(chain: str, kind: str, seed: str) -> str:
    """A transaction hash in `chain`'s style, unique per `seed`."""
    digest = hashlib.sha256(f"{kind}|{chain}|{seed}".encode()).hexdigest()
    if chain.startswith("eth:"):
        return "0x" + digest
    if chain.startswith("near:"):
        # NEAR tx hashes are base58 of 32 bytes; any fixed-alphabet string of that length will do here.
        alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
        return "".join(alphabet[int(digest[i : i + 2], 16) % 58] for i in range(0, 64, 2)) + "n"
    return digest
