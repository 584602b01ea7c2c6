"""Checklist: environment variables configured (features/env.feature)."""

from __future__ import annotations

import subprocess
import sys

from pytest_bdd import scenarios, then, when

from finaiflow_ops import envfile
from tests.acceptance.conftest import Staging

scenarios("env.feature")


@when("the .env on the target is checked for production", target_fixture="findings")
def check_env(staging: Staging) -> list[envfile.Finding]:
    return envfile.check(staging.stack.load_env())


@then("no key is reported")
def no_findings(staging: Staging, findings: list[envfile.Finding]) -> None:
    assert not findings, f"{staging.name}: {staging.stack.env_path}: " + "; ".join(map(str, findings))


@then("the .env on the target has mode 0600")
def env_mode(staging: Staging) -> None:
    mode = staging.stack.load_env().mode
    assert mode == 0o600, f"{staging.name}: {staging.stack.env_path} has mode {mode:04o}, expected 0600"


@when("I check the .env with the command line", target_fixture="cli_output")
def run_env_check(staging: Staging) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", staging.name, "--project-dir",
         staging.stack.project_dir, "--json", "env", "check"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return result.stdout + result.stderr


@then("its output contains none of the secret values")
def no_secret_in_output(staging: Staging, cli_output: str) -> None:
    secret_keys = [k for k in staging.stack.env if any(w in k for w in ("SECRET", "PASSWORD", "_URL"))]
    leaked = [k for k in secret_keys if staging.stack.env[k] and staging.stack.env[k] in cli_output]
    assert secret_keys and not leaked, f"{staging.name}: `env check` printed the value of {leaked}"
