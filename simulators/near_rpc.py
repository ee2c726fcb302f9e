"""A NEAR JSON-RPC node that answers `query` / `call_function` views of the simulated
`intents.near` (`simulators.verifier.VerifierState`), `block`, and `tx` / `EXPERIMENTAL_tx_status`
for the transactions the simulated verifier executed, with the real result and error shapes
(docs/near-rpc.md).

It behaves like the chain, not like a database:
- Heights advance with time (`simulators.chain.Chain`, ~0.6 s blocks), not with reads; a view at
  `final` is served as of the final block, a few blocks behind `optimistic`, so a balance read
  right after a fill can predate it. A read at an older `block_id` sees that block's balances and
  nonces (keys, salts and the fee are served as they are now).
- Nonces are cleaned up after their deadline (`VerifierState.nonce_cleanup_after_s`), so
  `is_nonce_used` turns false again for an executed intent.
- Each client (remote address) may send `rate_limit_per_min` requests in any 60 s; past that it
  gets HTTP 429 with `Retry-After` (NEAR's RPC setup page: the deprecated `*.near.org` endpoints
  allow 30/min per IP; providers limit too, answering 429; the 429 body shape is UNCONFIRMED, the
  client relies on the status and the header).

Result: `{"result": {"result": [bytes of the JSON return], "logs": [], "block_height", "block_hash"}}`.
Errors, as a node sends them: a top-level JSON-RPC `error` for an unknown account / block /
transaction or a malformed request, and the legacy `result.error` string for a contract failure
(unknown method or a panic such as a verbatim `DefuseError`); the sticky fault `panic_form` =
"error" switches contract failures to the top-level `CONTRACT_EXECUTION_ERROR` shape instead.

Faults (`POST /_sim/fault`): `timeout` holds the request until the client gives up, `http_500`
answers HTTP 500, `http_429` answers 429 (its sticky `value` is the Retry-After in seconds),
`rpc_error` answers a top-level JSON-RPC error (its sticky `value`, if an object, is sent as the
error). `rate_limit` (sticky `value`: requests per minute, or `"off"`) changes the rate limit.

`python -m simulators.near_rpc --host 127.0.0.1 --port 3030` runs it with an empty state.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from simulators.base import SimServer, serve_standalone
from simulators.chain import GENESIS_HEIGHT
from simulators.verifier import VerifierError, VerifierState

__all__ = ["GENESIS_HEIGHT", "DEFAULT_RATE_LIMIT_PER_MIN", "NearRpcSimulator"]

_MAX_HOLD_S = 120.0
# Per client, in any 60 s. A provider's free tier is of this order (FASTNEAR's was quoted at
# 50/min; the deprecated near.org endpoints allow 30/min, docs.near.org api/rpc/setup): the stack
# must live within a budget, and a test that wants none passes `rate_limit_per_min=None`.
DEFAULT_RATE_LIMIT_PER_MIN = 120


class _Panic(Exception):
    """A contract panic inside a view (near-sdk `env::panic_str`)."""


def _panic_text(message: str) -> str:
    # nearcore's Debug rendering of a guest panic; json.dumps matches Rust's escaping for the
    # messages the verifier produces (quotes and backslashes).
    return f"wasm execution failed with error: HostError(GuestPanic {{ panic_msg: {json.dumps(message)} }})"


METHOD_NOT_FOUND_TEXT = "wasm execution failed with error: MethodResolveError(MethodNotFound)"


class NearRpcSimulator(SimServer):
    name = "near-rpc"

    def __init__(
        self,
        state: VerifierState,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limit_per_min: int | None = DEFAULT_RATE_LIMIT_PER_MIN,
    ) -> None:
        super().__init__(host, port)
        self.state = state
        self.chain = state.chain
        self.rate_limit_per_min = rate_limit_per_min
        self._configured_rate_limit = rate_limit_per_min
        self._windows: dict[str, deque[float]] = {}
        self.rate_limited = 0
        self._release = asyncio.Event()
        # each view is served as of block `h`
        self._views: dict[str, Callable[[dict[str, Any], int], Any]] = {
            "mt_balance_of": lambda a, h: str(self.state.balance_at(_s(a, "account_id"), _s(a, "token_id"), h)),
            "mt_batch_balance_of": lambda a, h: [
                str(self.state.balance_at(_s(a, "account_id"), t, h)) for t in _str_list(a, "token_ids")
            ],
            "has_public_key": lambda a, h: self.state.has_public_key(_s(a, "account_id"), _s(a, "public_key")),
            "public_keys_of": lambda a, h: self.state.public_keys_of(_s(a, "account_id")),
            "is_nonce_used": lambda a, h: self.state.is_nonce_used(_s(a, "account_id"), _s(a, "nonce"), h),
            "current_salt": lambda a, h: self.state.current_salt(),
            "is_valid_salt": lambda a, h: self.state.is_valid_salt(_s(a, "salt")),
            "fee": lambda a, h: self.state.fee(),
            "fee_collector": lambda a, h: self.state.fee_collector,
        }

    @property
    def block_height(self) -> int:
        return self.chain.head()

    # --- SimServer hooks ------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._handle)

    def reset_state(self) -> None:
        # The VerifierState is shared with the other simulators; it is theirs to reset too.
        self._release.set()
        self._release = asyncio.Event()
        self._windows.clear()
        self.rate_limit_per_min = self._configured_rate_limit

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "block_height": self.chain.head(),
            "final_height": self.chain.final(),
            "rate_limit_per_min": self.rate_limit_per_min,
            "rate_limited": self.rate_limited,
            "verifier": self.state.snapshot(),
        }

    def _over_rate(self, client: str) -> float | None:
        """Seconds until `client` may send again, or None if this request is within the limit
        (counted: a refused request does not use the window, as a provider's limiter works)."""
        override = self.faults.value("rate_limit")
        if override is not None:
            self.rate_limit_per_min = None if override == "off" else int(override)
        limit = self.rate_limit_per_min
        if limit is None:
            return None
        now = time.monotonic()
        window = self._windows.setdefault(client, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= limit:
            return max(0.001, window[0] + 60.0 - now)
        window.append(now)
        return None

    async def stop(self) -> None:
        self._release.set()  # let held (`timeout`) requests finish so shutdown does not wait on them
        await super().stop()

    # --- JSON-RPC ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json(loads=json.loads)
        except ValueError as exc:
            self.record("bad_request", error=str(exc))
            return _validation_error(None, "PARSE_ERROR", {"error_message": str(exc)}, -32700, "Parse error", str(exc))
        rid = body.get("id") if isinstance(body, dict) else None
        params = body.get("params") if isinstance(body, dict) else None
        method = body.get("method") if isinstance(body, dict) else None
        self.record(
            "rpc",
            method=method,
            method_name=params.get("method_name") if isinstance(params, dict) else None,
            account_id=params.get("account_id") if isinstance(params, dict) else None,
            finality=params.get("finality") if isinstance(params, dict) else None,
            block_id=params.get("block_id") if isinstance(params, dict) else None,
            args=_decode_args_for_record(params),
            agent=request.headers.get("User-Agent"),
        )

        retry_after: float | None
        if self.faults.take("http_429"):
            value = self.faults.value("http_429")
            retry_after = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 1.0
        else:
            retry_after = self._over_rate(request.remote or "?")
        if retry_after is not None:
            self.rate_limited += 1
            self.record("rate_limited", retry_after_s=retry_after)
            return _too_many(rid, retry_after)
        if self.faults.take("timeout"):
            await self._hold(request)
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": _handler_error("TIMEOUT_ERROR", {}, "Timeout")}, status=408
            )
        if self.faults.take("http_500"):
            return web.Response(status=500, text="Internal Server Error")
        if self.faults.take("rpc_error"):
            custom = self.faults.value("rpc_error")
            error = (
                custom
                if isinstance(custom, dict)
                else _handler_error(
                    "UNKNOWN_BLOCK", {}, f"DB Not Found Error: BLOCK HEIGHT: {self.chain.head() + 1} \n Cause: Unknown"
                )
            )
            return _rpc(rid, error=error)

        if method == "block":
            return self._block(rid, params)
        if method in ("tx", "EXPERIMENTAL_tx_status"):
            return self._tx(rid, params)
        if method != "query":
            name = method if isinstance(method, str) else str(method)
            return _validation_error(rid, "METHOD_NOT_FOUND", {"method_name": name}, -32601, "Method not found", name)
        if not isinstance(params, dict) or params.get("request_type") != "call_function":
            text = "simulator: only query request_type call_function is served"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)
        if ("finality" in params) == ("block_id" in params) or params.get("finality") not in (
            None,
            "final",
            "optimistic",
            "near-final",
        ):
            text = "Failed parsing args: exactly one of `finality` (final|optimistic|near-final) or `block_id`"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)

        height_or_error = self._height_for(rid, params)
        if isinstance(height_or_error, web.Response):
            return height_or_error
        height, block_hash_ = height_or_error, self.chain.hash_of(height_or_error)

        account_id = params.get("account_id")
        if account_id != self.state.contract_id:
            info = {"requested_account_id": account_id, "block_height": height, "block_hash": block_hash_}
            return _rpc(
                rid, error=_handler_error("UNKNOWN_ACCOUNT", info, f"account {account_id} does not exist while viewing")
            )

        view = self._views.get(str(params.get("method_name")))
        if view is None:
            return self._contract_failure(rid, METHOD_NOT_FOUND_TEXT, height, block_hash_)
        try:
            args = json.loads(base64.b64decode(params.get("args_base64") or "", validate=True) or b"{}")
            if not isinstance(args, dict):
                raise ValueError("args are not an object")
        except ValueError:
            return self._contract_failure(
                rid, _panic_text("Failed to deserialize input from JSON."), height, block_hash_
            )
        try:
            value = view(args, height)
        except _Panic as exc:
            return self._contract_failure(rid, _panic_text(str(exc)), height, block_hash_)
        except VerifierError as exc:
            return self._contract_failure(rid, _panic_text(exc.message), height, block_hash_)
        raw = json.dumps(value, separators=(",", ":")).encode()
        return _rpc(rid, result={"result": list(raw), "logs": [], "block_height": height, "block_hash": block_hash_})

    def _height_for(self, rid: Any, params: dict[str, Any]) -> int | web.Response:
        """The block a read names: its `finality`, or a `block_id` (height or hash) the node
        still keeps. Unknown or future blocks are `UNKNOWN_BLOCK`, dropped ones
        `GARBAGE_COLLECTED_BLOCK` (nearcore's cause names)."""
        block_id = params.get("block_id")
        if block_id is None:
            return self.chain.at_finality(str(params.get("finality") or "final"))
        head = self.chain.head()
        height: int | None = None
        if isinstance(block_id, int) and not isinstance(block_id, bool):
            height = block_id if GENESIS_HEIGHT <= block_id <= head else None
        elif isinstance(block_id, str):
            height = self.chain.height_of_hash(block_id)
        if height is None:
            return _rpc(
                rid,
                error=_handler_error(
                    "UNKNOWN_BLOCK", {}, f"DB Not Found Error: BLOCK HEIGHT: {block_id} \n Cause: Unknown"
                ),
            )
        if height < self.chain.oldest_kept():
            return _rpc(
                rid,
                error=_handler_error(
                    "GARBAGE_COLLECTED_BLOCK",
                    {"block_height": height, "block_hash": self.chain.hash_of(height)},
                    f"The data for block #{height} is garbage collected on this node, use an archival node",
                ),
            )
        return height

    def _block(self, rid: Any, params: Any) -> web.Response:
        if (
            not isinstance(params, dict)
            or (("finality" in params) == ("block_id" in params))
            or params.get("finality", "final") not in ("final", "optimistic", "near-final")
        ):
            text = "Failed parsing args: exactly one of `finality` (final|optimistic|near-final) or `block_id`"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)
        found = self._height_for(rid, params)
        if isinstance(found, web.Response):
            return found
        ts = self.chain.timestamp_ns(found)
        header = {
            "height": found,
            "hash": self.chain.hash_of(found),
            "prev_hash": self.chain.hash_of(found - 1),
            "timestamp": ts,
            "timestamp_nanosec": str(ts),
            "epoch_id": self.chain.hash_of(GENESIS_HEIGHT),
        }
        return _rpc(rid, result={"author": "sim.poolv1.near", "header": header, "chunks": []})

    def _tx(self, rid: Any, params: Any) -> web.Response:
        """`tx` / `EXPERIMENTAL_tx_status`: params `[tx_hash, sender_account_id]` or an object
        with `tx_hash`, `sender_account_id` and optional `wait_until`. A transaction is known once
        the block it executed in is produced; `final_execution_status` says whether that block is
        final yet. A node waits for `wait_until`; this one answers at once with what it has."""
        if isinstance(params, list) and len(params) == 2:
            tx_hash, sender = params
        elif isinstance(params, dict):
            tx_hash, sender = params.get("tx_hash"), params.get("sender_account_id")
        else:
            tx_hash = sender = None
        if not isinstance(tx_hash, str) or not isinstance(sender, str):
            text = "Failed parsing args: tx_hash and sender_account_id are required"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)
        tx = self.state.transactions.get(tx_hash)
        if tx is None or tx.height > self.chain.head():
            return _rpc(
                rid,
                error=_handler_error(
                    "UNKNOWN_TRANSACTION",
                    {"requested_transaction_hash": tx_hash},
                    f"Transaction {tx_hash} doesn't exist",
                ),
            )
        final = tx.height <= self.chain.final()
        # the transaction converts to its receipt in one block, which executes in the next
        included = tx.height - 1
        outcome = {
            "logs": [],
            "receipt_ids": [tx_hash],
            "gas_burnt": 2_428_000_000_000,
            "tokens_burnt": "0",
            "executor_id": tx.signer_id,
            "status": {"SuccessReceiptId": tx_hash},
        }
        receipt = {
            "logs": list(tx.logs),
            "receipt_ids": [],
            "gas_burnt": 30_000_000_000_000,
            "tokens_burnt": "0",
            "executor_id": tx.receiver_id,
            "status": {"SuccessValue": ""},
        }
        return _rpc(
            rid,
            result={
                "final_execution_status": "FINAL" if final else "EXECUTED_OPTIMISTIC",
                "status": {"SuccessValue": ""},
                "transaction": {
                    "hash": tx_hash,
                    "signer_id": tx.signer_id,
                    "receiver_id": tx.receiver_id,
                    "actions": [{"FunctionCall": {"method_name": tx.method_name}}],
                },
                "transaction_outcome": {"id": tx_hash, "block_hash": self.chain.hash_of(included), "outcome": outcome},
                "receipts_outcome": [{"id": tx_hash, "block_hash": self.chain.hash_of(tx.height), "outcome": receipt}],
            },
        )

    def _contract_failure(self, rid: Any, vm_error: str, height: int, block_hash: str) -> web.Response:
        if self.faults.value("panic_form") == "error":
            info = {"vm_error": vm_error, "block_height": height, "block_hash": block_hash}
            return _rpc(rid, error=_handler_error("CONTRACT_EXECUTION_ERROR", info, vm_error))
        # Legacy shape nearcore still returns for view failures (docs/near-rpc.md): an error string in
        # `result`.
        return _rpc(rid, result={"error": vm_error, "logs": [], "block_height": height, "block_hash": block_hash})

    async def _hold(self, request: web.Request) -> None:
        """Keep the request open until the client hangs up, the sim stops or resets, or a cap."""
        release = self._release
        loop = asyncio.get_running_loop()
        until = loop.time() + _MAX_HOLD_S
        while not release.is_set() and loop.time() < until:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            try:
                await asyncio.wait_for(release.wait(), 0.05)
            except TimeoutError:
                pass


# --- helpers -------------------------------------------------------------------------------------


def _s(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        # near-sdk's argument deserialization panic text.
        raise _Panic("Failed to deserialize input from JSON.")
    return value


def _str_list(args: dict[str, Any], key: str) -> list[str]:
    value = args.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Panic("Failed to deserialize input from JSON.")
    return value


def _decode_args_for_record(params: Any) -> Any:
    if not isinstance(params, dict):
        return None
    try:
        return json.loads(base64.b64decode(params.get("args_base64") or "", validate=True) or b"{}")
    except ValueError:
        return params.get("args_base64")


def _too_many(rid: Any, retry_after_s: float) -> web.Response:
    # UNCONFIRMED body shape (providers differ); the status and Retry-After are what clients read.
    seconds = max(1, int(retry_after_s + 0.999))
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "error": {
            "code": -429,
            "message": "Too Many Requests",
            "data": f"rate limit exceeded, retry after {seconds} s",
        },
    }
    return web.json_response(body, status=429, headers={"Retry-After": str(seconds)})


def _rpc(rid: Any, *, result: Any = None, error: Any = None) -> web.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result
    return web.json_response(body)


def _handler_error(cause: str, info: dict[str, Any], data: str) -> dict[str, Any]:
    # nearcore's structured error: name/cause/info, plus legacy code/message/data.
    return {
        "name": "HANDLER_ERROR",
        "cause": {"name": cause, "info": info},
        "code": -32000,
        "message": "Server error",
        "data": data,
    }


def _validation_error(rid: Any, cause: str, info: dict[str, Any], code: int, message: str, data: str) -> web.Response:
    error = {
        "name": "REQUEST_VALIDATION_ERROR",
        "cause": {"name": cause, "info": info},
        "code": code,
        "message": message,
        "data": data,
    }
    return web.json_response({"jsonrpc": "2.0", "id": rid, "error": error}, status=400)


# --- standalone ---------------------------------------------------------------------------------------


async def _serve(host: str, port: int, state: VerifierState) -> None:
    sim = NearRpcSimulator(state, host=host, port=port)
    await serve_standalone(
        [sim],
        lambda u: f"near-rpc simulator listening on {u[0]} (contract {state.contract_id}, salt {state.current_salt()})",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated NEAR JSON-RPC serving intents.near views")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3030, help="0 lets the OS choose")
    parser.add_argument("--contract-id", default="intents.near")
    parser.add_argument("--fee-pips", type=int, default=1)
    parser.add_argument("--salt", default=None, help="initial salt, 8 hex chars (random by default)")
    args = parser.parse_args(argv)
    state = VerifierState(contract_id=args.contract_id, fee_pips=args.fee_pips, salt_hex=args.salt)
    asyncio.run(_serve(args.host, args.port, state))


if __name__ == "__main__":
    main()
