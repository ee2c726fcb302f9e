"""The shared control API, served by the shared runtime around a minimal service."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.control import Route, socket_path
from daemons.core.runtime import Service, serve
from daemons.core.settings import CoreSettings
from tests.conftest import Stack, eventually

TOKEN = "test-token-generated-for-this-test"


class Probe(Service):
    """A service with nothing but the runtime: it works while runnable and counts its steps."""

    name = "history-writer"  # any of the seven names; the socket is named after it

    def __init__(self, settings: CoreSettings) -> None:
        super().__init__(settings)
        self.problem: str | None = None
        self.steps = 0
        # in-flight work that a drain waits for; tests clear it to hold a drain open
        self.in_flight_done = asyncio.Event()
        self.in_flight_done.set()

    async def run(self) -> None:
        while await self.wait_runnable():
            self.steps += 1
            await asyncio.sleep(0.01)
        await self.in_flight_done.wait()

    def health_reasons(self) -> list[str]:
        return [self.problem] if self.problem else []

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def routes(self) -> list[Route]:
        async def echo(_r: Any, body: Any, caller: Any) -> Any:
            return {"operator": caller.operator}

        return [Route("GET", "/whoami", echo, "who the caller is")]


@pytest.fixture
async def probe(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[tuple[Probe, asyncio.Task[int]]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = CoreSettings(
        database_url=stack.database_url,
        kafka_bootstrap=stack.kafka_bootstrap,
        control_dir=control_dir,
        control_tcp_port=_free_port(),
        control_token_file=token_file,
    )
    service = Probe(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: socket_path(control_dir, service.name).exists(), what="socket created")
    yield service, task
    if not task.done():
        service.request_drain()
        await task


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _call(service: Probe, method: str, path: str, *, data: Any = None, json: Any = None) -> tuple[int, Any]:
    sock = socket_path(service.settings.control_dir, service.name)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        async with session.request(method, f"http://x{path}", data=data, json=json) as resp:
            return resp.status, await resp.json(content_type=None)


async def test_healthz_reports_reasons_with_503(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    assert await _call(service, "GET", "/healthz") == (200, {"healthy": True, "reasons": []})
    service.problem = "postgres_unavailable"
    assert await _call(service, "GET", "/healthz") == (503, {"healthy": False, "reasons": ["postgres_unavailable"]})


async def test_state_carries_the_common_fields(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    status, state = await _call(service, "GET", "/state")
    assert status == 200
    for key in ("service", "healthy", "reasons", "paused", "draining", "started_at", "last_success_at", "steps"):
        assert key in state
    assert state["pid"] == os.getpid()


async def test_pause_stops_work_and_resume_restarts_it(probe: tuple[Probe, Any], pool: asyncpg.Pool) -> None:
    service, _ = probe
    alice = f"alice-{uuid.uuid4()}"  # the database outlives a test run: find this run's rows only
    status, body = await _call(service, "POST", "/pause", json={"operator": alice, "reason": "maintenance"})
    assert (status, body["paused"], body["changed"]) == (200, True, True)
    await eventually(lambda: service.parked, what="the work loop parked")
    steps = service.steps
    status, state = await _call(service, "GET", "/state")
    assert state["paused"] is True and state["pause_effective"] is True
    assert service.steps == steps  # parked: no work while paused
    status, body = await _call(service, "POST", "/resume", json={"operator": alice})
    assert (status, body["paused"]) == (200, False)
    await eventually(lambda: service.steps > steps + 1, what="work resumed")
    async def audit_rows() -> list[Any] | None:
        rows = await pool.fetch("SELECT action, operator, reason, outcome FROM control_actions"
                                " WHERE service = $1 AND operator = $2 ORDER BY id", service.name, alice)
        return rows if len(rows) >= 2 else None

    rows = await eventually(audit_rows, what="both audit rows")
    assert [tuple(r) for r in rows] == [
        ("pause", alice, "maintenance", "paused"),
        ("resume", alice, None, "resumed"),
    ]


async def test_operator_defaults_to_the_socket_peer(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    status, body = await _call(service, "GET", "/whoami")
    assert status == 200
    assert body["operator"].startswith(f"uid:{os.getuid()}")


@pytest.mark.parametrize(
    ("data", "json_body", "status", "needle"),
    [
        (b"{not json", None, 400, "not valid JSON"),
        (b"[1, 2]", None, 400, "JSON object"),
        (None, {"operator": 5}, 422, "operator"),
        (None, {"operator": ""}, 422, "operator"),
        (None, {"unexpected": True}, 422, "unexpected"),
    ],
)
async def test_bad_bodies_get_4xx_with_a_message(
    probe: tuple[Probe, Any], data: bytes | None, json_body: Any, status: int, needle: str
) -> None:
    service, _ = probe
    got, body = await _call(service, "POST", "/pause", data=data, json=json_body)
    assert got == status
    assert needle in body["error"]
    assert service.paused is False  # nothing changed


async def test_get_with_a_body_and_unknown_paths_are_4xx(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    got, body = await _call(service, "GET", "/state", data=b'{"x": 1}')
    assert got == 400 and "takes no body" in body["error"]
    got, _ = await _call(service, "GET", "/nope")
    assert got == 404
    got, _ = await _call(service, "DELETE", "/pause")
    assert got == 405


async def test_openapi_lists_every_route(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    status, doc = await _call(service, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/healthz", "/state", "/pause", "/resume", "/drain", "/whoami", "/openapi.json"}
    schema = doc["paths"]["/pause"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"operator", "reason"}


async def test_socket_is_group_restricted(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    mode = stat.S_IMODE(socket_path(service.settings.control_dir, service.name).stat().st_mode)
    assert mode == 0o660


async def test_tcp_requires_the_bearer_token(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    url = f"http://127.0.0.1:{service.settings.control_tcp_port}/state"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 401
        async with session.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with session.post(url.replace("/state", "/pause")) as resp:
            assert resp.status == 401
        assert service.paused is False
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["service"] == service.name


async def test_drain_finishes_and_exits_zero(probe: tuple[Probe, asyncio.Task[int]]) -> None:
    service, task = probe
    status, body = await _call(service, "POST", "/drain", json={"operator": "bob"})
    assert (status, body) == (200, {"draining": True})
    assert await asyncio.wait_for(task, timeout=10) == 0
    assert not socket_path(service.settings.control_dir, service.name).exists()


async def test_pause_while_draining_is_refused(probe: tuple[Probe, Any]) -> None:
    service, task = probe
    service.in_flight_done.clear()  # the drain waits for in-flight work
    status, _ = await _call(service, "POST", "/drain")
    assert status == 200
    status, body = await _call(service, "POST", "/pause")
    assert status == 409 and "draining" in body["error"]
    status, body = await _call(service, "POST", "/resume")
    assert status == 409
    _, state = await _call(service, "GET", "/state")
    assert state["draining"] is True and state["paused"] is False
    service.in_flight_done.set()
    assert await asyncio.wait_for(task, timeout=10) == 0


def test_tcp_without_token_is_refused_at_start(control_dir: Path) -> None:
    from daemons.core.control import ControlServer

    with pytest.raises(ValueError, match="bearer token"):
        ControlServer("history-writer", [], control_dir, tcp_port=_free_port(), token=None)
