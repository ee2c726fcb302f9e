"""The arm switch shared by strategy-engine and trade-executor.

Both start disarmed on every start, whatever the environment says: there is no setting that
starts them armed. Arming is an operator act that names who and why, is logged and audited;
disarm latches until an operator arms again (docs/design.md §8: nothing re-arms by
itself). A disarmed service stays live and observable and refuses side effects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.events import now_utc
from daemons.core.side_records import AuditLog


class ArmBody(OperatorAction):
    """Arming must say who and why."""

    model_config = ConfigDict(extra="forbid")
    operator: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class DisarmBody(OperatorAction):
    """Disarming is never held up by a missing field; who defaults to the socket peer."""

    model_config = ConfigDict(extra="forbid")
    cancel_live: bool = False  # trade-executor: also burn the nonces of live answers


@dataclass
class ArmSwitch:
    audit: AuditLog
    log: Any
    armed: bool = False
    changed_at: datetime | None = None
    changed_by: str | None = None
    change_reason: str | None = None

    def state(self) -> dict[str, Any]:
        return {
            "armed": self.armed,
            "arm_changed_at": self.changed_at,
            "arm_changed_by": self.changed_by,
            "arm_change_reason": self.change_reason,
        }

    def _set(self, armed: bool, caller: Caller, extra: dict[str, Any] | None = None) -> bool:
        was = self.armed
        self.armed = armed
        self.changed_at = now_utc()
        self.changed_by = caller.operator
        self.change_reason = caller.reason
        action = "arm" if armed else "disarm"
        outcome = ("armed" if armed else "disarmed") if was != armed else f"already {action}ed"
        self.audit.record(action, caller, outcome, extra)
        self.log.warning(action, operator=caller.operator, reason=caller.reason, changed=was != armed, **(extra or {}))
        return was != armed

    def disarm(self, caller: Caller, extra: dict[str, Any] | None = None) -> bool:
        return self._set(False, caller, extra)

    def routes(
        self,
        *,
        check_arm: Callable[[], Awaitable[None]] | None = None,
        on_disarm: Callable[[DisarmBody, Caller], Awaitable[dict[str, Any]]] | None = None,
    ) -> list[Route]:
        """`POST /arm` and `POST /disarm`. `check_arm` may refuse arming with a ControlError
        (e.g. the signer is not authorized); `on_disarm` runs after disarming (e.g. cancel live
        answers) and its result is merged into the reply."""

        async def arm(_r: Any, body: ArmBody, caller: Caller) -> Any:
            if check_arm is not None:
                try:
                    await check_arm()
                except ControlError as exc:
                    self.audit.record("arm", caller, f"refused: {exc.message}")
                    raise
            changed = self._set(True, caller)
            return {**self.state(), "changed": changed}

        async def disarm(_r: Any, body: DisarmBody, caller: Caller) -> Any:
            changed = self._set(False, caller, {"cancel_live": body.cancel_live} if body.cancel_live else None)
            extra = await on_disarm(body, caller) if on_disarm is not None else {}
            return {**self.state(), "changed": changed, **extra}

        return [
            Route("POST", "/arm", arm, "Arm (operator and reason required); audited", ArmBody, body_optional=False),
            Route("POST", "/disarm", disarm, "Disarm; latches until an operator arms again; audited", DisarmBody),
        ]
