"""`python -m simulators.fund_local`: fund the local stack's solver account with EURe the real way.

It scripts an external transfer at the POA bridge simulator (it appears PENDING, then COMPLETED
and credited to the simulated verifier a few seconds later) and records the same transfer with
liquidity-manager, exactly as an operator would with `qlctl funding record`. liquidity-manager
then takes the action from requested to credited, and inventory-sync reports the balance.
Test infrastructure for `make run`; reads the simulators' env (QL_POA_BRIDGE_URL,
QL_SIGNER_ACCOUNT_ID, QL_CONTROL_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

import aiohttp

from daemons.core.assets import EURE_ID
from qlctl.client import ClientError, ControlClient
from simulators.__main__ import TREASURY_WALLET


async def fund(units: int, credit_after_s: float, wait_s: float) -> None:
    account = os.environ["QL_SIGNER_ACCOUNT_ID"]
    bridge = os.environ["QL_POA_BRIDGE_URL"].removesuffix("/rpc")
    control = ControlClient(Path(os.environ.get("QL_CONTROL_DIR", "/run/quoteloop")))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:  # liquidity-manager needs its deposit address before a transfer can be recorded
        try:
            reply = await control.request("liquidity-manager", "GET", "/state")
            if reply.ok and reply.body.get("deposit_addresses"):
                break
        except ClientError:
            pass
        if loop.time() > deadline:
            sys.exit("liquidity-manager did not come up with a deposit address: see its log")
        await asyncio.sleep(0.5)
    tx_hash = "0x" + secrets.token_hex(32)
    amount = units * 10**18
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{bridge}/_sim/deposit", json={
            "account_id": account, "chain": "eth:100", "asset": EURE_ID, "amount": str(amount),
            "tx_hash": tx_hash, "outcome": "credit", "credit_after_s": credit_after_s,
            "sender": TREASURY_WALLET}) as resp:
            resp.raise_for_status()
    reply = await control.request("liquidity-manager", "POST", "/funding", {
        "asset_id": EURE_ID, "chain": "eth:100", "tx_hash": tx_hash, "amount": str(amount),
        "wallet_label": "sim-treasury", "operator": "make-run", "reason": "fund the local stack"})
    if not reply.ok:
        sys.exit(f"liquidity-manager refused the funding: {reply.body}")
    print(f"funding recorded: {units} EURe, tx {tx_hash}, action {reply.body.get('liquidity_action_id')} "
          f"(credited in ~{credit_after_s:.0f} s; follow with `qlctl funding list`)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.fund_local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1000, help="EURe to fund")
    parser.add_argument("--credit-after", type=float, default=3.0, help="seconds until the bridge credits it")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for liquidity-manager")
    args = parser.parse_args()
    asyncio.run(fund(args.units, args.credit_after, args.wait))


if __name__ == "__main__":
    main()
