"""A dependency's health link logs each change once and shows the last error."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from daemons.core.health import Link, describe
from daemons.core.logs import get_logger


def _link(**kw: Any) -> Link:
    return Link(get_logger("test"), down="kafka_publish_failed", up="kafka_publish_recovered", topic="t", **kw)


def test_failure_logged_once_then_recovery_with_duration() -> None:
    link = _link()
    with capture_logs() as logs:
        assert link.healthy and link.reason("kafka_unavailable") == []
        assert link.fail(ConnectionError("refused")) is True
        assert link.fail("timeout") is False  # a repeat replaces the text, logs nothing
        assert link.error == "timeout" and link.since is not None
        assert link.reason("kafka_unavailable") == ["kafka_unavailable: timeout"]
        assert link.ok() is True
        assert link.ok() is False
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("kafka_publish_failed", "error"),
        ("kafka_publish_recovered", "info"),
    ]
    assert logs[0]["error"] == "ConnectionError: refused" and logs[0]["topic"] == "t"
    assert isinstance(logs[1]["down_ms"], int) and logs[1]["down_ms"] >= 0
    assert link.healthy and link.since is None


def test_starts_failing_when_told_and_logs_at_the_chosen_level() -> None:
    link = _link(error="not connected yet", level="warning")
    assert not link.healthy and link.since is not None
    with capture_logs() as logs:
        assert link.fail("still down") is False
        assert link.ok() is True
        assert link.fail(OSError("gone")) is True
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("kafka_publish_recovered", "info"),
        ("kafka_publish_failed", "warning"),
    ]
    assert describe(ValueError("x")) == "ValueError: x"
