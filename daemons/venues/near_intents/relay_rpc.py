"""Solver relay v2 taker JSON-RPC over HTTP (`POST …/rpc`), as `docs/near-intents-relay.md` (§n below)
§7 describes it.

The market maker uses two methods:

- `publish_intents(signed_datas, quote_hashes=None)`: publish MultiPayloads. Its main use here is
  cancelling live quote answers by publishing one empty-intents payload per nonce, which makes
  the relay burn those nonces (§7.5 "Cancelling one's own quotes": in-memory at the
  relay, not on chain).
- `get_status(intent_hash)`: `PENDING`, `TX_BROADCASTED`, `SETTLED`, `NOT_FOUND_OR_NOT_VALID`
  (older docs: `NOT_FOUND_OR_NOT_VALID_ANYMORE`, normalised), §7.4.

Usage::

    async with RelayRpcClient(url, jwt) as rpc:
        published = await rpc.publish_intents([signed], quote_hashes=[])
        status = await rpc.get_status(published.intent_hashes[0])

Failures are typed, with the relay's text verbatim:
`RelayPublishFailed` (`result.status == "FAILED"`, `.reason` verbatim, `.code` mapped like the SDK
does), `RelayRpcError` (a JSON-RPC `error`, `.message` verbatim), and `RelayRpcUnavailable` (HTTP
error status, timeout, connection failure, a body that is not a JSON-RPC reply). After a
`publish_intents` that raised `RelayRpcUnavailable` the outcome is unknown (the SDK says "Publish
result is unknown"); retrying is safe because a duplicate comes back as `already processed`,
which `publish_intents` reports as success with `already_processed=True`.

Auth: §1 leaves UNCONFIRMED whether the RPC reads `X-API-Key` (docs) or `Authorization: Bearer`
(SDK); both headers are sent with the same JWT. The JWT is never logged nor shown in reprs.
"""

from __future__ import annotations

import itertools
import json
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict

from daemons.core.logs import get_logger

log = get_logger("relay_rpc", venue="near_intents")


class IntentStatusKind(StrEnum):
    PENDING = "PENDING"
    TX_BROADCASTED = "TX_BROADCASTED"
    SETTLED = "SETTLED"
    NOT_FOUND_OR_NOT_VALID = "NOT_FOUND_OR_NOT_VALID"
    UNKNOWN = "UNKNOWN"  # a status string this client does not know; `status_raw` has it


# §7.4: older docs spell it NOT_FOUND_OR_NOT_VALID_ANYMORE.
_STATUS_ALIASES = {"NOT_FOUND_OR_NOT_VALID_ANYMORE": IntentStatusKind.NOT_FOUND_OR_NOT_VALID}

# §7.3: substrings of `reason` → the SDK's codes (parseFailedPublishError.ts).
_REASON_CODES: tuple[tuple[str, str], ...] = (
    ("deadline has expired", "SIGNATURE_EXPIRED"),
    ("expired", "SIGNATURE_EXPIRED"),
    ("invalid signature", "SIGNATURE_INVALID"),
    ("nonce was already used", "NONCE_USED"),
    ("insufficient balance or overflow", "INSUFFICIENT_BALANCE"),
    ("public key", "PUBLIC_KEY_NOT_EXIST"),
    ("invalid salt", "INVALID_SALT"),
)


def reason_code(reason: str) -> str:
    """The SDK's code for a publish failure reason; `UNKNOWN` when no rule matches."""
    if reason == "internal":
        return "INTERNAL_ERROR"
    for needle, code in _REASON_CODES:
        if needle in reason and (code != "PUBLIC_KEY_NOT_EXIST" or "doesn't exist" in reason):
            return code
    return "UNKNOWN"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class PublishResult(_Model):
    intent_hashes: list[str]
    already_processed: bool = False  # §7.3: "already processed" counts as success
    raw: dict[str, Any]


class IntentStatus(_Model):
    intent_hash: str
    status: IntentStatusKind
    status_raw: str  # exactly as sent, e.g. the old NOT_FOUND_OR_NOT_VALID_ANYMORE
    tx_hash: str | None = None  # data.hash: set for TX_BROADCASTED / SETTLED, optional otherwise
    status_details: str | None = None  # e.g. "FAILED" with NOT_FOUND_OR_NOT_VALID
    raw: dict[str, Any]

    @property
    def is_final(self) -> bool:
        """SETTLED, or NOT_FOUND_OR_NOT_VALID with status_details FAILED. A bare NOT_FOUND can be a
        transient "not seen yet" (§7.4) and TX_BROADCASTED is not final."""
        if self.status is IntentStatusKind.SETTLED:
            return True
        return self.status is IntentStatusKind.NOT_FOUND_OR_NOT_VALID and self.status_details == "FAILED"


class RelayRpcClientError(Exception):
    """Base of this module's errors."""


class RelayRpcUnavailable(RelayRpcClientError):
    """Transport trouble: HTTP error status, timeout, connection failure, or a non-JSON-RPC body.
    For publish the outcome is unknown."""

    def __init__(self, method: str, detail: str, http_status: int | None = None) -> None:
        super().__init__(f"{method}: {detail}")
        self.method = method
        self.http_status = http_status


class RelayRpcError(RelayRpcClientError):
    """A JSON-RPC `error` reply; `message` is the relay's text verbatim."""

    def __init__(self, method: str, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message
        self.code = code
        self.data = data


class RelayPublishFailed(RelayRpcClientError):
    """`publish_intent(s)` answered `status: FAILED`; `reason` verbatim."""

    def __init__(self, reason: str, intent_hashes: list[str], raw: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = reason_code(reason)
        self.intent_hashes = intent_hashes
        self.raw = raw


class RelayRpcClient:
    """See the module docstring."""

    def __init__(
        self,
        url: str,
        jwt: str,
        *,
        timeout_s: float = 30.0,  # the SDK's publish timeout (§7.3)
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self._jwt = jwt
        self.timeout_s = timeout_s
        self._session = session
        self._owns_session = session is None
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"RelayRpcClient(url={self.url!r})"

    async def __aenter__(self) -> RelayRpcClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env off: a proxy from the environment must not see the JWT by accident
            self._session = aiohttp.ClientSession(trust_env=False)
            self._owns_session = True
        return self._session

    async def call(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call; returns `result` or raises `RelayRpcError` / `RelayRpcUnavailable`."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._jwt}",
            "X-API-Key": self._jwt,
        }
        try:
            async with self._http().post(
                self.url,
                params={"method": method},  # harmless debugging aid, as the SDK does (§1)
                data=json.dumps(body, separators=(",", ":")),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise RelayRpcUnavailable(method, f"HTTP {resp.status}: {text[:300]}", resp.status)
        except TimeoutError:
            raise RelayRpcUnavailable(method, f"no answer within {self.timeout_s}s") from None
        except aiohttp.ClientError as exc:
            raise RelayRpcUnavailable(method, f"{type(exc).__name__}: {exc}") from None
        try:
            reply = json.loads(text)
        except ValueError:
            raise RelayRpcUnavailable(
                method, f"HTTP {resp.status}, body is not JSON: {text[:300]}", resp.status
            ) from None
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise RelayRpcUnavailable(method, f"not a JSON-RPC reply: {text[:300]}", resp.status)
        error = reply.get("error")
        if error is not None:
            # §4: string or {code, message}; both kept verbatim
            if isinstance(error, dict):
                message = error.get("message")
                code = error.get("code")
                raise RelayRpcError(
                    method,
                    message if isinstance(message, str) else json.dumps(error),
                    code if isinstance(code, int) and not isinstance(code, bool) else None,
                    error.get("data"),
                )
            raise RelayRpcError(method, error if isinstance(error, str) else json.dumps(error))
        return reply.get("result")

    async def publish_intents(
        self, signed_datas: list[dict[str, Any]], quote_hashes: list[str] | None = None
    ) -> PublishResult:
        """Publish MultiPayloads (§7.3). For nonce invalidation pass empty-intents payloads and no
        quote hashes (the SDK sends `quote_hashes: []`)."""
        result = await self.call(
            "publish_intents", [{"quote_hashes": list(quote_hashes or []), "signed_datas": list(signed_datas)}]
        )
        return self._publish_result("publish_intents", result, "intent_hashes")

    async def publish_intent(self, signed_data: dict[str, Any], quote_hashes: list[str] | None = None) -> PublishResult:
        result = await self.call(
            "publish_intent", [{"quote_hashes": list(quote_hashes or []), "signed_data": signed_data}]
        )
        return self._publish_result("publish_intent", result, "intent_hash")

    @staticmethod
    def _publish_result(method: str, result: Any, hashes_key: str) -> PublishResult:
        if not isinstance(result, dict):
            raise RelayRpcUnavailable(method, f"unexpected result {json.dumps(result)[:300]}")
        hashes = result.get(hashes_key)
        intent_hashes = [hashes] if isinstance(hashes, str) else [h for h in (hashes or []) if isinstance(h, str)]
        status = result.get("status")
        if status == "OK":
            return PublishResult(intent_hashes=intent_hashes, raw=result)
        reason = result.get("reason")
        reason = reason if isinstance(reason, str) else json.dumps(result)
        if status == "FAILED" and "already processed" in reason:
            return PublishResult(intent_hashes=intent_hashes, already_processed=True, raw=result)
        raise RelayPublishFailed(reason, intent_hashes, result)

    async def get_status(self, intent_hash: str) -> IntentStatus:
        result = await self.call("get_status", [{"intent_hash": intent_hash}])
        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            raise RelayRpcUnavailable("get_status", f"unexpected result {json.dumps(result)[:300]}")
        raw_status: str = result["status"]
        try:
            kind = _STATUS_ALIASES.get(raw_status) or IntentStatusKind(raw_status)
        except ValueError:
            log.warning("relay_unknown_intent_status", status=raw_status, intent_hash=intent_hash)
            kind = IntentStatusKind.UNKNOWN
        data = result.get("data")
        if not isinstance(data, dict):
            data = {}
        tx_hash = data.get("hash") if isinstance(data.get("hash"), str) else None
        details = result.get("status_details")
        answered_hash = result.get("intent_hash")
        return IntentStatus(
            intent_hash=answered_hash if isinstance(answered_hash, str) else intent_hash,
            status=kind,
            status_raw=raw_status,
            tx_hash=tx_hash,
            status_details=details if isinstance(details, str) else None,
            raw=result,
        )
