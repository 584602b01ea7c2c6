"""Prometheus' own tools on the stack's configuration: `promtool check config` and `promtool test
rules` (stack/prometheus/tests/), in throwaway containers of the Prometheus image. Needs the
local Docker engine and the image, not a running stack."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "stack" / "prometheus"
IMAGE = "finaiflow/prometheus:local"


def promtool(directory: Path, *args: str) -> tuple[int, str]:
    """Run promtool with `directory` mounted read-only at /p; its exit status and output."""
    client = docker.from_env()
    container = client.containers.run(IMAGE, list(args), entrypoint=["promtool"], detach=True,
                                      volumes={str(directory): {"bind": "/p", "mode": "ro"}},
                                      labels={"finaiflow.test": "promtool"})
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_prometheus_configuration_and_rules_are_valid() -> None:
    status, output = promtool(PROMETHEUS_DIR, "check", "config", "/p/prometheus.yml")
    assert status == 0 and "SUCCESS: /p/prometheus.yml is valid" in output, output
    # check config reads the rules the image holds; these are the ones the next build bakes in.
    status, output = promtool(PROMETHEUS_DIR, "check", "rules", "/p/rules/finaiflow.yml")
    assert status == 0 and "SUCCESS: 25 rules found" in output, output


def test_every_alert_rule_passes_its_promtool_tests() -> None:
    status, output = promtool(PROMETHEUS_DIR, "test", "rules", "/p/tests/finaiflow.test.yml")
    assert status == 0 and "SUCCESS" in output, output


def test_promtool_tests_catch_a_rule_that_waits_too_long(tmp_path: Path) -> None:
    # The rule tests can fail: RedisUnreachable waiting 3 minutes instead of 1 is caught.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy, ignore=shutil.ignore_patterns("Dockerfile"))
    rules = copy / "rules" / "finaiflow.yml"
    text = rules.read_text()
    redis = text.index("- alert: RedisUnreachable")
    window = text.index("for: 1m", redis)
    rules.write_text(text[:window] + "for: 3m" + text[window + len("for: 1m"):])
    # Only the test groups of that alert (the whole file takes promtool some 20 s of CPU).
    tests = copy / "tests" / "finaiflow.test.yml"
    header, *groups = re.split(r"(?m)^(?=  - name: )", tests.read_text())
    redis_groups = [g for g in groups if "alertname: RedisUnreachable" in g]
    assert redis_groups, "no test group of RedisUnreachable"
    tests.write_text(header + "".join(redis_groups))
    copy.chmod(0o755)
    status, output = promtool(copy, "test", "rules", "/p/tests/finaiflow.test.yml")
    assert status != 0 and "alertname: RedisUnreachable" in output, output
    # The same groups pass against the rules as they are.
    shutil.copy(PROMETHEUS_DIR / "rules" / "finaiflow.yml", rules)
    status, output = promtool(copy, "test", "rules", "/p/tests/finaiflow.test.yml")
    assert status == 0 and "SUCCESS" in output, output
