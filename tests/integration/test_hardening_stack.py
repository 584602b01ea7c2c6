"""The Docker-aware hardening rules against the reference stack, and against bad configurations
and containers made here for the purpose (never started compose projects, `sleep` containers
removed right after). Host rules are only audited on this machine, never applied: the machine
running the tests keeps its firewall, sshd and Docker daemon as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from finaiflow_ops import hardening
from finaiflow_ops.hardening import Outcome, Severity, Status
from finaiflow_ops.hardening.base import Context
from finaiflow_ops.hardening.containers import (
    ContainerLimitsRule,
    PrivilegedContainersRule,
    PublishedPortsRule,
)
from finaiflow_ops.hardening.docker import DaemonSettingsRule
from finaiflow_ops.hardening.files import AppDirsRule, EnvFileModeRule, TlsKeyModeRule
from finaiflow_ops.hardening.scans import DependencyAuditRule, ImageScanRule
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

pytestmark = pytest.mark.integration
STACK_RULES = ("docker.published-ports", "docker.containers.privileged", "docker.containers.limits",
               "files.env-mode", "files.tls-keys", "nginx.server-tokens", "nginx.headers", "nginx.rate-limit")
BASE_IMAGE = "finaiflow/base:bookworm"

# The runbook's habits, rendered by compose but never started: Prometheus and Grafana on every
# interface, PostgreSQL published; nginx public (allowed) and Redis on loopback (fine).
BAD_COMPOSE = """
services:
  nginx: {image: finaiflow/nginx:local, ports: ["80:80", "443:443"]}
  prometheus: {image: finaiflow/prometheus:local, ports: ["9090:9090"]}
  grafana: {image: grafana/grafana, ports: ["3000:3000"]}
  postgres: {image: finaiflow/postgres:15, ports: ["0.0.0.0:5432:5432"]}
  redis: {image: finaiflow/redis:7, ports: ["127.0.0.1:6379:6379"]}
"""
GOOD_COMPOSE = """
services:
  prometheus: {image: finaiflow/prometheus:local, ports: ["127.0.0.1:9090:9090"]}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", *args], capture_output=True, text=True,
                          timeout=180, env=dict(os.environ), check=False)


def scratch_stack(directory: Path, compose: str, project: str) -> Stack:
    """A compose project that exists only as files: the rules read its config, nothing is started."""
    (directory / "compose.yaml").write_text(compose)
    (directory / ".env").write_text(f"COMPOSE_PROJECT_NAME={project}\n")
    (directory / ".env").chmod(0o600)
    return Stack(Target.parse("local://"), str(directory))


@pytest.fixture
def scratch_project(stack: Stack) -> str:
    return f"{stack.project}-harden-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sleepers() -> Iterator[list[str]]:
    """Ids of throwaway `sleep` containers a test starts; removed after it, whatever happens."""
    started: list[str] = []
    yield started
    engine = docker.from_env()
    for cid in started:
        engine.containers.get(cid).remove(force=True)


def start_sleeper(sleepers: list[str], project: str, service: str, *, start: bool = True,
                  **options: object) -> str:
    """A `sleep` container labelled as a service of `project` (created only, when `start` is false)."""
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service,
              "com.docker.compose.oneoff": "False"}
    container = docker.from_env().containers.create(BASE_IMAGE, ["sleep", "120"], labels=labels,
                                                    name=f"{project}-{service}-1", **options)
    sleepers.append(str(container.id))
    if start:
        container.start()
    return str(container.name)


def stack_context(stack: Stack, **options: object) -> Context:
    return hardening.context(stack.target, stack, **options)


# -- the reference stack ----------------------------------------------------------------------------

def test_reference_stack_passes_every_docker_aware_rule(stack: Stack) -> None:
    report = hardening.audit(stack_context(stack), only=STACK_RULES)
    assert report.project == stack.project
    statuses = {f.rule: f.status for f in report.findings}
    assert statuses == dict.fromkeys(STACK_RULES, Status.PASS), report.findings
    headers = next(f for f in report.findings if f.rule == "nginx.headers")
    assert "404 /finaiflow-harden-" in headers.detail  # an error page was really requested


def test_published_ports_flags_prometheus_grafana_and_postgres_on_all_interfaces(
        tmp_path: Path, scratch_project: str) -> None:
    bad = scratch_stack(tmp_path, BAD_COMPOSE, scratch_project)
    finding = PublishedPortsRule().check(Context(bad.target, bad))
    assert finding.status is Status.FAIL and finding.severity is Severity.HIGH
    text = "\n".join(finding.problems)
    assert ("prometheus publishes 9090 on 0.0.0.0:9090 (compose file): the Prometheus UI open to the internet"
            in text)
    assert "grafana publishes 3000 on 0.0.0.0:3000 (compose file): Grafana open to the internet" in text
    assert "postgres publishes 5432 on 0.0.0.0:5432" in text
    assert "nginx" not in text and "redis" not in text
    result = cli("--project-dir", str(tmp_path), "harden", "audit", "--only", "docker.published-ports")
    assert result.returncode == 1, result.stderr
    assert "docker.published-ports" in result.stderr.splitlines()[-1]


def test_published_ports_passes_a_running_container_bound_to_loopback(
        tmp_path: Path, scratch_project: str, sleepers: list[str]) -> None:
    good = scratch_stack(tmp_path, GOOD_COMPOSE, scratch_project)
    name = start_sleeper(sleepers, scratch_project, "prometheus", ports={"9090/tcp": ("127.0.0.1", None)})
    rule = PublishedPortsRule()
    seen = rule.facts(Context(good.target, good))
    assert [(e.where, e.host_ip, e.public) for e in seen if e.where == name] == [(name, "127.0.0.1", False)]
    assert rule.check(Context(good.target, good)).status is Status.PASS


def test_privileged_and_socket_mounting_containers_are_named(
        tmp_path: Path, scratch_project: str, sleepers: list[str]) -> None:
    scratch = scratch_stack(tmp_path, GOOD_COMPOSE, scratch_project)
    # Created, not started: the rule reads the engine's configuration, and this machine (itself a
    # container) cannot start a privileged one.
    privileged = start_sleeper(sleepers, scratch_project, "privileged", start=False, privileged=True)
    sock = start_sleeper(sleepers, scratch_project, "sock",
                         volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}})
    ctx = Context(scratch.target, scratch)
    finding = PrivilegedContainersRule().check(ctx)
    assert finding.status is Status.FAIL and finding.severity is Severity.HIGH
    assert set(finding.problems) == {
        f"{privileged} is privileged",
        f"{sock} mounts the Docker socket /var/run/docker.sock (root on the host)",
    }
    limits = ContainerLimitsRule().check(ctx).problems
    assert f"{sock} has no memory limit" in limits and f"{sock} has no health check" in limits
    assert PrivilegedContainersRule().apply(ctx).outcome is Outcome.MANUAL  # the compose file is the user's


# -- files ------------------------------------------------------------------------------------------

def test_env_mode_is_fixed_once_then_left_alone(tmp_path: Path, scratch_project: str) -> None:
    scratch = scratch_stack(tmp_path, GOOD_COMPOSE, scratch_project)
    (tmp_path / ".env").chmod(0o644)
    ctx = Context(scratch.target, scratch)
    rule = EnvFileModeRule()
    before = rule.check(ctx)
    assert before.status is Status.FAIL and before.severity is Severity.HIGH
    assert before.problems == (f"{tmp_path}/.env is mode 0644 (readable by others; wanted 0600)",)
    first = rule.apply(ctx)
    assert (first.outcome, first.actions) == (Outcome.CHANGED, (f"chmod 0600 {tmp_path}/.env",))
    assert first.after is not None and first.after.status is Status.PASS
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert rule.apply(ctx).outcome is Outcome.UNCHANGED


def test_tls_key_readable_by_others_is_found_and_fixed(stack: Stack) -> None:
    ctx = stack_context(stack)
    key = Path(f"{ctx.volume_dir('/etc/nginx/ssl')}/key.pem")
    key.chmod(0o644)  # the drift under test
    try:
        finding = TlsKeyModeRule().check(ctx)
        assert finding.problems == (f"{key} is mode 0644 (readable by others; wanted 0600)",)
        assert TlsKeyModeRule().apply(ctx).outcome is Outcome.CHANGED
        assert key.stat().st_mode & 0o777 == 0o600
    finally:
        key.chmod(0o600)


def test_logs_and_uploads_get_the_api_uid(tmp_path: Path, scratch_project: str) -> None:
    scratch = scratch_stack(tmp_path, GOOD_COMPOSE, scratch_project)
    ctx = Context(scratch.target, scratch)
    assert AppDirsRule().check(ctx).status is Status.SKIP  # none yet: nothing to own
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "api.log").write_text("")
    finding = AppDirsRule().check(ctx)
    assert finding.status is Status.FAIL and f"{tmp_path}/logs/api.log" in finding.problems[0]
    assert AppDirsRule().apply(ctx).actions == (f"chown -R 1001:1001 {tmp_path}/logs",)
    assert (tmp_path / "logs" / "api.log").stat().st_uid == 1001
    assert AppDirsRule().apply(ctx).outcome is Outcome.UNCHANGED


# -- fail2ban's log path, the daemon, the scanners ---------------------------------------------------

def test_jail_log_path_is_the_nginx_log_volume_nginx_really_writes(stack: Stack, base_url: str) -> None:
    ctx = stack_context(stack)
    volume = docker.from_env().volumes.get(f"{stack.project}_nginx_logs")
    assert ctx.nginx_logs == volume.attrs["Mountpoint"]
    marker = f"/finaiflow-harden-log-{uuid.uuid4().hex[:8]}"
    httpx.get(base_url + marker, verify=False, timeout=10)
    access = Path(str(ctx.nginx_logs), "access.log")
    deadline = time.monotonic() + 10
    while marker not in access.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{marker} never reached {access}"
        time.sleep(0.2)


def test_docker_daemon_is_read_from_docker_info_here(stack: Stack) -> None:
    finding = DaemonSettingsRule().check(stack_context(stack))
    assert finding.status in (Status.PASS, Status.FAIL)
    assert finding.source.startswith("docker info,"), finding.source  # the engine answered: effective state


def test_dependency_audit_is_not_run_without_pip_audit(stack: Stack) -> None:
    finding = DependencyAuditRule().check(stack_context(stack, pip_audit="/nonexistent/pip-audit"))
    assert (finding.status, finding.detail) == (Status.SKIP, "not run: pip-audit is not installed "
                                                             "(pip install pip-audit)")


def test_dependency_audit_never_says_clean_without_auditing(stack: Stack) -> None:
    finding = DependencyAuditRule().check(stack_context(stack))
    if finding.status is Status.SKIP:
        assert finding.detail.startswith("not run: "), finding.detail
    else:  # the vulnerability service answered: a verdict, with how many packages it really checked
        assert " packages audited" in finding.detail and not finding.detail.startswith("0 of"), finding


def test_image_scan_is_not_run_without_trivy(stack: Stack) -> None:
    finding = ImageScanRule().check(stack_context(stack, trivy="trivy-is-not-installed"))
    assert (finding.status, finding.detail) == (Status.SKIP, "not run: trivy is not installed on local://")


# -- the command line -------------------------------------------------------------------------------

def test_audit_json_and_exit_code_on_the_reference_stack(stack: Stack) -> None:
    only = [arg for rule in STACK_RULES for arg in ("--only", rule)]
    result = cli("--project-dir", stack.project_dir, "--json", "harden", "audit", *only)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["counts"]["pass"] == len(STACK_RULES)
    secrets = [v for k, v in stack.env.items() if "PASSWORD" in k or "SECRET" in k]
    assert secrets and not any(s in result.stdout + result.stderr for s in secrets)


def test_audit_and_apply_agree_rule_by_rule_with_the_stack(stack: Stack) -> None:
    only = [arg for rule in STACK_RULES for arg in ("--only", rule)]
    audit = cli("--project-dir", stack.project_dir, "--json", "harden", "audit", *only)
    applied = cli("--project-dir", stack.project_dir, "--yes", "--json", "harden", "apply", *only)
    assert audit.returncode == applied.returncode == 0, audit.stderr + applied.stderr
    statuses = {f["rule"]: f["status"] for f in json.loads(audit.stdout)["findings"]}
    after = {c["rule"]: c["after"]["status"] for c in json.loads(applied.stdout)["changes"]}
    assert statuses == after and set(statuses) == set(STACK_RULES), (statuses, after)
    # With the stack there, the nginx jail concerns the host (audited only: never applied here).
    jail = hardening.audit(stack_context(stack), only=["fail2ban.nginx-limit-req"]).findings[0]
    assert jail.status is not Status.SKIP and "not applicable" not in jail.detail, jail


def test_apply_asks_without_yes(stack: Stack) -> None:
    result = cli("--project-dir", stack.project_dir, "harden", "apply", "--only", "files.env-mode")
    assert result.returncode == 2
    assert "needs confirmation: pass --yes" in result.stderr


def test_unknown_rule_is_a_usage_error() -> None:
    result = cli("harden", "audit", "--only", "firewall.nope")
    assert result.returncode == 2
    assert "unknown rule firewall.nope" in result.stderr and "firewall.ufw" in result.stderr
