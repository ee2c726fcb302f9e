"""A daemon's /state body drifting from its model is logged, never withheld from the operator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from structlog.testing import capture_logs

from daemons.core.state_models import conform


class Small(BaseModel):
    model_config = ConfigDict(extra="forbid")
    armed: bool


def test_a_conforming_body_is_served_as_built() -> None:
    body = {"armed": True}
    assert conform(Small, body) is body


def test_a_drifted_body_is_served_and_the_drift_logged_once() -> None:
    body = {"armed": True, "renamed": 1}
    with capture_logs() as logs:
        assert conform(Small, body) is body
        assert conform(Small, body) is body
    drift = [e for e in logs if e["event"] == "state_model_drift"]
    assert len(drift) == 1 and drift[0]["model"] == "Small"
