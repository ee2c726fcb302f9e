"""The arm switch: starts disarmed, arming needs who and why, refusals and disarms are audited."""

from __future__ import annotations

import asyncio

import pytest

from daemons.core.arming import ArmBody, ArmSwitch, DisarmBody
from daemons.core.control import Caller, ControlError
from daemons.core.logs import get_logger
from daemons.core.side_records import AuditLog, QueuedWriter


def switch() -> tuple[ArmSwitch, QueuedWriter]:
    writer = QueuedWriter("test")
    return ArmSwitch(AuditLog("strategy-engine", writer), get_logger("test")), writer


def test_starts_disarmed_and_arming_needs_operator_and_reason() -> None:
    s, _ = switch()
    assert s.armed is False
    with pytest.raises(ValueError):
        ArmBody.model_validate({"operator": "ops"})
    with pytest.raises(ValueError):
        ArmBody.model_validate({"reason": "go"})
    assert DisarmBody.model_validate({}).cancel_live is False


def test_arm_then_disarm_latches_and_audits() -> None:
    s, writer = switch()
    arm, disarm = (r.handler for r in s.routes())
    result = asyncio.run(arm(None, ArmBody(operator="ops", reason="first trade"), Caller("ops", "first trade")))
    assert result["armed"] is True and result["changed"] is True and s.changed_by == "ops"
    result = asyncio.run(disarm(None, DisarmBody(), Caller("uid:0:root", None)))
    assert result["armed"] is False and s.armed is False
    assert [args[1] for _, args in writer.pending] == ["arm", "disarm"]


def test_a_refused_arm_stays_disarmed_and_is_audited() -> None:
    s, writer = switch()

    async def not_authorized() -> None:
        raise ControlError(409, "signer not authorized")

    arm, _ = (r.handler for r in s.routes(check_arm=not_authorized))
    with pytest.raises(ControlError):
        asyncio.run(arm(None, ArmBody(operator="ops", reason="x"), Caller("ops", "x")))
    assert s.armed is False
    assert (
        writer.pending[-1][1][5] == "refused: signer not authorized"
    )  # (service, action, operator, reason, params, outcome, identity)
