"""`python -m simulators.relay`: the relay simulator alone, with its own simulated verifier,
until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from simulators.base import serve_standalone
from simulators.relay.api import RelaySimulator
from simulators.relay.protocol import RelaySimConfig
from simulators.verifier import VerifierState


async def _serve(host: str, port: int, config: RelaySimConfig) -> None:
    sim = RelaySimulator(VerifierState(), config, host, port)
    await serve_standalone([sim], lambda u: f"relay simulator on {u[0]} (WS {sim.ws_url}, RPC POST {sim.rpc_url})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.relay", description="Solver relay v2 simulator (WS /ws, JSON-RPC POST /rpc)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--jwt", default=RelaySimConfig.jwt, help="the bearer token the simulator expects")
    parser.add_argument("--window", type=float, default=1.0, help="taker collection window per quote, seconds")
    parser.add_argument("--pick", choices=["best", "first", "none"], default="best")
    parser.add_argument("--taker", default=RelaySimConfig.taker_account_id)
    args = parser.parse_args(argv)
    config = RelaySimConfig(jwt=args.jwt, collection_window_s=args.window, pick=args.pick, taker_account_id=args.taker)
    asyncio.run(_serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
