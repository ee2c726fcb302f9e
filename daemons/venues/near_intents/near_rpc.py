"""NEAR JSON-RPC client for the `intents.near` view methods (balances, keys, nonces, salt, fee).

Speaks `query` / `call_function` exactly as in `shared/docs/protocols/near-intents.md` §3.3 and
decodes the view's return bytes as JSON (§3.1 lists the methods). Failures come out typed, so a
caller can tell "the venue is down" (`NearRpcUnavailable`: HTTP errors, timeouts, garbage) from
"the venue said no" (`NearRpcRequestError` for a JSON-RPC `error` object, `NearContractError` for
a contract panic in either of the two shapes §3.3 says to handle), each with the verbatim text.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict

Finality = Literal["final", "optimistic", "near-final"]
DEFAULT_CONTRACT = "intents.near"
U128_MAX = (1 << 128) - 1


# --- errors ----------------------------------------------------------------------------------------


class NearRpcError(Exception):
    """Base of every failure; `.message` is the RPC's or contract's verbatim text where it gave one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NearRpcUnavailable(NearRpcError):
    """The RPC could not answer: connection failure, timeout, HTTP error status, or a body that
    is not a JSON-RPC response. Retry later or elsewhere; nothing was refused."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NearRpcBadResponse(NearRpcUnavailable):
    """A 200 whose body is not the documented shape (not JSON, missing fields, wrong types)."""


class NearRpcRequestError(NearRpcError):
    """A top-level JSON-RPC `error` object: the node refused the request (unknown account,
    unknown block, bad params, …). `.name` / `.cause` are nearcore's structured names."""

    def __init__(self, message: str, error: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.error = dict(error)
        self.name: str | None = error.get("name") if isinstance(error.get("name"), str) else None
        cause = error.get("cause")
        self.cause: str | None = cause.get("name") if isinstance(cause, Mapping) else None
        self.info: dict[str, Any] = dict(cause.get("info") or {}) if isinstance(cause, Mapping) else {}
        self.code: int | None = error.get("code") if isinstance(error.get("code"), int) else None


class NearRpcUnknownAccount(NearRpcRequestError):
    """`UNKNOWN_ACCOUNT`: the contract account does not exist on this network."""


class NearContractError(NearRpcError):
    """The view ran and the contract failed: a panic (e.g. a verbatim `DefuseError`, §3.6) or a
    VM error. Raised for both shapes: the legacy `result.error` string and a top-level
    `CONTRACT_EXECUTION_ERROR`. `.panic_msg` is the contract's own text when it panicked."""

    def __init__(self, message: str, *, block_height: int | None = None) -> None:
        super().__init__(message)
        self.panic_msg: str | None = _panic_msg(message)
        self.block_height = block_height


class NearMethodNotFound(NearContractError):
    """The contract has no such method (`MethodResolveError(MethodNotFound)`)."""


_GUEST_PANIC = re.compile(r'GuestPanic \{ panic_msg: "((?:[^"\\]|\\.)*)" \}')
_SMART_PANIC = re.compile(r'Smart contract panicked: ((?:[^"\\]|\\.)*)')


def _panic_msg(vm_error: str) -> str | None:
    m = _GUEST_PANIC.search(vm_error)
    if m:
        # Rust Debug escaping of the message: \" \\ \n and friends.
        try:
            return json.loads(f'"{m.group(1)}"')
        except ValueError:
            return m.group(1)
    m = _SMART_PANIC.search(vm_error)
    if m:
        try:
            return json.loads(f'"{m.group(1)}"')
        except ValueError:
            return m.group(1)
    return None


def _contract_error(message: str, block_height: Any) -> NearContractError:
    height = block_height if isinstance(block_height, int) else None
    if "MethodNotFound" in message:
        return NearMethodNotFound(message, block_height=height)
    return NearContractError(message, block_height=height)


# --- results ----------------------------------------------------------------------------------------


class ViewResult(BaseModel):
    """A view's decoded JSON return value and the block it was read at."""

    model_config = ConfigDict(frozen=True)

    value: Any
    block_height: int
    block_hash: str
    logs: list[str] = []


# --- client ----------------------------------------------------------------------------------------


class NearRpcClient:
    """Async client for `intents.near` views over one NEAR JSON-RPC endpoint."""

    def __init__(
        self,
        url: str,
        contract_id: str = DEFAULT_CONTRACT,
        *,
        timeout_s: float = 10.0,
        finality: Finality = "final",
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.contract_id = contract_id
        self.timeout_s = timeout_s
        self.finality: Finality = finality
        self._session = session
        self._owns_session = session is None
        self._ids = itertools.count(1)
        self.last_block_height: int | None = None

    async def __aenter__(self) -> NearRpcClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    # --- transport --------------------------------------------------------------------------------

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self._get_session()
        try:
            async with session.post(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                status = resp.status
                text = await resp.text()
        except TimeoutError:
            raise NearRpcUnavailable(f"NEAR RPC timed out after {self.timeout_s}s") from None
        except aiohttp.ClientError as exc:
            raise NearRpcUnavailable(f"NEAR RPC unreachable: {exc.__class__.__name__}: {exc}") from None
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: pathologically deep nesting
            doc = None
        error = doc.get("error") if isinstance(doc, dict) else None
        if status != 200:
            # nearcore answers request-validation errors (our request was wrong) with a 4xx and a
            # JSON-RPC error body: that is a refusal. Anything else not-200 (5xx, 408, 429, a
            # proxy's page) is the venue being unavailable.
            if 400 <= status < 500 and status not in (408, 429) and isinstance(error, Mapping):
                raise _request_error(error)
            raise NearRpcUnavailable(f"NEAR RPC HTTP {status}: {text[:200]}", status=status)
        if not isinstance(doc, dict):
            raise NearRpcBadResponse(f"NEAR RPC answered with a non-JSON-RPC body: {text[:200]}")
        return doc

    async def query(
        self,
        method_name: str,
        args: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
        finality: Finality | None = None,
        block_id: int | str | None = None,
    ) -> ViewResult:
        """`query` / `call_function` on `account_id` (the contract by default), §3.3.

        Reads at `block_id` if given, else at `finality` (the client's setting by default).
        """
        params: dict[str, Any] = {
            "request_type": "call_function",
            "account_id": account_id or self.contract_id,
            "method_name": method_name,
            "args_base64": base64.b64encode(json.dumps(dict(args or {}), separators=(",", ":")).encode()).decode(),
        }
        if block_id is not None:
            params["block_id"] = block_id
        else:
            params["finality"] = finality or self.finality
        body = {"jsonrpc": "2.0", "id": str(next(self._ids)), "method": "query", "params": params}
        doc = await self._post(body)

        if doc.get("error") is not None:
            error = doc["error"]
            if isinstance(error, Mapping):
                raise _request_error(error)
            raise NearRpcRequestError(str(error), {"message": str(error)})
        result = doc.get("result")
        if not isinstance(result, Mapping):
            raise NearRpcBadResponse(f"NEAR RPC response has no result object: {str(doc)[:200]}")
        if result.get("error") is not None:
            # Legacy form: a contract failure reported inside `result` (§3.3).
            raise _contract_error(str(result["error"]), result.get("block_height"))
        raw, height, block_hash = result.get("result"), result.get("block_height"), result.get("block_hash")
        if (
            not isinstance(raw, list)
            or not all(isinstance(b, int) and 0 <= b <= 255 for b in raw)
            or not isinstance(height, int)
            or not isinstance(block_hash, str)
        ):
            raise NearRpcBadResponse(f"NEAR RPC call_function result has the wrong shape: {str(result)[:200]}")
        try:
            value = json.loads(bytes(raw).decode("utf-8"))
        except (ValueError, RecursionError):
            raise NearRpcBadResponse(f"view {method_name} returned bytes that are not JSON") from None
        logs = result.get("logs") or []
        if not isinstance(logs, list):
            raise NearRpcBadResponse(f"NEAR RPC call_function logs are not a list: {str(logs)[:200]}")
        self.last_block_height = height
        return ViewResult(value=value, block_height=height, block_hash=block_hash, logs=[str(x) for x in logs])

    # --- typed views (§3.1) -----------------------------------------------------------------------

    async def mt_batch_balance_of(
        self, account_id: str, token_ids: Sequence[str], *, block_id: int | str | None = None
    ) -> list[int]:
        """Balances in base units, in `token_ids` order (the view returns u128 strings)."""
        r = await self.query(
            "mt_batch_balance_of", {"account_id": account_id, "token_ids": list(token_ids)}, block_id=block_id
        )
        if not isinstance(r.value, list) or len(r.value) != len(token_ids):
            raise NearRpcBadResponse(f"mt_batch_balance_of returned {r.value!r} for {len(token_ids)} tokens")
        return [_u128(v, "mt_batch_balance_of") for v in r.value]

    async def mt_balance_of(self, account_id: str, token_id: str) -> int:
        r = await self.query("mt_balance_of", {"account_id": account_id, "token_id": token_id})
        return _u128(r.value, "mt_balance_of")

    async def has_public_key(self, account_id: str, public_key: str) -> bool:
        r = await self.query("has_public_key", {"account_id": account_id, "public_key": public_key})
        return _typed(r.value, bool, "has_public_key")

    async def public_keys_of(self, account_id: str) -> list[str]:
        r = await self.query("public_keys_of", {"account_id": account_id})
        if not isinstance(r.value, list) or not all(isinstance(k, str) for k in r.value):
            raise NearRpcBadResponse(f"public_keys_of returned {r.value!r}")
        return list(r.value)

    async def is_nonce_used(self, account_id: str, nonce_b64: str) -> bool:
        r = await self.query("is_nonce_used", {"account_id": account_id, "nonce": nonce_b64})
        return _typed(r.value, bool, "is_nonce_used")

    async def current_salt(self) -> str:
        """The current salt as hex (e.g. `252812b3`), for versioned nonces (§2.3)."""
        r = await self.query("current_salt", {})
        salt = _typed(r.value, str, "current_salt")
        if not re.fullmatch(r"[0-9a-f]{8}", salt):
            raise NearRpcBadResponse(f"current_salt returned {salt!r}, not 4 bytes of hex")
        return salt

    async def is_valid_salt(self, salt_hex: str) -> bool:
        r = await self.query("is_valid_salt", {"salt": salt_hex})
        return _typed(r.value, bool, "is_valid_salt")

    async def fee(self) -> int:
        """The protocol fee in pips (1 pip = 0.0001 %, §2.8)."""
        r = await self.query("fee", {})
        fee = _typed(r.value, int, "fee")
        if isinstance(fee, bool) or not 0 <= fee <= 1_000_000:
            raise NearRpcBadResponse(f"fee returned {fee!r}, not pips")
        return fee


def _request_error(error: Mapping[str, Any]) -> NearRpcError:
    data, msg = error.get("data"), error.get("message")
    cause = error.get("cause") if isinstance(error.get("cause"), Mapping) else {}
    info = cause.get("info") if isinstance(cause.get("info"), Mapping) else {}
    if cause.get("name") == "CONTRACT_EXECUTION_ERROR":
        vm_error = info.get("vm_error")
        text = vm_error if isinstance(vm_error, str) else data if isinstance(data, str) else str(msg)
        return _contract_error(text, info.get("block_height"))
    # nearcore puts the human text in `data` ("account x does not exist while viewing"); `message`
    # is the generic "Server error".
    text = data if isinstance(data, str) else msg if isinstance(msg, str) else json.dumps(dict(error))
    if cause.get("name") == "UNKNOWN_ACCOUNT":
        return NearRpcUnknownAccount(text, error)
    return NearRpcRequestError(text, error)


def _u128(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise NearRpcBadResponse(f"{what} returned {value!r}, not a u128 decimal string")
    n = int(value)
    if n > U128_MAX:
        raise NearRpcBadResponse(f"{what} returned {value!r}, beyond u128")
    return n


def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NearRpcBadResponse(f"{what} returned {value!r}, expected {kind.__name__}")
    return value
