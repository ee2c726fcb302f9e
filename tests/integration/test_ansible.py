"""The deploy playbook in ansible/: syntax, ansible-lint's production profile, and a check-mode run
against this machine that must pass and change nothing here.

The check-mode run uses `-i localhost, -c local --check`. Steps that depend on an earlier change
(a directory or user that would be created, a tarball that would be downloaded) and every
service action are skipped in check mode on a host whose service manager is not systemd; the rest
(packages, users, directories, the source copy, templates, secrets, units) is evaluated.
Ansible's own scratch space goes to a temporary directory, so nothing of it lands in $HOME.
No Kafka or PostgreSQL is needed.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    beside = BIN / name
    return str(beside) if beside.exists() else shutil.which(name)


PLAYBOOK = tool("ansible-playbook")
LINT = tool("ansible-lint")
needs_playbook = pytest.mark.skipif(PLAYBOOK is None, reason="ansible-core is not installed (dev extra)")
needs_lint = pytest.mark.skipif(LINT is None, reason="ansible-lint is not installed (dev extra)")


def ansible_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "QL_"))}
    env.update(
        {
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            # ansible-lint keeps its cache under $VIRTUAL_ENV/.ansible instead of in the repository
            "VIRTUAL_ENV": sys.prefix,
            "ANSIBLE_LINT_SKIP_VERSION_CHECK": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def run(cmd: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ANSIBLE_DIR, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def check_mode(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert PLAYBOOK
    return run(
        [
            PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "--check",
            "site.yml",
            # the play targets the `quoteloop` group; here the one host is localhost, already root
            "-e",
            "quoteloop_hosts=localhost",
            "-e",
            "ansible_become=false",
            *extra,
        ],
        tmp_path,
    )


def debian_target() -> None:
    """The playbook targets Debian: apt, and /usr/bin/python3 with python3-apt (check mode needs it)."""
    if shutil.which("apt-get") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("the playbook targets Debian (apt, /usr/bin/python3); this machine is not one")
    if subprocess.run(["/usr/bin/python3", "-c", "import apt"], capture_output=True).returncode != 0:
        pytest.skip("python3-apt is not installed (ansible's apt module needs it in check mode)")


def host_state() -> dict[str, object]:
    """What a real run would create or change on this machine."""
    state: dict[str, object] = {}
    paths = [
        Path(p)
        for p in (
            "/etc/quoteloop",
            "/opt/quoteloop",
            "/opt/kafka",
            "/etc/kafka",
            "/var/lib/kafka",
            "/var/log/kafka",
            "/etc/systemd/system/kafka.service",
            "/etc/systemd/system/quoteloop.target",
            "/etc/systemd/system/quoteloop-market-reference-ingest.service.d",
        )
    ]
    paths += sorted(Path("/etc/systemd/system").glob("quoteloop-*.service"))
    for path in paths:
        try:
            st = path.lstat()
            state[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
        except FileNotFoundError:
            state[str(path)] = None
    for name in ("quoteloop", "kafka"):
        try:
            state[f"user:{name}"] = tuple(pwd.getpwnam(name))
        except KeyError:
            state[f"user:{name}"] = None
        try:
            state[f"group:{name}"] = tuple(grp.getgrnam(name))
        except KeyError:
            state[f"group:{name}"] = None
    return state


KAFKA_PASSWORDS = {
    name: f"not-a-kafka-password-{i}"
    for i, name in enumerate(
        (
            "admin",
            "history-writer",
            "market-reference-ingest",
            "inventory-sync",
            "liquidity-manager",
            "near-intents-ingest",
            "strategy-engine",
            "trade-executor",
        )
    )
}


def secrets_file(tmp_path: Path, **values: object) -> str:
    """Throwaway secrets as an operator's vault would hold them (never real ones)."""
    path = tmp_path / "secrets.yml"
    path.write_text("".join(f"{k}: {v!r}\n" for k, v in values.items()))
    path.chmod(0o600)
    return f"@{path}"


@needs_playbook
def test_syntax_check(tmp_path: Path) -> None:
    assert PLAYBOOK
    result = run([PLAYBOOK, "--syntax-check", "-i", "localhost,", "site.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_lint
def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    assert LINT
    result = run([LINT, "--offline", "-c", ".ansible-lint", "--profile", "production"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output


@needs_playbook
def test_check_mode_against_localhost_passes_and_changes_nothing(tmp_path: Path) -> None:
    debian_target()
    before = host_state()
    result = check_mode(
        tmp_path,
        "-e",
        secrets_file(
            tmp_path,
            quoteloop_signer_key="ed25519:not-a-real-key",
            quoteloop_relay_jwt="not.a.jwt",
            quoteloop_coingecko_api_key="not-a-key",
            quoteloop_kafka_passwords=KAFKA_PASSWORDS,
        ),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    recap = output[output.index("PLAY RECAP") :]
    assert "failed=0" in recap and "unreachable=0" in recap, recap
    # the secrets are never printed, not even in check mode
    for secret in ("not-a-real-key", "not.a.jwt", "not-a-key", *KAFKA_PASSWORDS.values()):
        assert secret not in output
    # what the run evaluated: the source, the settings, the secrets and the units
    for task in (
        "Copy the source",
        "Write the settings",
        "Write the secrets",
        "Install the units and the target",
        "Hand the CoinGecko key to market-reference-ingest",
        "Give each daemon its loopback metrics port (QL_METRICS_TCP_PORT)",
    ):
        assert f"TASK [quoteloop : {task}" in output, task
    for task in (
        "Install Prometheus and Alertmanager (Debian packages)",
        "Install the quoteloop alert rules (checked by promtool)",
        "Write the Prometheus configuration (checked by promtool)",
        "Write the Alertmanager configuration (checked by amtool)",
    ):
        assert f"TASK [monitoring : {task}" in output, task
    assert host_state() == before


@needs_playbook
def test_check_mode_refuses_missing_secrets_and_secret_settings(tmp_path: Path) -> None:
    debian_target()
    if Path("/etc/quoteloop/secrets/signer-key").exists():
        pytest.skip("this machine has a signer key installed")
    result = check_mode(
        tmp_path,
        "-e",
        secrets_file(tmp_path, quoteloop_relay_jwt="not.a.jwt", quoteloop_kafka_passwords=KAFKA_PASSWORDS),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "quoteloop_signer_key is empty" in output, output[-4000:]
    # a secret's path in the settings would override the credential the unit hands over
    result = check_mode(
        tmp_path,
        "-e",
        secrets_file(tmp_path, quoteloop_kafka_passwords=KAFKA_PASSWORDS),
        "-e",
        '{"quoteloop_env_extra": {"QL_SIGNER_KEY_FILE": "/tmp/key"}}',
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "quoteloop_env_extra takes QL_* names only" in output, output[-4000:]
    # the broker cannot be formatted without every principal's password
    result = check_mode(
        tmp_path,
        "-e",
        secrets_file(tmp_path, quoteloop_signer_key="ed25519:not-a-real-key", quoteloop_relay_jwt="not.a.jwt"),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "quoteloop_kafka_passwords has no admin password" in output, output[-4000:]


def test_settings_template_carries_no_secret_settings() -> None:
    template = (ANSIBLE_DIR / "roles/quoteloop/templates/quoteloop.env.j2").read_text()
    defaults = (ANSIBLE_DIR / "roles/quoteloop/defaults/main.yml").read_text()
    variables = (ANSIBLE_DIR / "roles/quoteloop/vars/main.yml").read_text()
    for setting in ("QL_SIGNER_KEY_FILE", "QL_RELAY_JWT_FILE", "QL_COINGECKO_API_KEY_FILE"):
        assert setting not in template and setting not in defaults
        environment = variables[variables.index("quoteloop_environment:") : variables.index("quoteloop_secrets:")]
        assert setting not in environment


def test_units_deployed_are_the_tested_ones() -> None:
    """The role installs systemd/ as it is (the files test_systemd_units.py verifies)."""
    tasks = (ANSIBLE_DIR / "roles/quoteloop/tasks/main.yml").read_text()
    assert 'src: "{{ quoteloop_source_dir }}/systemd/{{ item }}"' in tasks
    defaults = (ANSIBLE_DIR / "roles/quoteloop/defaults/main.yml").read_text()
    from qlctl.client import SERVICES

    for service in SERVICES:
        assert f"  - {service}\n" in defaults
        assert (REPO / "systemd" / f"quoteloop-{service}.service").is_file()


# --- the monitoring role: its templates as rendered with the defaults ---------------------------


def render_monitoring(template: str, **overrides: object) -> str:
    import jinja2
    import yaml

    quoteloop = yaml.safe_load((ANSIBLE_DIR / "roles/quoteloop/defaults/main.yml").read_text())
    defaults = yaml.safe_load((ANSIBLE_DIR / "roles/monitoring/defaults/main.yml").read_text())
    variables = {**defaults, "ansible_managed": "test", **overrides}
    variables["monitoring_metrics_ports"] = quoteloop["quoteloop_metrics_ports"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((ANSIBLE_DIR / "roles/monitoring/templates" / template).read_text()).render(variables)


def test_prometheus_scrapes_every_daemon_on_its_metrics_port(tmp_path: Path) -> None:
    import yaml

    from qlctl.client import SERVICES

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make deps` installs Debian's prometheus"
    config = tmp_path / "prometheus.yml"
    config.write_text(render_monitoring("prometheus.yml.j2"))
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    ports = yaml.safe_load((ANSIBLE_DIR / "roles/quoteloop/defaults/main.yml").read_text())["quoteloop_metrics_ports"]
    assert set(ports) == set(SERVICES)
    job = next(j for j in yaml.safe_load(config.read_text())["scrape_configs"] if j["job_name"] == "quoteloop")
    targets = {c["labels"]["daemon"]: c["targets"] for c in job["static_configs"]}
    assert targets == {name: [f"127.0.0.1:{port}"] for name, port in ports.items()}


@pytest.mark.parametrize("webhook", ["", "https://alerts.example.invalid/hook"])
def test_alertmanager_sends_to_the_webhook_only_when_one_is_set(tmp_path: Path, webhook: str) -> None:
    import yaml

    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: `make deps` installs Debian's prometheus-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_monitoring("alertmanager.yml.j2", monitoring_webhook_url=webhook))
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    receiver = yaml.safe_load(config.read_text())["receivers"][0]
    if webhook:
        assert receiver["webhook_configs"] == [{"url": webhook, "send_resolved": True}]
    else:
        assert "webhook_configs" not in receiver  # off by default: shown, never sent
