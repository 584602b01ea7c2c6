"""Sessions: `nox -l` lists them. `nox` alone runs the fast ones (lint, unit: no Docker needed).
The stack sessions need the reference stack's images (scripts/provision, which scripts/run calls
first); `scripts/run tests` runs lint and tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "unit"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
STACK_DIR = "stack"
LOCAL_RATE_LIMIT = 2000  # one client address (Docker's port proxy) carries all local load
ROLLBACK_DRILL = ("tests/acceptance/test_rollback.py::"
                  "test_a_rollback_drill_returns_to_the_previous_release_in_seconds_without_a_failed_request")


def install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".", *(dep for g in groups for dep in nox.project.dependency_groups(PYPROJECT, g)))


@nox.session(default=False)
def tests(session: nox.Session) -> None:
    """The full suite: unit, integration and the acceptance checklist against the session's stack
    (tests/conftest.py: brought up unless the reference stack already runs)."""
    install(session, "test", "load")
    # --run-load: the checklist's load item runs the zero-downtime gate on the session's stack,
    # without the runbook's baseline (--no-runbook: its update, and our restore from it, about 40 s);
    # and the rollback item's update-and-rollback drill is left out, since that gate, in the same
    # checklist run, makes the same update and rollback through the same library under traffic, and
    # fails on a failed request or a rollback slower than 10 s (the drill's limit). Both run in full
    # in the same suite against the remote VPS (test_remote_operator_flow: the whole checklist with
    # --run-load there).
    # -n 2 --dist loadgroup: the tests on the session's stack and those on VPS and swarm containers
    # run side by side, each part in one worker and in order (tests/conftest.py: run_group).
    session.run("pytest", "tests", "-n", "2", "--dist", "loadgroup", "--junitxml=reports/tests.xml",
                "--run-load", "--gate-option=--no-runbook", "--deselect", ROLLBACK_DRILL, *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests of pure logic only (no Docker needed)."""
    install(session, "test")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(default=False)
def acceptance(session: nox.Session) -> None:
    """The deployment checklist against a target (default: the reference stack in stack/, brought up)."""
    install(session, "acceptance")
    args = list(session.posargs)
    if not any(arg.startswith("--target") for arg in args):
        if not any(arg.startswith("--project-dir") for arg in args):
            bring_up_local_stack(session)
            args += ["--project-dir", STACK_DIR]  # the stack just checked or brought up, as it is
        # On the reference stack the load item is done here and now: the gate runs (about 90 s).
        args.append("--run-load")
    session.run("pytest", "tests/acceptance", "--junitxml=reports/acceptance.xml", *args)


def bring_up_local_stack(session: nox.Session) -> None:
    """Start the local reference stack when none exists; an existing one is checked as it is."""
    ops = ("finaiflow-ops", "--project-dir", STACK_DIR)
    if not Path(STACK_DIR, ".env").exists():
        session.run(*ops, "env", "generate", "--rate-limit", str(LOCAL_RATE_LIMIT))
    status = session.run(*ops, "--json", "stack", "status", silent=True, success_codes=[0, 1],
                         stderr=subprocess.DEVNULL)
    services = json.loads(status)["services"] if isinstance(status, str) and status.strip() else []
    if not any(svc["containers"] for svc in services):
        # --staging: a development-CA certificate, a first verified backup, the daily backup job.
        session.run(*ops, "stack", "up", "--staging")


@nox.session(default=False)
def load(session: nox.Session) -> None:
    """Zero-downtime gate: locust load during an update, a rollback and the runbook's update."""
    install(session, "load")
    # The gate deploys: against the local reference stack unless told otherwise (--project-dir).
    if not any(arg.startswith(("--target", "--project-dir")) for arg in session.posargs):
        bring_up_local_stack(session)
    session.run("python", "-m", "loadtests.gate", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against their baselines, measured in the same run; numbers to reports/bench.json."""
    install(session)
    # A throwaway database container of the stack's postgres image: needs the images, not the stack.
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    install(session, "lint")
    session.run("ruff", "check", "src", "tests", "loadtests", "benchmarks", "stack", "noxfile.py")
    session.run("mypy")
