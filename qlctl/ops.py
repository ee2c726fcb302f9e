"""The operations layer: what qlctl's commands and its TUI do to the daemons, in one place.

- status: every daemon's `/state` read into its typed model (daemons/core/state_models.py), with a
  typed outcome when it cannot be read (`not_running`, `unreachable`, `unreadable`);
- arming and disarming: which daemons, in what order, the request bodies and the texts an
  operator confirms (the CLI's prompt and the TUI's confirmation screen); disarm-both goes through
  `qlctl/disarm.py`;
- the strategy's limits and threshold and the ingest's pair filter: the requests and their bodies.

Front ends render; they build no request body, no confirmation text and no order of their own,
and read `/state` through the models' attributes, never through dict keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from pydantic import ValidationError

from daemons.core.state_models import (
    ArmFields,
    DaemonState,
    LiquidityManagerState,
    StrategyEngineState,
    StrategyLimits,
    TradeExecutorState,
    empty_state,
    read_state,
)
from qlctl.client import SERVICES, ClientError, ControlClient, Reply
from qlctl.disarm import ARMABLE, DISARM_ORDER, disarm_in_order
from qlctl.tui.view import fmt_ms, plain_number

# --- status ---------------------------------------------------------------------------------------

Outcome = Literal["running", "unreadable", "not_running", "unreachable"]


@dataclass(frozen=True)
class DaemonStatus:
    """One daemon's `/state` as read now.

    `state` is the typed body (every key the model names; None where the body lacks it); for a
    daemon that is not running, unreachable or whose body does not fit its model it is the empty
    model (all None). `raw` is the body as it came, under qlctl's `running`/`error` envelope:
    what `--json` prints, unchanged."""

    service: str
    outcome: Outcome
    state: DaemonState
    raw: dict[str, Any]
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.outcome in ("running", "unreadable")

    @property
    def armed(self) -> bool | None:
        return self.state.armed if isinstance(self.state, ArmFields) and self.running else None

    @property
    def has_arm_switch(self) -> bool:
        return self.service in ARMABLE

    @property
    def undecided(self) -> int:
        """Outcomes the chain could not decide (the executor's and the withdrawals'): holds kept
        until an operator records a verdict."""
        s = self.state
        own = s.undecided if isinstance(s, TradeExecutorState) else None
        out = s.withdrawals.undecided if isinstance(s, LiquidityManagerState) and s.withdrawals else None
        return len(own or []) + len(out or [])

    @classmethod
    def from_raw(cls, service: str, raw: Mapping[str, Any]) -> DaemonStatus:
        """From qlctl's envelope: `{"running": true, ...body}` or `{"running": false, "error": ...}`."""
        body = dict(raw)
        if not body.get("running"):
            error = str(body.get("error") or "")
            outcome: Outcome = "not_running" if not error or "is not running" in error else "unreachable"
            return cls(service, outcome, empty_state(service), body, error or None)
        state = read_state(service, body)
        if state is None:
            return cls(service, "unreadable", empty_state(service), body, "the /state body does not fit its model")
        return cls(service, "running", state, body)

    @classmethod
    def absent(cls, service: str) -> DaemonStatus:
        return cls.from_raw(service, {"running": False})


Statuses = Mapping[str, DaemonStatus]


def as_status(service: str, state: DaemonStatus | Mapping[str, Any] | Any) -> DaemonStatus:
    """A typed status from either a typed one or an envelope (anything else: not running)."""
    if isinstance(state, DaemonStatus):
        return state
    return DaemonStatus.from_raw(service, state if isinstance(state, Mapping) else {})


def typed(states: Mapping[str, Any]) -> dict[str, DaemonStatus]:
    return {s: as_status(s, st) for s, st in states.items()}


def not_running(service: str, error: str) -> dict[str, Any]:
    return {"service": service, "running": False, "error": error}


async def read_raw(client: ControlClient, service: str) -> dict[str, Any]:
    """`/state` of one daemon under the envelope; a daemon that is not running, that refuses or
    that breaks the connection mid-answer is `running: false` with the reason, never an exception."""
    try:
        reply = await client.request(service, "GET", "/state")
    except ClientError as exc:
        return not_running(service, str(exc))
    except (aiohttp.ClientError, OSError) as exc:
        return not_running(service, f"{service}: /state failed: {exc.__class__.__name__}: {exc}")
    return {"running": True, **(reply.body if isinstance(reply.body, dict) else {})}


async def read_all_raw(client: ControlClient, services: Iterable[str] = SERVICES) -> dict[str, dict[str, Any]]:
    chosen = tuple(services)
    return dict(zip(chosen, await asyncio.gather(*(read_raw(client, s) for s in chosen)), strict=True))


def statuses(raws: Mapping[str, Mapping[str, Any]], services: Iterable[str] = SERVICES) -> dict[str, DaemonStatus]:
    """Typed statuses of `services` from envelopes (a service missing from `raws` is not running)."""
    return {s: DaemonStatus.from_raw(s, raws.get(s) or {"running": False}) for s in services}


async def status(client: ControlClient, services: Iterable[str] = SERVICES) -> dict[str, DaemonStatus]:
    chosen = tuple(services)
    return statuses(await read_all_raw(client, chosen), chosen)


def unhealthy_or_missing(states: Statuses) -> tuple[list[str], list[str]]:
    unhealthy = [s for s, st in states.items() if st.running and st.state.healthy is not True]
    missing = [s for s, st in states.items() if not st.running]
    return unhealthy, missing


# --- arming and disarming ---------------------------------------------------------------------------

TARGETS: dict[str, tuple[str, ...]] = {
    "strategy": ("strategy-engine",),
    "executor": ("trade-executor",),
    "both": ARMABLE,
}
BOTH = "trade-executor then strategy-engine"


def arm_targets(target: str) -> list[str]:
    return list(TARGETS[target])


def disarm_targets(target: str) -> list[str]:
    return [s for s in DISARM_ORDER if s in TARGETS[target]]


def arm_body(operator: str, reason: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"operator": operator.strip()}
    if reason is not None and reason.strip():
        body["reason"] = reason.strip()
    return body


def disarm_body(service: str, operator: str, reason: str | None, cancel_live: bool = False) -> dict[str, Any]:
    """Who, why, and for trade-executor whether to also burn the live answers' nonces."""
    body = arm_body(operator, reason)
    if cancel_live and service == "trade-executor":
        body["cancel_live"] = True
    return body


def control_body(operator: str, reason: str | None) -> dict[str, Any]:
    """pause/resume: the operator, and the reason when there is one."""
    return arm_body(operator, reason)


def refusal_error(reply: Reply) -> Any:
    return reply.body.get("error") if isinstance(reply.body, dict) else reply.body


async def arm(client: ControlClient, services: Iterable[str], operator: str, reason: str) -> dict[str, Reply]:
    """Arm each of `services` in `ARMABLE` order, stopping at the first refusal (the replies so
    far, the refusal last): a daemon is never armed after another refused."""
    wanted = set(services)
    replies: dict[str, Reply] = {}
    for s in ARMABLE:
        if s in wanted:
            replies[s] = await client.request(s, "POST", "/arm", arm_body(operator, reason))
            if not replies[s].ok:
                break
    return replies


async def disarm(
    client: ControlClient, services: Iterable[str], operator: str, reason: str | None, cancel_live: bool = False
) -> dict[str, dict[str, Any]]:
    """Disarm each of `services`, the executor first, each read back (qlctl/disarm.py)."""

    def body_for(service: str) -> dict[str, Any]:
        return disarm_body(service, operator, reason, cancel_live)

    return await disarm_in_order(client, services, body_for)


def arm_word(st: DaemonStatus) -> str:
    if not st.running:
        return "not running"
    armed = st.armed
    return "ARMED" if armed is True else "disarmed" if armed is False else "arm state unknown"


def current(st: DaemonStatus) -> str:
    s = st.state
    parts = ["draining" if s.draining else "paused" if s.paused else "running"]
    if s.healthy is True:
        parts.append("healthy")
    elif s.healthy is False:
        reasons = [str(r) for r in s.reasons or []]
        parts.append("UNHEALTHY" + (f" ({'; '.join(reasons)})" if reasons else ""))
    if isinstance(s, ArmFields) and "armed" in s.model_fields_set:
        parts.append(arm_word(st))
    return ", ".join(parts)


def limits_of(states: Statuses) -> StrategyLimits | None:
    strategy = states.get("strategy-engine")
    s = strategy.state if strategy is not None else None
    return s.limits if isinstance(s, StrategyEngineState) and s.limits is not None else None


def caps_lines(limits: StrategyLimits | None) -> list[str]:
    """The caps an operator sees before arming (the TUI's confirmation screen)."""
    if limits is None or not limits.model_fields_set:
        return ["Caps: not reported by strategy-engine"]
    return [
        f"Caps: gross-edge threshold {plain_number(limits.threshold_pct)} %, answers priced at "
        f"{plain_number(limits.target_edge_pct)} %",
        f"      notional {plain_number(limits.min_notional_eure)} .. "
        f"{plain_number(limits.max_notional_eure)} EURe per answer, answer window "
        f"{fmt_ms(limits.answer_window_ms)}",
        f"      price max age {fmt_ms(limits.price_max_age_ms)}, inventory max age "
        f"{fmt_ms(limits.inventory_max_age_ms)}",
    ]


def read_limits(body: Any) -> StrategyLimits | None:
    """strategy-engine's `GET /limits` answer (the same shape as its `/state` `limits`)."""
    try:
        return StrategyLimits.model_validate(body) if isinstance(body, dict) and body else None
    except ValidationError:
        return None


def arm_prompt_lines(services: list[str], operator: str, reason: str, limits: StrategyLimits | None) -> list[str]:
    """What `qlctl arm` shows before it asks (rich markup)."""
    lines = [f"About to ARM: [bold]{', '.join(services)}[/bold] as {operator} ({reason})"]
    if limits is not None:
        lines.append(
            f"  threshold {limits.threshold_pct} %, target edge {limits.target_edge_pct} %, "
            f"notional {limits.min_notional_eure}..{limits.max_notional_eure} EURe, "
            f"answer window {limits.answer_window_ms} ms"
        )
    return lines


def disarm_prompt(services: list[str]) -> str:
    return f"Disarm {', '.join(services)}?"


def _signer_line(st: DaemonStatus) -> str:
    s = st.state
    signer = s.signer if isinstance(s, TradeExecutorState) else None
    if signer is None:
        return "Signer: not reported"
    who = signer.account_id or "?"
    if signer.status == "authorized":
        return f"Signer: {who} (authorized)"
    return f"Signer: {who} is {signer.status or 'unknown'}: {signer.detail or ''} (the executor may refuse to arm)"


def live_answer_count(st: DaemonStatus | None) -> int | None:
    s = st.state if st is not None else None
    return len(s.live_answers) if isinstance(s, TradeExecutorState) and s.live_answers is not None else None


def arm_lines(service: str, states: Statuses) -> list[str]:
    """What arming `service` will do, and the state it will do it in (TUI confirmation)."""
    st = states.get(service) or DaemonStatus.absent(service)
    other = ARMABLE[1] if service == ARMABLE[0] else ARMABLE[0]
    if service == "strategy-engine":
        lines = [
            "strategy-engine will send an execute command to trade-executor for every request that passes every gate.",
            *caps_lines(limits_of(states)),
        ]
    else:
        live = live_answer_count(st)
        lines = [
            "trade-executor will sign answers for the strategy's commands and send them to the relay; "
            "each one reserves the inventory it gives until its deadline.",
            _signer_line(st),
            f"Live answers now: {live if live is not None else '?'}",
            *caps_lines(limits_of(states)),
        ]
    lines += [
        f"Now: {current(st)}",
        f"{other} is {arm_word(states.get(other) or DaemonStatus.absent(other))}: answers go out only when both "
        "are armed",
        "Arming is audited with your name and reason; it latches until a disarm.",
    ]
    if st.armed is True:
        lines.append("It is already armed: nothing changes (the request is still audited).")
    return lines


def disarm_lines(service: str, states: Statuses) -> list[str]:
    """What disarming `service` will do (TUI confirmation)."""
    st = states.get(service) or DaemonStatus.absent(service)
    if service == "strategy-engine":
        lines = [
            "strategy-engine will send no new commands; its decisions go on being recorded (DISARMED).",
            "Reservations for answers already out stay until those answers end.",
        ]
    else:
        count = live_answer_count(st)
        lines = [
            "trade-executor will send no new answers; it stays live and observable.",
            f"Answers already out ({count if count is not None else '?'}) stay valid until their deadlines "
            "unless you also cancel them below (burns their nonces).",
        ]
    lines += [f"Now: {current(st)}", "Disarm latches until an operator arms again."]
    if st.armed is False:
        lines.append("It is already disarmed: nothing changes (the request is still audited).")
    return lines


def disarm_both_lines(states: Statuses) -> list[str]:
    count = live_answer_count(states.get("trade-executor"))
    te = states.get("trade-executor") or DaemonStatus.absent("trade-executor")
    se = states.get("strategy-engine") or DaemonStatus.absent("strategy-engine")
    return [
        "trade-executor is disarmed first (no new answers), then strategy-engine (no new commands).",
        "A daemon that fails or does not answer is reported; the other is still disarmed; each one's "
        "state is read back.",
        f"Answers already out ({count if count is not None else '?'}) stay valid until their deadlines unless you "
        "also cancel them below.",
        f"Now: trade-executor {arm_word(te)}, strategy-engine {arm_word(se)}.",
        "Disarm latches until an operator arms again.",
    ]


# --- limits, threshold, pair filter -----------------------------------------------------------------

LIMIT_KEYS = (
    "min_notional_eure",
    "max_notional_eure",
    "answer_window_ms",
    "max_deadline_ms",
    "price_max_age_ms",
    "inventory_max_age_ms",
)


def _without_none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


async def show_limits(client: ControlClient) -> Reply:
    return await client.request("strategy-engine", "GET", "/limits")


async def set_threshold(
    client: ControlClient, threshold_pct: str, target_edge_pct: str | None, operator: str, reason: str | None
) -> Reply:
    body = {"threshold_pct": threshold_pct, "target_edge_pct": target_edge_pct, "operator": operator, "reason": reason}
    return await client.request("strategy-engine", "PUT", "/threshold", _without_none(body))


async def set_limits(client: ControlClient, limits: Mapping[str, Any], operator: str, reason: str | None) -> Reply:
    body = {**{k: limits.get(k) for k in LIMIT_KEYS}, "operator": operator, "reason": reason}
    return await client.request("strategy-engine", "PUT", "/limits", _without_none(body))


async def show_pair_filter(client: ControlClient) -> Reply:
    return await client.request("near-intents-ingest", "GET", "/pair-filter")


async def set_pair_filter(client: ControlClient, tokens: list[str], operator: str, reason: str | None) -> Reply:
    body = {"tokens_in": tokens, "tokens_out": tokens, "operator": operator, "reason": reason}
    return await client.request("near-intents-ingest", "PUT", "/pair-filter", _without_none(body))


async def reset_pair_filter(client: ControlClient, operator: str) -> Reply:
    return await client.request("near-intents-ingest", "POST", "/pair-filter/reset", {"operator": operator})
