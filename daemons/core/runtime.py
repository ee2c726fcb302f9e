"""The service runtime: one start path for every daemon, which is also its recovery path.

A daemon subclasses `Service`, implements `run()` (its I/O loop), `health_reasons()` and
`state()`, and may add routes. The runtime gives it: pause/resume (stop taking new work, stay
observable), drain (finish in-flight work, exit 0), SIGTERM/SIGINT as drain, the control server
with the common endpoints, the audit of every control change (queued, so it never blocks the
daemon; flushed to `control_actions` as soon as PostgreSQL accepts it), systemd
notification (`READY=1`, `WATCHDOG=1`, `STATUS=`) when `NOTIFY_SOCKET` is set, and `start_bus`,
which waits (up, observable, unhealthy) for a Kafka broker that is not there yet at start.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
from datetime import datetime
from typing import Any

import uvloop
from aiohttp import web

from daemons.core.bus import BusClient, start_clients
from daemons.core.ceilings import CeilingsError
from daemons.core.control import Caller, ControlError, ControlServer, OperatorAction, Route, json_response, read_token
from daemons.core.events import Producer, now_utc
from daemons.core.health import Link
from daemons.core.logs import configure_logging, get_logger
from daemons.core.metrics import CONTENT_TYPE, MetricSet, exposition, metrics_app, registry_for
from daemons.core.secrets import SecretFileError
from daemons.core.settings import CoreSettings
from daemons.core.side_records import AuditLog, DeadLetters, QueuedWriter

# sysexits EX_CONFIG: a configuration an operator must fix (systemd units do not restart on it)
EXIT_CONFIG = 78


class SdNotifier:
    """sd_notify(3) over the datagram socket systemd gives us; a no-op without NOTIFY_SOCKET."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self._addr: str | bytes | None = None
        if addr:
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2_000_000 if usec and usec.isdigit() else None

    def notify(self, *lines: str) -> None:
        if self._sock is None or self._addr is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self._addr)
        except (BlockingIOError, OSError):
            pass  # notifications must never stop the daemon


class Service:
    """Base of every daemon. Subclasses keep only their own logic."""

    name: str = "service"

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        # the daemon's Kafka publishing health, where it publishes (`kafka_problem`)
        self.kafka_link: Link | None = None
        self.producer_id = Producer(service=self.name, instance=settings.instance or socket.gethostname())
        self.log = get_logger(self.name.replace("-", "_"))
        self.paused = False
        # True while the work loop is parked by a pause (the pause has taken effect)
        self.parked = False
        self.started_at = now_utc()
        self.last_success_at: datetime | None = None
        self.drain_requested = asyncio.Event()
        self._runnable = asyncio.Event()
        self._runnable.set()
        self.side_records = QueuedWriter(f"{self.name}.side_records")
        self.audit = AuditLog(self.name, self.side_records)
        self.dead_letters = DeadLetters(self.name, self.side_records)
        self.notifier = SdNotifier()
        self._status_line = ""
        # set while `start_bus` waits for a broker: the daemon is up and says why it does nothing
        self.kafka_unreachable: str | None = None
        self.kafka_unreachable_since: datetime | None = None
        # `GET /metrics`: this service's own registry, read at scrape time (daemons/core/metrics.py)
        self.metrics_registry = registry_for(self)

    # --- for subclasses -------------------------------------------------------------------

    async def run(self) -> None:
        """The I/O loop. Must return once `drain_requested` is set and in-flight work is done."""
        raise NotImplementedError

    def health_reasons(self) -> list[str]:
        """Why the service is unhealthy; empty means healthy."""
        return []

    def state(self) -> dict[str, Any]:
        return {}

    def routes(self) -> list[Route]:
        return []

    def metrics(self, m: MetricSet) -> None:
        """The daemon's own metrics for `GET /metrics`, read from its attributes at scrape time
        (never through `state()`): connections, staleness, counters, reserved amounts."""

    def kafka_problem(self) -> str | None:
        """Why Kafka does not work for this daemon, or None: the runtime's wait for a broker,
        else its own publishing link's last error (`kafka_link`, in a daemon that publishes)."""
        return self.kafka_unreachable or (self.kafka_link.error if self.kafka_link is not None else None)

    def core_metrics(self, m: MetricSet) -> None:
        """What every daemon exposes: up, healthy and why not, pause/drain, Kafka, side records."""
        reasons = self.reasons()
        m.gauge("up", "1 while the daemon process serves its control socket", 1)
        m.gauge("healthy", "1 when the daemon reports no health reasons (GET /healthz is 200)", not reasons)
        m.gauge("unhealthy_reason", "1 per health reason now reported (the reason's name)", None, reason="")
        for reason in sorted({r.split(":", 1)[0].strip() for r in reasons}):
            m.gauge("unhealthy_reason", "1 per health reason now reported (the reason's name)", 1, reason=reason)
        m.gauge("paused", "1 while paused by an operator", self.paused)
        m.gauge("draining", "1 while draining towards exit", self.drain_requested.is_set())
        m.connected("kafka", self.kafka_problem() is None)
        m.counter("dead_letters", "Inputs set aside as dead letters since start", self.dead_letters.count)
        m.gauge(
            "side_records_queued", "Audit rows and dead letters waiting for PostgreSQL", len(self.side_records.pending)
        )
        m.age(
            "last_success_age_seconds",
            "Seconds since the daemon's last successful unit of work",
            now_utc(),
            self.last_success_at,
        )

    def collect_metrics(self, m: MetricSet) -> None:
        self.core_metrics(m)
        self.metrics(m)

    def reasons(self) -> list[str]:
        """Every reason the service is unhealthy: the runtime's own, then the daemon's."""
        if self.kafka_unreachable is None:
            return self.health_reasons()
        since = f" (since {self.kafka_unreachable_since:%H:%M:%S} UTC)" if self.kafka_unreachable_since else ""
        return [f"kafka_unreachable: {self.kafka_unreachable}{since}", *self.health_reasons()]

    def gate_status(self) -> str:
        """One line for systemd's STATUS=: the gate state at a glance."""
        reasons = self.reasons()
        return f"{'paused' if self.paused else 'running'}; " + (
            "healthy" if not reasons else "unhealthy: " + ", ".join(reasons)
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def wait_runnable(self) -> bool:
        """Wait while paused; False when draining (stop taking work)."""
        if self.drain_requested.is_set():
            return False
        if not self._runnable.is_set():
            self.parked = True
            waiters = [asyncio.ensure_future(self.drain_requested.wait()), asyncio.ensure_future(self._runnable.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.parked = False
                for waiter in waiters:
                    waiter.cancel()
        return not self.drain_requested.is_set()

    def pause(self) -> None:
        self.paused = True
        self._runnable.clear()

    def resume(self) -> None:
        self.paused = False
        self._runnable.set()

    def request_drain(self) -> None:
        if not self.drain_requested.is_set():
            self.log.info("drain_requested")
        self.drain_requested.set()
        self._runnable.set()

    def mark_success(self) -> None:
        self.last_success_at = now_utc()

    async def start_bus(self, *clients: BusClient) -> bool:
        """Start the Kafka clients, waiting for the broker if it cannot be reached yet.

        A daemon that exited whenever Kafka was down at its start crash-looped into systemd's
        start limit and stayed down after Kafka returned; waiting here, it stays up, observable
        and unhealthy (`kafka_unreachable`), and goes on by itself. False when a drain came first
        (the clients already started are stopped again): the caller returns from `run()`.
        """

        def unreachable(error: str, retry_in_s: float) -> None:
            first = self.kafka_unreachable is None
            self.kafka_unreachable = error
            if first:
                self.kafka_unreachable_since = now_utc()
                self.log.warning("kafka_unreachable", error=error, retry_in_s=retry_in_s)
                self.notify_status()

        started = await start_clients(clients, self.drain_requested, unreachable)
        if started and self.kafka_unreachable is not None:
            self.log.info("kafka_reachable", unreachable_since=self.kafka_unreachable_since)
            self.kafka_unreachable = self.kafka_unreachable_since = None
            self.notify_status()
        return started

    # --- common control endpoints ---------------------------------------------------------

    def base_state(self) -> dict[str, Any]:
        reasons = self.reasons()
        return {
            "service": self.name,
            "instance": self.producer_id.instance,
            "pid": os.getpid(),
            "healthy": not reasons,
            "reasons": reasons,
            "paused": self.paused,
            "pause_effective": self.parked,
            "draining": self.drain_requested.is_set(),
            "started_at": self.started_at,
            "last_success_at": self.last_success_at,
            "dead_letters": self.dead_letters.count,
            "side_records_queued": len(self.side_records.pending),
            "kafka_unreachable": self.kafka_unreachable,
            "kafka_unreachable_since": self.kafka_unreachable_since,
        }

    def common_routes(self) -> list[Route]:
        async def healthz(_r: Any, _b: Any, _c: Caller) -> Any:
            reasons = self.reasons()
            return json_response({"healthy": not reasons, "reasons": reasons}, status=200 if not reasons else 503)

        async def state(_r: Any, _b: Any, _c: Caller) -> Any:
            return {**self.base_state(), **self.state()}

        async def pause(_r: Any, _b: Any, caller: Caller) -> Any:
            if self.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            was = self.paused
            self.pause()
            self.audit.record("pause", caller, "already paused" if was else "paused")
            self.notify_status()
            return {"paused": True, "changed": not was}

        async def resume(_r: Any, _b: Any, caller: Caller) -> Any:
            if self.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            was = self.paused
            self.resume()
            self.audit.record("resume", caller, "resumed" if was else "already running")
            self.notify_status()
            return {"paused": False, "changed": was}

        async def metrics(_r: Any, _b: Any, _c: Caller) -> Any:
            return web.Response(body=exposition(self.metrics_registry), headers={"Content-Type": CONTENT_TYPE})

        async def drain(_r: Any, _b: Any, caller: Caller) -> Any:
            self.audit.record("drain", caller, "draining")
            self.request_drain()
            return {"draining": True}

        return [
            Route("GET", "/healthz", healthz, "200 when healthy, 503 with the reasons otherwise"),
            Route("GET", "/state", state, "Inputs, last success, blocked reason, authoritative or stale"),
            Route("GET", "/metrics", metrics, "Prometheus text exposition of the daemon's live figures"),
            Route("POST", "/pause", pause, "Stop taking new work; stay alive and observable", OperatorAction),
            Route("POST", "/resume", resume, "Take new work again", OperatorAction),
            Route("POST", "/drain", drain, "Finish in-flight work, then exit 0", OperatorAction),
        ]

    def notify_status(self) -> None:
        line = self.gate_status()
        if line != self._status_line:
            self._status_line = line
            self.notifier.notify(f"STATUS={line}")


async def _watchdog(service: Service) -> None:
    interval = service.notifier.watchdog_interval
    if interval is None:
        return
    while True:
        service.notifier.notify("WATCHDOG=1")
        service.notify_status()
        await asyncio.sleep(interval)


async def serve(service: Service, *, handle_signals: bool = True) -> int:
    """Run `service` until it drains; return the process exit code."""
    settings = service.settings
    # Daemons allocate many short-lived event objects: keep start-up objects out of the
    # collector's way and run fewer, larger young-generation passes.
    gc.freeze()
    gc.set_threshold(settings.gc_young_threshold, 50, 50)
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.request_drain)
    control = ControlServer(
        service.name,
        service.common_routes() + service.routes(),
        settings.control_dir,
        tcp_port=settings.control_tcp_port,
        token=read_token(settings.control_token_file),
        socket_group=settings.control_socket_group,
        act_group=settings.control_act_group,
    )
    await control.start()
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_tcp_port is not None:
        metrics_runner = web.AppRunner(
            metrics_app(lambda: exposition(service.metrics_registry)), access_log=None, handle_signals=False
        )
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, "127.0.0.1", settings.metrics_tcp_port).start()
        service.log.info("metrics_listening", tcp_port=settings.metrics_tcp_port)
    helpers = [
        asyncio.create_task(service.side_records.run(settings.database_url), name="side_records"),
        asyncio.create_task(_watchdog(service), name="watchdog"),
    ]
    service.notifier.notify("READY=1", f"STATUS={service.gate_status()}")
    service.log.info("service_started", pid=os.getpid())
    code = 0
    try:
        await service.run()
    except Exception:
        service.log.exception("service_failed")
        code = 1
    finally:
        service.notifier.notify("STOPPING=1")
        await control.stop()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        # give queued audit rows and dead letters a last chance, but never hang the exit on
        # the database (each is in the log already)
        if service.side_records.pending:
            try:
                await asyncio.wait_for(service.side_records.flushed.wait(), timeout=5)
            except TimeoutError:
                service.log.warning("side_records_unflushed_at_exit", queued=len(service.side_records.pending))
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await service.side_records.close()
    service.log.info("service_stopped", exit_code=code)
    return code


def main(service_cls: type[Service], settings_cls: type[CoreSettings]) -> None:
    """Process entry point for `python -m daemons.<name>`: settings, logging, then `serve`."""
    settings = settings_cls()
    configure_logging(service_cls.name, settings.log_level, pair=settings.pair)

    async def _run() -> int:
        # built inside the loop: aiokafka clients bind to the running loop at construction
        try:
            service = service_cls(settings)
            read_token(settings.control_token_file)  # refused here, before anything starts
        except (CeilingsError, SecretFileError) as exc:
            # a configuration an operator must fix: one line, and the exit code systemd's
            # RestartPreventExitStatus= names, so it does not restart into the same refusal
            get_logger(service_cls.name).error("configuration_refused", error=str(exc))
            print(f"{service_cls.name}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return await serve(service)

    # uvloop: the same asyncio semantics with a faster loop on the hot path
    sys.exit(uvloop.run(_run()))
