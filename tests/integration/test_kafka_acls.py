"""The bus is a trust boundary: the test stack's broker (scripts/stack.sh) takes SASL/SCRAM logins
only, and its authorizer grants each daemon's principal only what daemons/core/acls.py says
(created by `qlctl topics ensure`). Judged at the broker, with the clients the daemons use."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemons.core.acls import GRANTS
from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.bus import EventProducer, kafka_auth
from daemons.core.events import ExecuteTrade, Producer, TradeResult, new_event
from daemons.core.settings import CoreSettings
from tests.conftest import TEST_STACK_DIR, Stack

CREDENTIALS = TEST_STACK_DIR / "kafka-credentials"
SOURCE = Producer(service="acl-test", instance="test")


def login(stack: Stack, name: str) -> CoreSettings:
    return CoreSettings(
        kafka_bootstrap=stack.kafka_bootstrap, kafka_username=name, kafka_password_file=CREDENTIALS / name
    )


def stale_command() -> ExecuteTrade:
    """A well-formed command no executor would answer (its answer_by long past)."""
    past = datetime.now(UTC) - timedelta(hours=1)
    return ExecuteTrade(
        command_id=str(uuid.uuid4()),
        decision_id="acl-test",
        quote_id=f"acl-{uuid.uuid4()}",
        direction="BUY_BTC",
        asset_in=NBTC_ID,
        asset_out=EURE_ID,
        amount_in=1,
        amount_out=1,
        fixed_side="exact_amount_in",
        min_deadline_ms=60_000,
        answer_by=past,
    )


async def can_publish(settings: CoreSettings, payload: object) -> bool:
    producer = EventProducer(settings, client_id="acl-test")
    try:
        await asyncio.wait_for(producer.start(), timeout=30)
        await asyncio.wait_for(producer.publish(new_event(payload, producer=SOURCE, pair="BTC/EURe")), timeout=30)
        return True
    except (KafkaError, TimeoutError):
        return False
    finally:
        await producer.stop()


async def can_join(settings: CoreSettings, group: str, topic: str) -> bool:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **kafka_auth(settings),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout=30)
        await asyncio.wait_for(consumer.getmany(timeout_ms=2000), timeout=30)
        return bool(consumer.assignment())
    except (KafkaError, TimeoutError):
        return False
    finally:
        await consumer.stop()


async def test_anonymous_and_wrong_password_clients_cannot_connect(stack: Stack, tmp_path: Path) -> None:
    anonymous = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await anonymous.start()
    await anonymous.stop()
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    settings = CoreSettings(
        kafka_bootstrap=stack.kafka_bootstrap, kafka_username="strategy-engine", kafka_password_file=wrong
    )
    assert not await can_publish(settings, stale_command())


async def test_only_strategy_engine_may_command_and_only_trade_executor_may_report(stack: Stack) -> None:
    result = TradeResult(
        execution_id=str(uuid.uuid4()),
        command_id=str(uuid.uuid4()),
        quote_id="acl-test",
        status="refused",
        reason_code="internal_error",
        reason="acl test",
    )
    commands = {name: await can_publish(login(stack, name), stale_command()) for name in GRANTS}
    results = {name: await can_publish(login(stack, name), result) for name in GRANTS}
    assert [n for n, ok in commands.items() if ok] == ["strategy-engine"], commands
    assert [n for n, ok in results.items() if ok] == ["trade-executor"], results
    assert not any((commands["history-writer"], results["history-writer"]))  # it writes nothing at all


async def test_no_principal_but_the_executors_may_join_its_group(stack: Stack) -> None:
    joined = {name: await can_join(login(stack, name), "trade-executor", "cmd.execute_trade") for name in GRANTS}
    assert [n for n, ok in joined.items() if ok] == ["trade-executor"], joined
