"""Schemathesis against every daemon's `/openapi.json`, over its Unix control socket.

Schemathesis generates requests from each daemon's own OpenAPI document (plus garbage bodies);
they are sent to the seven daemons running in-process. Properties: never a 5xx (but the 503 of
`/healthz` naming its reasons, which is its documented answer while unhealthy), the daemons
keep running, and a rejected (4xx) request changes nothing observable (threshold, limits, pair
filter, armed, paused, frozen). `/drain` is left out: a valid drain legitimately stops a daemon.
Hypothesis drives its sync engine in a worker thread; every request still goes through the
test's event loop, where the daemons run."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack
from tests.fuzz.conftest import FUZZ_EXAMPLES
from tests.seven import Seven, seven_daemons

SKIP_PATHS = {"/drain"}
WATCHED_GETS = ("/threshold", "/limits", "/pair-filter")
WATCHED_STATE_KEYS = ("armed", "paused", "draining", "withdrawals_frozen", "frozen")
GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[]", b"null", b"1e999", b'"x"', b'{"operator": ""}', b'{"operator": null, "x": 1}']),
)


async def observable(seven: Seven, service: str, paths: set[str]) -> dict[str, Any]:
    """What a rejected request must not change."""
    seen: dict[str, Any] = {}
    for path in WATCHED_GETS:
        if path in paths:
            seen[path] = (await seven.call(service, "GET", path))[1]
    _, state = await seven.call(service, "GET", "/state")
    for key in WATCHED_STATE_KEYS:
        if isinstance(state, dict) and key in state:
            seen[key] = state[key]
    return seen


def fuzzer(op: Any, send: Callable[[str, str, Any, bytes | None], None]) -> Callable[[], None]:
    """The Hypothesis test of one operation: every case it generates (or a garbage body) goes to `send`."""
    method, path = op.method.upper(), op.path

    @settings(
        max_examples=max(8, FUZZ_EXAMPLES // 8), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=op.as_strategy(), garbage=st.one_of(st.none(), GARBAGE))
    def fuzz(case: Any, garbage: bytes | None) -> None:
        body = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) or case.body is None else None
        send(method, path, body, garbage)

    return fuzz


@pytest.mark.timeout(180)
async def test_no_5xx_and_rejections_change_nothing(stack: Stack, control_dir: Path, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    async with seven_daemons(stack, control_dir, tmp_path, jwt="jwt-control-fuzz") as seven:
        problems: list[str] = []
        calls = 0

        async def send(service: str, paths: set[str], method: str, path: str, body: Any, raw: bytes | None) -> None:
            nonlocal calls
            calls += 1
            mutating = method in ("POST", "PUT", "DELETE", "PATCH")
            before = await observable(seven, service, paths) if mutating else None
            status, answer = await seven.call(service, method, path, body, raw=raw)
            what = f"{service} {method} {path} body={body!r} raw={raw!r} -> {status} {answer!r}"[:400]
            # /healthz answers 503 with its reasons by design (an input gone stale, e.g. when the
            # barrage's refreshes spent inventory-sync's NEAR RPC budget): not a server error
            unhealthy = path == "/healthz" and status == 503 and isinstance(answer, dict) and answer.get("reasons")
            if status >= 500 and not unhealthy:
                problems.append(what)
            if mutating and 400 <= status < 500:
                after = await observable(seven, service, paths)
                if after != before:
                    problems.append(f"rejected request changed state: {what}: {before} -> {after}")

        def send_from_thread(
            service: str, paths: set[str], method: str, path: str, body: Any, raw: bytes | None
        ) -> None:
            """From Hypothesis's worker thread: the request still goes through the test's loop."""
            asyncio.run_coroutine_threadsafe(send(service, paths, method, path, body, raw), loop).result(timeout=30)

        for service in seven.services:
            status, doc = await seven.call(service, "GET", "/openapi.json")
            assert status == 200 and doc["paths"], (service, status)
            schema = schemathesis.openapi.from_dict(doc)
            paths = set(doc["paths"])
            operations = [r.ok() for r in schema.get_all_operations()]
            operations = [op for op in operations if op.path not in SKIP_PATHS]
            assert operations, service
            for op in operations:
                await asyncio.to_thread(fuzzer(op, functools.partial(send_from_thread, service, paths)))
        # the daemons are all still serving after the barrage
        for service in seven.services:
            status, _ = await seven.call(service, "GET", "/state")
            assert status == 200, service
        assert calls > 50
        assert not problems, "\n".join(problems[:20])


async def test_rejected_threshold_and_arm_leave_state_unchanged(
    stack: Stack, control_dir: Path, tmp_path: Path
) -> None:
    # The property above, pinned to two named examples (a bad threshold, an arm without an
    # operator) so it can visibly fail.
    async with seven_daemons(stack, control_dir, tmp_path, jwt="jwt-control-fuzz") as seven:
        _, limits_before = await seven.call("strategy-engine", "GET", "/limits")
        status, _ = await seven.call("strategy-engine", "PUT", "/threshold", {"threshold_pct": "-5", "bogus": 1})
        assert 400 <= status < 500
        status, _ = await seven.call("strategy-engine", "PUT", "/threshold", raw=b"{not json")
        assert status == 400
        assert (await seven.call("strategy-engine", "GET", "/limits"))[1] == limits_before
        for service in ("strategy-engine", "trade-executor"):
            status, _ = await seven.call(service, "POST", "/arm", {"operator": "", "reason": 5})
            assert status == 422, service
            _, state = await seven.call(service, "GET", "/state")
            assert state["armed"] is False, (service, json.dumps(state)[:300])
