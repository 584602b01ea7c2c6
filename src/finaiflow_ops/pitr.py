"""Point-in-time recovery: the database cluster brought back to an instant, or to the last archived
transaction, from the pgBackRest repository (finaiflow_ops.backup.pgbackrest).

restore --to-time T | --latest:
  1. when the database runs, its current WAL segment is closed and archived (so that `--latest`
     reaches what was committed up to now); the repository is read (a one-off container when the
     database is down or its volume lost):
     T must lie between the oldest backup's end and the newest archived WAL segment, and every
     segment from the base backup on must be there and sound (pgBackRest verify); otherwise the
     restore is refused, naming the reachable range or the gap, and nothing is changed;
  2. the database is stopped (downtime starts) and its volume copied into a new volume
     PROJECT_pg_data_before_STAMP (the safety copy; skipped when the volume is gone);
  3. a mark in the repository stops the image from starting a half-restored directory, then
     `pgbackrest restore --delta` writes the base backup and the recovery settings;
  4. postgres starts, replays the archived WAL to T (PostgreSQL refuses to open if it cannot reach
     T: never silently partial), and is promoted to a new timeline;
  5. every table is counted, the api cache emptied and the api must be healthy (restore.serve_again);
     the downtime is measured from the stop to the healthy api.
A run killed at any point leaves a state file beside the releases (PROJECT_DIR/.finaiflow/); the next
restore resumes it, keeping the first safety copy, and names what to do otherwise.
On a swarm, the stop, the copy, the one-off containers and the start happen on the engine of the
database node, which holds the volumes (backup.cluster_host).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from finaiflow_ops import polling
from finaiflow_ops.backup import cluster_host
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.errors import RestoreFailed
from finaiflow_ops.backup.pgbackrest import (
    STANZA,
    ArchiveGap,
    PhysicalBackup,
    Repository,
    iso,
    missing_segments,
)
from finaiflow_ops.errors import OpsError, UsageError
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.restore import serve_again

if TYPE_CHECKING:
    from finaiflow_ops.backup.cluster_host import ClusterHost
    from finaiflow_ops.stack import Stack

__all__ = ["PitrDrillResult", "PitrResult", "drill", "interrupted", "pending", "restore_to"]

STATE_FILE = "pitr-restore.json"
MARK = "/var/lib/pgbackrest/restore-in-progress"  # in the repository volume: see the image's entrypoint
_LAST_TX_RE = re.compile(r"last completed transaction was at log time ([0-9: .+-]+)")
_RECOVERY_TIMEOUT = 3600.0


@dataclass(frozen=True)
class PitrResult:
    """The database cluster restored to `target` (an instant, or "latest")."""

    target: str
    backup: str  # the pgBackRest backup it started from
    safety_copy: str  # the volume holding the data it replaced ("" when the volume was gone)
    last_transaction: str  # when the newest transaction it holds was committed (from the recovery)
    tables: Mapping[str, int]
    restore_seconds: float  # pgBackRest's restore and the replay of WAL
    downtime_seconds: float  # from stopping the database to a healthy api
    resumed: bool  # it finished a restore that had been interrupted
    cache_keys_flushed: int

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


# -- the state of a restore under way ---------------------------------------------------------------

def pending(stack: Stack) -> dict[str, Any] | None:
    """The state file of a restore that did not finish, or None."""
    path = stack.state_path(STATE_FILE)
    if not stack.target.exists(path):
        return None
    loaded: dict[str, Any] = json.loads(stack.target.read_text(path))
    return loaded


def interrupted(stack: Stack) -> str:
    """What to do about a restore that did not finish ("" when none): for `check`."""
    left = pending(stack)
    if not left:
        return ""
    again = ("restore --latest" if left["target"] == "latest"
             else "restore --to-time T (or --before-release N)")
    what = _resume_hint(left).replace("restore --to-time T or --latest", again)
    return (f"a point-in-time restore to {left['target']} was interrupted at step {left['phase']!r}; "
            f"the database stays stopped: {what}")


def _save(stack: Stack, state: Mapping[str, Any]) -> None:
    path = stack.state_path(STATE_FILE)
    stack.target.run("sh", "-c", 'mkdir -p "$1" && cat >"$2.tmp" && mv -f "$2.tmp" "$2"', "sh",
                     stack.state_dir, path, input=json.dumps(dict(state), indent=1).encode())


def _clear(stack: Stack) -> None:
    stack.target.run("rm", "-f", "--", stack.state_path(STATE_FILE))


# -- choosing what to restore ---------------------------------------------------------------------------

def _plan(repo: Repository, when: datetime | None) -> PhysicalBackup:
    """The base backup of a restore to `when` (None: the end of the archive); refuses a time that
    cannot be reached and an archive with a missing or damaged segment."""
    info = repo.info()
    reach = info.reachable()
    if reach is None:
        raise UsageError("the pgBackRest repository holds no physical backup to restore from",
                         hint="take one: finaiflow-ops backup physical (the daily job takes them)")
    earliest, latest = reach
    span = (f"reachable: from {iso(earliest)} (end of the oldest backup) to {iso(latest)} "
            "(newest archived WAL)")
    target = when.timestamp() if when else None
    if target is not None and target > time.time():
        raise UsageError(f"{iso(target)} is in the future; {span}", hint="nothing was changed")
    if target is not None and not earliest <= target <= latest:
        raise UsageError(f"{iso(target)} cannot be reached; {span}", hint="nothing was changed")
    gone = info.abandoned_around(target) if target is not None else None
    if target is not None and gone is not None:
        raise UsageError(f"{iso(target)} lies on a timeline that a restore left: at {iso(gone[1])} the "
                         f"database went back to {iso(gone[0])}, and what was committed in between is "
                         "not on the newest timeline",
                         hint=f"nothing was changed; choose a time up to {iso(gone[0])} or after "
                              f"{iso(gone[1])}, or restore a pg_dump backup of that span (restore FILE)")
    base = info.base_for(target)
    assert base is not None  # the target is after the oldest backup's end
    gaps = missing_segments(info.wal, base.wal_start)
    if gaps:
        before = [w for w in info.wal if w.segment[8:] < gaps[0][8:]]
        until = max((w.archived for w in before), default=base.stopped)
        if target is None or target > until:
            raise ArchiveGap(
                f"the WAL archive misses {len(gaps)} segment(s) a restore from backup {base.label} needs: "
                f"{gaps[0]}" + (f" to {gaps[-1]}" if len(gaps) > 1 else ""),
                hint=f"nothing was changed; times up to {iso(until)} can still be reached "
                     "(restore --to-time), or restore a pg_dump backup (restore FILE)")
    problems = repo.verify()
    if problems:
        raise ArchiveGap(f"the pgBackRest repository fails verification: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                         hint="nothing was changed; a damaged WAL segment would end the replay early")
    return base


# -- the restore --------------------------------------------------------------------------------------------

def restore_to(stack: Stack, when: datetime | None, *, point: str = "",
               progress: Progress | None = None) -> PitrResult:
    """Bring the database cluster back to `when` (None: the last archived transaction), or to the
    restore point named `point`, made at `when` (a deploy's, just before its migrations)."""
    say = or_quiet(progress)
    host = cluster_host.of(stack)
    repo = Repository(stack)
    left = pending(stack)
    if left:
        say(f"resuming the restore to {left['target']} interrupted at step {left['phase']!r} "
            f"(started {left['started']}); the data from before it is in {left['safety_copy'] or 'no copy'}")
        host.end_one_offs()  # a killed run's one-off container may still be writing
    when_text = point or (iso(when.timestamp()) if when else "latest")
    _archive_now(repo, say)
    base = _plan(repo, when)
    state: dict[str, Any] = left or {"started": iso(time.time()), "safety_copy": ""}
    state.update(target=when_text, backup=base.label, phase="stopping")
    _save(stack, state)
    clock = time.monotonic()
    say("stopping the database (the api answers 503 until it is back)")
    host.stop()
    if not left:
        state["safety_copy"] = _safety_copy(stack, host, say)
    state["phase"] = "restoring"
    _save(stack, state)
    say(f"restoring backup {base.label} and the recovery settings (target: {when_text})")
    restore_clock = time.monotonic()
    target_options = (["--type=name", f"--target={point}", "--target-action=promote"] if point
                      else ["--type=time", f"--target={_pg_time(when)}", "--target-action=promote"] if when
                      else ["--type=default"])
    # sh -c SCRIPT sh MARK_TEXT LABEL OPTION...: the mark first, removed once pgBackRest succeeded
    script = (f'printf "%s" "$1" >{MARK} && shift && label="$1" && shift && '
              f'pgbackrest --stanza={STANZA} --set="$label" --delta --force "$@" restore && rm -f {MARK}')
    host.run_once("sh", ["-c", script, "sh", f"restore to {when_text}", base.label, *target_options],
                  timeout=_RECOVERY_TIMEOUT, failure="pgbackrest restore failed", hint=_resume_hint(state))
    state["phase"] = "recovering"
    _save(stack, state)
    say("starting the database: it replays the archived WAL, then opens")
    last_tx = _recover(stack, host, state, say)
    restore_seconds = time.monotonic() - restore_clock
    tables = _check(stack)
    flushed = serve_again(stack, say)
    downtime = time.monotonic() - clock
    _clear(stack)
    return PitrResult(when_text, base.label, state["safety_copy"], last_tx, tables, restore_seconds,
                      downtime, bool(left), flushed)


def _archive_now(repo: Repository, say: Progress) -> float | None:
    """When the database runs: commit a transaction, close the current WAL segment and wait (60 s
    at most) until it is archived, so that any instant up to now can be reached (`--latest` of a
    running database, or a time a few seconds ago: replay to T needs a commit after T). When it
    was archived (epoch seconds), or None."""
    db = repo.database()
    if db is None:
        return None
    try:
        db.psql("SELECT txid_current()", database="postgres")  # a commit record, now
        flushed = time.time()
        row = db.psql("SELECT pg_walfile_name(pg_switch_wal())", database="postgres")
        closed = row[0][0] if row else ""
        for attempt in polling.attempts(within=60, every=0.3):
            done = db.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                           database="postgres")
            if done and done[0][0][8:] >= closed[8:]:
                return flushed
            if attempt.last:
                say(f"the current WAL segment {closed} was not archived within 60 s: the restore reaches "
                    "what was archived before")
    except OpsError as exc:
        say(f"could not close the current WAL segment ({exc.message}): the restore reaches what was archived")
    return None


def _pg_time(when: datetime | None) -> str:
    assert when is not None
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _resume_hint(state: Mapping[str, Any]) -> str:
    copy = state.get("safety_copy") or ""
    kept = f"the data from before it is in the volume {copy}" if copy else "no data volume was replaced"
    return (f"run the same restore again (restore --to-time T or --latest, --yes): it resumes; {kept}; "
            "the database stays stopped until then")


def _volume(engine: Any, name: str) -> Any:
    import docker.errors

    try:
        return engine.volumes.get(name)
    except docker.errors.NotFound:
        return None


_NOTHING_TO_COPY = 3
# The copy, as root (ownership and modes kept); exit 3 when the volume holds no cluster (it was lost,
# and a one-off container reading the repository made it anew, empty).
_COPY = f'[ -s /from/PG_VERSION ] || exit {_NOTHING_TO_COPY}; exec cp -a /from/. /to/'


def _safety_copy(stack: Stack, host: ClusterHost, say: Progress) -> str:
    """Copy the database volume into a new one, on the engine that holds it; "" when there is no
    cluster to copy."""
    import docker.errors

    source = f"{stack.name}_pg_data"
    engine = host.engine
    if _volume(engine, source) is None:
        say(f"no volume {source}: nothing to keep a copy of")
        return ""
    copy = f"{source}_before_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"
    say(f"copying the database volume {source} into {copy} (the safety copy)")
    created = engine.volumes.create(copy, labels={"finaiflow.safety-copy": "point-in-time restore",
                                                  "com.docker.compose.project": stack.name})
    try:
        engine.containers.run(host.image, entrypoint=["sh", "-c", _COPY], user="0", network_mode="none",
                              remove=True, volumes={source: {"bind": "/from", "mode": "ro"},
                                                    copy: {"bind": "/to", "mode": "rw"}})
    except docker.errors.ContainerError as exc:
        if exc.exit_status == _NOTHING_TO_COPY:
            created.remove(force=True)
            say(f"the volume {source} holds no cluster (it was lost): nothing to keep a copy of")
            return ""
        raise RestoreFailed(f"the safety copy of {source} failed: {exc}",
                            hint="the database is stopped and unchanged: start it with "
                                 "finaiflow-ops stack up") from None
    return copy


def _recover(stack: Stack, host: ClusterHost, state: Mapping[str, Any], say: Progress) -> str:
    """Start postgres on the restored directory and wait until it is promoted; the time of the last
    transaction the replay applied."""
    host.start()
    try:
        host.wait_healthy(timeout=_RECOVERY_TIMEOUT, progress=say)
        db = Database.of(stack)
        for attempt in polling.attempts(within=_RECOVERY_TIMEOUT, every=0.5):
            if db.psql("SELECT pg_is_in_recovery()", database="postgres")[0][0] == "f":
                break
            if attempt.last:
                raise RestoreFailed("the restored database was still replaying WAL after "
                                    f"{_RECOVERY_TIMEOUT:.0f} s")
    except OpsError as exc:
        logs = host.logs()
        if "recovery ended before configured recovery target was reached" in logs:
            why = "the archive ended before the target time (a missing WAL segment?)"
        else:
            why = exc.message
        host.stop(check=False)
        raise RestoreFailed(f"the restored database did not open: {why}", hint=_resume_hint(state),
                            log_tail=exc.log_tail or logs[-2000:]) from None
    found = _LAST_TX_RE.findall(host.logs())
    return found[-1].strip() if found else ""


def _check(stack: Stack) -> dict[str, int]:
    """Every table can be counted, and the schema is there (one Alembic revision, when it has one)."""
    db = Database.of(stack)
    tables = db.table_counts(error=RestoreFailed)
    if not tables:
        raise RestoreFailed(f"the restored database {db.name} has no tables",
                            hint="restore --to-time a later instant, or a pg_dump backup (restore FILE)")
    if tables.get("public.alembic_version", 1) != 1:
        raise RestoreFailed(f"the restored database has {tables['public.alembic_version']} Alembic revisions")
    return tables


# -- the point-in-time drill ----------------------------------------------------------------------------

HEARTBEAT = "finaiflow_heartbeat"  # in the `postgres` database: a row every health check (3 s)
DRILL_WINDOW = 24 * 3600.0
# A row's `at` is taken a few milliseconds before its commit: rows of the last second before the
# instant may or may not be committed by then, so both sides compare the rows up to a second before.
_HEARTBEAT_SQL = (f"SELECT count(*), coalesce(extract(epoch FROM max(at))::text, '') FROM {HEARTBEAT} "  # noqa: S608
                  "WHERE at <= to_timestamp({t}) - interval '1 second'")


@dataclass(frozen=True)
class PitrDrillResult:
    """A random instant of the last 24 hours restored into a scratch container and compared with the
    heartbeat rows the live database holds for that instant."""

    target: str
    backup: str
    heartbeats: int  # rows up to the instant, equal on both sides
    last_heartbeat: str  # the newest of them
    seconds: float  # restore, replay and comparison


def drill(stack: Stack, at: datetime | None = None, *, progress: Progress | None = None) -> PitrDrillResult:
    """Restore `at` (default: a random instant of the last 24 hours that the archive reaches) into a
    scratch volume and container (the repository mounted read-only, archiving off, no network),
    replay to it and pause there, then compare the heartbeat rows up to that instant with the live
    database's. Everything scratch is removed afterwards."""
    import random

    import docker.errors

    say = or_quiet(progress)
    repo = Repository(stack)
    flushed = _archive_now(repo, say)  # a commit after any instant up to now, archived
    info = repo.info()
    reach = info.reachable()
    if reach is None:
        raise UsageError("the pgBackRest repository holds no physical backup to drill",
                         hint="take one: finaiflow-ops backup physical")
    # Replay to T needs an archived commit after T: before the flush's commit, or (the database
    # not running) a heartbeat period and a margin before the newest archived segment.
    low, high = max(reach[0], time.time() - DRILL_WINDOW), (flushed - 1 if flushed else reach[1] - 10)
    if at is None:
        picked = pick_instant(low, high, info.abandoned, random.random())  # noqa: S311 - a drill's pick
        if picked is None:
            raise RestoreFailed(f"nothing of the last 24 hours can be reached (reachable: {iso(reach[0])} "
                                f"to {iso(reach[1])})",
                                hint="see finaiflow-ops check (archive) and backup archive")
        at = datetime.fromtimestamp(picked, UTC)
    base = _plan(repo, at)
    target = at.timestamp()
    db = Database.of(stack)
    expected = db.psql(_HEARTBEAT_SQL.replace("{t}", f"{target:.6f}"), database="postgres")[0]
    say(f"drilling {iso(target)}: backup {base.label}, {expected[0]} heartbeat rows up to then")
    clock = time.monotonic()
    host = cluster_host.of(stack)  # the engine of the repository volume (a swarm's database node)
    engine, image = host.engine, host.image
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    scratch = f"{stack.name}_pitr_drill_{stamp}"
    env = {"POSTGRES_USER": db.user, "POSTGRES_DB": "postgres", "PGBACKREST_PG1_USER": db.user,
           "PG_ARCHIVE": "off"}
    volumes = {scratch: {"bind": "/var/lib/postgresql/data", "mode": "rw"},
               f"{stack.name}_pg_archive": {"bind": "/var/lib/pgbackrest", "mode": "ro"}}
    labels = {"finaiflow.drill": "pitr", "com.docker.compose.project": stack.name}
    engine.volumes.create(scratch, labels=labels)
    container = None
    try:
        restore = [f"--stanza={STANZA}", f"--set={base.label}", "--type=time", f"--target={_pg_time(at)}",
                   "--target-action=pause", "--archive-mode=off", "restore"]
        try:
            engine.containers.run(image, restore, entrypoint=["pgbackrest"], environment=env, volumes=volumes,
                                  network_mode="none", remove=True, labels=labels)
        except docker.errors.ContainerError as exc:
            said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
            last = (stack.redact(said).strip().splitlines() or ["no error output"])[-1]
            raise RestoreFailed(f"pgbackrest restore into the drill's scratch volume failed (exit "
                                f"{exc.exit_status}): {last}",
                                hint="see finaiflow-ops backup archive (what the repository holds)") from None
        container = engine.containers.run(image, name=scratch, environment=env, volumes=volumes,
                                          network_mode="none", detach=True, labels=labels)
        scratch_db = Database(stack.target, container.id or scratch, db.user, "postgres",
                              f"the drill's scratch container {scratch}", stack.env, docker=host.docker)
        for attempt in polling.attempts(within=_RECOVERY_TIMEOUT, every=0.5):
            container.reload()
            if container.status != "running":
                raise RestoreFailed(f"the drill's scratch postgres stopped: {_tail(container)}")
            try:
                state = scratch_db.psql("SELECT pg_get_wal_replay_pause_state()", database="postgres",
                                        error=RestoreFailed)[0][0]
            except RestoreFailed:
                state = "starting"
            if state == "paused":
                break
            if attempt.last:
                raise RestoreFailed(f"the drill's replay did not reach {iso(target)} within "
                                    f"{_RECOVERY_TIMEOUT:.0f} s")
        found = scratch_db.psql(_HEARTBEAT_SQL.replace("{t}", f"{target:.6f}"), database="postgres",
                                error=RestoreFailed)[0]
    finally:
        if container is not None:
            container.remove(force=True)
        engine.volumes.get(scratch).remove(force=True)
    if found != expected:
        raise RestoreFailed(f"the drill restored {found[0]} heartbeat rows up to {iso(target)} (the newest "
                            f"at {_at(found[1])}); the live database holds {expected[0]} (the newest at "
                            f"{_at(expected[1])})", hint="the archive does not give back what was committed")
    if not int(expected[0]):
        raise RestoreFailed(f"no heartbeat row before {iso(target)}: the comparison proves nothing",
                            hint="the database's health check writes one every 3 s; is it running?")
    return PitrDrillResult(iso(target), base.label, int(expected[0]), _at(expected[1]),
                           time.monotonic() - clock)


def pick_instant(low: float, high: float, abandoned: Sequence[tuple[float, float]],
                 fraction: float) -> float | None:
    """The instant at `fraction` (0 to 1) of the times from `low` to `high` that no restore abandoned
    (None when there are none): uniform over what a point-in-time restore can reach."""
    if high <= low:
        return low if high == low and not any(a < low < b for a, b in abandoned) else None
    spans = [(low, high)]
    for gone_from, gone_to in abandoned:
        spans = [(a, b) for start, end in spans
                 for a, b in ((start, min(end, gone_from)), (max(start, gone_to), end)) if a < b]
    left = fraction * sum(end - start for start, end in spans)
    for start, end in spans:
        if left <= end - start:
            return start + left
        left -= end - start
    return spans[-1][1] if spans else None


def _at(epoch: str) -> str:
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if epoch else "-"


def _tail(container: Any) -> str:
    raw: bytes = container.logs(tail=5)
    lines = [ln for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no log"
