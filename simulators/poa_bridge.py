"""POA bridge simulator: the JSON-RPC 2.0 API of `bridge.chaindefuser.com/rpc` (as
`docs/poa-bridge.md` (§n below) describes it), served at `POST /rpc` and `POST /`.

What it models:

- `supported_tokens` for the two POA assets quoteloop can fund (BTC on `btc:mainnet`, EURe on
  `eth:100`); `deposit_address` stable per (account, chain) and derived from them, so it is the
  same across restarts; any other chain gets the bridge's error shape (a bare string `error`).
- Deposits are scripted by tests (`add_deposit()` or `POST /_sim/deposit`): they show in
  `recent_deposits` as PENDING, then after `credit_after_s` of simulated time either become
  COMPLETED and are credited once through the `credit(account_id, token_id, amount)` callback
  (the all-in-one runner passes the verifier simulator's deposit), or become FAILED, or stay
  PENDING forever (`never_credit`). A deposit below the token's `min_deposit_amount` is never
  swept ("minimum amount to trigger transfer"), so it stays PENDING. A FAILED deposit can later
  be completed by hand (`POST /_sim/deposit/complete`), as the bridge's operators do (§4).
- `notify_deposit` is recorded and changes no timing: it is only a hint to the real bridge.
- Withdrawals are scripted the same way (`add_withdrawal()` / `POST /_sim/withdrawal`), or
  follow from the burns the simulated verifier executes (`watch_burns(verifier)`):
  unknown until `visible_after_s` ("Withdrawals not found", which clients treat as transient),
  then PENDING, then COMPLETED (with a `transfer_tx_hash`) or FAILED, or PENDING forever.
  `withdrawal_status` answers in the SDK shape `{withdrawals: [...]}` by default or the docs'
  `{status, data}` (constructor `withdrawal_status_shape`, or the sticky fault value
  `{"name": "withdrawal_status_shape", "value": "status_data"}`).

Time is a `SimClock`: real time plus an offset that `advance()` / `POST /_sim/advance` moves, or
frozen (tests) so nothing happens until a test advances it. A background timer applies due
transitions while the clock runs in real time, so the local stack needs no polling to credit.

Faults (`POST /_sim/fault`): `http_500`, `timeout` (the answer is held until the client gives
up; released on reset/stop), `rpc_error` (a JSON-RPC error; sticky `value` sets its message),
and the shape switches `amounts_as_strings` (old docs) and `withdrawal_status_shape`.

Exact error strings for an unsupported chain, bad params or an unknown method are UNCONFIRMED
(the docs only show that `error` is a string, e.g. "Withdrawals not found").

`PoaBridgeSimulator` is the server: the tokens, clock and deposit/withdrawal records are
`poa_bridge_model.py`, the scripted state and its timed transitions `poa_bridge_book.py`, the
JSON-RPC methods `poa_bridge_rpc.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from simulators.base import SimServer, serve_standalone
from simulators.chain import Chain
from simulators.poa_bridge_book import BridgeBook
from simulators.poa_bridge_model import (
    DEFAULT_TOKENS,
    Credit,
    DepositOutcome,
    ScriptError,
    SimClock,
    SimDeposit,
    SimToken,
    SimWithdrawal,
    WithdrawalOutcome,
    WithdrawalShape,
    iso,
)
from simulators.poa_bridge_rpc import WITHDRAWALS_NOT_FOUND, BridgeRpc, RpcError

if TYPE_CHECKING:  # annotations only: the verifier is attached at run time
    from simulators.verifier import FtWithdrawal, VerifierState

# importable from here: the model the tests and the all-in-one runner script against
__all__ = [
    "DEFAULT_TOKENS",
    "WITHDRAWALS_NOT_FOUND",
    "WITHDRAW_TO",
    "Credit",
    "DepositOutcome",
    "PoaBridgeSimulator",
    "RpcError",
    "ScriptError",
    "SimClock",
    "SimDeposit",
    "SimToken",
    "SimWithdrawal",
    "WithdrawalOutcome",
    "WithdrawalShape",
    "main",
]

WITHDRAW_TO = "WITHDRAW_TO:"  # the memo that makes a POA token burn a withdrawal (§8)


# --- control-route bodies ----------------------------------------------------------------------


def _amount(value: Any) -> int:
    if isinstance(value, (bool, float)):
        raise ValueError("amount is integer base units (a decimal string), never float")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"amount must be decimal digits, got {value!r}")
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"amount must be a non-negative integer, got {value!r}")


Amount = Annotated[int, BeforeValidator(_amount)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DepositScript(_Body):
    account_id: str = Field(validation_alias=AliasChoices("account_id", "account"))
    chain: str
    asset: str  # intents token id (`nep141:…`) or the bare near token id
    amount: Amount
    tx_hash: str | None = None
    outcome: DepositOutcome = "credit"
    credit_after_s: float = Field(default=0.0, ge=0)
    sender: str | None = None


class WithdrawalScript(_Body):
    withdrawal_hash: str
    account_id: str = Field(validation_alias=AliasChoices("account_id", "account"))
    chain: str
    asset: str
    amount: Amount
    address: str
    outcome: WithdrawalOutcome = "complete"
    complete_after_s: float = Field(default=0.0, ge=0)
    visible_after_s: float = Field(default=0.0, ge=0)


class AdvanceBody(_Body):
    seconds: float = Field(ge=0)


class CompleteBody(_Body):
    tx_hash: str


# --- the simulator -----------------------------------------------------------------------------


class PoaBridgeSimulator(SimServer):
    name = "poa-bridge"

    def __init__(
        self,
        credit: Credit,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: SimClock | None = None,
        tokens: tuple[SimToken, ...] = DEFAULT_TOKENS,
        withdrawal_status_shape: WithdrawalShape = "withdrawals_list",
        chain: Chain | None = None,
    ) -> None:
        super().__init__(host, port)
        # with the simulated chain, a deposit shows COMPLETED once the block holding its mint is
        # produced, as the bridge sees it on NEAR (without one, at once)
        self.book = BridgeBook(credit, clock or SimClock(), tokens, chain, self.record)
        self.withdrawal_status_shape: WithdrawalShape = withdrawal_status_shape
        self.rpc = BridgeRpc(
            self.book, self.faults, withdrawal_status_shape=lambda: self.withdrawal_status_shape, record=self.record
        )
        self.deposits: list[SimDeposit] = self.book.deposits
        self.withdrawals: list[SimWithdrawal] = self.book.withdrawals
        self.notifications: list[dict[str, Any]] = self.rpc.notifications
        self._changed = asyncio.Event()
        self._release_hung = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    @property
    def credit(self) -> Credit:
        return self.book.credit

    @property
    def chain(self) -> Chain | None:
        return self.book.chain

    @property
    def clock(self) -> SimClock:
        return self.book.clock

    @property
    def tokens(self) -> tuple[SimToken, ...]:
        return self.book.tokens

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> str:
        url = await super().start()
        self._timer = asyncio.create_task(self._run_timer(), name="poa-bridge-sim-timer")
        return url

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        self._release_hung.set()  # let any `timeout`-held answer finish so cleanup is quick
        await super().stop()

    def reset_state(self) -> None:
        self.book.clear()
        self.notifications.clear()
        self._release_hung.set()
        self._release_hung = asyncio.Event()
        self._changed.set()

    def extra_sim_state(self) -> dict[str, Any]:
        return {"now": iso(self.clock.now()), **self.book.state(), "notifications": self.notifications}

    # --- scripting (Python API; the /_sim/ routes call these) ------------------------------------

    def token_for(self, chain: str, asset: str) -> SimToken:
        return self.book.token_for(chain, asset)

    def deposit_address_for(self, account_id: str, chain: str) -> str:
        """Stable per (account, chain): derived, so it survives restarts like the real one."""
        return self.book.deposit_address_for(account_id, chain)

    @property
    def chains(self) -> list[str]:
        return self.book.chains

    def add_deposit(
        self,
        account_id: str,
        chain: str,
        asset: str,
        amount: int,
        *,
        tx_hash: str | None = None,
        outcome: DepositOutcome = "credit",
        credit_after_s: float = 0.0,
        sender: str | None = None,
    ) -> SimDeposit:
        """A transfer landed on `account_id`'s deposit address for `chain`."""
        deposit = self.book.add_deposit(
            account_id,
            chain,
            asset,
            amount,
            tx_hash=tx_hash,
            outcome=outcome,
            credit_after_s=credit_after_s,
            sender=sender,
        )
        self._tick()
        return deposit

    def complete_deposit(self, tx_hash: str) -> SimDeposit:
        """An operator resolves a FAILED (or stuck) deposit: credited once, now COMPLETED."""
        return self.book.complete_deposit(tx_hash)

    def add_withdrawal(
        self,
        withdrawal_hash: str,
        account_id: str,
        chain: str,
        asset: str,
        amount: int,
        address: str,
        *,
        outcome: WithdrawalOutcome = "complete",
        complete_after_s: float = 0.0,
        visible_after_s: float = 0.0,
    ) -> SimWithdrawal:
        """The burn `withdrawal_hash` (a NEAR tx) was executed; the bridge will pick it up."""
        withdrawal = self.book.add_withdrawal(
            withdrawal_hash,
            account_id,
            chain,
            asset,
            amount,
            address,
            outcome=outcome,
            complete_after_s=complete_after_s,
            visible_after_s=visible_after_s,
        )
        self._tick()
        return withdrawal

    def watch_burns(
        self,
        verifier: VerifierState,
        *,
        outcome: WithdrawalOutcome = "complete",
        complete_after_s: float = 0.0,
        visible_after_s: float = 0.0,
    ) -> None:
        """See every POA burn the simulated verifier executes, as the real bridge indexes them:
        an `ft_withdraw` whose `receiver_id` is one of our tokens and whose memo is
        `WITHDRAW_TO:<address>` (§8) becomes a scripted withdrawal keyed by the burn's NEAR tx
        hash. `burn_script` holds the outcome and timing; tests may change it between burns."""
        self.burn_script: dict[str, Any] = {
            "outcome": outcome,
            "complete_after_s": complete_after_s,
            "visible_after_s": visible_after_s,
        }
        verifier.withdrawal_listeners.append(self._on_burn)

    def _on_burn(self, burn: FtWithdrawal) -> None:
        token = next((t for t in self.tokens if t.near_token_id == burn.token), None)
        memo = burn.memo or ""
        if token is None or burn.receiver_id != burn.token or not memo.startswith(WITHDRAW_TO):
            return  # not a POA withdrawal: the bridge never hears of it
        self.add_withdrawal(
            burn.tx_hash,
            burn.account_id,
            token.chain,
            token.near_token_id,
            burn.amount,
            memo.removeprefix(WITHDRAW_TO),
            **self.burn_script,
        )

    def advance(self, seconds: float) -> None:
        """Move simulated time and apply whatever became due."""
        self.clock.advance(seconds)
        self._tick()

    # --- time ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.book.tick()
        self._changed.set()

    async def _run_timer(self) -> None:
        while True:
            self._tick()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.book.next_due_in())

    # --- routes --------------------------------------------------------------------------------

    def venue_routes(self, app: web.Application) -> None:
        app.router.add_post("/rpc", self._rpc)
        app.router.add_post("/", self._rpc)
        app.router.add_post("/_sim/deposit", self._sim_deposit)
        app.router.add_post("/_sim/deposit/complete", self._sim_complete)
        app.router.add_post("/_sim/withdrawal", self._sim_withdrawal)
        app.router.add_post("/_sim/advance", self._sim_advance)

    async def _rpc(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text(), parse_float=Decimal)
        except ValueError:
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": "Parse error"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": "Invalid request"}, status=400)
        rpc_id = body.get("id")
        method = body.get("method")
        params = body.get("params")
        self.record("rpc", method=method, params=_jsonable(params))

        if self.faults.take("timeout"):
            await self._release_hung.wait()
        if self.faults.take("http_500"):
            return web.Response(status=500, text="Internal Server Error")
        if self.faults.take("rpc_error"):
            message = self.faults.value("rpc_error")
            return self._error(rpc_id, message if isinstance(message, str) else "Internal error")

        self._tick()
        try:
            if params is None:
                params = [{}]
            if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], dict):
                raise RpcError("Invalid params: expected [ {…} ]")
            handler = self.rpc.methods().get(str(method))
            if handler is None:
                raise RpcError(f"Method not found: {method}")
            result = handler(params[0])
        except RpcError as exc:
            return self._error(rpc_id, str(exc))
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    @staticmethod
    def _error(rpc_id: Any, message: str) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "error": message})

    # --- /_sim/ routes -------------------------------------------------------------------------

    async def _sim_deposit(self, request: web.Request) -> web.Response:
        async def run() -> dict[str, Any]:
            s = DepositScript.model_validate(await request.json())
            d = self.add_deposit(
                s.account_id,
                s.chain,
                s.asset,
                s.amount,
                tx_hash=s.tx_hash,
                outcome=s.outcome,
                credit_after_s=s.credit_after_s,
                sender=s.sender,
            )
            return d.wire(amounts_as_strings=True) | {"below_min_deposit": d.amount < d.token.min_deposit_amount}

        return await _control(run)

    async def _sim_complete(self, request: web.Request) -> web.Response:
        async def run() -> dict[str, Any]:
            d = self.complete_deposit(CompleteBody.model_validate(await request.json()).tx_hash)
            return d.wire(amounts_as_strings=True)

        return await _control(run)

    async def _sim_withdrawal(self, request: web.Request) -> web.Response:
        async def run() -> dict[str, Any]:
            s = WithdrawalScript.model_validate(await request.json())
            w = self.add_withdrawal(
                s.withdrawal_hash,
                s.account_id,
                s.chain,
                s.asset,
                s.amount,
                s.address,
                outcome=s.outcome,
                complete_after_s=s.complete_after_s,
                visible_after_s=s.visible_after_s,
            )
            return {"status": w.status, "data": w.data_docs_shape()}

        return await _control(run)

    async def _sim_advance(self, request: web.Request) -> web.Response:
        async def run() -> dict[str, Any]:
            self.advance(AdvanceBody.model_validate(await request.json()).seconds)
            return {"now": iso(self.clock.now())}

        return await _control(run)


async def _control(run: Callable[[], Any]) -> web.Response:
    try:
        return web.json_response(await run())
    except (ValidationError, ScriptError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- standalone --------------------------------------------------------------------------------


def _no_credit(account_id: str, token_id: str, amount: int) -> None:
    """Standalone runs have no verifier to credit; the deposit still shows COMPLETED."""


async def _serve(host: str, port: int) -> None:
    sim = PoaBridgeSimulator(_no_credit, host, port)
    await serve_standalone([sim], lambda u: f"poa-bridge simulator on {u[0]} (POST /rpc)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.poa_bridge", description="POA bridge simulator (JSON-RPC at POST /rpc)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
