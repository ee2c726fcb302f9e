"""What a control key will do, worked out before anything is sent (pure).

`plan()` turns (action, selected daemon, the latest `/state` of all daemons) into either a
`Refusal` (the key does not apply: no arm switch, daemon not running, draining) or a `Plan`: the
lines the confirmation screen shows, whether a reason is required, and the request to send.
`request_body()` builds that request from what the operator typed. What arming and disarming mean
(texts, bodies, order) is `qlctl.ops`; the states are read through its typed `DaemonStatus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qlctl import ops
from qlctl.ops import ARMABLE, BOTH, DaemonStatus

Action = Literal["pause", "resume", "arm", "disarm"]

__all__ = ["BOTH", "Action", "Plan", "Refusal", "missing_input", "plan", "plan_disarm_both", "request_body"]


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


def plan(action: Action, service: str, states: Mapping[str, Any]) -> Plan | Refusal:
    statuses = ops.typed(states)
    st = statuses.get(service) or DaemonStatus.absent(service)
    if action in ("arm", "disarm") and service not in ARMABLE:
        return Refusal(action, service, f"{service} has no arm switch: only {' and '.join(ARMABLE)} are armed")
    if not st.running:
        return Refusal(action, service, f"{service} is not running: nothing to {action}")
    if action in ("pause", "resume") and st.state.draining:
        return Refusal(action, service, f"{service} is draining: it cannot be paused or resumed")
    now_line = f"Now: {ops.current(st)}"

    if action == "pause":
        lines = [
            f"{service} will stop taking new work. It stays alive and observable (/state keeps answering).",
            now_line,
        ]
        if st.state.paused:
            lines.append("It is already paused: nothing changes (the request is still audited).")
        return Plan(action, service, f"Pause {service}?", tuple(lines))

    if action == "resume":
        lines = [f"{service} will take new work again.", now_line]
        if not st.state.paused:
            lines.append("It is not paused: nothing changes (the request is still audited).")
        return Plan(action, service, f"Resume {service}?", tuple(lines))

    if action == "arm":
        lines = ops.arm_lines(service, statuses)
        return Plan(action, service, f"ARM {service}?", tuple(lines), reason_required=True, danger=True)

    lines = ops.disarm_lines(service, statuses)
    return Plan(action, service, f"Disarm {service}?", tuple(lines), offer_cancel_live=service == "trade-executor")


def plan_disarm_both(states: Mapping[str, Any]) -> Plan:
    """Disarm both, the executor first (qlctl/disarm.py): offered whatever either one's state,
    since a daemon that seems down or disarmed may not be."""
    lines = ops.disarm_both_lines(ops.typed(states))
    return Plan("disarm", BOTH, "Disarm both?", tuple(lines), offer_cancel_live=True)


def request_body(p: Plan, operator: str, reason: str, cancel_live: bool = False) -> dict[str, Any]:
    """The JSON body for the daemon's endpoint: who, why, and for a disarm whether to cancel."""
    if p.action == "disarm":
        return ops.disarm_body(p.service, operator, reason, cancel_live and p.offer_cancel_live)
    return ops.arm_body(operator, reason) if p.action == "arm" else ops.control_body(operator, reason)


def missing_input(p: Plan, operator: str, reason: str) -> str | None:
    """Why the confirmation cannot be sent yet, or None."""
    if not operator.strip():
        return "an operator name is required"
    if p.reason_required and not reason.strip():
        return f"a reason is required to {p.action}"
    return None
