"""Rolling update and rollback on the reference stack, under locust traffic through nginx.

Every test starts from whatever release the stack runs, uses another release on the engine (or
one it builds), and the module leaves the stack as it found it: same release, same number of
containers, nginx on `server api:8000`, the lock free. Traffic is the locustfile's personas in a
process of their own (loadtests/traffic.py); a failed request is any non-2xx or connection error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from finaiflow_ops import envfile, releases, rollout, standby
from finaiflow_ops.errors import UsageError
from finaiflow_ops.proxy import KEEPALIVE_LEAD, Proxy, Upstream
from finaiflow_ops.rollout import DeployFailed
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.rollout_support import (
    BROKEN,
    FAILING_MIGRATION,
    NOTE_MIGRATION,
    SERVICE,
    assert_settled,
    built,
    failures,
    image_version,
    put_back_afterwards,
    serving,
    traffic,
    version,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.destructive]
USERS = 6


def cli(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", str(stack.target), "--project-dir",
         stack.project_dir, *args],
        capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )


def cli_process(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", str(stack.target), "--project-dir",
         stack.project_dir, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def audit_tail(stack: Stack) -> dict[str, object]:
    text = releases.read_state(stack, "audit.log") or ""
    return dict(json.loads(text.strip().splitlines()[-1]))


@dataclass(frozen=True)
class Found:
    """The release the stack ran when the module started, and how many containers."""

    image: str
    replicas: int
    version: str


@pytest.fixture(scope="module")
def found(request: pytest.FixtureRequest, stack: Stack, base_url: str) -> Iterator[Found]:
    # The history too: the module's releases name images it removes (1.2.0-test, broken ones); left
    # there, the checklist's "the release a rollback would return to is still here" fails next time.
    history = releases.read_state(stack, "releases.json")
    with put_back_afterwards(request, stack) as running:
        yield Found(running[0].image, len(running), version(base_url))
    if history is not None:
        releases.write_state(stack, "releases.json", history)
    # And nginx on the entrypoint's `server api:8000`, as a fresh stack has it.
    proxy = Proxy(stack)
    port = (proxy.read_upstream(SERVICE) or Upstream(SERVICE, ("api:8000",))).port or 8000
    proxy.switch_gracefully(Upstream.of(SERVICE, [SERVICE], port))


@pytest.fixture(scope="module")
def other(stack: Stack, found: Found) -> str:
    others = [i for i in rollout.available_images(stack, SERVICE) if i != found.image]
    assert others, f"no other release of {found.image} on {stack.target} (scripts/provision builds two)"
    return others[0]


def on_release(stack: Stack, image: str, replicas: int = 1) -> None:
    """Be on `image` (quietly, without load) before a test starts from it."""
    running = serving(stack)
    if {c.image for c in running} != {image} or len(running) != replicas or standby.get(stack, SERVICE):
        rollout.deploy(stack, SERVICE, image, replicas=replicas, backup=False, standby=0)


# -- update and rollback under load ---------------------------------------------------------------------


def test_update_under_load_switches_version_without_a_failed_request(
        stack: Stack, base_url: str, found: Found, other: str) -> None:
    on_release(stack, found.image, found.replicas)
    slow: dict[str, object] = {}

    def long_request() -> None:
        with httpx.Client(verify=False, timeout=30) as client:
            slow["response"] = client.get(f"{base_url}/api/v1/reports/slow?seconds=5")

    def connection_header() -> str:
        with httpx.Client(verify=False, timeout=10) as client:
            return ", ".join(client.get(f"{base_url}/health").headers.get_list("connection"))

    def progress(message: str) -> None:
        # The gate's first word (a container still starting, or already ready when first looked at).
        if ("Docker health" in message or "answered 200" in message) and "during" not in slow:
            slow["during"] = connection_header()  # HTTP/1.1 clients are told to reconnect now
        # Started once the new containers passed the gate: in flight when nginx switches.
        if "answered 200" in message and "thread" not in slow:
            slow["thread"] = threading.Thread(target=long_request)
            slow["thread"].start()  # type: ignore[attr-defined]

    backups = Path(stack.project_dir) / "backups"
    had = set(backups.iterdir()) if backups.exists() else None
    try:
        with traffic(base_url, users=USERS, max_seconds=180) as requests:
            # Backups run on the database host: this one only where the test runs there.
            result = rollout.deploy(stack, SERVICE, other, backup=stack.target.is_local, progress=progress)
            time.sleep(1)
    finally:
        if stack.target.is_local and backups.exists():  # the pre-deploy backup is the test's: remove it
            for made in set(backups.iterdir()) - (had or set()):
                made.unlink()
            if had is None:
                backups.rmdir()
    if stack.target.is_local:
        assert result.release.backup and result.release.backup.endswith(".dump"), result.release
    # The restore point made just before the migrations, recorded with the release (restore
    # --before-release N reaches it).
    assert result.release.restore_point.startswith(f"finaiflow-before-{SERVICE}-"), result.release
    assert result.release.restore_point_at, result.release
    slow["thread"].join(timeout=30)  # type: ignore[attr-defined]
    assert failures(requests()) == [], f"{len(requests())} requests during the update"
    assert len(requests()) > 100
    assert version(base_url) == image_version(stack, other)
    response = slow["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert response.json()["release"] == found.version, "the long request did not end on the old release"
    assert result.drain_seconds >= 2, f"the drain did not wait for the long request: {result.phases}"
    assert "close" in str(slow["during"]) and "close" not in connection_header(), slow["during"]
    assert_settled(stack, other, found.replicas, standby_of=found.image)
    assert result.standby.startswith("kept: "), result.standby
    # What `stack up` does later must keep this release and these containers (no recreation).
    # A plain `compose up` scales the service back to its count and may remove the serving
    # containers rather than the standby (seen with compose 2.26): `stack up` retires it first.
    ids = [c.id for c in serving(stack)]
    deployed = audit_tail(stack)  # the deploy's own line, before the retirement's
    assert cli(stack, "standby", "retire", SERVICE).returncode == 0
    assert audit_tail(stack)["action"] == "standby-retire"
    assert standby.get(stack, SERVICE) is None
    stack.compose("up", "--detach", "--no-build", "--pull", "never", SERVICE)
    assert [c.id for c in serving(stack)] == ids, "a later `compose up` recreated the new containers"
    assert (result.release.image, result.release.kind) == (other, "deploy")
    assert result.previous is not None and result.previous.image == found.image
    assert result.release.revision == "0001_initial" and "0001_initial" in result.release.revisions
    history = releases.history(stack, SERVICE)
    assert history.current == result.release.id
    assert deployed["action"] == "deploy"


def test_rollback_under_load_returns_to_the_previous_release_in_seconds(
        stack: Stack, base_url: str, found: Found, other: str) -> None:
    """Within the standby window: the rollback switches nginx back to the previous release's
    containers, kept warm by the deploy (N = 2: two serving, two standing by)."""
    on_release(stack, found.image, found.replicas)
    rollout.deploy(stack, SERVICE, other, replicas=2, backup=False, standby=0)
    deployed = rollout.deploy(stack, SERVICE, found.image, replicas=2, backup=False)
    kept = standby.get(stack, SERVICE)
    assert kept is not None and kept.image == other and len(kept.containers) == 2, deployed.standby
    assert_settled(stack, found.image, 2, standby_of=other)
    with traffic(base_url, users=USERS, max_seconds=180) as requests:
        started = time.monotonic()
        result = rollout.rollback(stack, SERVICE)
        command = time.monotonic() - started
        time.sleep(1)
    print(f"rollback from the warm standby: traffic back after {result.switch_seconds:.2f} s (switch phase "
          f"{dict((p.name, p.seconds) for p in result.phases)}), command {command:.2f} s")
    assert failures(requests()) == []
    assert version(base_url) == image_version(stack, other)
    assert result.switch_seconds < 10, f"traffic back only after {result.switch_seconds} s: {result.phases}"
    assert result.standby.startswith("used: "), result.standby
    # Nothing was left to repair: the switching flag the rollback raised first for its clients is its
    # own, kept up through the switch (once taken for a leftover, and cleared before the switch).
    assert not result.repaired, result.repaired
    assert set(result.containers) == set(kept.containers)
    assert_settled(stack, other, 2)
    assert (result.release.image, result.release.kind) == (other, "rollback")
    assert len(result.retired) == 2 and len(result.containers) == 2


def test_the_switch_waits_for_an_idle_keepalive_client_and_no_longer_than_the_lead(
        stack: Stack, base_url: str) -> None:
    """nginx's own count of idle connections decides: a client idle on a keep-alive connection
    from before the flag is waited for (the whole lead); once it has had its `Connection: close`
    answer and gone, the switch may come at once."""
    proxy = Proxy(stack)
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{base_url}/nginx-health").status_code == 200  # the connection stays open
        idle = proxy.idle_connections()
        assert idle is not None and idle >= 1, f"nginx counts {idle} idle connections"
        proxy.set_switching(True)
        try:
            held = proxy.wait_clients_reconnected(time.monotonic())
            answer = client.get(f"{base_url}/nginx-health")
            assert "close" in answer.headers.get("connection", ""), answer.headers
            gone = proxy.wait_clients_reconnected(time.monotonic())
        finally:
            proxy.set_switching(False)
    assert held >= KEEPALIVE_LEAD, f"the switch did not wait for the idle client ({held:.2f} s)"
    assert gone < KEEPALIVE_LEAD, f"no idle client was left, and still a lead of {gone:.2f} s"


def from_either_release(stack: Stack, found: Found, other: str) -> tuple[str, str]:
    """Whichever of the two releases runs (N as found, no standby: deploying only when not so), and
    the other one: saves a deploy per test."""
    running = serving(stack)
    now = running[0].image if running else found.image
    if now not in (found.image, other):
        now = found.image
    on_release(stack, now, found.replicas)
    return now, other if now == found.image else found.image


def test_deploy_again_retires_the_first_standby_and_an_expired_one_is_not_used(
        stack: Stack, base_url: str, found: Found, other: str) -> None:
    back, to = from_either_release(stack, found, other)
    rollout.deploy(stack, SERVICE, to, backup=False)
    first = standby.get(stack, SERVICE)
    assert first is not None and first.image == back
    rollout.deploy(stack, SERVICE, back, backup=False)
    second = standby.get(stack, SERVICE)
    assert second is not None and second.image == to
    assert not {c.name for c in stack.containers(SERVICE)} & set(first.containers), "the first standby runs"
    assert_settled(stack, back, found.replicas, standby_of=to)
    # The window ends (as the clock would say): the next command retires it, and rolls back the usual way.
    releases.write_state(stack, standby.STATE_FILE, json.dumps(
        {"services": {SERVICE: {**asdict(second), "until": "2000-01-01T00:00:00+00:00"}}}))
    releases_cli = cli(stack, "releases", SERVICE)
    assert "expired at 2000-01-01" in " ".join(releases_cli.stdout.split()), releases_cli.stdout
    with traffic(base_url, users=4, max_seconds=180) as requests:
        result = rollout.rollback(stack, SERVICE)
        time.sleep(1)
    assert failures(requests()) == []
    assert any("retire the standby" in r for r in result.repaired), result.repaired
    assert not result.standby.startswith("used"), result.standby
    assert version(base_url) == image_version(stack, to)
    assert_settled(stack, to, found.replicas)


def test_the_scheduled_job_retires_the_standby_once_its_window_ended(
        stack: Stack, found: Found, other: str) -> None:
    """`standby schedule` installs one crontab entry (again: unchanged; --remove: gone, the rest
    kept). Run as cron runs it, the entry leaves a standby within its window alone, and retires it
    once the window has ended."""
    back, to = from_either_release(stack, found, other)
    rollout.deploy(stack, SERVICE, to, backup=False)
    kept = standby.get(stack, SERVICE)
    assert kept is not None and kept.image == back
    installed = cli(stack, "--yes", "--json", "standby", "schedule", SERVICE)
    assert installed.returncode == 0, installed.stderr
    entry = json.loads(installed.stdout)
    try:
        assert entry["scheduler"] == "cron" and entry["changed"] is True, entry
        again = cli(stack, "--yes", "--json", "standby", "schedule", SERVICE)
        assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, again.stdout
        crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False).stdout
        assert crontab.count(f"standby retire {SERVICE} --expired") == 1, crontab
        command = entry["entry"].split(" ", 5)[5]  # what cron hands to /bin/sh
        cron_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh",
                    "LOGNAME": "root"}

        def run_as_cron() -> None:
            done = subprocess.run(["/bin/sh", "-c", command], env=cron_env, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert done.returncode == 0, (done.stderr, releases.read_state(stack, "standby-retire.log"))

        run_as_cron()  # within the window: nothing to do
        assert standby.get(stack, SERVICE) == kept
        assert {c.name for c in stack.containers(SERVICE)} >= set(kept.containers)
        releases.write_state(stack, standby.STATE_FILE, json.dumps(
            {"services": {SERVICE: {**asdict(kept), "until": "2000-01-01T00:00:00+00:00"}}}))
        run_as_cron()  # the window has ended
        assert standby.get(stack, SERVICE) is None
        assert not {c.name for c in stack.containers(SERVICE)} & set(kept.containers), "the standby runs"
        assert audit_tail(stack)["action"] == "standby-retire"
        assert_settled(stack, to, found.replicas)
    finally:
        removed = cli(stack, "--yes", "standby", "schedule", SERVICE, "--remove")
    assert removed.returncode == 0, removed.stderr
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False).stdout
    assert f"standby retire {SERVICE}" not in crontab, crontab


STANDBY_BROKEN: dict[str, Callable[[Any], object]] = {
    # Killed for good (restart policy off first, or Docker would bring it back).
    "killed": lambda c: (c.update(restart_policy={"Name": "no"}), c.kill()),
    # Still running and Docker-healthy for a while, but nginx cannot reach it.
    "unreachable": lambda c: [c.client.networks.get(n).disconnect(c)
                              for n in c.attrs["NetworkSettings"]["Networks"]],
}


@pytest.mark.parametrize("how", list(STANDBY_BROKEN))
def test_a_broken_standby_is_not_used_and_the_rollback_takes_the_usual_path(
        stack: Stack, base_url: str, found: Found, other: str, how: str) -> None:
    back, to = from_either_release(stack, found, other)
    rollout.deploy(stack, SERVICE, to, backup=False)
    kept = standby.get(stack, SERVICE)
    assert kept is not None and kept.image == back
    STANDBY_BROKEN[how](stack.target.docker().containers.get(kept.containers[0]))
    said: list[str] = []
    with traffic(base_url, users=4, max_seconds=180) as requests:
        result = rollout.rollback(stack, SERVICE, progress=said.append)
        time.sleep(1)
    assert failures(requests()) == []
    assert not result.standby.startswith("used"), result.standby
    assert any("is not used" in line for line in said), said
    assert version(base_url) == image_version(stack, back)
    assert not {c.name for c in stack.containers(SERVICE)} & set(kept.containers), "the broken standby runs"
    assert_settled(stack, back, found.replicas)


def test_a_rollback_killed_during_the_switch_to_the_standby_is_repaired_by_the_next_command(
        stack: Stack, base_url: str, found: Found, other: str) -> None:
    back, to = from_either_release(stack, found, other)
    rollout.deploy(stack, SERVICE, to, backup=False)
    with traffic(base_url, users=4, max_seconds=180) as requests:
        proc = cli_process(stack, "rollback", SERVICE)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line.strip())
            if "traffic on" in line:  # nginx switched to the standby; nothing recorded yet
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert "traffic on" in seen[-1], seen
        repaired = cli(stack, "standby", "retire", SERVICE, "--expired")
        time.sleep(1)
    assert repaired.returncode == 0, repaired.stderr
    assert "forget the standby" in " ".join(repaired.stderr.split()), repaired.stderr
    assert not Proxy(stack).switching(), "the switching flag was left raised"
    assert failures(requests()) == []
    assert version(base_url) == image_version(stack, back)
    assert_settled(stack, back, found.replicas)


# -- automatic rollback -----------------------------------------------------------------------------------

EXPECTED_REASON = {
    "exits-at-start": "exit",
    "never-healthy": "unhealthy",
    "healthy-in-docker-but-503": "/health 503",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_release_is_removed_and_traffic_stays_on_the_current_one(
        stack: Stack, base_url: str, found: Found, kind: str) -> None:
    on_release(stack, found.image, found.replicas)
    before = serving(stack)
    with (built(stack, f"finaiflow/api:broken-{kind}", found.image, BROKEN[kind]) as image,
          traffic(base_url, users=4, max_seconds=180) as requests):
        result = cli(stack, "deploy", SERVICE, "--image", image, "--no-backup", "--health-timeout", "12")
    assert result.returncode == 1, result.stderr
    line = last_line(result)
    assert line.startswith("error: ") and EXPECTED_REASON[kind] in line, result.stderr
    assert f"traffic stayed on {found.image}" in line
    if kind == "exits-at-start":
        assert "boom: refusing to start" in result.stderr, "the log tail of the failed container is missing"
    assert failures(requests()) == []
    assert [c.id for c in serving(stack)] == [c.id for c in before], "the serving containers were touched"
    assert version(base_url) == found.version
    assert_settled(stack, found.image, found.replicas)
    assert audit_tail(stack)["action"] == "deploy-failed"


def test_a_failing_migration_stops_the_deploy_before_any_new_container(
        stack: Stack, base_url: str, found: Found) -> None:
    on_release(stack, found.image, found.replicas)
    before = serving(stack)
    files = {"migrations/versions/0002_fails.py": FAILING_MIGRATION}
    with (built(stack, "finaiflow/api:broken-migration", found.image, [], files) as image,
          pytest.raises(DeployFailed) as failed):
        rollout.deploy(stack, SERVICE, image, backup=False)
    assert "migration boom" in failed.value.output_tail
    assert [c.id for c in serving(stack)] == [c.id for c in before]
    assert stack.psql("SELECT version_num FROM alembic_version") == [["0001_initial"]]
    assert version(base_url) == found.version


# -- lock, crashes ----------------------------------------------------------------------------------------


def test_a_second_deploy_fails_fast_naming_who_holds_the_lock(stack: Stack, found: Found, other: str) -> None:
    on_release(stack, found.image, found.replicas)
    first = cli_process(stack, "deploy", SERVICE, "--image", other, "--no-backup")
    try:
        wait_until(lambda: releases.lock_status(stack).lock is not None, timeout=30, what="the first lock")
        started = time.monotonic()
        second = cli(stack, "deploy", SERVICE, "--image", found.image, "--no-backup")
        elapsed = time.monotonic() - started
        assert second.returncode == 1, second.stderr
        assert "is locked by" in last_line(second) and f"(pid {first.pid})" in last_line(second)
        assert elapsed < 10, f"the second deploy took {elapsed:.1f} s to refuse"
    finally:
        _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert_settled(stack, other, found.replicas, standby_of=found.image)


def test_lock_status_and_release_from_the_command_line(stack: Stack, found: Found) -> None:
    lock = releases.acquire(stack, "held by the test")
    try:
        status = cli(stack, "--json", "lock", "status")
        assert status.returncode == 0
        held = json.loads(status.stdout)
        assert held["held"] is True and held["lock"]["pid"] == os.getpid() and held["stale"] == ""
        assert lock.token not in status.stdout
        refused = cli(stack, "lock", "release")
        assert refused.returncode == 2 and "pass --yes" in last_line(refused)
        assert cli(stack, "--yes", "lock", "release").returncode == 0
        assert releases.lock_status(stack).lock is None
    finally:
        releases.release(stack, lock)


# The progress line after which each phase is under way, and the command that must repair it.
# After scale-up, the killed deploy is a redeploy of the running image on nginx's `server api:8000`:
# the hardest case to tell old from new (same image, no names in the upstream).
# After scale-up: the gate's first word on the new container, whichever it is (a container found
# ready at the first look, as when the migrations beside its start took longer under load, is never
# said to be starting).
KILL_AT = {
    "before-scale-up": (("running migrations",), "deploy"),
    "after-scale-up": (("Docker health", "healthy, /health answered"), "deploy"),
    "after-nginx-switch": (("traffic on",), "rollback"),
    "during-old-container-stop": (("stopping",), "rollback"),
}


@pytest.mark.parametrize("phase", list(KILL_AT))
def test_a_deploy_killed_at_any_phase_is_repaired_by_the_next_command(
        stack: Stack, base_url: str, found: Found, other: str, phase: str) -> None:
    markers, repair = KILL_AT[phase]
    on_release(stack, found.image, found.replicas)
    killed = other
    if phase == "after-scale-up":
        killed = found.image
        Proxy(stack).switch_gracefully(Upstream.of(SERVICE, [SERVICE], 8000))
    with traffic(base_url, users=4, max_seconds=240) as requests:
        # The old containers are stopped only without a warm standby.
        off = ["--standby", "0"] if phase == "during-old-container-stop" else []
        proc = cli_process(stack, "deploy", SERVICE, "--image", killed, "--no-backup", *off)
        seen = []
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # progress lines, as they come
            seen.append(line.strip())
            if any(marker in line for marker in markers) or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert any(marker in seen[-1] for marker in markers), f"never reached {markers!r}: {seen}"
        assert releases.lock_status(stack).stale, "the killed deploy should have left its lock behind"
        if repair == "deploy":
            result = rollout.deploy(stack, SERVICE, other, backup=False)
            expected = other
        else:
            result = rollout.rollback(stack, SERVICE)
            expected = found.image
        time.sleep(1)
    assert failures(requests()) == []
    # The repairing deploy keeps what served as its warm standby; a rollback keeps none.
    assert_settled(stack, expected, found.replicas, standby_of=found.image if repair == "deploy" else None)
    assert version(base_url) == image_version(stack, expected)
    if phase != "before-scale-up":
        assert result.repaired, f"nothing was repaired after a kill {phase}"


def test_rolling_back_across_a_migration_the_older_release_does_not_know_needs_yes(
        stack: Stack, base_url: str, found: Found) -> None:
    on_release(stack, found.image, found.replicas)
    newer = "finaiflow/api:1.2.0-test"
    lines = ["ENV RELEASE=1.2.0-test", "LABEL org.opencontainers.image.version=1.2.0-test"]
    with built(stack, newer, found.image, lines, {"migrations/versions/0002_tenant_note.py": NOTE_MIGRATION}):
        try:
            rollout.deploy(stack, SERVICE, newer, backup=False)
            assert stack.psql("SELECT version_num FROM alembic_version") == [["0002_tenant_note"]]
            refused = cli(stack, "rollback", SERVICE)
            assert refused.returncode == 2, refused.stderr
            assert "0002_tenant_note" in last_line(refused) and "pass --yes" in last_line(refused)
            assert_settled(stack, newer, found.replicas, standby_of=found.image)
            asked: list[str] = []
            result = rollout.rollback(stack, SERVICE, confirm=asked.append)
            assert asked and "0002_tenant_note" in asked[0]
            assert result.release.image == found.image
            assert version(base_url) == found.version  # the older release runs on the newer schema
        finally:
            # Put the schema back with the release that knows the migration, before its image goes.
            stack.compose("run", "--rm", "--no-deps", "-T", SERVICE, "alembic", "downgrade", "0001_initial",
                          env={rollout.image_variable(stack, SERVICE): newer})
            if {c.image for c in serving(stack)} != {found.image}:
                rollout.deploy(stack, SERVICE, found.image, replicas=found.replicas, backup=False)
    assert stack.psql("SELECT version_num FROM alembic_version") == [["0001_initial"]]


# -- read commands and bad input ------------------------------------------------------------------------


def test_plan_lists_the_steps_and_changes_nothing(stack: Stack, found: Found, other: str) -> None:
    before = (stack.containers(SERVICE), Proxy(stack).read_upstream(SERVICE),
              releases.read_state(stack, "releases.json"), stack.target.read_text(stack.env_path))
    result = cli(stack, "--json", "deploy", SERVICE, "--image", other, "--plan")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert any("alembic upgrade head" in s for s in steps) and any("nginx -t" in s for s in steps)
    after = (stack.containers(SERVICE), Proxy(stack).read_upstream(SERVICE),
             releases.read_state(stack, "releases.json"), stack.target.read_text(stack.env_path))
    assert after == before


def test_releases_lists_the_history_with_the_current_one_marked(stack: Stack, found: Found) -> None:
    result = cli(stack, "--json", "releases", SERVICE)
    assert result.returncode == 0, result.stderr
    history = json.loads(result.stdout)
    assert history["service"] == SERVICE and history["releases"]
    current = [r for r in history["releases"] if r["id"] == history["current"]]
    assert current and current[0]["image_id"].startswith("sha256:")
    assert all(len(r["config_hash"]) == 16 for r in history["releases"])
    table = cli(stack, "releases", SERVICE)
    assert table.returncode == 0 and "*" in table.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (("deploy", SERVICE, "--image", "finaiflow/api:no-such-release"), "is not on"),
    (("deploy", "no-such-service", "--image", "finaiflow/api:1.0.0"), "no service 'no-such-service'"),
    (("rollback", SERVICE, "--to", "99999"), "no release '99999'"),
])
def test_bad_input_is_one_clear_error_and_exit_2(stack: Stack, found: Found, args: tuple[str, ...],
                                                 expected: str) -> None:
    before = [c.id for c in stack.containers(SERVICE)]
    result = cli(stack, *args)
    assert result.returncode == 2, result.stderr
    assert expected in last_line(result) and last_line(result).startswith("error: ")
    assert [c.id for c in stack.containers(SERVICE)] == before
    assert releases.lock_status(stack).lock is None


def test_set_env_value_edits_one_line_and_keeps_the_mode(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nSECRET_KEY='a b#c'\nexport API_IMAGE=finaiflow/api:1.0.0\nOTHER=1\n")
    env.chmod(0o600)
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    st = Stack(Target.parse("local://"), str(tmp_path))
    assert rollout.set_env_value(st, "API_IMAGE", "finaiflow/api:1.1.0") is True
    assert env.read_text() == "# comment\nSECRET_KEY='a b#c'\nAPI_IMAGE=finaiflow/api:1.1.0\nOTHER=1\n"
    assert env.stat().st_mode & 0o777 == 0o600
    assert rollout.set_env_value(st, "API_IMAGE", "finaiflow/api:1.1.0") is False
    assert rollout.set_env_value(st, "NEW_IMAGE", "x/y:2") is True
    assert envfile.parse(env.read_text())["NEW_IMAGE"] == "x/y:2"
    with pytest.raises(UsageError):
        rollout.set_env_value(st, "API_IMAGE", "evil|value")
