"""Making a backup and proving it: create (dump, read back in full, checksum, manifest) and verify.

create, in order, each stage's exit status checked:
  1. a psql session opens a REPEATABLE READ transaction and exports its snapshot;
  2. pg_dump --snapshot (custom format, zlib level 1) streams into a hidden `.partial` file, fsynced,
     while the session counts every table's rows on that same snapshot;
  3. the file is read back in full: pg_restore decodes every block and the rows of each table are
     counted as they go by (a truncated or corrupt archive fails here; `pg_restore --list` would
     not), while the file is hashed (sha256);
  4. the counts read back must equal the snapshot's; then the file is renamed into place and its
     manifest written last, atomically. Any failure removes what this run wrote.

Encrypted backups (`recipients`): pg_dump's output goes through `age -e` straight into the
`.partial` file, and stage 3 reads back that very file, decrypted with a one-time key that is one
of its recipients (encryption.py says why); plaintext never touches a disk.

Why level 1: on a 2-core machine zlib level 6 (pg_dump's default, the runbook's) takes about 2.5x
the time of level 1 for 2 % smaller files (docs/backups.md has the measurements).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from finaiflow_ops.backup import encryption
from finaiflow_ops.backup.database import CHUNK, COUNT_SQL, REVISION_SQL, Database
from finaiflow_ops.backup.encryption import Identity
from finaiflow_ops.backup.errors import BackupFailed, VerifyFailed
from finaiflow_ops.backup.manifest import (
    MAGIC_BYTES,
    PARTIAL_SUFFIX,
    Encryption,
    Format,
    Manifest,
    atomic_write,
    backup_name,
    detect_format,
    failed_marker,
    fsync_dir,
    manifest_path,
    read_manifest,
)
from finaiflow_ops.errors import UsageError
from finaiflow_ops.progress import Progress, or_quiet

if TYPE_CHECKING:
    from finaiflow_ops.stack import Stack

__all__ = [
    "DEFAULT_COMPRESS",
    "Backup",
    "ReadBack",
    "Verification",
    "archive_format",
    "backups_of",
    "checked_manifest",
    "checksum_problems",
    "compare_counts",
    "copy",
    "create",
    "default_directory",
    "directory_lock",
    "fail",
    "file_sha256",
    "read_back",
    "record_failure",
    "stack_release",
    "verify",
]

DEFAULT_COMPRESS = 1
# Counts the rows of each table as pg_restore writes the archive back out as SQL: one COPY block
# per table, one line per row (COPY's text format escapes newlines), ended by a line "\.".
_COUNT_ROWS_AWK = r"""
!inside && /^COPY / { name = substr($0, 6); sub(/ \(.*\) FROM stdin;$/, "", name);
                      sub(/ FROM stdin;$/, "", name); n = 0; inside = 1; next }
inside && $0 == "\\." { print name "\t" n; inside = 0; next }
inside { n++ }
"""
# pipefail: pg_restore's exit status counts, not only awk's (the pipe runs inside the container).
READ_BACK = ("bash", "-c", 'set -o pipefail; pg_restore --file=- | awk "$1"', "read-back", _COUNT_ROWS_AWK)


@dataclass(frozen=True)
class ReadBack:
    """An archive read back in full: its bytes' checksum, its format, the rows of each table."""

    sha256: str
    size: int
    format: Format
    tables: Mapping[str, int]
    problem: str  # why it could not be read in full; empty when it could
    seconds: float
    plain_sha256: str = ""  # of the archive inside an encrypted file (the same as sha256 otherwise)
    plain_size: int = 0


@dataclass(frozen=True)
class Backup:
    """A backup that was written, read back in full and described by its manifest."""

    path: str
    manifest: Manifest
    dump_seconds: float
    verify_seconds: float

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def seconds(self) -> float:
        return self.dump_seconds + self.verify_seconds


@dataclass(frozen=True)
class Verification:
    """A backup file that passed every check; an encrypted one verified without its identity passed
    the checksum and manifest checks only (`read_in_full` is false)."""

    path: str
    sha256: str
    size: int
    format: str
    tables: Mapping[str, int]
    seconds: float
    encrypted: bool = False
    read_in_full: bool = True

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def backups_of(project_dir: str) -> str:
    """Where a stack's backups are kept on its target, PROJECT_DIR/backups: the runbook's place,
    where `backup create` writes by default and the daily job runs."""
    return posixpath.join(project_dir, "backups")


def default_directory(stack: Stack) -> Path:
    """PROJECT_DIR/backups (`backups_of`): where backups go unless --dir says otherwise.

    Only for a local target: a remote one keeps its backups on the host, where its own finaiflow-ops
    takes them (`take`); streamed to this machine, they go to a directory that must be named.
    """
    if not stack.target.is_local:
        raise UsageError(f"backups of {stack.target} streamed to this machine are kept in a directory that "
                         "must be named (PROJECT_DIR/backups is on the target: `take` backs up there)")
    return Path(backups_of(stack.project_dir))


def take(stack: Stack, *, reason: str, progress: Progress | None = None) -> str:
    """A verified backup of the stack's database where the target keeps them (PROJECT_DIR/backups);
    its path there. On an ssh target the host's finaiflow-ops takes it (finaiflow_ops.relay): the
    dump never leaves the host."""
    say = or_quiet(progress)
    if stack.target.kind == "ssh":
        from finaiflow_ops import relay

        say(f"taking a backup on {stack.target} (its finaiflow-ops, into {backups_of(stack.project_dir)})")
        done = relay.run(stack, "--json", "backup", "create", "--reason", reason, timeout=3600)
        return str(json.loads(done.stdout)["path"])
    made = create(Database.of(stack), default_directory(stack), release=stack_release(stack),
                  project=stack.project, reason=reason, progress=say)
    return made.path


def stack_release(stack: Stack) -> str:
    """The release of the running api (its image's version label), or "" when unknown."""
    import docker.errors

    for c in stack.containers("api", all=False):
        try:
            labels = stack.target.docker().images.get(c.image_id).labels or {}
        except docker.errors.DockerException:
            continue
        if labels.get("org.opencontainers.image.version"):
            return str(labels["org.opencontainers.image.version"])
    return ""


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """One backup, prune or restore at a time per directory (cron and a person may overlap).

    The kernel releases the lock when its holder dies, even by SIGKILL.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupFailed(f"another backup, prune or restore is running in {directory}",
                               hint="wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def session_name(directory: Path) -> str:
    """The application_name of our pg_dump sessions for `directory`."""
    return f"finaiflow-ops backup {hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]}"


def remove_leftovers(db: Database, directory: Path) -> list[str]:
    """What killed runs left: `.partial` files, and their pg_dump sessions, which outlive the
    `docker exec` client and would hold their snapshot and table locks until they finish.
    Only safe while holding the directory lock (no run of ours is alive then)."""
    removed = [f"{n} pg_dump session(s)" for n in [db.end_sessions(session_name(directory))] if n]
    for path in directory.glob(f".*{PARTIAL_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


# -- create ----------------------------------------------------------------------------------------

def create(db: Database, directory: Path, *, compress: int = DEFAULT_COMPRESS, release: str = "",
           project: str = "", reason: str = "manual", recipients: Sequence[str] = (),
           progress: Progress | None = None) -> Backup:
    """Back up `db` into `directory`: dump, read back in full, then rename and write the manifest.

    With `recipients` (age public keys) the file is encrypted to them (see the module docstring).
    """
    if not 0 <= compress <= 9:
        raise UsageError(f"compression level {compress} is not between 0 and 9")
    with directory_lock(directory):
        return create_locked(db, directory, compress=compress, release=release, project=project,
                             reason=reason, recipients=recipients, progress=progress)


def create_locked(db: Database, directory: Path, *, compress: int = DEFAULT_COMPRESS, release: str = "",
                  project: str = "", reason: str = "manual", recipients: Sequence[str] = (),
                  progress: Progress | None = None) -> Backup:
    """`create`, for a caller that already holds the directory lock (a restore's safety backup)."""
    say = or_quiet(progress)
    key = encryption.OneTimeKey.generate() if recipients else None
    age_version = encryption.age_version() if recipients else ""
    for name in remove_leftovers(db, directory):
        say(f"ended {name}, left by a backup that did not finish")
    started = datetime.now(UTC)
    staged = _Staged(_free_name(directory, db.name, started, encrypted=key is not None))
    tmp, final = staged.tmp, staged.final
    with staged.failing(f"writing the backup to {directory} failed",
                        hint="free space or fix permissions, or choose another --dir"):
        to = f", encrypted to {len(recipients)} recipient(s)" if key else ""
        say(f"dumping {db.name} ({db.where}) on one snapshot{to}")
        dumped = _dump_on_snapshot(db, tmp, compress=compress, app=session_name(directory),
                                   encrypt_to=(*recipients, key.recipient) if key else ())
        how = " (decrypted with a one-time key)" if key else ""
        say(f"reading {tmp.stat().st_size / 1e6:.1f} MB back in full{how}")
        back = read_back(db, tmp, identity=key.identity if key else None)
        problems = ([back.problem] if back.problem else []) or compare_counts(dumped.counts, back.tables)
        if problems:
            raise BackupFailed(f"the dump of {db.name} failed its read-back: {problems[0]}",
                               hint="nothing was kept; check the database logs, then retry")
        encrypted = Encryption(encryption.TOOL, age_version, tuple(recipients), key.recipient,
                               back.plain_sha256, back.plain_size) if key else None
        manifest = Manifest(
            file=final.name, sha256=back.sha256, size=back.size, format=back.format.kind,
            database=db.name, server_version=dumped.server_version, pg_dump_version=db.pg_dump_version(),
            compression=f"gzip level {compress}" if compress else "none", started_at=started,
            finished_at=dumped.finished_at, verified_at=datetime.now(UTC), snapshot=dumped.snapshot,
            tables=dumped.counts, release=release, schema_revision=dumped.revision, project=project,
            reason=reason, encryption=encrypted,
        )
        staged.publish(manifest.to_json().encode())
    say(f"{final.name}: {manifest.size / 1e6:.1f} MB, {manifest.rows} rows in {len(manifest.tables)} tables, "
        "verified")
    return Backup(str(final), manifest, dumped.seconds, back.seconds)


@dataclass(frozen=True)
class _Dumped:
    """What the snapshot session saw while pg_dump wrote the same snapshot into the file."""

    counts: dict[str, int]
    revision: str
    server_version: str
    snapshot: str
    finished_at: datetime
    seconds: float


def _dump_on_snapshot(db: Database, tmp: Path, *, compress: int, app: str,
                      encrypt_to: Sequence[str] = ()) -> _Dumped:
    """pg_dump into `tmp` (through `age -e` to `encrypt_to` when given) while the session counts rows."""
    clock = time.monotonic()
    with db.snapshot() as session:
        # Asked now, answered after the dump: psql counts while pg_dump writes.
        session.send(COUNT_SQL)
        session.send(REVISION_SQL)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            if encrypt_to:
                with encryption.encrypting(encrypt_to, f, into=str(tmp.parent)) as sink:
                    db.dump(sink, snapshot=session.id, compress=compress, app=app, into=str(tmp.parent))
            else:
                db.dump(f, snapshot=session.id, compress=compress, app=app, into=str(tmp.parent))
            os.fsync(f.fileno())
        counts = {table: int(n) for table, n in session.answer()}
        revision = next(iter(session.answer()), [""])[0]
        session.close()
    return _Dumped(counts, revision, session.server_version, session.id, datetime.now(UTC),
                   time.monotonic() - clock)


def _free_name(directory: Path, database: str, started: datetime, *, encrypted: bool) -> Path:
    seq = 0
    while (directory / backup_name(database, started, seq, encrypted=encrypted)).exists():
        seq += 1
    return directory / backup_name(database, started, seq, encrypted=encrypted)


class _Staged:
    """An archive written under a hidden temporary name, renamed into place once proven, its
    manifest written last; on any failure, whatever this run wrote is removed."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
        self._renamed = False

    def publish(self, manifest: bytes) -> None:
        self.tmp.replace(self.final)
        self._renamed = True
        fsync_dir(self.final.parent)
        atomic_write(manifest_path(self.final), manifest)

    @contextmanager
    def failing(self, what: str, *, hint: str) -> Iterator[None]:
        """Clean up on failure; an OSError (disk full, permissions) becomes BackupFailed naming `what`."""
        try:
            yield
        except BaseException as exc:
            for path in (self.tmp, self.final if self._renamed else None):
                if path is not None:
                    with suppress(OSError):
                        path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise BackupFailed(f"{what}: {exc.strerror or exc}", hint=hint) from None
            raise


# -- copies ---------------------------------------------------------------------------------------------

def copy(archive: Path, destination: Path, *, progress: Progress | None = None) -> Path:
    """Copy a verified backup and its manifest into `destination` (another disk, a mounted share).

    The copy is written under a temporary name, fsynced, dropped from the page cache and read back
    from there: its sha256 must equal the manifest's before it is renamed into place.
    """
    say = or_quiet(progress)
    manifest = read_manifest(archive)
    with directory_lock(destination):
        staged = _Staged(destination / archive.name)
        tmp = staged.tmp
        with staged.failing(f"copying {archive.name} to {destination} failed",
                            hint="the backup itself is fine; fix the copy destination"):
            say(f"copying {archive.name} to {destination}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with archive.open("rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
                os.posix_fadvise(dst.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read back from storage
            digest = hashlib.sha256()
            with tmp.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != manifest.sha256:
                raise BackupFailed(f"the copy of {archive.name} in {destination} reads back differently "
                                   "(sha256 mismatch)", hint="check that file system; the backup is fine")
            staged.publish(manifest_path(archive).read_bytes())
    return staged.final


# -- read back and verify -------------------------------------------------------------------------------

def archive_format(path: Path, identity: Identity | None = None, *,
                   recipients: Sequence[str] = ()) -> tuple[Format, str]:
    """The format of the archive at `path` (of its plaintext, decrypted with `identity`: a wrong one
    is a UsageError before anything else happens), and why pg_restore cannot read it, if so."""
    with path.open("rb") as f:
        fmt = detect_format(f.read(MAGIC_BYTES))
    if identity is not None:
        if fmt.kind != "age":
            return fmt, f"format {fmt}, not an age-encrypted file as its manifest says"
        try:
            fmt = detect_format(encryption.first_bytes(identity, path, MAGIC_BYTES, recipients=recipients))
        except encryption.Undecryptable as exc:
            return fmt, str(exc)
    return fmt, "" if fmt.restorable else f"format {fmt}, not a pg_dump custom archive"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_back(db: Database, path: Path, *, identity: Identity | None = None,
              recipients: Sequence[str] = ()) -> ReadBack:
    """Read the archive at `path` in full through pg_restore in the database container (decrypting
    it with `identity` on the way, when given; `recipients` are named if it cannot)."""
    clock = time.monotonic()
    fmt, unreadable = archive_format(path, identity, recipients=recipients)
    if unreadable:  # hashed all the same: a checksum mismatch names the cause best
        return ReadBack(file_sha256(path), path.stat().st_size, fmt, {}, unreadable, time.monotonic() - clock)
    fed = db.pump(READ_BACK, path, identity=identity)
    problem = fed.decrypt_problem or (
        "" if fed.ok else db.failure("reading it back with pg_restore", fed.exit_status, fed.stderr))
    tables = {}
    for line in fed.stdout.splitlines():
        table, _, n = line.rpartition("\t")
        if table and n.isdigit():
            tables[table] = int(n)
    return ReadBack(fed.sha256, fed.size, fmt, tables, problem, time.monotonic() - clock, fed.plain_sha256,
                    fed.plain_size)


def compare_counts(expected: Mapping[str, int], seen: Mapping[str, int], *, where: str = "the archive",
                   source: str = "the snapshot") -> list[str]:
    """Every table whose row count in `seen` differs from `expected`, one line each."""
    problems = []
    for table in sorted(set(expected) | set(seen)):
        if table not in seen:
            problems.append(f"table {table} is missing from {where}")
        elif table not in expected:
            problems.append(f"table {table} is in {where} but not in {source}")
        elif seen[table] != expected[table]:
            problems.append(f"table {table} has {seen[table]} rows in {where}, "
                            f"{source} had {expected[table]}")
    return problems


def verify(db: Database, path: Path, *, identity: Identity | None = None,
           progress: Progress | None = None) -> Verification:
    """Check a backup in full: manifest, size, format, checksum, a complete read, row counts.

    An encrypted backup is read in full only with its `identity`; without it, the checks that need
    no key are made (manifest, size, age format, checksum) and the result says it was not read.
    A failure leaves a `.failed` marker, so that list and prune stop counting the file as a backup.
    """
    say = or_quiet(progress)
    manifest = checked_manifest(path)
    sealed = manifest.encryption
    if sealed and identity is None:
        return _verify_sealed(path, manifest, say)
    how = ", decrypting it" if sealed else ""
    say(f"reading {path.name} back in full ({manifest.size / 1e6:.1f} MB{how})")
    back = read_back(db, path, identity=identity if sealed else None,
                     recipients=sealed.recipients if sealed else ())
    problems = checksum_problems(manifest, back.sha256, back.plain_sha256)
    if back.problem:
        problems.append(back.problem)
    else:
        problems += compare_counts(manifest.tables, back.tables, source="the manifest")
    if problems:
        fail(path, problems)
    failed_marker(path).unlink(missing_ok=True)
    return Verification(str(path), back.sha256, back.size, str(back.format), back.tables, back.seconds,
                        encrypted=sealed is not None)


def checksum_problems(manifest: Manifest, sha256: str, plain_sha256: str = "") -> list[str]:
    """The stored file's checksum, and an encrypted file's plaintext checksum, against the manifest."""
    problems = []
    if sha256 and sha256 != manifest.sha256:
        problems.append(f"checksum mismatch: the file's sha256 is {sha256[:16]}…, "
                        f"the manifest says {manifest.sha256[:16]}…")
    expected = manifest.encryption.plaintext_sha256 if manifest.encryption else ""
    if expected and plain_sha256 and plain_sha256 != expected and not problems:
        problems.append(f"checksum mismatch: the decrypted archive's sha256 is {plain_sha256[:16]}…, "
                        f"the manifest says {expected[:16]}…")
    return problems


def _verify_sealed(path: Path, manifest: Manifest, say: Progress) -> Verification:
    """The checks of an encrypted file that need no private key: age format, checksum, manifest."""
    clock = time.monotonic()
    say(f"{path.name} is encrypted: checking its checksum (reading it in full needs --identity FILE)")
    with path.open("rb") as f:
        fmt = detect_format(f.read(MAGIC_BYTES))
    sha256 = file_sha256(path)
    problems = checksum_problems(manifest, sha256)
    if fmt.kind != "age":
        problems.append(f"format {fmt}, not an age-encrypted file as its manifest says")
    if problems:
        fail(path, problems)
    # A `.failed` marker stays: only a full read clears it.
    return Verification(str(path), sha256, manifest.size, str(fmt), manifest.tables,
                        time.monotonic() - clock, encrypted=True, read_in_full=False)


def checked_manifest(path: Path) -> Manifest:
    """The manifest of `path` after the cheap checks (it exists, is valid, names this file, states
    its size); VerifyFailed otherwise. The archive itself is not read."""
    if not path.is_file():
        raise UsageError(f"no backup file at {path}", hint="see finaiflow-ops backup list")
    try:
        manifest = read_manifest(path)
    except FileNotFoundError:
        fail(path, ["it has no manifest (it was never verified, or its backup did not finish)"])
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        fail(path, [f"its manifest is unreadable: {exc}"])
    if manifest.file != path.name:
        fail(path, [f"its manifest describes another file ({manifest.file})"])
    size = path.stat().st_size
    if size != manifest.size:
        fail(path, [f"it has {size} bytes, its manifest says {manifest.size} (truncated or altered)"])
    return manifest


def fail(path: Path, problems: list[str]) -> NoReturn:
    """Record that `path` failed verification, and raise VerifyFailed."""
    record_failure(path, problems)
    raise VerifyFailed(str(path), problems)


def record_failure(path: Path, problems: list[str]) -> None:
    """Leave a `.failed` marker beside `path`: list and prune stop counting it as a backup."""
    marker = {"problem": problems[0], "problems": problems, "at": datetime.now(UTC).isoformat()}
    with suppress(OSError):  # a read-only directory: the caller's error still says it all
        atomic_write(failed_marker(path), (json.dumps(marker, indent=2) + "\n").encode())
