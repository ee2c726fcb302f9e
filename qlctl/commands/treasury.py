"""`qlctl funding|withdraw|withdrawals`: treasury actions through liquidity-manager.

These never touch the trade path: they ask liquidity-manager, which records every transition as
an `ops.liquidity_action` event. When liquidity-manager is down they fail visibly (exit 1, the
daemon named), never silently.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from daemons.core.state_models import LiquidityManagerState
from qlctl import ops
from qlctl.output import client, console, fail, print_json, print_rows, run

SERVICE = "liquidity-manager"
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Operator = Annotated[str | None, typer.Option(help="Who is acting (default: your Unix user)")]
Reason = Annotated[str | None, typer.Option(help="Why (audited)")]

funding_app = typer.Typer(help="Funding: deposit addresses and recorded external transfers", no_args_is_help=True)
withdraw_app = typer.Typer(help="Withdrawals to labelled treasury wallets", no_args_is_help=True)
withdrawals_app = typer.Typer(help="Freeze or unfreeze every new withdrawal", no_args_is_help=True)


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    reply = run(client().request(SERVICE, method, path, body))
    if not reply.ok:
        fail(f"{SERVICE} refused {method} {path}: {ops.refusal_error(reply)}")
    return reply.body


def _state() -> tuple[LiquidityManagerState, dict[str, Any]]:
    """liquidity-manager's `/state`, typed, and as it came (for `--json`)."""
    st = ops.as_status(SERVICE, {"running": True, **(_call("GET", "/state") or {})})
    if not isinstance(st.state, LiquidityManagerState) or st.outcome != "running":
        fail(f"{SERVICE}: {st.error or 'unexpected /state'}")
    return st.state, st.raw


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _emit(result: Any, as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        console.print(result)


def _amounts(amount: str | None, units: str | None) -> dict[str, str | None]:
    if (amount is None) == (units is None):
        fail("give exactly one of --amount (base units) or --units (e.g. 250.5)", code=2)
    return {"amount": amount, "amount_units": units}


@funding_app.command("addresses")
def addresses(
    asset: Annotated[str | None, typer.Option(help="Request (or show) the address for this asset id")] = None,
    chain: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """Deposit addresses kept per chain (or request one for an asset)."""
    if asset is not None:
        result = _call("POST", "/deposit-address", _body(asset_id=asset, chain=chain, operator=getpass.getuser()))
        _emit(result, as_json)
        return
    state, raw = _state()
    if as_json:
        print_json(raw.get("deposit_addresses", []))  # as the daemon sent it (key order included)
    else:
        rows = [r.model_dump() for r in state.deposit_addresses or []]
        print_rows("deposit addresses", rows, ["chain", "asset_ids", "address", "memo", "issued_at"])


@funding_app.command("record")
def record(
    asset: Annotated[str, typer.Option(help="Asset id from the registry")],
    tx_hash: Annotated[str, typer.Option(help="The external transaction into the deposit address")],
    amount: Annotated[str | None, typer.Option(help="Base units")] = None,
    units: Annotated[str | None, typer.Option(help="Asset units, e.g. 250.5")] = None,
    chain: Annotated[str | None, typer.Option()] = None,
    wallet: Annotated[str | None, typer.Option(help="Label of the sending treasury wallet")] = None,
    operator: Operator = None,
    reason: Reason = None,
    as_json: AsJson = False,
) -> None:
    """Record an external transfer; liquidity-manager notifies the bridge and follows it to credited."""
    body = _body(
        asset_id=asset,
        tx_hash=tx_hash,
        chain=chain,
        wallet_label=wallet,
        operator=operator or getpass.getuser(),
        reason=reason,
        **_amounts(amount, units),
    )
    result = _call("POST", "/funding", body)
    _emit(result, as_json)


@funding_app.command("list")
def list_funding(pending: Annotated[bool, typer.Option("--pending")] = False, as_json: AsJson = False) -> None:
    """Recent funding attempts (or only pending ones) as liquidity-manager sees them now."""
    state, raw = _state()
    if as_json:  # as the daemon sent it (key order included)
        print_json(raw.get("funding", {}).get("pending" if pending else "recent", []))
    else:
        funding = state.funding
        listed = (funding.pending if pending else funding.recent) if funding is not None else None
        print_rows(
            "pending funding" if pending else "recent funding",
            [r.model_dump() for r in listed or []],
            ["liquidity_action_id", "asset_id", "amount", "status", "tx_hash"],
        )


@withdraw_app.command("request")
def request(
    asset: Annotated[str, typer.Option(help="Asset id from the registry")],
    wallet: Annotated[str | None, typer.Option(help="Destination wallet label")] = None,
    address: Annotated[str | None, typer.Option(help="Destination address (must be a listed wallet)")] = None,
    amount: Annotated[str | None, typer.Option(help="Base units the destination receives")] = None,
    units: Annotated[str | None, typer.Option(help="Asset units the destination receives")] = None,
    operator: Operator = None,
    reason: Reason = None,
    confirm_unknown: Annotated[
        bool,
        typer.Option(
            "--confirm-unknown", help="Withdraw although an earlier withdrawal's outcome is undecided (needs --reason)"
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
    as_json: AsJson = False,
) -> None:
    """Withdraw to a labelled treasury wallet (the bridge fee is added); asks for confirmation."""
    if not yes and not typer.confirm(f"Withdraw {amount or units} of {asset} to {wallet or address}?", default=False):
        fail("no withdrawal (cancelled)")
    body = _body(
        asset_id=asset,
        wallet_label=wallet,
        address=address,
        operator=operator or getpass.getuser(),
        reason=reason,
        **_amounts(amount, units),
        **({"confirm_unknown": True} if confirm_unknown else {}),
    )
    result = _call("POST", "/withdrawals", body)
    _emit(result, as_json)


@withdraw_app.command("list")
def list_withdrawals(as_json: AsJson = False) -> None:
    """Recent withdrawals and their status."""
    state, raw = _state()
    if as_json:
        print_json(raw.get("withdrawals", {}))  # as the daemon sent it (key order included)
    else:
        print_rows(
            "withdrawals",
            [w.model_dump() for w in (state.withdrawals.recent if state.withdrawals is not None else None) or []],
            ["liquidity_action_id", "asset_id", "amount", "status", "address", "tx_hash"],
        )


@withdrawals_app.command("freeze")
def freeze(operator: Operator = None, reason: Reason = None, as_json: AsJson = False) -> None:
    """Refuse every new withdrawal until unfrozen (latches across restarts)."""
    result = _call("POST", "/freeze-withdrawals", _body(operator=operator or getpass.getuser(), reason=reason))
    _emit(result if as_json else f"withdrawals frozen: {result.get('withdrawals_frozen')}", as_json)


@withdrawals_app.command("unfreeze")
def unfreeze(operator: Operator = None, reason: Reason = None, as_json: AsJson = False) -> None:
    """Accept withdrawals again."""
    result = _call("POST", "/unfreeze-withdrawals", _body(operator=operator or getpass.getuser(), reason=reason))
    _emit(result if as_json else f"withdrawals frozen: {result.get('withdrawals_frozen')}", as_json)
