"""The taker JSON-RPC's answers (`docs/near-intents-relay.md` (§n below) §7), apart from HTTP: the intents'
statuses for `get_status`, and `publish_intents` / `publish_intent`, which burn nonces
(empty-intent payloads) or execute withdrawals (payloads whose intents are all `ft_withdraw`)
through the verifier. A batch seen before answers FAILED "already processed", which clients
treat as success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemons.venues.near_intents.nep413 import MalformedPayload, quote_hash, signed_data_digest
from simulators.relay.wire import (
    ERR_ALREADY_PROCESSED,
    ERR_BAD_PARAMS,
    ERR_METHOD_NOT_FOUND,
    only_ft_withdrawals,
    utcnow,
)
from simulators.verifier import VerifierError, VerifierState


class TakerIntents:
    """What the relay knows of the takers' intents: the status of each, and the payload hashes
    already published."""

    def __init__(
        self,
        verifier: VerifierState,
        *,
        count: Callable[[str, int], None],
    ) -> None:
        self.verifier = verifier
        self._count = count
        self.statuses: dict[str, dict[str, Any]] = {}  # intent_hash -> get_status result
        self.published: set[str] = set()

    def answer(self, msg: Any, error_shape: Callable[[str, int], Any]) -> dict[str, Any]:
        """The JSON-RPC answer to a parsed request: `publish_intents` / `publish_intent`,
        `get_status`, or an error shaped by `error_shape(message, code)`."""
        rid = msg.get("id") if isinstance(msg, dict) else None
        method = msg.get("method") if isinstance(msg, dict) else None
        params = msg.get("params") if isinstance(msg, dict) else None
        arg = params[0] if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict) else None

        def error(message: str, code: int) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": rid, "error": error_shape(message, code)}

        def result(value: Any) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": rid, "result": value}

        if method in ("publish_intents", "publish_intent"):
            if arg is None:
                return error(ERR_BAD_PARAMS, -32602)
            many = method == "publish_intents"
            signed = arg.get("signed_datas") if many else [arg.get("signed_data")]
            if not isinstance(signed, list) or not signed or not all(isinstance(s, dict) for s in signed):
                return error(ERR_BAD_PARAMS, -32602)
            return result(self.publish(signed, many))
        if method == "get_status":
            if arg is None or not isinstance(arg.get("intent_hash"), str):
                return error(ERR_BAD_PARAMS, -32602)
            return result(self.status(arg["intent_hash"]))
        return error(ERR_METHOD_NOT_FOUND, -32601)

    def set_status(
        self, intent_hash: str, status: str, *, tx_hash: str | None = None, status_details: str | None = None
    ) -> None:
        result: dict[str, Any] = {"intent_hash": intent_hash, "status": status}
        if tx_hash is not None:
            result["data"] = {"hash": tx_hash}
        if status_details is not None:
            result["status_details"] = status_details
        self.statuses[intent_hash] = result

    def status(self, intent_hash: str) -> dict[str, Any]:
        """`get_status`: what `set_status` or a publish recorded, else NOT_FOUND_OR_NOT_VALID."""
        status = self.statuses.get(intent_hash) or {"intent_hash": intent_hash, "status": "NOT_FOUND_OR_NOT_VALID"}
        tx = self.verifier.transactions.get(str((status.get("data") or {}).get("hash")))
        if status.get("status") == "SETTLED" and tx is not None and tx.height > self.verifier.chain.head():
            # executed in the block being produced: broadcast, not settled yet (§7.4 statuses)
            status = {**status, "status": "TX_BROADCASTED"}
        return status

    def publish(self, signed_datas: list[dict[str, Any]], many: bool) -> dict[str, Any]:
        hashes: list[str] = []
        for s in signed_datas:
            try:
                hashes.append(quote_hash(signed_data_digest(s)))
            except (MalformedPayload, ValueError):
                hashes.append("")
        key = "intent_hashes" if many else "intent_hash"

        def shaped(status: str, **extra: Any) -> dict[str, Any]:
            return {"status": status, key: hashes if many else hashes[0], **extra}

        if all(h and h in self.published for h in hashes):
            # a retried publish (§7.3: the SDK treats "already processed" as success)
            return shaped("FAILED", reason=ERR_ALREADY_PROCESSED)
        if only_ft_withdrawals(signed_datas):
            # Withdrawals (docs/poa-bridge.md §8): executed at once as one `execute_intents`, SETTLED with its tx hash.
            try:
                done = self.verifier.execute_ft_withdrawals(signed_datas, utcnow())
            except VerifierError as exc:
                self._count("publish_failed", 1)
                return shaped("FAILED", reason=exc.message)
            for w in done:
                self.set_status(w.intent_hash, "SETTLED", tx_hash=w.tx_hash)
            self.published.update(hashes)
            self._count("ft_withdrawals", len(done))
            return shaped("OK")
        try:
            self.verifier.burn_nonces(signed_datas, utcnow())
        except VerifierError as exc:
            self._count("publish_failed", 1)
            return shaped("FAILED", reason=exc.message)
        self.published.update(hashes)
        self._count("nonces_burned", len(hashes))
        return shaped("OK")
