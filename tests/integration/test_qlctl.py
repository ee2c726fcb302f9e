"""qlctl against a running history-writer and the real Kafka: status, pause/resume/drain, topics."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from daemons.core.events import TOPICS
from daemons.core.runtime import serve
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings
from tests.conftest import REPO, Stack, eventually, kafka_options


async def qlctl(
    stack: Stack, control_dir: Path, *args: str, extra_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qlctl.app",
        *args,
        env={**stack.settings_env(control_dir), "COLUMNS": "200", **(extra_env or {})},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_status_shows_the_running_daemon_and_the_absent_ones(
    stack: Stack, control_dir: Path, writer: Any
) -> None:
    code, out, _ = await qlctl(stack, control_dir, "status", "--json")
    assert code == 0
    states = orjson.loads(out)
    assert len(states) == 7
    hw = states["history-writer"]
    assert hw["running"] is True and hw["healthy"] is True and hw["audit_history_impaired"] is False
    assert states["trade-executor"]["running"] is False
    assert "not running" in states["trade-executor"]["error"]
    code, out, _ = await qlctl(stack, control_dir, "status", "--wide")
    assert code == 0 and "history-writer" in out and "rows_written" in out
    code, out, _ = await qlctl(stack, control_dir, "status", extra_env={"COLUMNS": "80"})
    assert code == 0 and "history " in out and "rows written" in out
    code, _, _ = await qlctl(stack, control_dir, "status", "--require-all")
    assert code == 1


async def test_status_fails_when_a_running_daemon_is_unhealthy(stack: Stack, control_dir: Path) -> None:
    settings = HistoryWriterSettings(
        database_url="postgresql://quoteloop@127.0.0.1:1/quoteloop",
        kafka_bootstrap=stack.kafka_bootstrap,
        control_dir=control_dir,
        history_group=f"qlctl-{uuid.uuid4()}",
    )
    service = HistoryWriter(settings)  # its database is unreachable
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        await eventually(lambda: service.db_error, what="writer saw the database down")
        code, out, _ = await qlctl(stack, control_dir, "status", "history-writer")
        assert code == 1 and "audit history impaired" in out
    finally:
        service.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0


async def test_pause_resume_drain_through_qlctl(stack: Stack, control_dir: Path, writer: Any) -> None:
    service, task = writer
    code, out, _ = await qlctl(
        stack, control_dir, "pause", "history-writer", "--operator", "carol", "--reason", "test", "--json"
    )
    assert code == 0 and orjson.loads(out)["paused"] is True
    assert service.paused
    code, _, _ = await qlctl(stack, control_dir, "resume", "history-writer")
    assert code == 0 and not service.paused
    code, _, _ = await qlctl(stack, control_dir, "drain", "history-writer")
    assert code == 0
    assert await asyncio.wait_for(task, timeout=30) == 0


async def test_clear_errors_for_unknown_or_absent_daemons(stack: Stack, control_dir: Path) -> None:
    code, _, err = await qlctl(stack, control_dir, "pause", "no-such-daemon")
    assert code == 1 and "unknown service 'no-such-daemon'" in err
    code, _, err = await qlctl(stack, control_dir, "pause", "strategy-engine")
    assert code == 1 and "strategy-engine is not running" in err and str(control_dir) in err
    code, _, err = await qlctl(stack, control_dir, "status", "nonsense")
    assert code == 2 and "unknown service" in err


async def test_topics_ensure_is_idempotent_and_applies_the_settings(stack: Stack, control_dir: Path) -> None:
    env = {"QL_TOPIC_RETENTION_MS": "86400000"}
    code, out, _ = await qlctl(stack, control_dir, "topics", "ensure", "--json", extra_env=env)
    assert code == 0
    assert {a["topic"] for a in orjson.loads(out)} == set(TOPICS)
    code, out, _ = await qlctl(stack, control_dir, "topics", "ensure", "--json", extra_env=env)
    assert code == 0 and {a["action"] for a in orjson.loads(out)} == {"exists"}
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, **kafka_options())
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "cmd.execute_trade")])
        entries = {e[0]: e[1] for r in responses for res in r.resources for e in res[4]}
        assert entries["retention.ms"] == "86400000"
    finally:
        await admin.close()
    # back to the default for the rest of the session
    code, out, _ = await qlctl(stack, control_dir, "topics", "ensure", "--json")
    assert code == 0 and {a["action"] for a in orjson.loads(out)} == {"config_updated"}


async def test_topics_ensure_without_kafka_says_what_to_do(stack: Stack, control_dir: Path) -> None:
    code, _, err = await qlctl(stack, control_dir, "topics", "ensure", extra_env={"QL_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert code == 1 and "not reachable" in err
