"""Restoring a backup without betting the live database on it; undo; the restore drill.

restore FILE:
  1. cheap checks of the file (manifest valid, names the file, same size, pg_dump archive);
  2. pg_restore into a NEW database while the application keeps serving from the live one; the
     file is hashed while pg_restore reads it, so this complete read also verifies the checksum;
  3. the checksum must match the manifest and every table's row count the manifest's counts;
  4. a safety backup of the live database (itself a verified backup);
  5. the swap, in a short window: the live database stops accepting connections, its sessions are
     ended, and both renames happen in one transaction (the live one is kept as NAME_prev_STAMP);
  6. the application's Redis cache is emptied (it still holds rows of the replaced database) and
     the api must be healthy again.
Any failure before step 5 drops the new database and leaves the live one untouched.

An encrypted backup needs its `identity` (an age private key file): it is proven to decrypt the
file before anything is created, and the plaintext only ever flows through pipes into pg_restore.
The safety backup of step 4 is encrypted to the same recipients as the backup being restored.

restore undo puts the newest NAME_prev_* database back the same way (the one it replaces is
kept as NAME_undone_STAMP). The drill runs steps 1 to 3 into a scratch database, then drops it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from finaiflow_ops.backup.archive import (
    archive_format,
    checked_manifest,
    checksum_problems,
    compare_counts,
    create_locked,
    directory_lock,
    fail,
    file_sha256,
    stack_release,
)
from finaiflow_ops.backup.database import Database, quote_ident, quote_literal
from finaiflow_ops.backup.encryption import Identity, short
from finaiflow_ops.backup.errors import RestoreFailed
from finaiflow_ops.backup.inventory import list_backups
from finaiflow_ops.backup.manifest import Manifest
from finaiflow_ops.errors import CheckFailed, UsageError
from finaiflow_ops.progress import Progress, or_quiet

if TYPE_CHECKING:
    from finaiflow_ops.stack import Stack

__all__ = ["DrillResult", "RestoreResult", "UndoResult", "check_restorable", "drill", "restore",
           "restore_into", "serve_again", "undo"]

_MAX_NAME = 63  # PostgreSQL truncates longer identifiers
# Deletes the application's cached rows; KEYS is fine for a cache of this size, and atomic.
_FLUSH_LUA = ("local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
              "redis.call('DEL', k) n = n + 1 end return n")
_FLUSH = 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli --no-auth-warning EVAL "$1" 0 "$2"'


@dataclass(frozen=True)
class RestoredCopy:
    """A backup restored into a database of its own and checked against its manifest."""

    file: str
    database: str
    manifest: Manifest
    tables: Mapping[str, int]
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    """The live database replaced by a backup; the replaced one kept for undo."""

    file: str
    database: str
    previous: str  # where the replaced database is kept: `restore undo` puts it back
    safety_backup: str
    tables: Mapping[str, int]
    restore_seconds: float
    safety_seconds: float
    swap_seconds: float  # how long the database refused connections
    cache_keys_flushed: int

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


@dataclass(frozen=True)
class UndoResult:
    database: str
    restored_from: str  # the NAME_prev_* database that is live again
    set_aside: str  # the database it replaced, kept as NAME_undone_*
    swap_seconds: float
    cache_keys_flushed: int


@dataclass(frozen=True)
class DrillResult:
    """A backup restored into a scratch database, compared with its manifest, then dropped."""

    file: str
    scratch_database: str
    tables: Mapping[str, int]
    seconds: float
    size: int

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds else 0.0


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S")


CopyKind = Literal["drill", "restore", "prev", "undone"]  # what a copy beside the database is for


def _name(db: Database, kind: CopyKind) -> str:
    name = f"{db.name}_{kind}_{_stamp()}"
    if len(name.encode()) > _MAX_NAME:
        raise UsageError(f"database name {db.name!r} is too long to keep a copy beside it ({name!r})")
    return name


# -- into a new database --------------------------------------------------------------------------

def check_restorable(path: Path, identity: Identity | None = None) -> Manifest:
    """The cheap checks of a backup before anything is changed: its manifest (exists, names the file,
    states its size), its format, and for an encrypted one that `identity` decrypts it."""
    manifest = checked_manifest(path)
    sealed = manifest.encryption
    recipients = sealed.recipients if sealed else ()
    if sealed and identity is None:
        raise UsageError(f"{path.name} is encrypted (age, to {', '.join(short(r) for r in recipients)})",
                         hint="pass --identity FILE, the age identity (private key) of one of its "
                              "recipients; nothing was changed")
    _, unreadable = archive_format(path, identity if sealed else None, recipients=recipients)
    if unreadable:  # a checksum mismatch names the cause best
        fail(path, [*checksum_problems(manifest, file_sha256(path)), unreadable])
    return manifest


def restore_into(db: Database, path: Path, new_name: str, *, identity: Identity | None = None,
                 progress: Progress | None = None) -> RestoredCopy:
    """Restore the backup at `path` into the new database `new_name` of db's server and check it.

    The checksum is computed on the bytes pg_restore reads (and, for an encrypted file, on the
    plaintext it is fed), and must match the manifest, as must every table's row count. On any
    failure the new database is dropped.
    """
    say = or_quiet(progress)
    manifest = check_restorable(path, identity)
    if not manifest.encryption:
        identity = None
    target = db.named(new_name)
    clock = time.monotonic()
    db.psql(f"CREATE DATABASE {quote_ident(new_name)} TEMPLATE template0 OWNER {quote_ident(db.user)}",
            database="postgres", error=RestoreFailed)
    try:
        say(f"restoring {path.name} ({manifest.size / 1e6:.1f} MB) into the new database {new_name}")
        fed = db.pump(["pg_restore", "-U", db.user, "-d", new_name, "--exit-on-error",
                       "--single-transaction"], path, identity=identity)
        problems = checksum_problems(manifest, fed.sha256, fed.plain_sha256)
        if problems or fed.decrypt_problem:
            fail(path, problems or [fed.decrypt_problem])
        if not fed.ok:
            raise db.failed(RestoreFailed, f"pg_restore into {new_name}", fed.exit_status, fed.stderr,
                            hint="the live database was not touched")
        tables = target.table_counts(error=RestoreFailed)
        problems = compare_counts(manifest.tables, tables, where=new_name, source="the manifest")
        if problems:
            raise RestoreFailed(f"restored rows differ from the manifest: {problems[0]}",
                                hint="the live database was not touched")
    except BaseException:
        drop_database(db, new_name)
        raise
    return RestoredCopy(str(path), new_name, manifest, tables, time.monotonic() - clock)


def drop_database(db: Database, name: str) -> None:
    db.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)", database="postgres",
            error=RestoreFailed)


# -- drill ------------------------------------------------------------------------------------------

def drill(db: Database, path: Path | None = None, *, directory: Path, identity: Identity | None = None,
          progress: Progress | None = None) -> DrillResult:
    """Restore `path` (default: the newest verified backup of db in `directory`) into a scratch
    database, compare it with its manifest, time it, drop it. An encrypted backup needs `identity`."""
    if path is None:
        newest = list_backups(directory, database=db.name).newest_verified
        if newest is None:
            raise CheckFailed(f"no verified backup of {db.name} in {directory} to drill",
                              hint="take one: finaiflow-ops backup create")
        path = Path(newest.path)
    scratch = _name(db, "drill")
    copy = restore_into(db, path, scratch, identity=identity, progress=progress)
    drop_database(db, scratch)
    return DrillResult(str(path), scratch, copy.tables, copy.seconds, copy.manifest.size)


# -- restore and undo ----------------------------------------------------------------------------------

def restore(stack: Stack, path: Path, *, directory: Path, identity: Identity | None = None,
            progress: Progress | None = None) -> RestoreResult:
    """Replace the stack's live database with the backup at `path` (see the module docstring)."""
    say = or_quiet(progress)
    db = Database.of(stack)
    incoming = _name(db, "restore")
    with directory_lock(directory):
        copy = restore_into(db, path, incoming, identity=identity, progress=say)
        sealed = copy.manifest.encryption
        try:
            say("taking a safety backup of the live database")
            clock = time.monotonic()
            safety = create_locked(db, directory, release=stack_release(stack), project=stack.project,
                                   reason="pre-restore", recipients=sealed.recipients if sealed else (),
                                   progress=say)
            safety_seconds = time.monotonic() - clock
            previous = _name(db, "prev")
            say(f"swapping: {db.name} becomes {previous}, {incoming} becomes {db.name}")
            swap_seconds = _swap(db, incoming=incoming, outgoing=previous)
        except BaseException:
            drop_database(db, incoming)
            raise
    flushed = serve_again(stack, say)
    return RestoreResult(str(path), db.name, previous, safety.path, copy.tables, copy.seconds,
                         safety_seconds, swap_seconds, flushed)


def undo(stack: Stack, *, progress: Progress | None = None) -> UndoResult:
    """Put back the database the newest restore replaced."""
    say = or_quiet(progress)
    db = Database.of(stack)
    kept = db.databases(f"{db.name}_prev_")
    if not kept:
        raise UsageError(f"no previous database of {db.name} to put back ({db.where})",
                         hint="restore undo follows a restore; see the databases with \\l in psql")
    previous = kept[-1]  # names end in a sortable UTC stamp
    set_aside = _name(db, "undone")
    say(f"swapping: {db.name} becomes {set_aside}, {previous} becomes {db.name}")
    swap_seconds = _swap(db, incoming=previous, outgoing=set_aside)
    flushed = serve_again(stack, say)
    return UndoResult(db.name, previous, set_aside, swap_seconds, flushed)


def _swap(db: Database, *, incoming: str, outgoing: str) -> float:
    """Make `incoming` the live database and keep the live one as `outgoing`; seconds of refusal.

    New connections are refused first, then the live database's sessions are ended, then both
    renames happen in one transaction (a rename waits up to 5 s for ended sessions to exit).
    The kept database keeps refusing connections, so nothing writes to it by mistake.
    """
    live = quote_ident(db.name)
    clock = time.monotonic()
    db.psql(f"ALTER DATABASE {live} ALLOW_CONNECTIONS false", database="postgres", error=RestoreFailed)
    try:
        db.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
                f"WHERE datname = {quote_literal(db.name)} AND pid <> pg_backend_pid()",
                database="postgres", error=RestoreFailed)
        db.psql(f"BEGIN; ALTER DATABASE {live} RENAME TO {quote_ident(outgoing)}; "
                f"ALTER DATABASE {quote_ident(incoming)} RENAME TO {live}; "
                f"ALTER DATABASE {live} ALLOW_CONNECTIONS true; COMMIT;",
                database="postgres", error=RestoreFailed)
    except BaseException:
        db.psql(f"ALTER DATABASE {live} ALLOW_CONNECTIONS true", database="postgres", error=RestoreFailed)
        raise
    return time.monotonic() - clock


def serve_again(stack: Stack, say: Progress) -> int:
    """After the database was replaced (a swap, or a point-in-time restore): empty the api's Redis
    cache (rows of the replaced database) and wait for a healthy api."""
    flushed = 0
    if "redis" in stack.services():
        prefix = stack.env.get("REDIS_CACHE_PREFIX", "finaiflow:cache:")
        out = stack.exec("redis", ["sh", "-c", _FLUSH, "flush", _FLUSH_LUA, f"{prefix}*"]).stdout.strip()
        flushed = int(out) if out.isdigit() else 0
        say(f"emptied the api cache ({flushed} keys)")
    if "api" in stack.services():
        stack.runtime.wait_healthy(["api"], timeout=120)
    return flushed
