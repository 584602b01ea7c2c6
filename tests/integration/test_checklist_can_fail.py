"""The checklist must be able to fail: break one thing per item, and exactly that item fails.

Each test breaks the session stack in one way, runs the whole checklist (`tests/acceptance`) in a
subprocess against it, asserts that the matching feature, and only it, fails with a message naming
the problem, and repairs the stack whatever happens.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from finaiflow_ops.health import wait_healthy
from finaiflow_ops.stack import Stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# Scenarios that deploy or run load are slow and prove other things; the rest run every time.
_FAST = "not destructive and not load"


def run_checklist(stack: Stack) -> tuple[dict[str, str], str]:
    """Run the checklist against `stack`; return {feature: pass|FAIL} and the whole output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/acceptance", "-m", _FAST, "-p", "no:cacheprovider",
         "-q", "--project-dir", stack.project_dir, "--target", str(stack.target)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )
    items = dict((f, m) for m, f in re.findall(r"^\[(pass|FAIL)\] (\w+):", result.stdout, flags=re.MULTILINE))
    return items, result.stdout


def assert_only_failing(stack: Stack, feature: str | set[str], *expected: str) -> None:
    """Exactly `feature` (or the set of features the break belongs to) fails, naming `expected`."""
    features = {feature} if isinstance(feature, str) else feature
    items, output = run_checklist(stack)
    passed = sorted(f for f in features if items.get(f) != "FAIL")
    assert not passed, f"{passed} did not fail:\n{output[-3000:]}"
    others = sorted(f for f, m in items.items() if m == "FAIL" and f not in features)
    assert not others, f"breaking {sorted(features)} also failed {others}:\n{output[-3000:]}"
    for text in expected:
        assert text in output, f"{sorted(features)} failed without naming {text!r}:\n{output[-3000:]}"


@contextmanager
def broken(break_it: list[str], repair: list[str], stack: Stack) -> Iterator[None]:
    """Run SQL that breaks the database, and always the SQL that repairs it."""
    for sql in break_it:
        stack.psql(sql)
    try:
        yield
    finally:
        for sql in repair:
            stack.psql(sql)


def test_env_item_fails_when_the_env_is_world_readable(stack: Stack) -> None:
    path = Path(stack.env_path)
    path.chmod(0o644)
    try:
        assert_only_failing(stack, "env", "mode 0644", "expected 0600")
    finally:
        path.chmod(0o600)


def test_database_item_fails_when_a_migration_is_not_applied(stack: Stack) -> None:
    revision = stack.psql("SELECT version_num FROM alembic_version")[0][0]
    with broken(["DELETE FROM alembic_version"],
                [f"INSERT INTO alembic_version (version_num) VALUES ('{revision}')"],  # noqa: S608 (read back)
                stack):
        assert_only_failing(stack, "database", "database at Alembic revision none")


def test_database_item_fails_when_an_index_is_missing(stack: Stack) -> None:
    with broken(["DROP INDEX idx_sessions_user_id"],
                ["CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions (user_id)"], stack):
        assert_only_failing(stack, "database", "index idx_sessions_user_id found on no table")


def test_verification_and_monitoring_fail_when_prometheus_is_stopped(stack: Stack) -> None:
    # Both items stand on Prometheus: the runbook's verification reads its metrics, and
    # monitoring is Prometheus. Nothing else may fail.
    stack.compose("stop", "prometheus")
    try:
        assert_only_failing(stack, {"verification", "monitoring"}, "not healthy: prometheus")
    finally:
        stack.compose("start", "prometheus")
        wait_healthy(stack, services=["prometheus"], timeout=90)


def test_documentation_step_fails_on_a_command_that_does_not_exist() -> None:
    from tests.acceptance.test_documentation import commands_answer_help

    staging = type("S", (), {"name": "local://"})()
    with pytest.raises(AssertionError, match="stack teleport"):
        commands_answer_help(staging, ["finaiflow-ops --project-dir /srv stack teleport --now"])  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="No such option"):
        commands_answer_help(staging, ["finaiflow-ops stack up --bogus"])  # type: ignore[arg-type]


def _put_files(stack: Stack, service: str, directory: str, files: dict[str, tuple[bytes, int]]) -> None:
    """Write files into a service's container as one tar archive (no shell, no temp files)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    stack.container(service).put_archive(directory, buffer.getvalue())


def test_ssl_item_fails_when_the_certificate_expires_within_14_days(stack: Stack) -> None:
    from finaiflow_ops import tls
    from finaiflow_ops.tls.devca import ensure_dev_ca, issue_from_dev_ca

    # `tls install` refuses such a certificate, as it should: put it in place behind its back.
    cert, key = issue_from_dev_ca(tls.configured_domains(stack.env), ca=ensure_dev_ca(), days=5)
    _put_files(stack, "nginx", "/etc/nginx/ssl", {"cert.pem": (cert, 0o644), "key.pem": (key, 0o600)})
    stack.exec("nginx", ["nginx", "-s", "reload"])
    try:
        assert_only_failing(stack, "ssl", "days left")
    finally:
        tls.install_dev_certificate(stack)


def test_monitoring_item_fails_when_a_prometheus_target_is_down(stack: Stack) -> None:
    import json
    import time

    exporter = stack.container("ops-exporter")
    network = stack.target.docker().networks.get(f"{stack.project}_default")

    def exporter_health() -> str:
        raw = stack.exec("prometheus", ["curl", "-fsS", "http://127.0.0.1:9090/api/v1/targets?state=active"])
        targets = json.loads(raw.stdout)["data"]["activeTargets"]
        return next((t["health"] for t in targets if t["labels"]["job"] == "ops"), "absent")

    # Cut off from the network, the exporter still runs and is healthy: only Prometheus sees it down.
    network.disconnect(exporter)
    try:
        deadline = time.monotonic() + 60
        while exporter_health() != "down" and time.monotonic() < deadline:
            time.sleep(1)
        assert_only_failing(stack, "monitoring", "ops")
    finally:
        network.connect(exporter, aliases=["ops-exporter"])
        deadline = time.monotonic() + 60
        while exporter_health() != "up" and time.monotonic() < deadline:
            time.sleep(1)
