"""`python -m simulators`: every venue simulator in one process, for the local stack.

One simulated `intents.near` (`VerifierState`) backs the relay, the NEAR RPC and the POA bridge,
so a deposit credited by the bridge is a balance the RPC reports and the relay settles against.
Ports are consecutive from `--base-port`. The runner writes, into `--dir`:

- `relay.jwt` (mode 0600): a token generated for this run, which the relay simulator requires;
- `signer.key` (mode 0600): an ed25519 key generated for this run; its implicit account is the
  simulated solver account (an implicit account needs no `add_public_key`);
- `treasury.toml`: the treasury configuration liquidity-manager reads (EURe on `eth:100`);
- `env`: `export QL_...` lines pointing every daemon at the simulators and that account.

nBTC moves through the Omni bridge, which is not simulated (and has no funding route in the
project): the runner credits the solver account with nBTC directly. EURe is funded the real
way, through the POA bridge simulator and liquidity-manager (step 4 of `python -m qlctl.first_trade`).

It runs until SIGTERM/SIGINT. Test infrastructure only: no daemon imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.venues.near_intents.nep413 import SignerKey
from simulators.base import SimServer, until_signalled
from simulators.coingecko import CoinGeckoSimulator
from simulators.kraken import KrakenSimulator
from simulators.near_rpc import NearRpcSimulator
from simulators.poa_bridge import PoaBridgeSimulator
from simulators.relay import RelaySimConfig, RelaySimulator
from simulators.verifier import VerifierState

ORDER = ("relay", "near_rpc", "poa_bridge", "kraken", "coingecko")


SIM_NBTC_BALANCE = 5_000_000  # 0.05 nBTC
TREASURY_WALLET = "0x00000000000000000000000000000000000a11ce"
# The default stream's sizes, in base units of the asset on the request's fixed side: 1.5 to
# 4.5 EURe either way at the Kraken simulator's 60 000 EUR/BTC (its walk moves cents; there is
# 10 % either way to spare), inside the strategy's default notional bounds (1 and 5 EURe:
# strategy_min_notional_eure, strategy_max_notional_eure), so an armed local stack answers and
# fills instead of refusing every request as NOTIONAL_BELOW_MIN or UNPRICEABLE
# (tests/unit/simulators/test_default_stream.py).
STREAM_SIZES_BTC = [2_500, 4_000, 5_500, 7_000]  # sats
STREAM_SIZES_EURE = [15 * 10**17, 25 * 10**17, 35 * 10**17, 45 * 10**17]  # wei


def stream_scenario(btc_asset_id: str, quote_rate: float) -> dict[str, Any]:
    """`RelaySimulator.start_scenario` arguments of the default stream: swap demand on the active
    pair in both directions, exact-in and exact-out, with some other pairs, repeats and malformed
    frames mixed in."""
    return {
        "count": 10**9,
        "rate_per_s": quote_rate,
        "pairs": [[btc_asset_id, EURE_ID]],
        "sizes_by_asset": {btc_asset_id: STREAM_SIZES_BTC, EURE_ID: STREAM_SIZES_EURE},
        "malformed_ratio": 0.01,
        "repeat_ratio": 0.02,
    }


def env_lines(urls: dict[str, str], jwt_file: Path, key_file: Path, account: str, treasury: Path) -> list[str]:
    return [
        f"export QL_SIGNER_ACCOUNT_ID={account}",
        f"export QL_SIGNER_KEY_FILE={key_file}",
        f"export QL_TREASURY_FILE={treasury}",
        "export QL_LIQUIDITY_POLL_INTERVAL_S=2",  # the local bridge credits in seconds, not hours
        f"export QL_RELAY_WS_URL={urls['relay'].replace('http://', 'ws://')}/ws",
        f"export QL_RELAY_RPC_URL={urls['relay']}/rpc",
        f"export QL_RELAY_JWT_FILE={jwt_file}",
        f"export QL_NEAR_RPC_URL={urls['near_rpc']}",
        f"export QL_POA_BRIDGE_URL={urls['poa_bridge']}/rpc",
        f"export QL_KRAKEN_WS_URL={urls['kraken'].replace('http://', 'ws://')}/v2",
        f"export QL_COINGECKO_URL={urls['coingecko']}/api/v3",
    ]


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)


async def run(directory: Path, host: str, base_port: int, quote_rate: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    jwt = secrets.token_urlsafe(32)
    jwt_file = directory / "relay.jwt"
    write_secret(jwt_file, jwt)
    key = SignerKey.generate()
    key_file = directory / "signer.key"
    write_secret(key_file, key.secret_for_export())
    account = key.implicit_account_id
    treasury = directory / "treasury.toml"
    treasury.write_text(
        f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n\n'
        f'[[wallets]]\nlabel = "sim-treasury"\nchain = "eth:100"\naddress = "{TREASURY_WALLET}"\n'
    )

    verifier = VerifierState()
    verifier.deposit(account, os.environ.get("QL_BTC_ASSET_ID", NBTC_ID), SIM_NBTC_BALANCE)
    relay = RelaySimulator(verifier, RelaySimConfig(jwt=jwt), host, base_port)
    near_rpc = NearRpcSimulator(verifier, host, base_port + 1)
    bridge = PoaBridgeSimulator(verifier.deposit, host, base_port + 2, chain=verifier.chain)  # credits the verifier
    sims: dict[str, SimServer] = {
        "relay": relay,
        "near_rpc": near_rpc,
        "poa_bridge": bridge,
        "kraken": KrakenSimulator(host, base_port + 3),
        "coingecko": CoinGeckoSimulator(host, base_port + 4),
    }
    bridge.watch_burns(verifier)  # withdrawals burned on NEAR show up at the bridge
    urls = {}
    for name in ORDER:
        urls[name] = await sims[name].start()
    env_file = directory / "env"
    env_file.write_text(
        "# written by python -m simulators\n" + "\n".join(env_lines(urls, jwt_file, key_file, account, treasury)) + "\n"
    )
    for name in ORDER:
        print(f"{name:<11} {urls[name]}", flush=True)
    print(f"env         {env_file}", flush=True)
    if quote_rate > 0:
        # a steady stream of swap demand on the active pair, at sizes the strategy answers
        relay.start_scenario(**stream_scenario(os.environ.get("QL_BTC_ASSET_ID", NBTC_ID), quote_rate))

    await until_signalled()
    for name in reversed(ORDER):
        await sims[name].stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="where to write relay.jwt and env")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=18080)
    parser.add_argument("--quote-rate", type=float, default=1.0, help="quote requests per second (0: none)")
    args = parser.parse_args()
    asyncio.run(run(args.dir, args.host, args.base_port, args.quote_rate))


if __name__ == "__main__":
    main()
