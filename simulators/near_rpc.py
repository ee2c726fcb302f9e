"""A NEAR JSON-RPC node that answers `query` / `call_function` views of the simulated
`intents.near` (`simulators.verifier.VerifierState`), with the real result and error shapes
(`shared/docs/protocols/near-intents.md` §3.1, §3.3).

Result: `{"result": {"result": [bytes of the JSON return], "logs": [], "block_height", "block_hash"}}`.
Errors, as a node sends them: a top-level JSON-RPC `error` for an unknown account / block or a
malformed request, and the legacy `result.error` string for a contract failure (unknown method or a
panic such as a verbatim `DefuseError`); the sticky fault `panic_form` = "error" switches contract
failures to the top-level `CONTRACT_EXECUTION_ERROR` shape instead, since §3.3 says to handle both.

Faults (`POST /_sim/fault`): `timeout` holds the request until the client gives up, `http_500`
answers HTTP 500, `rpc_error` answers a top-level JSON-RPC error (its sticky `value`, if an object,
is sent as the error). The state has no history: a read at an older `block_id` sees current state.

`python -m simulators.near_rpc --host 127.0.0.1 --port 3030` runs it with an empty state.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import base58
from aiohttp import web

from simulators.base import SimServer, serve_standalone
from simulators.verifier import VerifierError, VerifierState

GENESIS_HEIGHT = 150_000_000
_MAX_HOLD_S = 120.0


def _block_hash(height: int) -> str:
    return base58.b58encode(hashlib.sha256(f"sim-block-{height}".encode()).digest()).decode()


class _Panic(Exception):
    """A contract panic inside a view (near-sdk `env::panic_str`)."""


def _panic_text(message: str) -> str:
    # nearcore's Debug rendering of a guest panic; json.dumps matches Rust's escaping for the
    # messages the verifier produces (quotes and backslashes).
    return f"wasm execution failed with error: HostError(GuestPanic {{ panic_msg: {json.dumps(message)} }})"


METHOD_NOT_FOUND_TEXT = "wasm execution failed with error: MethodResolveError(MethodNotFound)"


class NearRpcSimulator(SimServer):
    name = "near-rpc"

    def __init__(self, state: VerifierState, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.state = state
        self.block_height = GENESIS_HEIGHT
        self._release = asyncio.Event()
        self._views: dict[str, Callable[[dict[str, Any]], Any]] = {
            "mt_balance_of": lambda a: str(self.state.balance(_s(a, "account_id"), _s(a, "token_id"))),
            "mt_batch_balance_of": lambda a: [
                str(self.state.balance(_s(a, "account_id"), t)) for t in _str_list(a, "token_ids")
            ],
            "has_public_key": lambda a: self.state.has_public_key(_s(a, "account_id"), _s(a, "public_key")),
            "public_keys_of": lambda a: self.state.public_keys_of(_s(a, "account_id")),
            "is_nonce_used": lambda a: self.state.is_nonce_used(_s(a, "account_id"), _s(a, "nonce")),
            "current_salt": lambda a: self.state.current_salt(),
            "is_valid_salt": lambda a: self.state.is_valid_salt(_s(a, "salt")),
            "fee": lambda a: self.state.fee(),
            "fee_collector": lambda a: self.state.fee_collector,
        }

    # --- SimServer hooks ------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_post("/", self._handle)

    def reset_state(self) -> None:
        # The VerifierState is shared with the other simulators; it is theirs to reset too.
        self._release.set()
        self._release = asyncio.Event()

    def extra_sim_state(self) -> dict[str, Any]:
        return {"block_height": self.block_height, "verifier": self.state.snapshot()}

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
        )

        if self.faults.take("timeout"):
            await self._hold(request)
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": _handler_error("TIMEOUT_ERROR", {}, "Timeout")}, status=408)
        if self.faults.take("http_500"):
            return web.Response(status=500, text="Internal Server Error")
        if self.faults.take("rpc_error"):
            custom = self.faults.value("rpc_error")
            error = custom if isinstance(custom, dict) else _handler_error(
                "UNKNOWN_BLOCK", {}, f"DB Not Found Error: BLOCK HEIGHT: {self.block_height + 1} \n Cause: Unknown"
            )
            return _rpc(rid, error=error)

        if method != "query":
            name = method if isinstance(method, str) else str(method)
            return _validation_error(rid, "METHOD_NOT_FOUND", {"method_name": name}, -32601, "Method not found", name)
        if not isinstance(params, dict) or params.get("request_type") != "call_function":
            text = "simulator: only query request_type call_function is served"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)
        if ("finality" in params) == ("block_id" in params) or params.get("finality") not in (
            None, "final", "optimistic", "near-final"
        ):
            text = "Failed parsing args: exactly one of `finality` (final|optimistic|near-final) or `block_id`"
            return _validation_error(rid, "PARSE_ERROR", {"error_message": text}, -32700, "Parse error", text)

        self.block_height += 1  # one block per read keeps heights moving like a live chain
        height, block_hash = self.block_height, _block_hash(self.block_height)
        block_id = params.get("block_id")
        if block_id is not None and not (
            (isinstance(block_id, int) and not isinstance(block_id, bool) and GENESIS_HEIGHT <= block_id <= height)
            or (isinstance(block_id, str) and block_id in {_block_hash(h) for h in range(max(GENESIS_HEIGHT, height - 256), height + 1)})
        ):
            return _rpc(rid, error=_handler_error(
                "UNKNOWN_BLOCK", {}, f"DB Not Found Error: BLOCK HEIGHT: {block_id} \n Cause: Unknown"
            ))
        if isinstance(block_id, int):
            height, block_hash = block_id, _block_hash(block_id)

        account_id = params.get("account_id")
        if account_id != self.state.contract_id:
            info = {"requested_account_id": account_id, "block_height": height, "block_hash": block_hash}
            return _rpc(rid, error=_handler_error("UNKNOWN_ACCOUNT", info, f"account {account_id} does not exist while viewing"))

        view = self._views.get(str(params.get("method_name")))
        if view is None:
            return self._contract_failure(rid, METHOD_NOT_FOUND_TEXT, height, block_hash)
        try:
            args = json.loads(base64.b64decode(params.get("args_base64") or "", validate=True) or b"{}")
            if not isinstance(args, dict):
                raise ValueError("args are not an object")
        except ValueError:
            return self._contract_failure(rid, _panic_text("Failed to deserialize input from JSON."), height, block_hash)
        try:
            value = view(args)
        except _Panic as exc:
            return self._contract_failure(rid, _panic_text(str(exc)), height, block_hash)
        except VerifierError as exc:
            return self._contract_failure(rid, _panic_text(exc.message), height, block_hash)
        raw = json.dumps(value, separators=(",", ":")).encode()
        return _rpc(rid, result={"result": list(raw), "logs": [], "block_height": height, "block_hash": block_hash})

    def _contract_failure(self, rid: Any, vm_error: str, height: int, block_hash: str) -> web.Response:
        if self.faults.value("panic_form") == "error":
            info = {"vm_error": vm_error, "block_height": height, "block_hash": block_hash}
            return _rpc(rid, error=_handler_error("CONTRACT_EXECUTION_ERROR", info, vm_error))
        # Legacy shape nearcore still returns for view failures (§3.3): an error string in `result`.
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
    error = {"name": "REQUEST_VALIDATION_ERROR", "cause": {"name": cause, "info": info}, "code": code,
             "message": message, "data": data}
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
