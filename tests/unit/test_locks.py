"""The lock files agree with pyproject.toml (`make lock` writes them; `make venv` installs
requirements-dev.lock, the ansible role requirements.lock, both with `--require-hashes`):

- every requirement of pyproject.toml is locked at a version inside its range: the project's
  dependencies and the build backend in both files, the dev extra in requirements-dev.lock;
- the app's lock is the dev lock without the dev tools: the same version of every package;
- every locked package carries its hashes.

A pyproject.toml edited without `make lock` fails here rather than at an install.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(name: str) -> dict[str, set[str]]:
    """Package -> the versions pinned (a universal lock may pin one per Python version)."""
    pins: dict[str, set[str]] = {}
    entry: str | None = None
    hashed: set[str] = set()
    for line in (ROOT / name).read_text().splitlines():
        match = PIN.match(line)
        if match:
            entry = canonicalize_name(match.group(1))
            pins.setdefault(entry, set()).add(match.group(2))
        elif entry is not None and line.strip().startswith("--hash=sha256:"):
            hashed.add(entry)
    assert pins, f"{name} pins nothing"
    assert set(pins) == hashed, f"{name}: without hashes: {sorted(set(pins) - hashed)}"
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def assert_satisfied(requirements: list[str], pins: dict[str, set[str]], lock: str) -> None:
    for text in requirements:
        req = Requirement(text)
        versions = pins.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in {lock}: run make lock"
        outside = [v for v in versions if not req.specifier.contains(v, prereleases=True)]
        assert not outside, f"{lock} pins {req.name} {outside}, outside {req.specifier}: run make lock"


def test_the_dev_lock_has_every_requirement_in_range(pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    pins = locked("requirements-dev.lock")
    assert_satisfied(
        project["dependencies"] + project["optional-dependencies"]["dev"] + build["requires"],
        pins,
        "requirements-dev.lock",
    )


def test_the_app_lock_is_the_dev_lock_without_the_dev_tools(pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    app, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    assert_satisfied(project["dependencies"] + build["requires"], app, "requirements.lock")
    assert {name: app[name] for name in app} == {name: dev.get(name) for name in app}
    for tool in ("pytest", "ruff", "mypy", "uv", "ansible-core"):
        assert tool not in app, f"{tool} is a dev tool: not for the hosts"
