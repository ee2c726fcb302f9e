"""Reading the `export KEY=value` env files the local tooling writes (`scripts/stack.sh`'s
`$QL_STACK_DIR/env`, the simulators' `sim/env`): one parser for the tests, the fault matrix and
the benchmarks."""

from __future__ import annotations

from pathlib import Path


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value
    return env
