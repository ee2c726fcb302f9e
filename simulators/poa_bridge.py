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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from simulators.base import SimServer, serve_standalone
from simulators.chain import Chain

if TYPE_CHECKING:  # annotations only: the verifier is attached at run time
    from simulators.verifier import FtWithdrawal, VerifierState

Credit = Callable[[str, str, int], None]
DepositOutcome = Literal["credit", "fail", "never_credit"]
WithdrawalOutcome = Literal["complete", "fail", "pending"]
WithdrawalShape = Literal["withdrawals_list", "status_data"]

WITHDRAWALS_NOT_FOUND = "Withdrawals not found"
WITHDRAW_TO = "WITHDRAW_TO:"  # the memo that makes a POA token burn a withdrawal (§8)


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


def _iso(t: datetime) -> str:
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
            "created_at": _iso(self.created_at),
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
            "created": _iso(self.created_at),
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
            "created_at": _iso(self.created_at),
            "withdrawal_fee": str(fee),
            "withdraw_amount": str(self.amount - fee),
        }


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


class ScriptError(ValueError):
    """A test scripted something the bridge could not have seen (unknown chain, duplicate…)."""


class RpcError(Exception):
    """Answered as a JSON-RPC error: the bridge sends `error` as a bare string (§1)."""


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
        self.credit = credit
        # with the simulated chain, a deposit shows COMPLETED once the block holding its mint is
        # produced, as the bridge sees it on NEAR (without one, at once)
        self.chain = chain
        self.clock = clock or SimClock()
        self.tokens = tokens
        self.withdrawal_status_shape: WithdrawalShape = withdrawal_status_shape
        self.deposits: list[SimDeposit] = []
        self.withdrawals: list[SimWithdrawal] = []
        self.notifications: list[dict[str, Any]] = []
        self._serial = itertools.count(1)
        self._changed = asyncio.Event()
        self._release_hung = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

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
        self.deposits.clear()
        self.withdrawals.clear()
        self.notifications.clear()
        self.clock.reset()
        self._release_hung.set()
        self._release_hung = asyncio.Event()
        self._changed.set()

    def extra_sim_state(self) -> dict[str, Any]:
        return {
            "now": _iso(self.clock.now()),
            "deposits": [
                d.wire(amounts_as_strings=False) | {"outcome": d.outcome, "credited": d.credited} for d in self.deposits
            ],
            "withdrawals": [w.data_list_shape() | {"status": w.status, "outcome": w.outcome} for w in self.withdrawals],
            "notifications": self.notifications,
        }

    # --- scripting (Python API; the /_sim/ routes call these) ------------------------------------

    def token_for(self, chain: str, asset: str) -> SimToken:
        near_id = asset.removeprefix("nep141:")
        for t in self.tokens:
            if t.chain == chain and t.near_token_id == near_id:
                return t
        raise ScriptError(f"the bridge has no token {asset!r} on chain {chain!r}")

    def deposit_address_for(self, account_id: str, chain: str) -> str:
        """Stable per (account, chain): derived, so it survives restarts like the real one."""
        if chain not in self.chains:
            raise ScriptError(f"unsupported chain {chain!r}")
        digest = hashlib.sha256(f"poa-deposit|{account_id}|{chain}".encode()).digest()
        if chain.startswith("btc:"):
            charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # bech32 alphabet (checksum not modelled)
            more = digest + hashlib.sha256(digest).digest()
            return "bc1q" + "".join(charset[b % 32] for b in more[:38])
        return "0x" + digest[:20].hex()

    @property
    def chains(self) -> list[str]:
        return sorted({t.chain for t in self.tokens})

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
        token = self.token_for(chain, asset)
        if amount <= 0:
            raise ScriptError("a deposit has a positive amount")
        tx_hash = tx_hash or self._fake_hash(chain, "deposit")
        if any(d.tx_hash == tx_hash and d.chain == chain for d in self.deposits):
            raise ScriptError(f"deposit {tx_hash!r} already exists")
        now = self.clock.now()
        due = None if outcome == "never_credit" else now + timedelta(seconds=credit_after_s)
        if outcome == "credit" and amount < token.min_deposit_amount:
            due = None  # below the minimum the bridge never sweeps it
        deposit = SimDeposit(
            tx_hash=tx_hash,
            account_id=account_id,
            chain=chain,
            token=token,
            amount=amount,
            address=self.deposit_address_for(account_id, chain),
            outcome=outcome,
            created_at=now,
            due_at=due,
            sender=sender,
        )
        self.deposits.append(deposit)
        self.record(
            "sim_deposit",
            tx_hash=tx_hash,
            account_id=account_id,
            chain=chain,
            amount=str(amount),
            outcome=outcome,
            below_min=amount < token.min_deposit_amount,
        )
        self._tick()
        return deposit

    def complete_deposit(self, tx_hash: str) -> SimDeposit:
        """An operator resolves a FAILED (or stuck) deposit: credited once, now COMPLETED."""
        deposit = next((d for d in self.deposits if d.tx_hash == tx_hash), None)
        if deposit is None:
            raise ScriptError(f"no deposit {tx_hash!r}")
        if deposit.status != "COMPLETED":
            self._credit(deposit)
        return deposit

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
        token = self.token_for(chain, asset)
        now = self.clock.now()
        withdrawal = SimWithdrawal(
            withdrawal_hash=withdrawal_hash,
            account_id=account_id,
            chain=chain,
            token=token,
            amount=amount,
            address=address,
            outcome=outcome,
            created_at=now,
            visible_at=now + timedelta(seconds=visible_after_s),
            due_at=None if outcome == "pending" else now + timedelta(seconds=visible_after_s + complete_after_s),
        )
        self.withdrawals.append(withdrawal)
        self.record("sim_withdrawal", withdrawal_hash=withdrawal_hash, outcome=outcome)
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
        now = self.clock.now()
        for d in self.deposits:
            if d.status == "PENDING" and d.due_at is not None and d.due_at <= now:
                if d.outcome == "credit":
                    self._credit(d)
                elif d.outcome == "fail":
                    d.status = "FAILED"
                    self.record("deposit_failed", tx_hash=d.tx_hash)
        for w in self.withdrawals:
            if w.status == "PENDING" and w.due_at is not None and w.due_at <= now:
                if w.outcome == "complete":
                    w.status = "COMPLETED"
                    w.transfer_tx_hash = self._fake_hash(w.chain, "transfer")
                else:
                    w.status = "FAILED"
                self.record("withdrawal_" + w.status.lower(), withdrawal_hash=w.withdrawal_hash)
        self._changed.set()

    def _credit(self, deposit: SimDeposit) -> None:
        if deposit.credited:
            return
        try:
            self.credit(deposit.account_id, deposit.token.intents_token_id, deposit.amount)
        except Exception as exc:  # the verifier refused: stay PENDING and try again a second later
            self.record("credit_error", tx_hash=deposit.tx_hash, error=repr(exc))
            deposit.due_at = self.clock.now() + timedelta(seconds=1)
            return
        deposit.credited = True
        deposit.mint_height = self.chain.pending_height() if self.chain is not None else None
        deposit.status = "COMPLETED"
        deposit.mint_tx_hash = self._fake_hash("near:mainnet", "mint")
        self.record(
            "deposit_credited",
            tx_hash=deposit.tx_hash,
            account_id=deposit.account_id,
            token_id=deposit.token.intents_token_id,
            amount=str(deposit.amount),
        )

    def _next_due_in(self) -> float | None:
        if self.clock.frozen:
            return None  # only advance() moves a frozen clock
        now = self.clock.now()
        dues = [d.due_at for d in self.deposits if d.status == "PENDING" and d.due_at is not None]
        dues += [w.due_at for w in self.withdrawals if w.status == "PENDING" and w.due_at is not None]
        if not dues:
            return None
        return max(0.0, (min(dues) - now).total_seconds())

    async def _run_timer(self) -> None:
        while True:
            self._tick()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._next_due_in())

    def _fake_hash(self, chain: str, kind: str) -> str:
        digest = hashlib.sha256(f"{kind}|{chain}|{next(self._serial)}|{id(self)}".encode()).hexdigest()
        if chain.startswith("eth:"):
            return "0x" + digest
        if chain.startswith("near:"):
            # NEAR tx hashes are base58 of 32 bytes; any fixed-alphabet string of that length will do here.
            alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
            return "".join(alphabet[int(digest[i : i + 2], 16) % 58] for i in range(0, 64, 2)) + "n"
        return digest

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
            handler = self._methods().get(str(method))
            if handler is None:
                raise RpcError(f"Method not found: {method}")
            result = handler(params[0])
        except RpcError as exc:
            return self._error(rpc_id, str(exc))
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    @staticmethod
    def _error(rpc_id: Any, message: str) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "error": message})

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "supported_tokens": self._supported_tokens,
            "deposit_address": self._deposit_address,
            "recent_deposits": self._recent_deposits,
            "notify_deposit": self._notify_deposit,
            "withdrawal_status": self._withdrawal_status,
            "recent_withdrawals": self._recent_withdrawals,
            "withdrawal_estimate": self._withdrawal_estimate,
        }

    # --- methods (§2–§7) -------------------------------------------------------------------------

    def _supported_tokens(self, p: dict[str, Any]) -> dict[str, Any]:
        chains = p.get("chains")
        if chains is not None and not (isinstance(chains, list) and all(isinstance(c, str) for c in chains)):
            raise RpcError("Invalid params: chains must be a list of strings")
        return {"tokens": [t.wire() for t in self.tokens if not chains or t.chain in chains]}

    def _deposit_address(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id, chain = _required(p, "account_id"), _required(p, "chain")
        if chain not in self.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        return {"address": self.deposit_address_for(account_id, chain), "chain": chain}

    def _recent_deposits(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id = _required(p, "account_id")
        chain, status = p.get("chain"), p.get("status")
        if chain is not None and chain not in self.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        limit, offset = p.get("limit", 20), p.get("offset", 0)
        if not isinstance(limit, int) or not isinstance(offset, int) or limit < 1 or offset < 0:
            raise RpcError("Invalid params: limit and offset must be non-negative integers")
        limit = min(limit, 100)  # "limit defaults to 20, max 100" (§4)
        matching = [
            d
            for d in reversed(self.deposits)  # newest first
            if d.account_id == account_id
            and (chain is None or d.chain == chain)
            and (status is None or self._shown_status(d) == status)
        ]
        as_strings = bool(self.faults.value("amounts_as_strings", False))
        return {
            "deposits": [
                d.wire(amounts_as_strings=as_strings, status=self._shown_status(d))
                for d in matching[offset : offset + limit]
            ],
            "total": len(matching),
            "limit": limit,
            "offset": offset,
        }

    def _shown_status(self, d: SimDeposit) -> str:
        if (
            d.status == "COMPLETED"
            and d.mint_height is not None
            and self.chain is not None
            and self.chain.head() < d.mint_height
        ):
            return "PENDING"  # minted in the block being produced
        return d.status

    def _notify_deposit(self, p: dict[str, Any]) -> dict[str, Any]:
        entry = {"deposit_address": _required(p, "deposit_address"), "tx_hash": _required(p, "tx_hash")}
        for key in ("chain", "near_sender_account", "memo"):
            if key in p:
                entry[key] = p[key]
        self.notifications.append(entry)
        self.record("notify_deposit", **entry)
        return {}

    def _visible_withdrawals(self, withdrawal_hash: str) -> list[SimWithdrawal]:
        now = self.clock.now()
        return [w for w in self.withdrawals if w.withdrawal_hash == withdrawal_hash and w.visible_at <= now]

    def _withdrawal_status(self, p: dict[str, Any]) -> dict[str, Any]:
        found = self._visible_withdrawals(_required(p, "withdrawal_hash"))
        if not found:
            raise RpcError(WITHDRAWALS_NOT_FOUND)
        shape = self.faults.value("withdrawal_status_shape", self.withdrawal_status_shape)
        if shape == "status_data":
            first = found[0]
            return {"status": first.status, "data": first.data_docs_shape()}
        return {"withdrawals": [{"status": w.status, "data": w.data_list_shape()} for w in found]}

    def _recent_withdrawals(self, p: dict[str, Any]) -> dict[str, Any]:
        account_id, chain = _required(p, "account_id"), p.get("chain")
        now = self.clock.now()
        return {
            "withdrawals": [
                {"status": w.status, "data": w.data_list_shape()}
                for w in reversed(self.withdrawals)
                if w.account_id == account_id and (chain is None or w.chain == chain) and w.visible_at <= now
            ]
        }

    def _withdrawal_estimate(self, p: dict[str, Any]) -> dict[str, Any]:
        chain, token_id, address = _required(p, "chain"), _required(p, "token"), _required(p, "address")
        if chain not in self.chains:
            raise RpcError(f"Unsupported chain: {chain}")
        token = next((t for t in self.tokens if t.chain == chain and t.near_token_id == token_id), None)
        if token is None:
            raise RpcError(f"Unsupported token: {token_id}")
        return {
            "tokenAddress": token.defuse_asset_identifier.split(":", 2)[-1],
            "userAddress": address,
            "withdrawalFee": str(token.withdrawal_fee),
            "withdrawalFeeDecimals": token.decimals,
            "token": token.wire(),
        }

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
            return {"now": _iso(self.clock.now())}

        return await _control(run)


async def _control(run: Callable[[], Any]) -> web.Response:
    try:
        return web.json_response(await run())
    except (ValidationError, ScriptError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _required(p: dict[str, Any], key: str) -> str:
    value = p.get(key)
    if not isinstance(value, str) or not value:
        raise RpcError(f"Invalid params: {key} is required")
    return value


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
