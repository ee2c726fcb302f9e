"""The systemd units in systemd/: their contract, checked by systemd itself.

- `systemd-analyze verify` accepts every unit, the target and the CoinGecko drop-in, with no
  message at all (verify exits 0 on unknown keys, so its output is checked too). It needs the
  ExecStart binary to exist: the units are verified from a copy whose only change is
  /opt/quoteloop/venv/bin/python -> this venv's python.
- `systemd-analyze security --offline=true` scores each unit OK (exposure <= 2.0).
- The contract: Type=notify with a watchdog, restart only on failure (a drained daemon exits 0),
  the quoteloop user, the shared runtime directory, the hardening settings, and the credentials
  going only where they are needed.
- The daemons really run under the sandbox the units ask for: a daemon and a workload of the
  libraries on the hot path (uvloop, aiohttp, websockets, asyncpg, aiokafka, PyNaCl, orjson) are
  run under the same seccomp filters systemd 252 installs for SystemCallFilter=,
  MemoryDenyWriteExecute= and RestrictAddressFamilies= (built with libseccomp from the groups
  `systemd-analyze syscall-filter` lists), so a library that needs W+X memory or a refused system
  call fails here rather than on the host.

No Kafka or PostgreSQL is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qlctl.client import SERVICES

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = REPO / "systemd"
PROD_PYTHON = "/opt/quoteloop/venv/bin/python"
TARGET = "quoteloop.target"
DROPIN = UNIT_DIR / "quoteloop-market-reference-ingest.service.d" / "coingecko-api-key.conf"

# who gets which secret (only the signers hold the key, only the relay users hold the JWT)
CREDENTIALS = {
    "signer-key": ("QL_SIGNER_KEY_FILE", {"trade-executor", "liquidity-manager"}),
    "relay-jwt": ("QL_RELAY_JWT_FILE", {"near-intents-ingest", "trade-executor", "liquidity-manager"}),
}
# daemons with no venue: loopback only
LOCAL_ONLY = {"history-writer", "strategy-engine"}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_path(service: str) -> Path:
    return UNIT_DIR / f"quoteloop-{service}.service"


def parse_unit(*paths: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys repeat), drop-ins after the unit."""
    sections: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                sections.setdefault(section, {})
                continue
            key, _, value = line.partition("=")
            sections.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
    return sections


def service_unit(service: str) -> dict[str, dict[str, list[str]]]:
    dropins = sorted((UNIT_DIR / f"quoteloop-{service}.service.d").glob("*.conf"))
    return parse_unit(unit_path(service), *dropins)


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, found {values}"
    return values[0]


def analyze_version() -> int:
    out = subprocess.run([ANALYZE or "systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"systemd (\d+)", out)
    assert match, out
    return int(match.group(1))


# --- the files ---------------------------------------------------------------------------------


def test_one_unit_per_daemon_and_a_target_that_groups_them() -> None:
    units = sorted(p.name for p in UNIT_DIR.glob("*.service"))
    assert units == sorted(f"quoteloop-{s}.service" for s in SERVICES)
    target = parse_unit(UNIT_DIR / TARGET)
    wanted = set(" ".join(target["Unit"]["Wants"]).split())
    assert wanted == {f"quoteloop-{s}.service" for s in SERVICES}
    assert one(target, "Install", "WantedBy") == "multi-user.target"
    for service in SERVICES:
        unit = service_unit(service)
        assert one(unit, "Unit", "PartOf") == TARGET, service
        assert one(unit, "Install", "WantedBy") == TARGET, service


@pytest.mark.parametrize("service", SERVICES)
def test_unit_runs_the_daemon_as_a_watched_notify_service(service: str) -> None:
    unit = service_unit(service)
    package = service.replace("-", "_")
    assert (REPO / "daemons" / package / "__main__.py").is_file(), f"daemons.{package} has no __main__"
    svc = "Service"
    assert one(unit, svc, "ExecStart") == f"{PROD_PYTHON} -m daemons.{package}"
    assert one(unit, svc, "Type") == "notify"
    assert one(unit, svc, "NotifyAccess") == "main"
    watchdog = one(unit, svc, "WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and 10 <= int(watchdog[:-1]) <= 120, watchdog
    # a drain exits 0: on-failure never restarts it; a crash, an error exit or a watchdog timeout does
    assert one(unit, svc, "Restart") == "on-failure"
    assert one(unit, svc, "User") == "quoteloop"
    assert one(unit, svc, "Group") == "quoteloop"
    assert one(unit, svc, "SyslogIdentifier") == f"quoteloop-{service}"
    assert one(unit, svc, "EnvironmentFile") == "/etc/quoteloop/quoteloop.env"
    # the control sockets' directory, shared by all seven units and kept when one of them stops
    assert one(unit, svc, "RuntimeDirectory") == "quoteloop"
    assert one(unit, svc, "RuntimeDirectoryMode") == "0750"
    assert one(unit, svc, "RuntimeDirectoryPreserve") == "yes"
    assert "QL_CONTROL_DIR" not in " ".join(unit[svc].get("Environment", []))  # default /run/quoteloop
    # the drain must finish before systemd gives up on the stop
    stop = one(unit, svc, "TimeoutStopSec")
    assert int(stop.rstrip("s")) >= 45, stop


@pytest.mark.parametrize("service", SERVICES)
def test_unit_hardening(service: str) -> None:
    svc = service_unit(service)["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictRealtime": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert svc.get(key) == [value], f"{service}: {key}={svc.get(key)}, want {value!r}"
    # no user namespace: operators must reach the control socket as themselves, not as nobody
    assert "PrivateUsers" not in svc
    assert svc.get("RestartPreventExitStatus") == ["78"]  # a configuration to fix: no restart loop
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert all(v.startswith("~") for v in svc["SystemCallFilter"][1:])
    if service in LOCAL_ONLY:
        assert svc.get("IPAddressDeny") == ["any"] and svc.get("IPAddressAllow") == ["localhost"]
    else:
        assert "IPAddressDeny" not in svc  # venues on the internet: see systemd/README.md


@pytest.mark.parametrize("service", SERVICES)
def test_secrets_are_credentials_and_only_where_needed(service: str) -> None:
    svc = service_unit(service)["Service"]
    loaded = {}
    for value in svc.get("LoadCredential", []):
        name, _, source = value.partition(":")
        loaded[name] = source
    env = {}
    for line in svc.get("Environment", []):
        for assignment in line.split():
            name, _, value = assignment.partition("=")
            env[name] = value
    for name, (setting, users) in CREDENTIALS.items():
        if service in users:
            assert loaded.get(name) == f"/etc/quoteloop/secrets/{name}", f"{service} lacks the {name} credential"
            assert env.get(setting) == f"%d/{name}", f"{service}: {setting} must point at the credential"
        else:
            assert name not in loaded and setting not in env, f"{service} must not get the {name}"
    # the CoinGecko key only through the optional drop-in, only for market-reference-ingest
    if service == "market-reference-ingest":
        assert loaded.get("coingecko-api-key") == "/etc/quoteloop/secrets/coingecko-api-key"
        assert env.get("QL_COINGECKO_API_KEY_FILE") == "%d/coingecko-api-key"
        base = parse_unit(unit_path(service))["Service"]
        assert "coingecko-api-key" not in " ".join(base.get("LoadCredential", []))
    else:
        assert "coingecko-api-key" not in loaded
    # every daemon logs in to Kafka as itself, with its own password only
    assert loaded.get("kafka-password") == f"/etc/quoteloop/secrets/kafka-{service}"
    assert env.get("QL_KAFKA_USERNAME") == service and env.get("QL_KAFKA_PASSWORD_FILE") == "%d/kafka-password"
    assert set(loaded) <= set(CREDENTIALS) | {"coingecko-api-key", "kafka-password"}


# --- systemd's own verdicts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def verify_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as installed, but with ExecStart= on this venv's python (verify needs it to exist)."""
    root = tmp_path_factory.mktemp("units")
    shutil.copytree(UNIT_DIR, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text()
            path.write_text(text.replace(f"ExecStart={PROD_PYTHON} ", f"ExecStart={sys.executable} "))
    rewritten = [p.name for p in root.glob("*.service") if sys.executable in p.read_text()]
    assert len(rewritten) == len(SERVICES)
    return root


@needs_analyze
def test_systemd_analyze_verify_accepts_every_unit_silently(verify_copy: Path) -> None:
    files = sorted(str(p) for p in verify_copy.glob("*.service")) + [str(verify_copy / TARGET)]
    result = subprocess.run(
        [ANALYZE or "", "verify", "--man=no", *files], capture_output=True, text=True, cwd=verify_copy, timeout=120
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output
    # the drop-in is read with its unit (its directory sits beside it): prove it would be reported
    bad = verify_copy / "quoteloop-market-reference-ingest.service.d" / "zz-probe.conf"
    bad.write_text("[Service]\nNoSuchSetting=1\n")
    try:
        probe = subprocess.run(
            [ANALYZE or "", "verify", "--man=no", str(verify_copy / "quoteloop-market-reference-ingest.service")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        bad.unlink()
    assert "NoSuchSetting" in probe.stdout + probe.stderr


@needs_analyze
@pytest.mark.parametrize("service", SERVICES)
def test_systemd_analyze_security_scores_ok(service: str) -> None:
    if analyze_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    result = subprocess.run(
        [ANALYZE or "", "security", "--offline=true", "--no-pager", str(unit_path(service))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:]
    exposure, verdict = float(match.group(1)), match.group(2)
    assert exposure <= 2.0 and verdict in {"OK", "SAFE"}, f"{service}: {exposure} {verdict}"
    # and systemd's own threshold check agrees (the scale there is tenths)
    threshold = subprocess.run(
        [ANALYZE or "", "security", "--offline=true", "--threshold=20", str(unit_path(service))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert threshold.returncode == 0


# --- the daemons under the units' sandbox --------------------------------------------------------

AF = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


class _Cmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 4, 6, 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(
        [ANALYZE or "", "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.startswith("    ") and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


class Sandbox:
    """The seccomp filters systemd 252 installs for one unit, applied in a child before exec."""

    def __init__(self, unit: dict[str, dict[str, list[str]]]) -> None:
        svc = unit["Service"]
        groups = syscall_groups()
        allow: set[str] = set()
        for value in svc["SystemCallFilter"]:
            if value.startswith("~"):
                allow -= expand(value[1:].split(), groups)
            else:
                allow |= expand(value.split(), groups)
        self.allowed = sorted(allow)
        assert svc["SystemCallErrorNumber"] == ["EPERM"]
        self.mdwe = svc["MemoryDenyWriteExecute"] == ["yes"]
        self.families = sorted(AF[f] for f in svc["RestrictAddressFamilies"][0].split())
        path = ctypes.util.find_library("seccomp")
        if path is None:
            pytest.skip("libseccomp is not installed (needed to apply the units' syscall filters)")
        self.lib = ctypes.CDLL(path, use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_Cmp),
        ]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.lib.seccomp_release.argtypes = [ctypes.c_void_p]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

    def _rule(self, ctx: int, action: int, name: str, *cmps: _Cmp) -> None:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call on this architecture
        array = (_Cmp * len(cmps))(*cmps) if cmps else None
        rc = self.lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
        if rc < 0 and rc != -errno.EEXIST:
            raise OSError(-rc, f"seccomp_rule_add {name}")

    def _load(self, ctx: int) -> None:
        rc = self.lib.seccomp_load(ctx)
        self.lib.seccomp_release(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")

    def apply(self) -> None:
        """Runs in the child between fork and exec: NoNewPrivileges, then the filters, the
        system call allow list last (as systemd does: it refuses seccomp() itself)."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if self.mdwe:  # systemd 252's MemoryDenyWriteExecute=
            ctx = self.lib.seccomp_init(SCMP_ACT_ALLOW)
            w, x = 0x2, 0x4
            self._rule(ctx, _errno_action(errno.EPERM), "mmap", _Cmp(2, SCMP_CMP_MASKED_EQ, w | x, w | x))
            self._rule(ctx, _errno_action(errno.EPERM), "mprotect", _Cmp(2, SCMP_CMP_MASKED_EQ, x, x))
            self._rule(ctx, _errno_action(errno.EPERM), "pkey_mprotect", _Cmp(2, SCMP_CMP_MASKED_EQ, x, x))
            self._rule(ctx, _errno_action(errno.EPERM), "shmat", _Cmp(2, SCMP_CMP_MASKED_EQ, 0o100000, 0o100000))
            self._load(ctx)
        ctx = self.lib.seccomp_init(SCMP_ACT_ALLOW)  # RestrictAddressFamilies=
        top = max(self.families)
        for family in range(top):
            if family not in self.families:
                self._rule(ctx, _errno_action(errno.EAFNOSUPPORT), "socket", _Cmp(0, SCMP_CMP_EQ, family, 0))
        self._rule(ctx, _errno_action(errno.EAFNOSUPPORT), "socket", _Cmp(0, SCMP_CMP_GT, top, 0))
        self._load(ctx)
        ctx = self.lib.seccomp_init(_errno_action(errno.EPERM))  # SystemCallFilter=, SystemCallErrorNumber=EPERM
        for name in self.allowed:
            self._rule(ctx, SCMP_ACT_ALLOW, name)
        self._load(ctx)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (it lists the system call groups)")
    if not sys.platform.startswith("linux"):
        pytest.skip("seccomp is Linux only")
    # every unit asks for the same sandbox: one is enough, checked here
    units = [service_unit(s)["Service"] for s in SERVICES]
    for key in ("SystemCallFilter", "MemoryDenyWriteExecute", "RestrictAddressFamilies", "SystemCallErrorNumber"):
        assert all(u[key] == units[0][key] for u in units), key
    box = Sandbox(service_unit(SERVICES[0]))
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=box.apply, capture_output=True)
    assert probe.returncode == 0, probe.stderr
    return box


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra})
    return env


WORKLOAD = r"""
import asyncio, mmap, os, socket, sys, tempfile
import aiohttp, asyncpg, nacl.signing, orjson, uvloop, websockets
from aiohttp import web
from aiokafka import AIOKafkaProducer
import daemons.core.runtime
from daemons.venues.near_intents import nep413

# the sandbox is on: writable+executable memory and other socket families are refused
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping was allowed: MemoryDenyWriteExecute is not in force")
except OSError:
    pass
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    sys.exit("AF_NETLINK was allowed: RestrictAddressFamilies is not in force")
except OSError:
    pass

async def main():
    key = nacl.signing.SigningKey.generate()
    signed = key.sign(orjson.dumps({"nonce": os.urandom(32).hex()}))
    key.verify_key.verify(signed)
    loop = asyncio.get_running_loop()
    assert await loop.getaddrinfo("localhost", 80)  # resolver thread
    with tempfile.TemporaryDirectory() as tmp:
        app = web.Application()
        app.router.add_get("/x", lambda r: web.json_response({"ok": True}))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.UnixSite(runner, f"{tmp}/s.sock")
        await site.start()
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=f"{tmp}/s.sock")) as s:
            async with s.get("http://localhost/x") as r:
                assert (await r.json()) == {"ok": True}
        await runner.cleanup()
    refused = 0
    for attempt in (
        lambda: asyncpg.connect("postgresql://x@127.0.0.1:1/x", timeout=5),
        lambda: websockets.connect("ws://127.0.0.1:1/ws", open_timeout=5),
    ):
        try:
            await attempt()
        except OSError:
            refused += 1
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", request_timeout_ms=2000)
    try:
        await producer.start()
    except Exception:
        refused += 1
    finally:
        await producer.stop()
    assert refused == 3, refused
    print("workload ok")

uvloop.run(main())
"""


def test_hot_path_libraries_work_under_the_units_sandbox(sandbox: Sandbox) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKLOAD],
        preexec_fn=sandbox.apply,
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "workload ok" in result.stdout, result.stdout + result.stderr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    try:
        yield sock, path
    finally:
        sock.close()


def test_a_daemon_serves_notifies_and_drains_under_the_units_sandbox(
    sandbox: Sandbox, notify_socket: tuple[socket.socket, Path], tmp_path: Path
) -> None:
    """near-intents-ingest without its JWT stays up, blocked and observable: READY=1, STATUS=,
    WATCHDOG=1, /healthz and /state over the control socket, then SIGTERM drains to exit 0."""
    sock, path = notify_socket
    control = tmp_path / "run"
    env = clean_env(
        NOTIFY_SOCKET=str(path),
        WATCHDOG_USEC="400000",
        QL_CONTROL_DIR=str(control),
        QL_KAFKA_BOOTSTRAP="127.0.0.1:1",
        QL_DATABASE_URL="postgresql://x@127.0.0.1:1/x",
    )
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemons.near_intents_ingest"],
        preexec_fn=sandbox.apply,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not ({"READY=1", "WATCHDOG=1"} <= set(seen) and any(s.startswith("STATUS=") for s in seen)):
            assert time.monotonic() < deadline, f"notifications so far: {seen}"
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue
        sock_path = control / "near-intents-ingest.sock"
        assert oct(sock_path.stat().st_mode & 0o777) == oct(0o660)
        for route, codes in (("/healthz", {200, 503}), ("/state", {200})):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            client.connect(str(sock_path))
            client.sendall(f"GET {route} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
            client.close()
            head, _, body = reply.partition(b"\r\n\r\n")
            assert int(head.split()[1]) in codes, head
            payload = json.loads(body)
            if route == "/state":
                assert payload["service"] == "near-intents-ingest" and payload["healthy"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 5
        while "STOPPING=1" not in seen and time.monotonic() < deadline:
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue
        assert "STOPPING=1" in seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    # the gate state, as `systemctl status` shows it
    statuses = [s for s in seen if s.startswith("STATUS=")]
    assert statuses and all(s.startswith("STATUS=running; unhealthy: ") for s in statuses), statuses
