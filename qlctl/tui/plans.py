"""What a control key will do, worked out before anything is sent (pure).

`plan()` turns (action, selected daemon, the latest `/state` of all daemons) into either a
`Refusal` (the key does not apply: no arm switch, daemon not running, draining) or a `Plan`: the
lines the confirmation screen shows, whether a reason is required, and the request to send.
`request_body()` builds that request from what the operator typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qlctl.tui.view import ARMABLE, States, dig, fmt_ms, plain_number

Action = Literal["pause", "resume", "arm", "disarm"]


@dataclass(frozen=True)
class Refusal:
    action: Action
    service: str
    message: str


@dataclass(frozen=True)
class Plan:
    action: Action
    service: str
    title: str
    lines: tuple[str, ...]
    reason_required: bool = False
    # trade-executor disarm: the operator may also burn the nonces of the live answers
    offer_cancel_live: bool = False
    # arming is the one act that lets money move: shown in red
    danger: bool = False

    @property
    def path(self) -> str:
        return f"/{self.action}"


def _arm_word(state: Mapping[str, Any]) -> str:
    if not state.get("running"):
        return "not running"
    armed = state.get("armed")
    return "ARMED" if armed is True else "disarmed" if armed is False else "arm state unknown"


def _current(state: Mapping[str, Any]) -> str:
    parts = ["draining" if state.get("draining") else "paused" if state.get("paused") else "running"]
    healthy = state.get("healthy")
    if healthy is True:
        parts.append("healthy")
    elif healthy is False:
        reasons = [str(r) for r in state.get("reasons") or []]
        parts.append("UNHEALTHY" + (f" ({'; '.join(reasons)})" if reasons else ""))
    if "armed" in state:
        parts.append(_arm_word(state))
    return ", ".join(parts)


def _caps(limits: Any) -> list[str]:
    if not isinstance(limits, Mapping) or not limits:
        return ["Caps: not reported by strategy-engine"]
    return [
        f"Caps: gross-edge threshold {plain_number(limits.get('threshold_pct'))} %, answers priced at "
        f"{plain_number(limits.get('target_edge_pct'))} %",
        f"      notional {plain_number(limits.get('min_notional_eure'))} .. "
        f"{plain_number(limits.get('max_notional_eure'))} EURe per answer, answer window "
        f"{fmt_ms(limits.get('answer_window_ms'))}",
        f"      price max age {fmt_ms(limits.get('price_max_age_ms'))}, inventory max age "
        f"{fmt_ms(limits.get('inventory_max_age_ms'))}",
    ]


def _signer(state: Mapping[str, Any]) -> str:
    signer = state.get("signer")
    if not isinstance(signer, Mapping):
        return "Signer: not reported"
    status = signer.get("status")
    who = signer.get("account_id") or "?"
    if status == "authorized":
        return f"Signer: {who} (authorized)"
    return f"Signer: {who} is {status or 'unknown'}: {signer.get('detail') or ''} (the executor may refuse to arm)"


def plan(action: Action, service: str, states: States) -> Plan | Refusal:
    state = states.get(service) or {"running": False}
    if action in ("arm", "disarm") and service not in ARMABLE:
        return Refusal(action, service, f"{service} has no arm switch: only {' and '.join(ARMABLE)} are armed")
    if not state.get("running"):
        return Refusal(action, service, f"{service} is not running: nothing to {action}")
    if action in ("pause", "resume") and state.get("draining"):
        return Refusal(action, service, f"{service} is draining: it cannot be paused or resumed")
    now_line = f"Now: {_current(state)}"
    other = ARMABLE[1] if service == ARMABLE[0] else ARMABLE[0]
    other_line = (
        f"{other} is {_arm_word(states.get(other) or {'running': False})}: answers go out only when both are armed"
    )

    if action == "pause":
        lines = [
            f"{service} will stop taking new work. It stays alive and observable (/state keeps answering).",
            now_line,
        ]
        if state.get("paused"):
            lines.append("It is already paused: nothing changes (the request is still audited).")
        return Plan(action, service, f"Pause {service}?", tuple(lines))

    if action == "resume":
        lines = [f"{service} will take new work again.", now_line]
        if not state.get("paused"):
            lines.append("It is not paused: nothing changes (the request is still audited).")
        return Plan(action, service, f"Resume {service}?", tuple(lines))

    if action == "arm":
        if service == "strategy-engine":
            lines = [
                "strategy-engine will send an execute command to trade-executor for every request that "
                "passes every gate.",
                *_caps(state.get("limits")),
            ]
        else:
            live = state.get("live_answers")
            lines = [
                "trade-executor will sign answers for the strategy's commands and send them to the relay; "
                "each one reserves the inventory it gives until its deadline.",
                _signer(state),
                f"Live answers now: {len(live) if isinstance(live, list) else '?'}",
            ]
            lines += _caps(dig(states.get("strategy-engine") or {}, "limits"))
        lines += [now_line, other_line, "Arming is audited with your name and reason; it latches until a disarm."]
        if state.get("armed") is True:
            lines.append("It is already armed: nothing changes (the request is still audited).")
        return Plan(action, service, f"ARM {service}?", tuple(lines), reason_required=True, danger=True)

    # disarm
    if service == "strategy-engine":
        lines = [
            "strategy-engine will send no new commands; its decisions go on being recorded (DISARMED).",
            "Reservations for answers already out stay until those answers end.",
        ]
        offer_cancel = False
    else:
        live = state.get("live_answers")
        count = len(live) if isinstance(live, list) else None
        lines = [
            "trade-executor will send no new answers; it stays live and observable.",
            f"Answers already out ({count if count is not None else '?'}) stay valid until their deadlines "
            "unless you also cancel them below (burns their nonces).",
        ]
        offer_cancel = True
    lines += [now_line, "Disarm latches until an operator arms again."]
    if state.get("armed") is False:
        lines.append("It is already disarmed: nothing changes (the request is still audited).")
    return Plan(action, service, f"Disarm {service}?", tuple(lines), offer_cancel_live=offer_cancel)


BOTH = "trade-executor then strategy-engine"


def plan_disarm_both(states: States) -> Plan:
    """Disarm both, the executor first (qlctl/disarm.py): offered whatever either one's state,
    since a daemon that seems down or disarmed may not be."""
    live = (states.get("trade-executor") or {}).get("live_answers")
    count = len(live) if isinstance(live, list) else "?"
    lines = [
        "trade-executor is disarmed first (no new answers), then strategy-engine (no new commands).",
        "A daemon that fails or does not answer is reported; the other is still disarmed; each one's "
        "state is read back.",
        f"Answers already out ({count}) stay valid until their deadlines unless you also cancel them below.",
        f"Now: trade-executor {_arm_word(states.get('trade-executor') or {'running': False})}, strategy-engine "
        f"{_arm_word(states.get('strategy-engine') or {'running': False})}.",
        "Disarm latches until an operator arms again.",
    ]
    return Plan("disarm", BOTH, "Disarm both?", tuple(lines), offer_cancel_live=True)


def request_body(p: Plan, operator: str, reason: str, cancel_live: bool = False) -> dict[str, Any]:
    """The JSON body for the daemon's endpoint: who, why, and for a disarm whether to cancel."""
    body: dict[str, Any] = {"operator": operator.strip()}
    if reason.strip():
        body["reason"] = reason.strip()
    if p.action == "disarm" and p.offer_cancel_live and cancel_live:
        body["cancel_live"] = True
    return body


def missing_input(p: Plan, operator: str, reason: str) -> str | None:
    """Why the confirmation cannot be sent yet, or None."""
    if not operator.strip():
        return "an operator name is required"
    if p.reason_required and not reason.strip():
        return f"a reason is required to {p.action}"
    return None
