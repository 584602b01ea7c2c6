"""The stack's pgBackRest repository: continuous WAL archive and physical backups.

The postgres image archives every WAL segment with `pgbackrest archive-push` into the repository
on the `pg_archive` volume (mounted at /var/lib/pgbackrest in the postgres container), and closes a
segment at least every `archive_timeout` seconds when anything was written. Its options are the
image's PGBACKREST_* environment variables, so the same pgbackrest runs here through `docker exec`
when the database runs, or in a one-off container of the postgres service when it does not (its
volume lost, or stopped for a restore): `compose run`, or on a swarm a container of the service's
spec on the database node (backup.cluster_host).

What this module adds to pgBackRest: the stanza made by `stack up`, the daily full/differential
choice, the range of times a restore can reach, and a check that the archive has every segment
from a backup's start to its newest one (pgBackRest's `verify` checks the files' checksums).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.errors import ArchiveGap, BackupFailed
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from finaiflow_ops.stack import Stack

__all__ = ["FULL_EVERY_DAYS", "STANZA", "ArchiveGap", "PhysicalBackup", "RepoInfo", "Repository",
           "WalFile", "abandoned_spans", "missing_segments"]

STANZA = "main"
REPOSITORY = "/var/lib/pgbackrest"  # in the postgres container: the pg_archive volume
SERVICE = "postgres"
FULL_EVERY_DAYS = 7  # the daily job takes a full backup when the newest full is this old, else a differential
SEGMENTS_PER_LOG = 0x100  # 16 MB segments: 256 per 4 GB "log" (the middle 8 hex digits of a name)
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}")
_HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
BackupKind = Literal["full", "diff", "incr", "auto"]


@dataclass(frozen=True)
class PhysicalBackup:
    label: str
    type: str  # full, diff, incr
    started: float  # epoch seconds
    stopped: float  # a restore can reach any time after this one
    wal_start: str  # the first WAL segment it needs
    wal_stop: str
    size: int  # bytes in the repository
    lsn_stop: int = 0  # where the backup ends in the WAL (its consistent point)

    @property
    def timeline(self) -> int:
        return int(self.wal_start[:8], 16)


@dataclass(frozen=True)
class WalFile:
    segment: str  # 24 hex digits: timeline, log, segment
    archived: float  # epoch seconds the file was written into the repository
    size: int

    @property
    def position(self) -> int:
        return position(self.segment)


@dataclass(frozen=True)
class RepoInfo:
    backups: tuple[PhysicalBackup, ...]  # oldest first
    wal: tuple[WalFile, ...]  # by name
    status: str  # pgBackRest's stanza status message ("ok")
    # The newest timeline's path (its history file): each timeline on it and the LSN where the path
    # leaves it for the next; empty before a restore branched a timeline (everything is on it).
    path: tuple[tuple[int, int], ...] = ()
    # The times a point-in-time restore went back over: from the instant it restored to, to when its
    # new timeline began. What was committed then is on a timeline the newest one left.
    abandoned: tuple[tuple[float, float], ...] = ()

    def abandoned_around(self, when: float) -> tuple[float, float] | None:
        """The abandoned span `when` falls in, or None."""
        return next(((start, end) for start, end in self.abandoned if start < when < end), None)

    def on_path(self, backup: PhysicalBackup) -> bool:
        """Whether recovery along the newest timeline (what a restore follows) can start from
        `backup`: taken on that path, before the path left the backup's timeline. A backup taken on
        a timeline a later point-in-time restore abandoned cannot (PostgreSQL would not find its
        checkpoint on the newest timeline: "could not locate required checkpoint record")."""
        if not self.path:
            return True
        leaves = dict(self.path)
        return backup.timeline in leaves and backup.lsn_stop <= leaves[backup.timeline]

    @property
    def newest_full(self) -> PhysicalBackup | None:
        fulls = [b for b in self.backups if b.type == "full"]
        return fulls[-1] if fulls else None

    @property
    def newest_archived(self) -> float | None:
        """When the newest WAL segment reached the repository (epoch seconds)."""
        return max((w.archived for w in self.wal), default=None)

    def reachable(self) -> tuple[float, float] | None:
        """The times a point-in-time restore can reach: from the oldest backup's end to the newest
        archived segment (every commit before that segment was closed is in it)."""
        newest = self.newest_archived
        if not self.backups or newest is None:
            return None
        return self.backups[0].stopped, max(newest, self.backups[-1].stopped)

    def base_for(self, when: float | None) -> PhysicalBackup | None:
        """The backup a restore to `when` (None: the end of the archive) starts from: the newest
        one that ended before it."""
        fitting = [b for b in self.backups if (when is None or b.stopped <= when) and self.on_path(b)]
        return fitting[-1] if fitting else None


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN ("16/B374D848") as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low or "0", 16)


def timeline_path(timeline: int, history: str) -> tuple[tuple[int, int], ...]:
    """Timeline `timeline`'s path from its history file ("parent<TAB>switchpoint<TAB>reason" per
    line): each ancestor and the LSN where the path leaves it, then `timeline` itself, never left."""
    path = []
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and "/" in fields[1]:
            path.append((int(fields[0]), parse_lsn(fields[1])))
    return (*path, (timeline, 1 << 64))


_REASON_TIME_RE = re.compile(
    r"^(?:before|after) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(:?\d\d)?$")


def abandoned_spans(timeline: int, history: str,
                    started: dict[int, float]) -> tuple[tuple[float, float], ...]:
    """What the restores on timeline `timeline`'s path went back over: for each line of its history
    file whose reason is a recovery to a time ("before 2026-12-05 02:00:30.5+00"), from that time
    to when the child timeline began (`started`: epoch seconds by timeline, its history file's
    arrival in the archive). A restore to the end of the archive or to a named point abandons no
    time that this can tell."""
    lines = [fields for fields in (ln.split("\t") for ln in history.splitlines())
             if len(fields) >= 3 and fields[0].strip().isdigit()]
    children = [int(fields[0]) for fields in lines[1:]] + [timeline]
    spans = []
    for fields, child in zip(lines, children, strict=True):
        match = _REASON_TIME_RE.match(fields[2].strip())
        if match and child in started:
            clock, hours, minutes = match.group(1), match.group(2), (match.group(3) or "00").lstrip(":")
            at = datetime.fromisoformat(f"{clock}{hours}:{minutes}").timestamp()
            if at < started[child]:
                spans.append((at, started[child]))
    return tuple(spans)


def wal_files(entries: dict[str, dict[str, Any]]) -> list[WalFile]:
    """The WAL segments of a `repo-ls --recurse` listing of the archive, by name."""
    found = []
    for name, entry in entries.items():
        match = _SEGMENT_RE.match(name.rsplit("/", 1)[-1])
        if entry.get("type") == "file" and match:
            found.append(WalFile("".join(match.groups()), float(entry.get("time", 0)),
                                 int(entry.get("size", 0))))
    return sorted(found, key=lambda w: w.segment)


def position(segment: str) -> int:
    """A segment's place in the WAL, whatever its timeline."""
    return int(segment[8:16], 16) * SEGMENTS_PER_LOG + int(segment[16:24], 16)


def missing_segments(wal: Sequence[WalFile], start: str) -> list[str]:
    """The segments (names on `start`'s timeline) missing between `start` and the newest one.

    Every position from the start to the newest archived one must be present on some timeline (a
    restore that branched a new timeline continues the positions of the old one). Not seen here: a
    segment missing on the newest timeline at a position an older timeline also has (the branch
    point of a point-in-time restore); reading timeline history files would tell which one replay
    needs."""
    have = {w.position: w.segment[:8] for w in sorted(wal, key=lambda w: w.segment)}
    if not have:
        return [start]
    first, last = position(start), max(have)

    def timeline(p: int) -> str:  # the missing one is named on the timeline of the next one there
        return next((have[q] for q in range(p + 1, last + 1) if q in have), start[:8])

    return [f"{timeline(p)}{p // SEGMENTS_PER_LOG:08X}{p % SEGMENTS_PER_LOG:08X}"
            for p in range(first, last + 1) if p not in have]


@dataclass(frozen=True)
class Repository:
    """The pgBackRest repository of a stack, through its postgres container (or a one-off one)."""

    stack: Stack

    def database(self) -> Database | None:
        """The running database (on a swarm, its task's container on whichever node), or None."""
        try:
            return Database.of(self.stack)
        except BackupFailed:
            return None

    def run(self, *args: str, check: bool = True, timeout: float = 3600, what: str = "") -> CommandResult:
        """`pgbackrest ARGS` for the stack's stanza, in the running database container, else in a
        one-off container of the postgres service (same volumes, on the engine that holds them);
        with `check`, BackupFailed naming its last error."""
        argv = ["pgbackrest", f"--stanza={STANZA}", *args]
        db = self.database()
        if db is not None:
            try:
                done = subprocess.run(db.argv(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise BackupFailed(f"{what or 'pgbackrest ' + args[-1]} timed out after {timeout:g} s",
                                   service=SERVICE) from None
            result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        else:
            from finaiflow_ops.backup import cluster_host

            host = cluster_host.of(self.stack)
            result = host.run_once("pgbackrest", argv[1:], check=False, timeout=timeout)
        if check and not result.ok:
            raise BackupFailed(f"{what or 'pgbackrest ' + args[-1]} failed (exit {result.exit_status}): "
                               f"{self._last_error(result)}", service=SERVICE,
                               hint="see docs/backups.md (continuous archiving)")
        return result

    def _last_error(self, result: CommandResult) -> str:
        lines = [ln.strip() for ln in self.stack.redact(result.stderr + "\n" + result.stdout).splitlines()
                 if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln] or lines
        return errors[-1] if errors else "no error output"

    # -- the stanza and backups ------------------------------------------------------------------

    def ensure_stanza(self) -> bool:
        """Create the stanza (idempotent): archive-push fails until it exists. False when the image
        has no pgBackRest (POSTGRES_IMAGE=postgres:15): nothing is archived then."""
        result = self.run("stanza-create", timeout=120, check=False)
        if result.exit_status in (126, 127) or "executable file not found" in result.stderr:
            return False
        if not result.ok:
            raise BackupFailed(f"creating the pgBackRest stanza failed (exit {result.exit_status}): "
                               f"{self._last_error(result)}", service=SERVICE,
                               hint="WAL is not archived until it exists; see docs/backups.md")
        return True

    def backup(self, kind: BackupKind = "auto", *, retention_full: int | None = None) -> PhysicalBackup:
        """A physical backup (pgBackRest verifies every file's checksum as it copies), then its
        expire: old backups go with the WAL only they needed, never WAL a kept backup needs."""
        if kind == "auto":
            kind = self.due_kind()
        self.ensure_stanza()
        extra = [f"--repo1-retention-full={retention_full}"] if retention_full else []
        self.run(f"--type={kind}", *extra, "backup", what=f"the {kind} pgBackRest backup")
        info = self.info()
        if not info.backups:
            raise BackupFailed("pgBackRest reported success but lists no backup")
        self._record(info)
        return info.backups[-1]

    def _record(self, info: RepoInfo) -> None:
        """status/backups in the repository, for the ops exporter: the newest full backup's end,
        the newest backup's end, its type and label."""
        newest, full = info.backups[-1], info.newest_full
        line = f"{full.stopped if full else 0:.0f} {newest.stopped:.0f} {newest.type} {newest.label}"
        status = f"{REPOSITORY}/status"
        script = f'umask 022 && mkdir -p {status} && printf "%s\\n" "$1" >{status}/backups.tmp && ' \
                 f'mv -f {status}/backups.tmp {status}/backups'
        db = self.database()
        if db is not None:
            db.run(["sh", "-c", script, "sh", line])

    def due_kind(self) -> Literal["full", "diff"]:
        """full when there is none or the newest is FULL_EVERY_DAYS old, else diff."""
        full = self.info().newest_full
        return "full" if full is None or time.time() - full.stopped >= FULL_EVERY_DAYS * 86400 else "diff"

    # -- what the repository holds -----------------------------------------------------------------

    def info(self) -> RepoInfo:
        out = self.run("--output=json", "info", what="pgbackrest info").stdout
        stanzas: list[dict[str, Any]] = json.loads(out or "[]")
        stanza = next((s for s in stanzas if s.get("name") == STANZA), {})
        backups = tuple(
            PhysicalBackup(b["label"], b["type"], float(b["timestamp"]["start"]),
                           float(b["timestamp"]["stop"]), b["archive"]["start"], b["archive"]["stop"],
                           int(b.get("info", {}).get("repository", {}).get("size", 0)),
                           parse_lsn(b.get("lsn", {}).get("stop", "0/0")))
            for b in stanza.get("backup", []))
        entries = self._archive_listing()
        path, abandoned = self._timelines(entries)
        return RepoInfo(backups, tuple(wal_files(entries)), str(stanza.get("status", {}).get("message", "")),
                        path, abandoned)

    def _archive_listing(self) -> dict[str, dict[str, Any]]:
        listed = self.run("--output=json", "--recurse", "repo-ls", f"archive/{STANZA}",
                          what="listing the WAL archive").stdout
        entries: dict[str, dict[str, Any]] = json.loads(listed or "{}")
        return entries

    def _timelines(self, entries: dict[str, dict[str, Any]]) -> tuple[tuple[tuple[int, int], ...],
                                                                       tuple[tuple[float, float], ...]]:
        """The newest timeline's path and the spans the restores on it abandoned, from its history
        file in the archive (both empty when there is none: one timeline)."""
        histories = {int(name.rsplit("/", 1)[-1][:8], 16): (name, float(entry.get("time", 0)))
                     for name, entry in entries.items()
                     if entry.get("type") == "file" and _HISTORY_RE.match(name.rsplit("/", 1)[-1])}
        if not histories:
            return (), ()
        newest = max(histories)
        name = histories[newest][0]
        text = self.run("repo-get", f"archive/{STANZA}/{name}", what=f"reading {name}").stdout
        started = {timeline: at for timeline, (_name, at) in histories.items()}
        return timeline_path(newest, text), abandoned_spans(newest, text, started)

    def verify(self) -> list[str]:
        """pgBackRest's verify: every archived segment and backup file read and checksummed.
        The problems it names (none when the repository is sound)."""
        result = self.run("--output=text", "--verbose", "verify", check=False)
        text = self.stack.redact(result.stdout + "\n" + result.stderr)
        if result.ok and "status: error" not in text:
            return []
        problems = [" ".join(ln.split()) for ln in text.splitlines()
                    if re.search(r"(invalid|missing|other): [1-9]|ERROR", ln)]
        return problems or [self._last_error(result)]


STUCK_SECONDS = 180.0  # archive_timeout (30 s) and the archiver's retry cycle (60 s), with margin
_ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), archived_count, failed_count,
       coalesce(extract(epoch FROM now() - last_archived_time)::text, ''),
       coalesce(extract(epoch FROM now() - last_failed_time)::text, ''), coalesce(last_failed_wal, ''),
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
       (SELECT coalesce(extract(epoch FROM now() - min(modification)), 0) FROM pg_ls_archive_statusdir()
         WHERE name LIKE '%.ready')
FROM pg_stat_archiver
""".strip()


@dataclass(frozen=True)
class Archiver:
    """PostgreSQL's archiver as the server sees it (pg_stat_archiver and the segments waiting)."""

    mode: str  # archive_mode: on, off
    archived: int
    failed: int
    archived_ago: float | None  # seconds since the last segment was archived
    failed_ago: float | None  # seconds since the last failed attempt
    failed_wal: str
    waiting: int  # segments ready but not archived yet
    oldest_waiting: float  # seconds the oldest of them has waited

    @property
    def stuck(self) -> bool:
        """Segments wait longer than a healthy archiver ever lets them (STUCK_SECONDS)."""
        return self.mode != "off" and self.waiting > 0 and self.oldest_waiting > STUCK_SECONDS

    @property
    def failing(self) -> bool:
        """The last attempt failed (it may still recover on the next retry)."""
        if self.failed_ago is None:
            return False
        return self.archived_ago is None or self.failed_ago < self.archived_ago

    def describe(self) -> str:
        last = ("nothing archived yet" if self.archived_ago is None
                else f"last archived {self.archived_ago:.0f} s ago")
        text = f"{last}, {self.waiting} segment(s) waiting"
        if self.waiting:
            text += f" (the oldest for {self.oldest_waiting:.0f} s)"
        if self.failing:
            text += (f"; the archive command fails (last failure {self.failed_ago:.0f} s ago, "
                     f"{self.failed_wal})")
        return text

    @classmethod
    def of(cls, db: Database) -> Archiver:
        row = db.psql(_ARCHIVER_SQL, database="postgres")[0]

        def seconds(text: str) -> float | None:
            return float(text) if text else None

        return cls(row[0], int(row[1]), int(row[2]), seconds(row[3]), seconds(row[4]), row[5], int(row[6]),
                   float(row[7]))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
