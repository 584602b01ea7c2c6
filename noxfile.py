"""Sessions: `nox -l` lists them. The stack sessions need the reference stack's images
(scripts/provision, which scripts/run calls first)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
STACK_DIR = "stack"


def install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".", *(dep for g in groups for dep in nox.project.dependency_groups(PYPROJECT, g)))


@nox.session
def tests(session: nox.Session) -> None:
    """The full suite: unit, integration and the acceptance checklist against the local stack."""
    install(session, "test", "load")
    session.run("pytest", "tests", "--junitxml=reports/tests.xml", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests of pure logic only (no Docker needed)."""
    install(session, "test")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def acceptance(session: nox.Session) -> None:
    """The deployment checklist against a target (default: the reference stack here, brought up)."""
    install(session, "acceptance")
    session.run("pytest", "tests/acceptance", "--junitxml=reports/acceptance.xml", "-p", "no:cacheprovider",
                *session.posargs)


@nox.session(default=False)
def load(session: nox.Session) -> None:
    """Locust load through nginx on 127.0.0.1; passes only with zero failed requests."""
    install(session, "load")
    session.run("python", "-m", "loadtests.gate", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against their baselines, measured in the same run; numbers to reports/bench.json."""
    install(session, "test")
    session.run("python", "-m", "tests.bench", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    install(session, "lint")
    session.run("ruff", "check", "src", "tests", "loadtests", "noxfile.py")
    session.run("mypy")
