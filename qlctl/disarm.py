"""Disarming more than one daemon: one home for `qlctl disarm both` and the TUI's disarm-both key.

trade-executor, which answers, is disarmed first, then strategy-engine. A daemon that refuses,
fails or hangs is reported and never a reason to skip the next; each one's arm state is then read
back, and only a read-back `armed: false` counts as disarmed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from daemons.core.state_models import ArmFields, read_state
from qlctl.client import ClientError, ControlClient

# the daemons with an arm switch, in the order they are armed (the strategy decides, the executor
# answers); disarming goes the other way round
ARMABLE: tuple[str, ...] = ("strategy-engine", "trade-executor")
DISARM_ORDER = ("trade-executor", "strategy-engine")


async def disarm_one(client: ControlClient, service: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"confirmed_disarmed": False, "error": None, "armed": None}
    try:
        reply = await client.request(service, "POST", "/disarm", body)
        if not reply.ok:
            error = reply.body.get("error") if isinstance(reply.body, dict) else reply.body
            out["error"] = f"refused: {error}"
    except (ClientError, aiohttp.ClientError, OSError) as exc:
        out["error"] = str(exc) or exc.__class__.__name__
    try:  # what it says now, whatever the disarm call said
        state = await client.request(service, "GET", "/state")
        read = read_state(service, state.body) if state.ok else None
        armed = read.armed if isinstance(read, ArmFields) else None
        out["armed"] = armed
        out["confirmed_disarmed"] = armed is False
    except (ClientError, aiohttp.ClientError, OSError) as exc:
        out["error"] = out["error"] or f"state unreadable: {exc}"
    return out


async def disarm_in_order(
    client: ControlClient, services: Iterable[str], body_for: Callable[[str], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each of `services`, in `DISARM_ORDER`; per service: confirmed_disarmed, armed (read back),
    error (what went wrong, if anything)."""
    wanted = set(services)
    return {s: await disarm_one(client, s, body_for(s)) for s in DISARM_ORDER if s in wanted}


def summary_line(service: str, result: dict[str, Any]) -> str:
    if result["confirmed_disarmed"]:
        return f"{service}: disarmed (confirmed)" + (f"; the call said: {result['error']}" if result["error"] else "")
    state = {True: "still ARMED", False: "disarmed", None: "state unknown"}[result["armed"]]
    return f"{service}: NOT CONFIRMED DISARMED ({state}): {result['error']}"
