"""The runtime speaks sd_notify: READY=1, STATUS= and WATCHDOG=1 reach NOTIFY_SOCKET; SIGTERM drains."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import tempfile
import uuid
from pathlib import Path

from tests.conftest import REPO, Stack, start_group_at_end


async def test_notify_socket_gets_ready_status_and_watchdog(stack: Stack, control_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="qlsd-") as tmp:
        path = Path(tmp) / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        group = f"sd-{uuid.uuid4()}"
        await start_group_at_end(stack, group)
        env = {
            **stack.settings_env(control_dir),
            "NOTIFY_SOCKET": str(path),
            "WATCHDOG_USEC": "200000",
            "QL_HISTORY_GROUP": group,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemons.history_writer", env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL
        )
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        try:
            while not ({"READY=1", "WATCHDOG=1"} <= set(seen) and any(s.startswith("STATUS=") for s in seen)):
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=30)
                seen.extend(data.decode().split("\n"))
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
            while "STOPPING=1" not in seen:
                seen.extend((await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=5)).decode().split("\n"))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            sock.close()
    status = next(s for s in seen if s.startswith("STATUS="))
    assert "running" in status
