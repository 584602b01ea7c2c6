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


def assert_only_failing(stack: Stack, feature: str, *expected: str) -> None:
    items, output = run_checklist(stack)
    assert items.get(feature) == "FAIL", f"{feature} did not fail:\n{output[-3000:]}"
    others = sorted(f for f, m in items.items() if m == "FAIL" and f != feature)
    assert not others, f"breaking {feature} also failed {others}:\n{output[-3000:]}"
    for text in expected:
        assert text in output, f"{feature} failed without naming {text!r}:\n{output[-3000:]}"


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


def test_verification_fails_when_prometheus_is_stopped(stack: Stack) -> None:
    stack.compose("stop", "prometheus")
    try:
        assert_only_failing(stack, "verification", "not healthy: prometheus")
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
