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
# The rollback item's two drills (see `tests` below), by node id.
ROLLBACK_DRILLS = tuple(f"tests/acceptance/test_rollback.py::{name}" for name in (
    "test_a_rollback_drill_returns_to_the_previous_release_in_seconds_without_a_failed_request",
    "test_a_release_that_never_becomes_healthy_is_refused_and_traffic_stays_where_it_was",
))


def install(session: nox.Session, *groups: str, project: bool = True) -> None:
    """The project (editable) with its dependency groups; without `project`, its dependencies only:
    lint runs beside the tests (scripts/run), and two editable installs would race on the egg-info."""
    this = ("-e", ".") if project else tuple(PYPROJECT["project"]["dependencies"])
    session.install(*this, *(dep for g in groups for dep in nox.project.dependency_groups(PYPROJECT, g)))


@nox.session(default=False)
def tests(session: nox.Session) -> None:
    """The full suite: unit, integration and the acceptance checklist against the session's stack
    (tests/conftest.py: brought up unless the reference stack already runs)."""
    install(session, "test", "load")
    # --run-load: the checklist's load item runs the zero-downtime gate on the session's stack,
    # without the runbook's baseline (--no-runbook: its update, and our restore from it, about 40 s),
    # after 5 s of steady load instead of 15 (--rest=5: the reference numbers; the remote run keeps 15).
    # The rollback item's two drills are left out of this local checklist run (about 27 s): its
    # update-and-rollback under traffic is that gate's, in the same run (the same library, no failed
    # request, back within 10 s), and test_rollout proves both on this stack with more facts (the
    # broken release refused, traffic and containers untouched). The whole checklist, drills and the
    # whole gate included, runs in the same suite against the remote VPS (test_remote_operator_flow).
    # -n 3 --dist loadgroup: the tests on the session's stack, on the swarms, on a second stack
    # (alerting, point-in-time restores), on the remote VPS and on the hardening VPS run side by
    # side, each part in one worker and in order (tests/conftest.py: run_group).
    session.run("pytest", "tests", "-n", "3", "--dist", "loadgroup", "--junitxml=reports/tests.xml",
                "--run-load", "--gate-option=--no-runbook", "--gate-option=--rest=5",
                *(arg for drill in ROLLBACK_DRILLS for arg in ("--deselect", drill)), *session.posargs)


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
    install(session, "lint", project=False)  # mypy reads src/ itself
    session.run("ruff", "check", "src", "tests", "loadtests", "benchmarks", "stack", "noxfile.py")
    session.run("mypy")
