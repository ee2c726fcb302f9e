"""Every daemon's `/state` body validates against its model in daemons/core/state_models.py.

The seven daemons run in-process on the simulators (tests/seven.py); once they are up and have
data (a decisionable price, an inventory snapshot), each one's `/state` is read over its control
socket and validated with the daemon-side model, which forbids unknown keys and requires every
key it names: a daemon that renames a key fails here (and its `state()` refuses to answer)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from daemons.core.state_models import STATE_MODELS, ArmFields, client_model
from qlctl.client import SERVICES
from tests.conftest import Stack, eventually
from tests.seven import seven_daemons


def test_one_model_per_service() -> None:
    assert set(STATE_MODELS) == set(SERVICES)


async def test_every_daemons_state_validates_against_its_model(stack: Stack, control_dir: Path, tmp_path: Path) -> None:
    jwt = "eyJ" + secrets.token_urlsafe(32)
    async with seven_daemons(stack, control_dir, tmp_path, jwt=jwt) as seven:
        await eventually(seven.ready_to_answer, timeout=60, what="the daemons have data")
        for service in SERVICES:
            status, body = await seven.call(service, "GET", "/state")
            assert status == 200, (service, body)
            model = STATE_MODELS[service].model_validate(body)
            assert model.service == service
            # qlctl's reading of it (unknown keys ignored) sees the same values
            assert client_model(service).model_validate(body).model_dump() == model.model_dump()
        # armed: the arm fields carry an operator and a time
        for service in ("strategy-engine", "trade-executor"):
            status, _ = await seven.call(service, "POST", "/arm", {"operator": "test", "reason": "models"})
            assert status == 200
            status, body = await seven.call(service, "GET", "/state")
            state = STATE_MODELS[service].model_validate(body)
            assert isinstance(state, ArmFields)
            assert state.armed is True and state.arm_changed_by == "test"


@pytest.mark.parametrize("service", sorted(STATE_MODELS))
def test_a_renamed_key_is_refused(service: str) -> None:
    fields = STATE_MODELS[service].model_fields
    body = {name: None for name in fields}
    body["healthy_renamed"] = body.pop("healthy")
    with pytest.raises(Exception, match="healthy"):
        STATE_MODELS[service].model_validate(body)
