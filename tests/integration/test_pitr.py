"""Point-in-time recovery with pgBackRest against a real PostgreSQL: the session's second stack's
(tests/conftest.py), whose database these tests replace again and again.

One steady write load serves every test of the module, in order: rows are inserted one
transaction at a time from here (each acknowledged insert is a commit we know of), the database
container is SIGKILLed and its volume removed while they run, `restore --latest` brings the cluster
back from the archive; `restore --to-time` then goes back to an instant in the middle of what it
holds; a missing and a damaged WAL segment are refused; a restore killed half way is resumed; and
the retention test expires the oldest backup last. The stack ends with the data it had before the
module (its probe table dropped), on a new timeline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finaiflow_ops import pitr, polling
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.pgbackrest import Archiver, Repository, missing_segments, position
from finaiflow_ops.stack import Stack
from tests.alerting_support import Receiver
from tests.integration.backups_support import cli, error_line

pytestmark = [pytest.mark.integration, pytest.mark.destructive]


@pytest.fixture(scope="module")
def stack(second_stack: tuple[Stack, Receiver]) -> Stack:
    return second_stack[0]


TABLE = "ops_pitr_probe"
RPO_SECONDS = 60


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@dataclass
class Load:
    """Inserts acknowledged by PostgreSQL: id -> when the commit returned (epoch seconds)."""

    acked: dict[int, float] = field(default_factory=dict)
    stopped_by: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, db: Database) -> None:
        next_id = 1
        while not self._stop.is_set() and next_id < 2000:
            insert = f"INSERT INTO {TABLE} VALUES ({next_id})"  # noqa: S608
            done = subprocess.run(db.argv(["psql", "-U", db.user, "-d", db.name, "-Xq", "-c", insert]),
                                  capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:  # psql killed with its container: exit 137, maybe nothing said
                self.stopped_by = f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
                return
            self.acked[next_id] = time.time()
            next_id += 1
            self._stop.wait(0.05)


@dataclass
class Archived:
    """The state after `restore --latest`: the ids the cluster holds, and the load's acknowledgements."""

    load: Load
    killed_at: float
    ids: list[int]
    abandoned_commit: float = 0.0  # a commit the restore --to-time below went back over


def ids_of(db: Database) -> list[int]:
    return [int(r[0]) for r in db.psql(f"SELECT id FROM {TABLE} ORDER BY id")]  # noqa: S608


def project_cli(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return cli("--project-dir", stack.project_dir, *args, timeout=timeout)


def safety_copies(stack: Stack) -> set[str]:
    return set(docker("volume", "ls", "-q", "--filter", "label=finaiflow.safety-copy", "--filter",
                      f"label=com.docker.compose.project={stack.name}").stdout.split())


def switch_wal(db: Database) -> str:
    """Something to archive: a write, then the segment closed (as archive_timeout would); its name."""
    db.psql("SELECT txid_current()", database="postgres")  # a commit record
    return db.psql("SELECT pg_walfile_name(pg_switch_wal())", database="postgres")[0][0]


def test_a_failing_archive_command_is_visible_in_check_then_recovers(stack: Stack) -> None:
    db = Database.of(stack)
    stack.exec("postgres", ["chmod", "-R", "a-w", "/var/lib/pgbackrest/archive"])  # archive-push cannot write
    try:
        switch_wal(db)
        for attempt in polling.attempts(within=30, every=0.5):
            if Archiver.of(db).failing or attempt.last:
                break
        result = project_cli(stack, "--json", "check")
        archive = next(i for i in json.loads(result.stdout)["items"] if i["name"] == "archive")
        assert archive["status"] == "warn" and "the archive command fails" in archive["detail"], archive
    finally:
        stack.exec("postgres", ["chmod", "-R", "u+w", "/var/lib/pgbackrest/archive"])
    switch_wal(db)  # wakes the archiver: the waiting segments go out
    for attempt in polling.attempts(within=60, every=0.5):
        state = Archiver.of(db)
        if (not state.failing and state.waiting == 0) or attempt.last:
            break
    assert not state.failing and state.waiting == 0, state.describe()


@pytest.fixture(scope="module")
def archived(stack: Stack) -> Iterator[Archived]:
    """A full backup, the write load, SIGKILL of the database and removal of its volume during it,
    then `restore --latest`."""
    copies = safety_copies(stack)
    db = Database.of(stack)
    db.psql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    full = project_cli(stack, "backup", "physical", "--type", "full")
    assert full.returncode == 0, full.stderr
    assert "pgBackRest full backup" in full.stdout
    load = Load()
    writer = threading.Thread(target=load.run, args=(db,), daemon=True)
    started = time.time()
    writer.start()
    try:
        # Until archive_timeout closed a segment holding some of the load, and a few seconds more
        # that only the database's own volume holds when it is lost.
        for attempt in polling.attempts(within=75, every=0.5):
            row = db.psql("SELECT coalesce(extract(epoch FROM last_archived_time), 0) FROM pg_stat_archiver",
                          database="postgres")
            if float(row[0][0]) > started + 1 or attempt.last:
                break
        assert float(row[0][0]) > started + 1, "archive_timeout closed no segment during the load"
        # Commits that only the lost volume holds: the loss being measured.
        tail_from = len(load.acked)
        for attempt in polling.attempts(within=30, every=0.1):
            if len(load.acked) >= tail_from + 20 or attempt.last:
                break
        container = stack.containers("postgres", all=False)[0].name
        killed_at = time.time()
        docker("kill", "--signal", "KILL", container)
        writer.join(timeout=30)  # its next insert fails
    finally:
        load._stop.set()
        writer.join(timeout=30)
    exporter = [c.name for c in stack.containers("ops-exporter")]  # it mounts the volume read-only
    docker("rm", "-f", container, *exporter)
    docker("volume", "rm", f"{stack.name}_pg_data")
    try:
        clock = time.monotonic()
        result = project_cli(stack, "--yes", "restore", "--latest")
        seconds = time.monotonic() - clock
        print(f"\nrestore --latest after the volume was lost: {seconds:.1f} s; {result.stdout.strip()}")
        assert result.returncode == 0, result.stderr
        assert "there was no data volume to keep" in result.stdout
        assert "downtime" in result.stdout
        ids = ids_of(Database.of(stack))
        yield Archived(load, killed_at, ids)
    finally:
        # Only what this fixture removed: a plain `compose up` of every service would also converge
        # the api, whose warm standby (a deploy's, in the same session) compose may keep instead
        # of the serving containers (docs/rollout.md).
        stack.compose("up", "--detach", "--no-deps", "--no-build", "--pull", "never", "postgres",
                      "ops-exporter", timeout=300)
        Database.of(stack).psql(f"DROP TABLE IF EXISTS {TABLE}")
        for volume in safety_copies(stack) - copies:
            docker("volume", "rm", volume, check=False)


def test_latest_after_the_volume_is_lost_loses_at_most_a_minute_of_commits(archived: Archived) -> None:
    acked = archived.load.acked
    assert archived.load.stopped_by, "the load never saw the database go"
    assert archived.ids, "nothing of the load was recovered from the archive"
    # A prefix of the acknowledged commits, without holes: nothing committed before the last
    # recovered row is missing.
    assert archived.ids == list(range(1, len(archived.ids) + 1))
    last = archived.ids[-1]
    lost = [i for i in acked if i > last]
    newest = max(acked)
    window = acked[newest] - acked[last] if lost else 0.0
    print(f"\nRPO: {len(lost)} of {len(acked)} acknowledged commits lost, the last recovered one committed "
          f"{window:.1f} s before the last acknowledged one; the last recovered commit was at "
          f"{datetime.fromtimestamp(acked[last], UTC):%H:%M:%S.%f} UTC, the database was killed "
          f"{archived.killed_at - acked[last]:.1f} s after it")
    assert archived.killed_at - acked[last] <= RPO_SECONDS


def test_to_time_gives_exactly_the_rows_committed_before_it(stack: Stack, archived: Archived) -> None:
    db = Database.of(stack)
    rows = db.psql(f"SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM {TABLE} "  # noqa: S608
                   "ORDER BY id")
    commits = {int(i): float(t) for i, t in rows}
    assert len(commits) >= 4, "too few rows recovered to pick a point between two commits"
    middle = sorted(commits)[len(commits) // 2]
    instant = (commits[middle] + commits[middle + 1]) / 2
    expected = [i for i, t in commits.items() if t <= instant]
    archived.abandoned_commit = commits[max(commits)]
    when = datetime.fromtimestamp(instant, UTC)
    # A differential on the timeline `--latest` opened, as the daily job takes one: the restore below
    # abandons that timeline, and the later restores must not start from this backup.
    diff = project_cli(stack, "backup", "physical", "--type", "diff")
    assert diff.returncode == 0, diff.stderr
    result = project_cli(stack, "--yes", "restore", "--to-time", when.isoformat())
    assert result.returncode == 0, result.stderr
    print(f"\nrestore --to-time: {result.stdout.strip()}")
    assert ids_of(Database.of(stack)) == expected
    copy = next(w for w in result.stdout.split() if w.startswith(f"{stack.name}_pg_data_before_"))
    assert docker("volume", "inspect", copy.rstrip(".;,"), check=False).returncode == 0


def test_times_outside_the_reachable_range_are_refused_naming_it(stack: Stack, archived: Archived) -> None:
    for when in (datetime.now(UTC) - timedelta(days=400), datetime.now(UTC) + timedelta(hours=1)):
        result = project_cli(stack, "--yes", "restore", "--to-time", when.isoformat())
        assert result.returncode == 2, result.stderr
        line = error_line(result)
        assert "reachable: from " in line and "nothing was changed" in line
    # Committed before the restore --to-time above went back to an earlier instant: on the
    # timeline it left, which a restore (following the newest timeline) cannot reach.
    assert archived.abandoned_commit, "the restore --to-time test did not run first"
    abandoned = datetime.fromtimestamp(archived.abandoned_commit, UTC)
    result = project_cli(stack, "--yes", "restore", "--to-time", abandoned.isoformat())
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert "lies on a timeline that a restore left" in line and "nothing was changed" in line, line
    assert ids_of(Database.of(stack))  # still serving, untouched


def _repo_file(stack: Stack, segment: str) -> str:
    """The path in the postgres container of the archived segment `segment`."""
    pattern = f"/var/lib/pgbackrest/archive/main/*/*/{segment}-*"
    return stack.exec("postgres", ["sh", "-c", f"ls {pattern}"]).stdout.split()[0]


def test_a_missing_or_damaged_wal_segment_is_refused_naming_it(stack: Stack, archived: Archived) -> None:
    db = Database.of(stack)
    # A segment after the backup's first and before the archive's newest, at a position no other
    # timeline has (the restores above made timelines that share positions: see missing_segments):
    # the newest timeline's segments, closed until one is past what the abandoned timelines wrote.
    inner: list[str] = []
    for _ in range(12):
        closed = switch_wal(db)
        for attempt in polling.attempts(within=60, every=0.3):
            done = db.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                           database="postgres")
            if done[0][0][8:] >= closed[8:] or attempt.last:
                break
        info = Repository(stack).info()
        base = info.base_for(None)
        assert base is not None and not missing_segments(info.wal, base.wal_start)
        positions = [w.position for w in info.wal]
        newest = max(positions)
        inner = [w.segment for w in info.wal
                 if position(base.wal_start) < w.position < newest and positions.count(w.position) == 1]
        if inner:
            break
    assert inner, "the archive has no segment between the backup and its end"
    segment = inner[len(inner) // 2]
    path = _repo_file(stack, segment)
    before = ids_of(Database.of(stack))
    stack.exec("postgres", ["mv", path, "/var/lib/pgbackrest/set-aside"])
    try:
        result = project_cli(stack, "--yes", "restore", "--latest")
    finally:
        stack.exec("postgres", ["mv", "/var/lib/pgbackrest/set-aside", path])
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert f"misses 1 segment(s) a restore from backup {base.label} needs: {segment}" in line
    assert ids_of(Database.of(stack)) == before  # never stopped
    # The same segment with bytes changed in its middle: pgBackRest's verify finds it.
    stack.exec("postgres", ["sh", "-c", f'cp "{path}" /var/lib/pgbackrest/set-aside && '
                            f'printf "damaged" | dd of="{path}" bs=1 seek=200 conv=notrunc status=none'])
    try:
        damaged = project_cli(stack, "--yes", "restore", "--latest")
    finally:
        stack.exec("postgres", ["mv", "/var/lib/pgbackrest/set-aside", path])
    assert damaged.returncode == 1, damaged.stderr
    assert "fails verification" in error_line(damaged)
    assert ids_of(Database.of(stack)) == before


def test_a_restore_killed_half_way_is_resumed_by_the_next_one(stack: Stack, archived: Archived) -> None:
    before = ids_of(Database.of(stack))
    state = Path(stack.state_path(pitr.STATE_FILE))
    proc = subprocess.Popen([sys.executable, "-m", "finaiflow_ops.cli", "--project-dir", stack.project_dir,
                             "--yes", "restore", "--latest"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for attempt in polling.attempts(within=120, every=0.05):
            if state.exists() and json.loads(state.read_text() or "{}").get("phase") == "restoring":
                break
            assert proc.poll() is None and not attempt.last, "the restore did not reach pgbackrest restore"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    copy = json.loads(state.read_text())["safety_copy"]
    assert copy and docker("volume", "inspect", copy, check=False).returncode == 0
    assert not stack.containers("postgres", all=False)  # stopped, and kept from starting half restored
    said = pitr.interrupted(stack)  # what `check` says (its archive item fails with it)
    assert "was interrupted at step 'restoring'" in said and "(restore --latest, --yes)" in said
    assert "it resumes" in said and copy in said
    result = project_cli(stack, "--yes", "restore", "--latest")
    assert result.returncode == 0, result.stderr
    assert "resuming the restore to latest interrupted at step 'restoring'" in result.stderr
    assert "(an interrupted restore, finished)" in result.stdout and copy in result.stdout
    assert ids_of(Database.of(stack)) == before  # nothing lost
    assert not state.exists()


def test_the_pitr_drill_restores_an_instant_into_a_scratch_container_and_compares_heartbeats(
        stack: Stack, archived: Archived) -> None:
    result = project_cli(stack, "--json", "restore", "drill", "--pitr")
    assert result.returncode == 0, result.stderr
    drill = json.loads(result.stdout)
    assert drill["heartbeats"] > 0
    print(f"\npoint-in-time drill of {drill['target']}: {drill['heartbeats']} heartbeat rows matched in "
          f"{drill['seconds']:.1f} s")
    scratch = "label=finaiflow.drill=pitr"
    assert not docker("ps", "-aq", "--filter", scratch).stdout.split()  # removed after the drill
    assert not docker("volume", "ls", "-q", "--filter", scratch).stdout.split()


def test_before_release_brings_the_database_back_to_just_before_that_deploys_migrations(
        stack: Stack, archived: Archived) -> None:
    """The operator's way back from a bad migration: the deploy recorded a restore point just
    before its migrations; what was committed before it stays, what came after goes."""
    db = Database.of(stack)
    db.psql(f"INSERT INTO {TABLE} VALUES (900001)")  # noqa: S608 - committed before the deploy
    running = stack.env.get("API_IMAGE") or "finaiflow/api:1.0.0"
    other = next(i for i in ("finaiflow/api:1.1.0", "finaiflow/api:1.0.0") if i != running)
    deployed = project_cli(stack, "--json", "deploy", "api", "--image", other, "--standby", "0",
                           "--no-backup")
    assert deployed.returncode == 0, deployed.stderr
    release = json.loads(deployed.stdout)["release"]
    assert release["restore_point"], release
    Database.of(stack).psql(f"INSERT INTO {TABLE} VALUES (900002)")  # noqa: S608 - after it
    result = project_cli(stack, "--yes", "restore", "--before-release", str(release["id"]))
    assert result.returncode == 0, result.stderr
    print(f"\nrestore --before-release {release['id']}: {result.stdout.strip()}")
    ids = ids_of(Database.of(stack))
    assert 900001 in ids and 900002 not in ids, ids[-5:]


def test_retention_expires_the_oldest_backup_but_keeps_the_wal_the_kept_one_needs(
        stack: Stack, archived: Archived) -> None:
    repo = Repository(stack)
    oldest = repo.info().backups[0]
    result = project_cli(stack, "--json", "backup", "physical", "--type", "full", "--retention-full", "1")
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    info = repo.info()
    assert [b.label for b in info.backups] == [made["label"]]  # the older full is expired
    assert oldest.label != made["label"]
    # The WAL only the expired backup needed is gone; from the kept one's start on, all of it is there.
    assert info.wal and min(w.position for w in info.wal) == position(made["wal_start"])
    assert not missing_segments(info.wal, made["wal_start"])
    assert position(oldest.wal_start) < position(made["wal_start"])
