"""Checklist: load tests done (features/load.feature).

The gate (`nox -s load`, loadtests/gate.py) writes its verdict to PROJECT_DIR/.finaiflow/
loadgate.json on the target. With --run-load this scenario runs the gate first (about ninety
seconds; it deploys and rolls back, so on a remote target only with --allow-destructive).
Without it, a target where the gate never ran fails this item, naming how to run it.
--gate-option passes options to that gate (the suite's CI run: --no-runbook).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import scenarios, then, when

from finaiflow_ops import releases
from tests.acceptance.conftest import Staging

scenarios("load.feature")

REPO = Path(__file__).resolve().parents[2]


@when("I read the zero-downtime gate's verdict on the target", target_fixture="gate")
def gate_verdict(request: pytest.FixtureRequest, staging: Staging) -> dict[str, Any]:
    if request.config.getoption("--run-load"):
        if not staging.stack.target.is_local and not request.config.getoption("--allow-destructive"):
            pytest.fail(f"--run-load deploys on {staging.name}: pass --allow-destructive too")
        before = releases.read_state(staging.stack, "loadgate.json")
        gate = subprocess.run(
            [sys.executable, "-m", "loadtests.gate", "--target", staging.name, "--project-dir",
             staging.stack.project_dir, "--host", staging.base_url, "--no-cold",
             *request.config.getoption("--gate-option")],
            cwd=REPO, timeout=900, check=False, stderr=subprocess.PIPE, text=True,
        )
        sys.stderr.write(gate.stderr)  # its progress, kept in the test's captured output
        # A gate that stopped before its verdict (the deploy lock held, no other release, a crash)
        # leaves the previous verdict in place: that one must not answer for the run asked for.
        last = (gate.stderr.strip().splitlines() or ["no output"])[-1]
        assert releases.read_state(staging.stack, "loadgate.json") != before, (
            f"{staging.name}: the gate run by --run-load recorded no verdict "
            f"(exit {gate.returncode}): {last}")
    text = releases.read_state(staging.stack, "loadgate.json")
    assert text, (f"{staging.name}: the zero-downtime gate never ran here: run `nox -s load` against it "
                  f"(or this checklist with --run-load)")
    verdict: dict[str, Any] = json.loads(text)
    return verdict


@then("the gate passed without a failed request during the update and the rollback")
def gate_passed(staging: Staging, gate: dict[str, Any]) -> None:
    ours = {w["phase"]: w for w in gate["windows"] if w["kind"] != "runbook"}
    failed = {phase: w["failures"] for phase, w in ours.items() if w["failures"]}
    assert gate["passed"] and not failed and {"update", "rollback"} <= ours.keys(), (
        f"{staging.name}: the gate of {gate['time']} did not pass: {'; '.join(gate['problems']) or failed}")


@then("it covered the api release that runs now")
def covers_running_release(staging: Staging, gate: dict[str, Any]) -> None:
    running = {c.image_id for c in staging.stack.containers("api") if c.state == "running"}
    images = sorted({c.image for c in staging.stack.containers("api")})
    assert running and running <= set(gate["image_ids"]), (
        f"{staging.name}: the gate of {gate['time']} covered {gate['releases']}; the api runs {images}")
