"""Fixtures shared by the integration and acceptance tests: the target and its reference stack.

The stack is brought up once per test session when none exists, and then removed at the end,
volumes included. An existing stack (a developer's, or the one `nox -s acceptance` brought up)
is tested as it is and left running.

On a local target without --project-dir, the session's stack runs from a copy of the repository's
stack/ made for the session (its .env, backups and state files go there and away with it), unless
a stack of the reference project already runs on the engine: that one is tested from where it
was started. `--project-dir stack` tests the repository's own stack/ as it is.

Under pytest-xdist (`nox -s tests` runs `-n 3 --dist loadgroup`), the parts of the suite that
share nothing at run time run side by side, each in one worker, in order: the session's stack and
everything on it; the remote VPS (127.0.0.2); the hardening VPS; the swarms (engines in containers
of their own, reached through DOCKER_HOST); and the tests on a second stack (`second_stack`: the
alerting tests, which stop its services for minutes, and the point-in-time restores, which replace
its database). Three lanes, one per worker (LANES): the session's stack; the swarms, then the
hardening VPS; the second stack, then the remote VPS. The unit tests go to whichever worker is free.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finaiflow_ops import envfile, staging, tls
from finaiflow_ops.backup.pgbackrest import Repository
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.alerting_support import SESSION_RECEIVER, Receiver, receiver_settings

REPO = Path(__file__).resolve().parent.parent
REPO_STACK = REPO / "stack"
LOCAL_RATE_LIMIT = 2000  # keep in step with noxfile.py
# What a stack needs from its project directory at run time: the compose file (whose directory the
# ops exporter mounts; the images are built beforehand, so no build context), and swarm.yaml (on a
# swarm manager engine the project runs as a swarm stack). The changelog is read from the repository.
RUNTIME_FILES = ("compose.yaml", "swarm.yaml")
_WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


# The worker groups (see above), by test module name; the other integration and acceptance tests
# are the "stack" group. None of the grouped modules uses the session's stack. The collection is
# sorted by GROUP_ORDER. Three workers run them in three lanes, one lane per worker, its groups one
# after the other: xdist would hand a group to whichever worker first has two tests left, and a
# lane is the same balance every run (test time in a CI run: stack ~735 s; swarm ~460 and hardening
# ~295; second stack ~395 and remote ~335). The tests that can run anywhere fill in at the end.
RUN_GROUPS = {
    "swarm": ("test_swarm.py", "test_swarm_multinode.py"),
    "second-stack": ("test_alerting.py", "test_pitr.py"),
    "remote": ("test_remote_operator_flow.py", "test_remote_vps.py"),
    "hardening-vps": ("test_hardening_vps.py",),
}
GROUP_ORDER = ("stack", *RUN_GROUPS)
LANES = {"stack": "stack", "swarm": "swarm, hardening-vps", "hardening-vps": "swarm, hardening-vps",
         "second-stack": "second-stack, remote", "remote": "second-stack, remote"}
# Integration tests that need the engine and the images but no stack: anywhere, as the unit tests.
ANYWHERE = ("test_monitoring_rules.py", "test_alerting_config.py")


def run_group(nodeid: str) -> str | None:
    """The group of a test (by its id, tests/...::name), or None for one that can run anywhere."""
    path = Path(nodeid.partition("::")[0])
    if path.parts[:2] == ("tests", "unit") or path.name in ANYWHERE:
        return None
    return next((group for group, names in RUN_GROUPS.items() if path.name in names), "stack")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The groups in GROUP_ORDER, the tests that can run anywhere last; each group's own order kept."""
    def rank(item: pytest.Item) -> int:
        group = run_group(item.nodeid)
        return GROUP_ORDER.index(group) if group else len(GROUP_ORDER)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: it applies only when pytest runs with -n
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: one work unit per lane (LANES), each in one worker, in order.

    xdist's own loadgroup reads `xdist_group` marks into the test ids, which pytest 9 no longer lets a
    plugin rewrite; its scope scheduler with our grouping does the same."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # In our order (GROUP_ORDER), not xdist's default of the groups with the most tests first.
    config.option.loadscopereorder = False
    scheduler = LoadScopeScheduling(config, log)
    scheduler._split_scope = lambda nodeid: LANES.get(run_group(nodeid) or "", nodeid)  # type: ignore[method-assign]
    return scheduler


# When each test ran, in which worker: reports/timeline-<worker>.json, to see where a CI run's
# minutes go (a worker's start before its first test, the gaps, the teardown after its last).
_TIMELINE: list[tuple[str, float, float]] = []
_SESSION_START = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    start = time.time()
    try:
        return (yield)
    finally:
        _TIMELINE.append((item.nodeid, start, time.time()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    reports = Path(str(session.config.rootpath)) / "reports"
    if _TIMELINE and reports.is_dir():
        (reports / f"timeline-{worker}.json").write_text(json.dumps(
            {"session_start": _SESSION_START, "session_end": time.time(), "tests": _TIMELINE}))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("finaiflow", "FinaiFlow target")
    group.addoption("--target", default="local://", help="local://, ssh://user@host[:port]")
    group.addoption("--project-dir", default=None,
                    help="the stack directory on the target (default: a local target runs a copy of the "
                         "repository's stack/ made for the session; elsewhere the repository's stack/)")
    group.addoption("--base-url", default=None, help="the HTTPS base URL (default: what nginx publishes)")
    group.addoption("--allow-destructive", action="store_true",
                    help="run scenarios that change the target on a remote target too")
    group.addoption("--run-load", action="store_true",
                    help="run the zero-downtime load gate instead of reading its last recorded result")
    group.addoption("--gate-option", action="append", default=[], metavar="OPTION",
                    help="an option for the gate --run-load runs (repeatable: --gate-option=--no-runbook)")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    return Target.parse(request.config.getoption("--target"))


def ensure_local_env(project_dir: Path) -> None:
    """A local staging .env, generated once; a rate limit high enough for load from one address;
    alerts sent to the session's receiver (tests/alerting_support.py)."""
    path = project_dir / ".env"
    if not path.exists():
        envfile.write(path, envfile.generate(rate_limit_rps=LOCAL_RATE_LIMIT) | receiver_settings())


def running_from(target: Target, project: str) -> set[str]:
    """The directories the compose containers of `project` on the target's engine were started from."""
    label = f"com.docker.compose.project={project}"
    containers = target.docker().containers.list(all=True, filters={"label": label})
    return {c.labels.get(_WORKING_DIR_LABEL, "") for c in containers}


def session_project_dir(target: Target, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path | None]:
    """(project directory, the copy made for this session or None) when --project-dir is not given
    on a local target: the directory a running stack of the reference project was started from (a
    developer's, `nox -s acceptance`'s: tested there as it is), else a fresh copy of stack/."""
    project = envfile.COMPOSE_PROJECT_NAME  # what the copy's generated .env names
    started_from = running_from(target, project)
    if started_from:
        where = next(iter(started_from))
        if len(started_from) > 1 or not (Path(where) / ".env").exists():
            pytest.fail(f"a stack of project {project} runs on this engine from "
                        f"{', '.join(sorted(started_from))}, without its .env there: take it down "
                        f"(docker compose -p {project} down --volumes) or pass --project-dir")
        return where, None
    copy = tmp_path_factory.mktemp("stack")
    copy.chmod(0o755)  # as a checkout's stack/: the ops exporter reads it without capabilities
    for name in RUNTIME_FILES:
        shutil.copy2(REPO_STACK / name, copy / name)
    return str(copy), copy


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, target: Target,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    given: str | None = request.config.getoption("--project-dir")
    copy: Path | None = None
    if given is not None or not target.is_local:
        project_dir = given or str(REPO_STACK)
        if target.is_local:  # as the CLI does: a local project directory by its absolute path
            project_dir = str(Path(project_dir).resolve())
    else:
        project_dir, copy = session_project_dir(target, tmp_path_factory)
    if target.is_local:
        ensure_local_env(Path(project_dir))
    st = Stack(target, project_dir)
    # Only a stack that does not exist is started (and removed afterwards). One that exists is
    # tested as it is, never repaired: a checklist that fixes what it checks proves nothing.
    started = not st.containers()
    receiver: Receiver | None = None
    if started:
        if not target.is_local:
            pytest.fail(f"no stack on {target}; bring it up first (finaiflow-ops stack up)")
        receiver = start_receiver(target, st.project)
        st.up(timeout=300)
        Repository(st).ensure_stanza()  # as `stack up` does: WAL archived from the start
        prepared = staging.prepare(st)  # what `stack up --staging` does, as nox -s acceptance runs it
    yield st
    if started:
        staging.undo(st, prepared)
        if receiver is not None:
            receiver.remove()
        Stack(target, project_dir).down(volumes=True)
        if copy is not None:  # its .env (secrets), backups and state files go with it
            shutil.rmtree(copy)


def start_receiver(target: Target, project: str, name: str = SESSION_RECEIVER) -> Receiver:
    """The session's alert receiver, on the stack's network before the stack starts: Alertmanager's
    first heartbeat must not fail (a failed notification fails `check` for an hour). The network is
    made as compose makes it (its labels), so that compose takes it as its own, and removes it."""
    network = f"{project}_default"
    client = target.docker()
    if not client.networks.list(names=[network]):
        client.networks.create(network, driver="bridge", labels={"com.docker.compose.network": "default",
                                                                 "com.docker.compose.project": project})
    return Receiver.start(network, name=name)


# The second stack: its own project name and loopback ports on the local engine, for the tests that
# stop its services for minutes (test_alerting) or replace its database (test_pitr), in a worker of
# their own beside the session's stack.
SECOND_PROJECT = "finaiflow-second"
SECOND_PORTS = {"http_port": 18080, "https_port": 18443, "prometheus_port": 19090, "alertmanager_port": 19093}


# What removes the second stack once the last test using it is done (pytest_runtest_teardown).
_second_stack_done: list[Callable[[], None]] = []


@pytest.fixture(scope="session")
def second_stack(target: Target,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Receiver]]:
    """Brought up as `stack up` does it (the pgBackRest stanza included), with a development
    certificate and an alert receiver of its own; removed with its volumes right after the last
    test that uses it, not at the end of the session: its containers would cost the CPU the
    worker's next group and the other workers need."""
    if not target.is_local:
        pytest.skip("the second stack is brought up on the local engine")
    project_dir = tmp_path_factory.mktemp("second-stack")
    project_dir.chmod(0o755)  # as a checkout's stack/: the ops exporter reads it without capabilities
    for name in RUNTIME_FILES:
        shutil.copy2(REPO_STACK / name, project_dir / name)
    values = envfile.generate(rate_limit_rps=LOCAL_RATE_LIMIT, project_name=SECOND_PROJECT, **SECOND_PORTS)
    envfile.write(project_dir / ".env", values | receiver_settings())
    st = Stack(target, str(project_dir))
    removed = False

    def remove() -> None:
        nonlocal removed
        if not removed:
            removed = True
            receiver.remove()
            st.down(volumes=True)
            shutil.rmtree(project_dir)

    # Before the stack: Alertmanager's first heartbeat must not fail (it would fail `check`).
    receiver = start_receiver(target, SECOND_PROJECT, name=f"{SECOND_PROJECT}-receiver")
    _second_stack_done.append(remove)
    try:
        st.up(timeout=300)
        Repository(st).ensure_stanza()
        tls.install_dev_certificate(st)
        yield st, receiver
    finally:
        remove()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The second stack goes once the test after this one does not use it (the tests that do run
    one after the other: one group, see GROUP_ORDER), after this test's fixtures were torn down
    (a module's fixture may still need the stack for its own teardown)."""
    yield
    if "second_stack" in getattr(item, "fixturenames", ()) and (
            nextitem is None or "second_stack" not in getattr(nextitem, "fixturenames", ())):
        while _second_stack_done:
            _second_stack_done.pop()()


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    url: str | None = request.config.getoption("--base-url")
    return url.rstrip("/") if url else stack.base_url()
