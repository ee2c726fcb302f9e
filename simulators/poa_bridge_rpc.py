"""The POA bridge's JSON-RPC methods (`docs/poa-bridge.md` (§n below), §2–§7) over the bridge's
state, apart from HTTP: each takes the request's `params[0]` object and returns the `result`,
or raises `RpcError`, which the bridge answers with `error` as a bare string (§1).

Exact error strings for an unsupported chain, bad params or an unknown method are UNCONFIRMED
(the docs only show that `error` is a string, e.g. "Withdrawals not found").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulators.base import Faults
from simulators.poa_bridge_book import BridgeBook
from simulators.poa_bridge_model import WithdrawalShape

WITHDRAWALS_NOT_FOUND = "Withdrawals not found"


class RpcError(Exception):
    """Answered as a JSON-RPC error: the bridge sends `error` as a bare string (§1)."""


def required(p: dict[str, Any], key: str) -> str:
    value = p.get(key)
    if not isinstance(value, str) or not value:
        raise RpcError(f"Invalid params: {key} is required")
    return value


class BridgeRpc:
    """The methods, reading `book`; the sticky faults `amounts_as_strings` and
    `withdrawal_status_shape` switch answer shapes, `withdrawal_status_shape()` gives the default
    one, and `notify_deposit` hints are kept in `notifications`."""

    def __init__(
        self,
        book: BridgeBook,
        faults: Faults,
        *,
        withdrawal_status_shape: Callable[[], WithdrawalShape],
        record: Callable[..., None],
    ) -> None:
        self.book = book
        self.faults = faults
        self._withdrawal_status_shape = withdrawal_status_shape
        self._record = record
        self.notifications: list[dict[str, Any]] = []

    def methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "supported_tokens": self.supported_tokens,
            "deposit_address": self.deposit_address,
            "recent_deposits": self.recent_deposits,
            "notify_deposit": self.notify_deposit,
            "withdrawal_status": self.withdrawal_status,
            "recent_withdrawals": self.recent_withdrawals,
            "withdrawal_estimate": self.withdrawal_estimate,
        }

    def supported_tokens(self, p: dict[str, Any]) -> dict[str, Any]:
        chains = p.get("chains")
        if chains is not None and not (isinstance(chains, list) and all(isinstance(c, str) for c in chains)):
            raise RpcError("Invalid params: chains must be a list of strings")
        return {"tokens": [t.wire() for t in self.book.tokens if not chains or t.chain in chains]}

    def deposit_address(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id, chain = required(p, "account_id"), required(p, "chain")
        if chain not in self.book.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        return {"address": self.book.deposit_address_for(account_id, chain), "chain": chain}

    def recent_deposits(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id = required(p, "account_id")
        chain, status = p.get("chain"), p.get("status")
        if chain is not None and chain not in self.book.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        limit, offset = p.get("limit", 20), p.get("offset", 0)
        if not isinstance(limit, int) or not isinstance(offset, int) or limit < 1 or offset < 0:
            raise RpcError("Invalid params: limit and offset must be non-negative integers")
        limit = min(limit, 100)  # "limit defaults to 20, max 100" (§4)
        matching = [
            d
            for d in reversed(self.book.deposits)  # newest first
            if d.account_id == account_id
            and (chain is None or d.chain == chain)
            and (status is None or self.book.shown_status(d) == status)
        ]
        as_strings = bool(self.faults.value("amounts_as_strings", False))
        return {
            "deposits": [
                d.wire(amounts_as_strings=as_strings, status=self.book.shown_status(d))
                for d in matching[offset : offset + limit]
            ],
            "total": len(matching),
            "limit": limit,
            "offset": offset,
        }

    def notify_deposit(self, p: dict[str, Any]) -> dict[str, Any]:
        entry = {"deposit_address": required(p, "deposit_address"), "tx_hash": required(p, "tx_hash")}
        for key in ("chain", "near_sender_account", "memo"):
            if key in p:
                entry[key] = p[key]
        self.notifications.append(entry)
        self._record("notify_deposit", **entry)
        return {}

    def withdrawal_status(self, p: dict[str, Any]) -> dict[str, Any]:
        found = self.book.visible_withdrawals(required(p, "withdrawal_hash"))
        if not found:
            raise RpcError(WITHDRAWALS_NOT_FOUND)
        shape = self.faults.value("withdrawal_status_shape", self._withdrawal_status_shape())
        if shape == "status_data":
            first = found[0]
            return {"status": first.status, "data": first.data_docs_shape()}
        return {"withdrawals": [{"status": w.status, "data": w.data_list_shape()} for w in found]}

    def recent_withdrawals(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id, chain = required(p, "account_id"), p.get("chain")
        now = self.book.clock.now()
        return {
            "withdrawals": [
                {"status": w.status, "data": w.data_list_shape()}
                for w in reversed(self.book.withdrawals)
                if w.account_id == account_id and (chain is None or w.chain == chain) and w.visible_at <= now
            ]
        }

    def withdrawal_estimate(self, p: dict[str, Any]) -> dict[str, Any]:
        chain, token_id, address = required(p, "chain"), required(p, "token"), required(p, "address")
        if chain not in self.book.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        token = next((t for t in self.book.tokens if t.chain == chain and t.near_token_id == token_id), None)
        if token is None:
            raise RpcError(f"Unsupported token: {token_id}")
        return {
            "tokenAddress": token.defuse_asset_identifier.split(":", 2)[-1],
            "userAddress": address,
            "withdrawalFee": str(token.withdrawal_fee),
            "withdrawalFeeDecimals": token.decimals,
            "token": token.wire(),
        }
