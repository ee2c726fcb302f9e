"""POA bridge client: JSON-RPC 2.0 over `POST https://bridge.chaindefuser.com/rpc`, as
`docs/poa-bridge.md` (§n below) describes it.

The liquidity manager uses it to get deposit addresses, watch deposits until they are credited,
and follow withdrawals. Every method returns a typed pydantic result with amounts as int base
units. Where the docs and the SDK disagree (§4, §6) the parser accepts both:

- `withdrawal_status` answers `{status, data}` (docs) or `{withdrawals: [{status, data}]}` (SDK);
  both become `WithdrawalStatus.withdrawals`.
- `amount` is a JSON number in the new docs/SDK and a string in the old docs: both are read
  exactly, as a u128 with zero allowed (the body is parsed with `parse_float=Decimal`, so no
  amount ever passes through float).
- errors are a bare string `error` (SDK schema) or a JSON-RPC error object: both become
  `PoaBridgeRpcError` carrying the message verbatim.

Failure classes are distinct so callers can decide: `PoaBridgeRpcError` (the bridge answered
and refused), `PoaBridgeUnavailable` (no usable answer: connection error, timeout, HTTP 5xx) and
`PoaBridgeBadResponse` (an answer we cannot parse, e.g. a status we do not know).
No auth is documented for this API (§1), so none is sent.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Annotated, Any, Literal, Self, TypeVar

import aiohttp
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from daemons.core.amounts import U128_MAX, parse_u128

# "Withdrawals not found" is what the bridge says until it has indexed a burn; the SDK retries it
# as transient (§6, `waitForWithdrawalCompletion.ts`).
WITHDRAWALS_NOT_FOUND = "Withdrawals not found"
NEP141 = "nep141:"

DepositStatusName = Literal["PENDING", "CREDITED", "COMPLETED", "FAILED"]
WithdrawalStatusName = Literal[
    "PENDING", "AWAITING", "COMPLETED", "FAILED", "NOT_FOUND", "REJECTED", "RETURNING", "RETURNED"
]


# --- errors ------------------------------------------------------------------------------------


class PoaBridgeError(Exception):
    """Base of every error this client raises."""

    def __init__(self, method: str, message: str) -> None:
        self.method = method
        super().__init__(message)


class PoaBridgeRpcError(PoaBridgeError):
    """The bridge answered with a JSON-RPC error; `message` is its text, verbatim."""

    def __init__(self, method: str, message: str, *, code: int | None = None, data: Any = None) -> None:
        self.message = message
        self.code = code
        self.data = data
        super().__init__(method, message)

    @property
    def withdrawals_not_found(self) -> bool:
        return self.message == WITHDRAWALS_NOT_FOUND


class PoaBridgeUnavailable(PoaBridgeError):
    """No usable answer: connection failure, timeout or an HTTP error. Safe to retry later."""

    def __init__(self, method: str, reason: str, *, http_status: int | None = None) -> None:
        self.reason = reason
        self.http_status = http_status
        super().__init__(method, f"POA bridge unavailable ({method}): {reason}")


class PoaBridgeBadResponse(PoaBridgeError):
    """The bridge answered something that does not parse as the documented result."""


# --- amounts and times -------------------------------------------------------------------------


def _parse_base_units(value: Any) -> int:
    # A u128, zero allowed, as a decimal string or a JSON number (module docstring). An integral
    # Decimal arrives when the bridge writes a number with an exponent or ".0": it is still exact
    # because the body was parsed with parse_float=Decimal.
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError(f"amount must be an integer, got {value}")
        if abs(value) > U128_MAX:  # before int(): "1E+999999" is a finite, integral Decimal
            raise ValueError("amount out of u128 range")
        value = int(value)
    return parse_u128(value, allow_int=True)


# Integer base units; accepted as a JSON number or a decimal string, serialised as a string.
BaseUnits = Annotated[int, BeforeValidator(_parse_base_units), PlainSerializer(str, return_type=str, when_used="json")]


def _utc(value: Any) -> Any:
    # The docs only say "date-time"; a zone-less value is taken as UTC rather than refused.
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value or None


UtcDatetime = Annotated[datetime | None, BeforeValidator(_utc)]


class _Result(BaseModel):
    # The bridge adds fields over time; unknown ones are ignored, known ones are typed.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# --- results -----------------------------------------------------------------------------------


class SupportedToken(_Result):
    intents_token_id: str  # the key the SDK uses; derived from near_token_id when absent (old docs)
    near_token_id: str
    asset_name: str
    decimals: int
    standard: str = "nep141"
    multi_token_id: str | None = None
    min_deposit_amount: BaseUnits
    min_withdrawal_amount: BaseUnits
    withdrawal_fee: BaseUnits
    # Deprecated/internal per the SDK; kept because the deposit/withdrawal records still carry it.
    defuse_asset_identifier: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_intents_id(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "intents_token_id" not in raw and "near_token_id" in raw:
            return {**raw, "intents_token_id": NEP141 + str(raw["near_token_id"])}
        return raw

    @property
    def chain(self) -> str | None:
        """The POA chain key, from `defuse_asset_identifier` (`CHAIN_TYPE:CHAIN_ID:ADDRESS`)."""
        if not self.defuse_asset_identifier:
            return None
        parts = self.defuse_asset_identifier.split(":")
        return ":".join(parts[:2]) if len(parts) >= 2 else None


class SupportedTokens(_Result):
    tokens: list[SupportedToken]

    def by_intents_id(self, intents_token_id: str) -> SupportedToken | None:
        return next((t for t in self.tokens if t.intents_token_id == intents_token_id), None)


class DepositAddress(_Result):
    address: str
    chain: str
    memo: str | None = None  # Stellar only


class Deposit(_Result):
    # Present for EVM deposits; empty for Solana (§4). Normalised to "" when missing.
    tx_hash: str = ""
    mint_tx_hash: str | None = None
    chain: str
    defuse_asset_identifier: str | None = None
    near_token_id: str | None = None
    decimals: int
    amount: BaseUnits
    account_id: str
    address: str
    status: DepositStatusName
    created_at: UtcDatetime = None
    sender: str | None = Field(default=None, validation_alias=AliasChoices("from", "sender"))

    @field_validator("tx_hash", mode="before")
    @classmethod
    def _empty_hash(cls, value: Any) -> Any:
        return "" if value is None else value

    @property
    def intents_token_id(self) -> str | None:
        return NEP141 + self.near_token_id if self.near_token_id else None


class RecentDeposits(_Result):
    deposits: list[Deposit]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class WithdrawalData(_Result):
    tx_hash: str | None = None  # the NEAR burn transaction
    transfer_tx_hash: str | None = None  # on the destination chain, once sent
    chain: str | None = None
    defuse_asset_identifier: str | None = None
    near_token_id: str | None = None
    decimals: int | None = None
    amount: BaseUnits | None = None
    account_id: str | None = None
    address: str | None = None
    # docs: `created_at`; SDK: `created` (§6)
    created_at: UtcDatetime = Field(default=None, validation_alias=AliasChoices("created_at", "created"))
    withdrawal_fee: BaseUnits | None = None
    withdraw_amount: BaseUnits | None = None

    @property
    def intents_token_id(self) -> str | None:
        return NEP141 + self.near_token_id if self.near_token_id else None


class Withdrawal(_Result):
    status: WithdrawalStatusName
    data: WithdrawalData | None = None


class WithdrawalStatus(_Result):
    """Both documented shapes normalised to a list; `shape` records which one the bridge used."""

    shape: Literal["status_data", "withdrawals_list"]
    withdrawals: list[Withdrawal]

    @property
    def first(self) -> Withdrawal | None:
        return self.withdrawals[0] if self.withdrawals else None

    def for_token(self, intents_token_id: str) -> Withdrawal | None:
        """The SDK matches a withdrawal to its token by `"nep141:" + data.near_token_id` (§6)."""
        return next(
            (w for w in self.withdrawals if w.data is not None and w.data.intents_token_id == intents_token_id), None
        )


class RecentWithdrawals(_Result):
    withdrawals: list[Withdrawal]


class WithdrawalEstimate(_Result):
    token_address: str | None = Field(default=None, validation_alias=AliasChoices("tokenAddress", "token_address"))
    user_address: str | None = Field(default=None, validation_alias=AliasChoices("userAddress", "user_address"))
    withdrawal_fee: BaseUnits = Field(validation_alias=AliasChoices("withdrawalFee", "withdrawal_fee"))
    withdrawal_fee_decimals: int | None = Field(
        default=None, validation_alias=AliasChoices("withdrawalFeeDecimals", "withdrawal_fee_decimals")
    )
    # Two token shapes are in circulation (docs: POA token record, SDK: BaseTokenInfo): kept raw.
    token: dict[str, Any] = Field(default_factory=dict)


R = TypeVar("R", bound=BaseModel)


# --- client ------------------------------------------------------------------------------------


class PoaBridgeClient:
    """One instance per daemon. Pass an aiohttp session to share it; otherwise the client owns one
    and `close()` (or `async with`) releases it."""

    def __init__(self, url: str, timeout: float = 10.0, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # --- methods (§2–§7) ---------------------------------------------------------------------

    async def supported_tokens(self, chains: list[str] | None = None) -> SupportedTokens:
        params: dict[str, Any] = {"chains": list(chains)} if chains else {}
        return self._parse("supported_tokens", SupportedTokens, await self._call("supported_tokens", params))

    async def deposit_address(
        self, account_id: str, chain: str, *, deposit_mode: Literal["MEMO", "SIMPLE"] | None = None
    ) -> DepositAddress:
        params: dict[str, Any] = {"account_id": account_id, "chain": chain}
        if deposit_mode is not None:
            params["deposit_mode"] = deposit_mode
        return self._parse("deposit_address", DepositAddress, await self._call("deposit_address", params))

    async def recent_deposits(
        self,
        account_id: str,
        chain: str | None = None,
        *,
        status: DepositStatusName | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> RecentDeposits:
        # `chain` was required by the old docs and is optional now (§4); sent whenever given.
        params: dict[str, Any] = {"account_id": account_id}
        for key, value in (("chain", chain), ("status", status), ("limit", limit), ("offset", offset)):
            if value is not None:
                params[key] = value
        return self._parse("recent_deposits", RecentDeposits, await self._call("recent_deposits", params))

    async def notify_deposit(
        self,
        deposit_address: str,
        tx_hash: str,
        *,
        chain: str | None = None,
        near_sender_account: str | None = None,
        memo: str | None = None,
    ) -> None:
        """Optional speed-up. `near_sender_account` is required for `near:mainnet` and `memo`
        (max 32) for `stellar:mainnet` (§5); neither chain is one quoteloop funds through."""
        params: dict[str, Any] = {"deposit_address": deposit_address, "tx_hash": tx_hash}
        for key, value in (("chain", chain), ("near_sender_account", near_sender_account), ("memo", memo)):
            if value is not None:
                params[key] = value
        await self._call("notify_deposit", params)

    async def withdrawal_status(self, withdrawal_hash: str) -> WithdrawalStatus:
        """By the NEAR tx hash that burned the POA token. A `PoaBridgeRpcError` with
        `withdrawals_not_found` is transient: the bridge has not indexed the burn yet."""
        raw = _as_dict(await self._call("withdrawal_status", {"withdrawal_hash": withdrawal_hash}), "withdrawal_status")
        if "withdrawals" in raw:
            candidate: dict[str, Any] = {"shape": "withdrawals_list", "withdrawals": raw["withdrawals"]}
        elif "status" in raw:
            candidate = {"shape": "status_data", "withdrawals": [{"status": raw["status"], "data": raw.get("data")}]}
        else:
            raise PoaBridgeBadResponse("withdrawal_status", f"neither documented shape: keys {sorted(raw)}")
        return self._parse("withdrawal_status", WithdrawalStatus, candidate)

    async def recent_withdrawals(self, account_id: str, chain: str | None = None) -> RecentWithdrawals:
        params: dict[str, Any] = {"account_id": account_id}
        if chain is not None:
            params["chain"] = chain
        return self._parse("recent_withdrawals", RecentWithdrawals, await self._call("recent_withdrawals", params))

    async def withdrawal_estimate(self, chain: str, token: str, address: str) -> WithdrawalEstimate:
        """`token` is the unprefixed NEP-141 contract (`btc.omft.near`, §7); an intents id
        (`nep141:…`), as the registry holds it, is accepted and unprefixed here."""
        params = {"chain": chain, "token": token.removeprefix(NEP141), "address": address}
        return self._parse("withdrawal_estimate", WithdrawalEstimate, await self._call("withdrawal_estimate", params))

    # --- transport ---------------------------------------------------------------------------

    def _parse(self, method: str, model: type[R], raw: Any) -> R:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise PoaBridgeBadResponse(method, f"unexpected result: {_first_error(exc)}") from None

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = str(next(self._ids))
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": [params]}
        try:
            async with self._get_session().post(self.url, json=body, timeout=self.timeout) as resp:
                text = await resp.text()
                status = resp.status
        except TimeoutError:
            raise PoaBridgeUnavailable(method, f"timed out after {self.timeout.total}s") from None
        except aiohttp.ClientError as exc:
            raise PoaBridgeUnavailable(method, f"{type(exc).__name__}: {exc}") from None

        if status >= 500:
            raise PoaBridgeUnavailable(method, f"HTTP {status}: {text[:200]}", http_status=status)
        try:
            envelope = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError):  # RecursionError: pathologically deep nesting
            if status >= 300:
                raise PoaBridgeUnavailable(method, f"HTTP {status}: {text[:200]}", http_status=status) from None
            raise PoaBridgeBadResponse(method, f"not JSON: {text[:200]!r}") from None
        if not isinstance(envelope, dict):
            raise PoaBridgeBadResponse(method, f"not a JSON-RPC object: {text[:200]!r}")
        error = envelope.get("error")
        if error is not None:
            raise _rpc_error(method, error)
        if status >= 300:
            raise PoaBridgeUnavailable(method, f"HTTP {status}: {text[:200]}", http_status=status)
        if "result" not in envelope:
            raise PoaBridgeBadResponse(method, f"neither result nor error: {text[:200]!r}")
        return envelope["result"]


def _rpc_error(method: str, error: Any) -> PoaBridgeRpcError:
    # §1: the bridge sends `error` as a bare string (SDK schema); a standard JSON-RPC error object
    # is accepted too.
    if isinstance(error, str):
        return PoaBridgeRpcError(method, error)
    if isinstance(error, dict):
        code = error.get("code")
        return PoaBridgeRpcError(
            method,
            str(error.get("message", error)),
            code=code if isinstance(code, int) else None,
            data=error.get("data"),
        )
    return PoaBridgeRpcError(method, str(error))


def _as_dict(raw: Any, method: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PoaBridgeBadResponse(method, f"result is not an object: {raw!r}"[:300])
    return raw


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"[:300]


__all__ = [
    "WITHDRAWALS_NOT_FOUND",
    "Deposit",
    "DepositAddress",
    "DepositStatusName",
    "PoaBridgeBadResponse",
    "PoaBridgeClient",
    "PoaBridgeError",
    "PoaBridgeRpcError",
    "PoaBridgeUnavailable",
    "RecentDeposits",
    "RecentWithdrawals",
    "SupportedToken",
    "SupportedTokens",
    "Withdrawal",
    "WithdrawalData",
    "WithdrawalEstimate",
    "WithdrawalStatus",
    "WithdrawalStatusName",
]
