"""The service layer for the control sockets: every qlctl command and the TUI go through here.

Failures come back as `ClientError` with a one-line message that says what is wrong and what to
do, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from daemons.core.control import socket_path

SERVICES: tuple[str, ...] = (
    "near-intents-ingest",
    "market-reference-ingest",
    "inventory-sync",
    "liquidity-manager",
    "history-writer",
    "strategy-engine",
    "trade-executor",
)


class ClientError(Exception):
    """An operator-facing failure; `str()` is the one-line reason."""


class DaemonNotRunning(ClientError):
    pass


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ControlClient:
    def __init__(self, control_dir: Path, timeout_s: float = 5.0) -> None:
        self.control_dir = control_dir
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def check_service(self, service: str) -> None:
        if service not in SERVICES:
            raise ClientError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")

    async def request(self, service: str, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        self.check_service(service)
        sock = socket_path(self.control_dir, service)
        if not sock.exists():
            raise DaemonNotRunning(
                f"{service} is not running: no control socket at {sock} (start it, or set QL_CONTROL_DIR)"
            )
        connector = aiohttp.UnixConnector(path=str(sock))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
                async with session.request(method, f"http://{service}{path}", json=body) as resp:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = {"error": (await resp.text())[:200]}
                    return Reply(resp.status, data)
        except aiohttp.ClientConnectorError as exc:
            os_error = getattr(exc, "os_error", None)
            if isinstance(os_error, PermissionError):
                raise ClientError(
                    f"permission denied on {sock}: run qlctl as a member of the socket's group (quoteloop)"
                ) from None
            raise DaemonNotRunning(f"{service} is not running: {sock} refuses connections (stale socket)") from None
        except TimeoutError:
            raise ClientError(f"{service} did not answer within {self.timeout.total:.0f} s on {sock}") from None
        except aiohttp.ClientError as exc:  # e.g. the daemon closed the connection mid-answer
            raise ClientError(f"{service}: the control request failed ({exc.__class__.__name__}); retry") from None
