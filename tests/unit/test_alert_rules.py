"""The alert rules the monitoring role ships (ansible/roles/monitoring/files/quoteloop-rules.yml):
`promtool check rules` and `promtool test rules` on the test file beside them, every alert with
a unit test there and a section in runbooks/alerts.md. promtool is Debian's `prometheus`
package, installed by `make deps` (scripts/stack.sh deps): the suite needs it, so a missing one
fails here with how to get it rather than skipping."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "ansible" / "roles" / "monitoring" / "files"
RULES = FILES / "quoteloop-rules.yml"
RULE_TESTS = FILES / "quoteloop-rules.test.yml"
RUNBOOK = REPO / "runbooks" / "alerts.md"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: `make deps` (scripts/stack.sh deps prometheus) installs Debian's prometheus"
    return found


def alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), flags=re.M)


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout, result.stdout


def test_promtool_test_rules() -> None:
    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=FILES, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@pytest.mark.parametrize("alert", alerts())
def test_every_alert_has_a_firing_unit_test(alert: str) -> None:
    """An alert with no `exp_alerts` that expects it firing is not tested at all: promtool
    passes a rule nobody checked."""
    tests = RULE_TESTS.read_text()
    blocks = re.findall(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels:", tests)
    assert blocks, f"{alert}: no promtool test expects it firing ({RULE_TESTS.name})"


@pytest.mark.parametrize("alert", alerts())
def test_every_alert_has_a_runbook_section(alert: str) -> None:
    text = RUNBOOK.read_text()
    assert re.search(rf"^## {alert}$", text, flags=re.M), f"runbooks/alerts.md has no '## {alert}' section"
    assert f"runbooks/alerts.md#{alert.lower()}" in RULES.read_text(), f"{alert}: runbook annotation"
