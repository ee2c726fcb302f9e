"""qlctl arm/disarm, threshold and limits against a running strategy-engine."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from daemons.core.runtime import serve
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from tests.conftest import Stack, eventually
from tests.integration.test_qlctl import qlctl


@pytest.fixture
async def engine(stack: Stack, control_dir: Path) -> AsyncIterator[StrategyEngine]:
    settings = StrategySettings(
        kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url, control_dir=control_dir
    )
    service = StrategyEngine(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: (control_dir / "strategy-engine.sock").exists(), what="socket")
    yield service
    service.request_drain()
    await asyncio.wait_for(task, timeout=30)


async def test_arm_needs_a_reason_and_confirmation_then_disarm_latches(
    stack: Stack, control_dir: Path, engine: StrategyEngine
) -> None:
    code, _, err = await qlctl(stack, control_dir, "arm", "strategy")
    assert code == 2 and "--reason" in err  # typer: missing option
    code, out, err = await qlctl(stack, control_dir, "arm", "strategy", "--reason", "test")  # no stdin: no
    assert code == 1 and not engine.arm.armed
    code, out, _ = await qlctl(
        stack, control_dir, "arm", "strategy", "--reason", "first trade", "--operator", "ops", "--yes", "--json"
    )
    assert code == 0 and orjson.loads(out)["strategy-engine"]["armed"] is True and engine.arm.armed
    code, _, _ = await qlctl(stack, control_dir, "disarm", "strategy", "--yes")
    assert code == 0 and not engine.arm.armed


async def test_disarm_both_goes_on_past_a_hung_executor_and_fails_unless_both_are_confirmed(
    stack: Stack, control_dir: Path, engine: StrategyEngine
) -> None:
    """The executor is asked first; one that accepts the connection and never answers (hung) is
    reported as not confirmed, the strategy is still disarmed, and the exit code says it failed."""
    code, _, _ = await qlctl(stack, control_dir, "arm", "strategy", "--reason", "x", "--operator", "ops", "--yes")
    assert code == 0 and engine.arm.armed
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # listens, never answers
    hung.bind(str(control_dir / "trade-executor.sock"))
    hung.listen(8)
    try:
        code, out, _ = await qlctl(stack, control_dir, "disarm", "both", "--reason", "incident", "--yes", "--json")
    finally:
        hung.close()
    results = orjson.loads(out)
    assert code == 1 and list(results) == ["trade-executor", "strategy-engine"]
    assert (
        results["trade-executor"]["confirmed_disarmed"] is False
        and "did not answer" in results["trade-executor"]["error"]
    )
    assert results["strategy-engine"] == {"confirmed_disarmed": True, "error": None, "armed": False}
    assert not engine.arm.armed
    (control_dir / "trade-executor.sock").unlink()
    code, out, _ = await qlctl(stack, control_dir, "disarm", "strategy", "--yes")
    assert code == 0 and "strategy-engine: disarmed (confirmed)" in out


async def test_arm_both_fails_clearly_when_the_executor_is_not_running(
    stack: Stack, control_dir: Path, engine: StrategyEngine
) -> None:
    code, _, err = await qlctl(stack, control_dir, "arm", "both", "--reason", "x", "--yes")
    assert code == 1 and "trade-executor is not running" in err


async def test_threshold_and_limits(stack: Stack, control_dir: Path, engine: StrategyEngine) -> None:
    code, out, _ = await qlctl(stack, control_dir, "threshold", "show", "--json")
    assert code == 0 and orjson.loads(out)["threshold_pct"] == "2.0"
    code, _, err = await qlctl(stack, control_dir, "threshold", "set", "abc")
    assert code == 1 and "refused" in err
    code, out, _ = await qlctl(stack, control_dir, "threshold", "set", "2.2", "--json")
    assert code == 0 and orjson.loads(out)["threshold_pct"] == "2.2"
    code, _, err = await qlctl(stack, control_dir, "limits", "set", "--min-notional-eure", "9")
    assert code == 1 and "min_notional_eure must be <= max_notional_eure" in err
    code, out, _ = await qlctl(
        stack, control_dir, "limits", "set", "--max-notional-eure", "3", "--json", "--reason", f"r-{uuid.uuid4()}"
    )
    assert code == 0 and orjson.loads(out)["max_notional_eure"] == "3"
