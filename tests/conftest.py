"""Fixtures shared by the integration and acceptance tests: the target and its reference stack.

The stack is brought up once per test session when none exists, and then removed at the end,
volumes included. An existing stack (a developer's, or the one `nox -s acceptance` brought up)
is tested as it is and left running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from finaiflow_ops import envfile, staging
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

REPO = Path(__file__).resolve().parent.parent
LOCAL_RATE_LIMIT = 2000  # keep in step with noxfile.py


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("finaiflow", "FinaiFlow target")
    group.addoption("--target", default="local://", help="local://, ssh://user@host[:port]")
    group.addoption("--project-dir", default=str(REPO / "stack"), help="the stack directory on the target")
    group.addoption("--base-url", default=None, help="the HTTPS base URL (default: what nginx publishes)")
    group.addoption("--allow-destructive", action="store_true",
                    help="run scenarios that change the target on a remote target too")
    group.addoption("--run-load", action="store_true",
                    help="run the zero-downtime load gate instead of reading its last recorded result")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    return Target.parse(request.config.getoption("--target"))


def ensure_local_env(project_dir: Path) -> None:
    """A local staging .env, generated once; a rate limit high enough for load from one address."""
    path = project_dir / ".env"
    if not path.exists():
        envfile.write(path, envfile.generate(rate_limit_rps=LOCAL_RATE_LIMIT))


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, target: Target) -> Iterator[Stack]:
    project_dir = request.config.getoption("--project-dir")
    if target.is_local:
        ensure_local_env(Path(project_dir))
    st = Stack(target, project_dir)
    # Only a stack that does not exist is started (and removed afterwards). One that exists is
    # tested as it is, never repaired: a checklist that fixes what it checks proves nothing.
    started = not st.containers()
    if started:
        if not target.is_local:
            pytest.fail(f"no stack on {target}; bring it up first (finaiflow-ops stack up)")
        st.up(timeout=300)
        prepared = staging.prepare(st)  # what `stack up --staging` does, as nox -s acceptance runs it
    yield st
    if started:
        staging.undo(st, prepared)
        Stack(target, project_dir).down(volumes=True)


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    url: str | None = request.config.getoption("--base-url")
    return url.rstrip("/") if url else stack.base_url()
