"""The relay simulator's wire records and the frames and decisions that need no server: what a
connection and its subscriptions are, the guaranteed-delivery queue of an instance, a tracked
quote, and the JSON-RPC frames, filters and request checks of `docs/near-intents-relay.md`
(§n below). `protocol.RelayProtocol` holds the live state and does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from simulators.verifier import CheckedAnswer

Envelope = Literal["event", "subscribe"]

# Sim-only strings (undocumented at the real relay).
ERR_UNKNOWN_QUOTE = "quote not found"
ERR_QUOTE_CLOSED = "quote is closed"
ERR_BAD_PARAMS = "invalid params"
ERR_METHOD_NOT_FOUND = "method not found"
ERR_GUARANTEED_NEEDS_INSTANCE = "guaranteed delivery requires the instance_id query parameter"
ERR_GUARANTEED_FILTER = "guaranteed delivery requires empty filters"
ERR_ALREADY_PROCESSED = "already processed"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Subscription:
    kind: Literal["quote", "quote_status"]
    filter: dict[str, Any] | None = None
    guaranteed: bool = False


@dataclass
class Connection:
    id: int
    ws: web.WebSocketResponse
    instance_id: str | None
    subs: dict[str, Subscription] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> bool:
        if self.ws.closed:
            return False
        async with self.lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        return True


@dataclass
class Pending:
    data: dict[str, Any]
    sent_at: float = 0.0


@dataclass
class InstanceQueue:
    """A guaranteed-delivery queue `QS_<partner>_<instance_id>` (§6)."""

    next_seq: int = 1
    unacked: OrderedDict[int, Pending] = field(default_factory=OrderedDict)
    acked: list[int] = field(default_factory=list)


@dataclass
class QuoteRecord:
    data: dict[str, Any]  # the quote request as sent (§3 data)
    sent_at: datetime
    answers: list[CheckedAnswer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    repeats: int = 0
    closed: bool = False
    outcome: dict[str, Any] | None = None
    window: asyncio.Task[Any] | None = None


def reply_frame(rid: Any, *, result: Any = None, error: Any = None) -> str:
    """A JSON-RPC answer: `error` when one is given, else `result`."""
    frame: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    if error is not None:
        frame["error"] = error
    else:
        frame["result"] = result
    return json.dumps(frame)


def event_frame(
    sid: str,
    data: dict[str, Any],
    envelope: Envelope,
    *,
    metadata: dict[str, Any] | None = None,
    seq: int | None = None,
) -> str:
    """An event for subscription `sid`: the working-code envelope (`method: event`, `params.data`)
    or the docs' flat `method: subscribe` one (§3); `seq` for guaranteed delivery (§6)."""
    if envelope == "subscribe":
        params: dict[str, Any] = {"subscription": sid, **data}
    else:
        params = {"subscription": sid, "data": data}
        if metadata is not None:
            params["metadata"] = metadata
    if seq is not None:
        params["seq"] = seq
    return json.dumps({"jsonrpc": "2.0", "method": envelope, "params": params})


def filter_allows(flt: dict[str, Any] | None, asset_in: str, asset_out: str) -> bool:
    """A `quote` subscription's filter (§2): no filter takes every pair."""
    if not flt:
        return True
    return asset_in in (flt.get("tokens_in") or []) and asset_out in (flt.get("tokens_out") or [])


def parse_subscribe(params: Any, instance_id: str | None) -> Subscription | str:
    """The subscription a `subscribe` request asks for, or the error string it is refused with
    (`["quote", filter?]`, `["quote_status"]`, `["quote_status", null, true]`, §2, §6)."""
    if not isinstance(params, list) or not params or params[0] not in ("quote", "quote_status"):
        return ERR_BAD_PARAMS
    kind = params[0]
    flt = params[1] if len(params) > 1 else None
    guaranteed = len(params) > 2 and params[2] is True
    if flt is not None and not isinstance(flt, dict):
        return ERR_BAD_PARAMS
    if guaranteed:
        # §6: JWT + instance_id, and "the second parameter (filters) must be empty"
        if not instance_id:
            return ERR_GUARANTEED_NEEDS_INSTANCE
        if flt:
            return ERR_GUARANTEED_FILTER
    return Subscription(kind=kind, filter=flt or None, guaranteed=guaranteed)


def quote_request(
    asset_in: str,
    asset_out: str,
    exact_amount_in: int | str | None,
    exact_amount_out: int | str | None,
    quote_id: str | None,
    min_deadline_ms: int | str,
    omit: list[str] | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """A quote request's `data` (§3), amounts as decimal strings; `omit`/`extra` break its shape."""
    data: dict[str, Any] = {
        "quote_id": quote_id or str(uuid.uuid4()),
        "defuse_asset_identifier_in": asset_in,
        "defuse_asset_identifier_out": asset_out,
    }
    if exact_amount_in is not None:
        data["exact_amount_in"] = str(exact_amount_in)
    if exact_amount_out is not None:
        data["exact_amount_out"] = str(exact_amount_out)
    data["min_deadline_ms"] = min_deadline_ms
    for key in omit or []:
        data.pop(key, None)
    data.update(extra or {})
    return data


def only_ft_withdrawals(signed_datas: list[dict[str, Any]]) -> bool:
    """True when every payload's message carries intents and all of them are `ft_withdraw`
    (anything else keeps the nonce-burn path and its refusals)."""
    for s in signed_datas:
        payload = s.get("payload")
        message = payload.get("message") if isinstance(payload, dict) else None
        try:
            doc = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            return False
        intents = doc.get("intents") if isinstance(doc, dict) else None
        if not isinstance(intents, list) or not intents:
            return False
        if not all(isinstance(i, dict) and i.get("intent") == "ft_withdraw" for i in intents):
            return False
    return True
