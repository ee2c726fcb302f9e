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
from prometheus_client.parser import text_string_to_metric_families

from daemons.core.control import Route, socket_path
from daemons.core.metrics import MetricSet
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
        self.metrics_bug = False

    async def run(self) -> None:
        while await self.wait_runnable():
            self.steps += 1
            await asyncio.sleep(0.01)
        await self.in_flight_done.wait()

    def health_reasons(self) -> list[str]:
        return [self.problem] if self.problem else []

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def metrics(self, m: MetricSet) -> None:
        m.gauge("probe_steps", "steps taken", self.steps)
        if self.metrics_bug:
            raise RuntimeError("a bug in a daemon's metrics()")

    def routes(self) -> list[Route]:
        async def echo(_r: Any, body: Any, caller: Any) -> Any:
            return {"operator": caller.operator}

        return [Route("GET", "/whoami", echo, "who the caller is")]


@pytest.fixture
async def probe(stack: Stack, control_dir: Path, tmp_path: Path) -> AsyncIterator[tuple[Probe, asyncio.Task[int]]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
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
        rows = await pool.fetch(
            "SELECT action, operator, reason, outcome FROM control_actions"
            " WHERE service = $1 AND operator = $2 ORDER BY id",
            service.name,
            alice,
        )
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


READER_CLIENT = r"""
import json, os, socket, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # nobody: in the socket's group, not the act group
out = {}
for method, path, body in (("GET", "/state", None), ("POST", "/pause", b'{"operator": "root"}')):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"\r\n" + (body or b""))
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    status = int(reply.split(b" ", 2)[1])
    out[path] = [status, json.loads(reply.split(b"\r\n\r\n", 1)[1] or b"null")]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_a_reader_may_read_but_not_act_and_the_kernel_identity_is_audited(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    """The socket's group lets a user in (here nobody's group); only root, the daemon's user
    and the act group may change state. A claimed operator name never replaces who it was."""
    import grp
    import shutil
    import subprocess
    import sys
    import tempfile

    control = Path(tempfile.mkdtemp(prefix="ql-control-"))  # pytest's tmp is 0700: nobody could not reach it
    control.chmod(0o755)
    settings = CoreSettings(
        database_url=stack.database_url,
        kafka_bootstrap=stack.kafka_bootstrap,
        control_dir=control,
        control_socket_group=grp.getgrgid(65534).gr_name,
        control_act_group="quoteloop-test-act-nonexistent",
    )
    service = Probe(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        sock = socket_path(control, service.name)
        await eventually(lambda: sock.exists(), what="socket created")
        assert sock.stat().st_gid == 65534
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER_CLIENT, str(sock), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err
        seen = __import__("json").loads(out)
        assert seen["/state"][0] == 200
        status, body = seen["/pause"]
        assert status == 403 and "uid:65534" in body["error"] and "may read but not act" in body["error"]
        assert not service.paused
        # root acts, claiming another name: both are recorded
        status, _ = await _call(service, "POST", "/pause", json={"operator": "alice", "reason": "drill"})
        assert status == 200 and service.paused
        row = await eventually(
            lambda: pool.fetchrow(
                "SELECT operator, identity FROM control_actions WHERE service = 'history-writer' AND action = 'pause'"
                " AND reason = 'drill' ORDER BY id DESC LIMIT 1"
            ),
            what="audit row",
        )
        assert row["operator"] == "alice" and row["identity"] == f"uid:0:{__import__('pwd').getpwuid(0).pw_name}"
    finally:
        service.request_drain()
        await asyncio.wait_for(task, timeout=30)
        shutil.rmtree(control, ignore_errors=True)


def test_a_token_file_others_may_read_is_refused(control_dir: Path, tmp_path: Path) -> None:
    from daemons.core.control import read_token
    from daemons.core.secrets import SecretFileError

    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    with pytest.raises(SecretFileError, match="QL_CONTROL_TOKEN_FILE: .* has mode 0644"):
        read_token(token)


async def _metrics(service: Probe) -> dict[str, Any]:
    sock = socket_path(service.settings.control_dir, service.name)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        async with session.get("http://x/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    return {
        s.name: s for f in text_string_to_metric_families(text) for s in f.samples if not s.labels.get("reason")
    } | {
        f"{s.name}:{s.labels['reason']}": s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("reason")
    }


async def test_metrics_are_read_from_the_live_attributes_at_each_scrape(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    first = await _metrics(service)
    assert first["quoteloop_up"].value == 1 and first["quoteloop_up"].labels == {"daemon": service.name}
    assert first["quoteloop_healthy"].value == 1 and first["quoteloop_paused"].value == 0
    assert first["quoteloop_process_start_time_seconds"].value > 0
    service.problem = "disk_full: /var is 100 %"
    service.pause()
    try:
        second = await _metrics(service)
        assert second["quoteloop_healthy"].value == 0
        assert second["quoteloop_unhealthy_reason:disk_full"].value == 1
        assert second["quoteloop_paused"].value == 1
        assert second["quoteloop_probe_steps"].value >= first["quoteloop_probe_steps"].value
    finally:
        service.problem = None
        service.resume()


async def test_a_bug_in_a_daemons_metrics_never_fails_the_scrape(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    service.metrics_bug = True
    try:
        found = await _metrics(service)
        assert found["quoteloop_metrics_collect_errors_total"].value >= 1
        assert found["quoteloop_up"].value == 1  # the runtime's part came before the bug
    finally:
        service.metrics_bug = False


async def test_the_control_tcp_port_keeps_requiring_the_token_for_metrics(probe: tuple[Probe, Any]) -> None:
    service, _ = probe
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{service.settings.control_tcp_port}/metrics") as resp:
            assert resp.status == 401
