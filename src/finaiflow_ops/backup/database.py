"""The PostgreSQL database of a stack, reached inside its container: queries, dumps and restores.

Every client runs inside the database container: pg_dump, pg_restore and psql are the server's
own version, and the container's local socket needs no password (none is ever on a command line).
Commands go through the `docker exec` CLI of the target's engine: it copies between a pipe or a
file and the process in Go, at disk speed, closes stdin cleanly at end of input, and exits with
the status of the process inside, so every stage's exit status is seen. On an ssh target the same
`docker exec` runs on the remote host through ssh (Target.command_argv), its streams carried by the
ssh session: a dump arrives on this machine, a restore is fed from it.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from finaiflow_ops import envfile
from finaiflow_ops.backup.errors import BackupFailed
from finaiflow_ops.backup.manifest import MAGIC_BYTES
from finaiflow_ops.errors import OpsError, UsageError
from finaiflow_ops.process import die_with_parent

if TYPE_CHECKING:
    from finaiflow_ops.backup.encryption import Identity
    from finaiflow_ops.stack import Stack
    from finaiflow_ops.target import Target

__all__ = ["Database", "Pumped", "SnapshotSession", "quote_ident"]

CHUNK = 1 << 20
SERVICE = "postgres"  # the stack's database service
_LOG_TAIL_LINES = 10
E = TypeVar("E", bound=OpsError)
# Row counts of every ordinary table, in one statement. query_to_xml runs each count inside the
# calling transaction, so in a REPEATABLE READ transaction all counts share its snapshot.
COUNT_SQL = """
SELECT format('%I.%I', n.nspname, c.relname),
       (xpath('/row/n/text()', query_to_xml(
           format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
  -- an extension's own tables are not dumped (the extension recreates them)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
""".strip()
# The Alembic revision when the application's schema has one (empty otherwise).
REVISION_SQL = """
SELECT coalesce((SELECT (xpath('/row/v/text()', query_to_xml(
    'SELECT string_agg(version_num, '','') AS v FROM public.alembic_version', false, true, '')))[1]::text
  WHERE to_regclass('public.alembic_version') IS NOT NULL), '')
""".strip()
_MARK = "__finaiflow_ops_done__"


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted (database names come from options and from our own naming)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Pumped:
    """A file fed to a command's stdin: how the command ended, and what was read from the file.

    For an encrypted file, `sha256` and `size` are the stored file's and `plain_*` and `head` those
    of the plaintext the command was fed; `decrypt_problem` says why age stopped, if it did.
    """

    exit_status: int
    stdout: str
    stderr: str
    sha256: str
    size: int
    head: bytes
    plain_sha256: str = ""
    plain_size: int = 0
    decrypt_problem: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.decrypt_problem


@dataclass(frozen=True)
class Database:
    """One database of a PostgreSQL server running in a container on a target."""

    target: Target
    container: str  # container id or name
    user: str
    name: str
    where: str = ""  # how messages name the server ("postgres of finaiflow on local://")
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)  # for redaction
    # The docker CLI that reaches the container's engine, run on the target: ("docker", "-H", URL)
    # or ("docker", "--context", NAME) where the container is on another engine (a swarm node).
    docker: tuple[str, ...] = ("docker",)

    @classmethod
    def of(cls, stack: Stack, name: str | None = None) -> Database:
        """The stack's database (POSTGRES_DB of its .env, or `name`), in its running postgres container."""
        where = f"postgres of {stack.project} on {stack.target}"
        user = stack.env.get("POSTGRES_USER", "postgres")
        database = name or stack.env.get("POSTGRES_DB", user)
        try:  # the running postgres container (on a swarm: its task's, on whichever node runs it)
            located = stack.runtime.locate(SERVICE)
        except UsageError as exc:
            raise BackupFailed(f"the database is not running ({where}): {exc.message}",
                               hint=exc.hint or "start it: finaiflow-ops stack up", service=SERVICE) from None
        return cls(stack.target, located.container_id, user, database, located.where, stack.env,
                   docker=located.docker)

    def named(self, name: str) -> Database:
        """The same server, another database."""
        return replace(self, name=name)

    # -- commands -----------------------------------------------------------------------------------

    def argv(self, command: Sequence[str], *, stdin: bool = False, app: str = "") -> list[str]:
        """The local argv of `docker exec` of `command` (through ssh on an ssh target); `app` names its
        database sessions (application_name)."""
        options = (["-i"] if stdin else []) + (["-e", f"PGAPPNAME={app}"] if app else [])
        return self.target.command_argv([*self.docker, "exec", *options, self.container, *command])

    def redact(self, text: str) -> str:
        return envfile.redact(text, self.env)

    def failure(self, what: str, exit_status: int, stderr: str) -> str:
        """One line saying how a command failed: its exit status and its last stderr line, redacted."""
        lines = [ln.strip() for ln in self.redact(stderr).splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no error output"
        if exit_status in (125, 126, 127) and "container" in detail.lower():
            detail = f"the database container is gone ({detail})"
        return f"{what} failed (exit {exit_status}): {detail}"

    def error(self, kind: type[E], message: str, *, stderr: str = "", hint: str | None = None) -> E:
        """An error of `kind` about this database: its service and container, and the last lines
        of the command's stderr (redacted), as fields."""
        lines = [ln for ln in self.redact(stderr).splitlines() if ln.strip()]
        return kind(message, hint=hint, service=SERVICE, container=self.container,
                    log_tail="\n".join(lines[-_LOG_TAIL_LINES:]))

    def failed(self, kind: type[E], what: str, exit_status: int, stderr: str, *,
               hint: str | None = None) -> E:
        """The error of `kind` for a command that failed: `failure`'s line, with the fields of `error`."""
        return self.error(kind, self.failure(what, exit_status, stderr), stderr=stderr, hint=hint)

    def run(self, command: Sequence[str], *, error: type[OpsError] = BackupFailed,
            timeout: float = 300) -> str:
        """Run a short command in the container; its stdout, or `error` naming the failure."""
        try:
            done = subprocess.run(self.argv(command), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise self.error(error, f"`{shlex.join(command[:2])}` timed out after {timeout:g} s "
                             f"in {self.where}") from None
        if done.returncode != 0:
            raise self.failed(error, f"{command[0]} in {self.where}", done.returncode, done.stderr)
        return done.stdout

    def psql(self, sql: str, *, database: str | None = None,
             error: type[OpsError] = BackupFailed) -> list[list[str]]:
        """Run SQL (one or more statements) in `database` (default: this one); rows as lists of fields."""
        out = self.run(["psql", "-U", self.user, "-d", database or self.name, "-X", "-q", "-A", "-t",
                        "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], error=error)
        return [line.split("\t") for line in out.splitlines() if line]

    def table_counts(self, *, error: type[OpsError] = BackupFailed) -> dict[str, int]:
        return {name: int(n) for name, n in self.psql(COUNT_SQL, error=error)}

    def databases(self, prefix: str) -> list[str]:
        """Databases of this server whose names start with `prefix`, sorted."""
        like = quote_literal(prefix)
        rows = self.psql(f"SELECT datname FROM pg_database WHERE starts_with(datname, {like}) "  # noqa: S608
                         "ORDER BY datname", database="postgres")
        return [r[0] for r in rows]

    def end_sessions(self, app: str) -> int:
        """End the sessions named `app` (a killed run's pg_dump, still dumping into nowhere)."""
        named = quote_literal(app)
        rows = self.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
                         f"WHERE application_name = {named}", database="postgres")
        return int(rows[0][0]) if rows else 0

    def pg_dump_version(self) -> str:
        return self.run(["pg_dump", "--version"]).strip()

    # -- streams --------------------------------------------------------------------------------

    def dump(self, dest: IO[bytes], *, snapshot: str, compress: int, app: str = "", into: str = "",
             timeout: float | None = None) -> None:
        """pg_dump of this database, custom format, on `snapshot`, straight into `dest`.

        `app` names its session, so that one orphaned by a killed run can be found and ended.
        """
        command = ["pg_dump", "-U", self.user, "-d", self.name, "--format=custom", f"--compress={compress}",
                   f"--snapshot={snapshot}"]
        with tempfile.TemporaryFile() as errors:
            try:
                done = subprocess.run(self.argv(command, app=app), stdin=subprocess.DEVNULL, stdout=dest,
                                      stderr=errors, timeout=timeout, check=False, preexec_fn=die_with_parent)
            except subprocess.TimeoutExpired:
                raise self.error(BackupFailed,
                                 f"pg_dump timed out after {timeout:g} s in {self.where}") from None
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
        if done.returncode != 0:
            if "no space left" in stderr.lower():
                raise self.error(BackupFailed, f"no space left on the file system of {into or 'the backup'} "
                                 "while writing the dump", stderr=stderr,
                                 hint="free space, or choose a larger file system with --dir")
            raise self.failed(BackupFailed, f"pg_dump in {self.where}", done.returncode, stderr)

    def pump(self, command: Sequence[str], source: Path, *, identity: Identity | None = None) -> Pumped:
        """Feed the file `source` to `command`'s stdin in the container, and hash the file meanwhile.

        The `docker exec` client reads the file itself (no copy through Python); a thread hashes
        the same file at the same time, from the page cache. The whole file is hashed even when
        the command stops reading early (a corrupt archive), so the checksum can still be compared.
        With `identity`, age decrypts the file on this machine and the plaintext goes through a pipe
        (never a file), hashed on its way to the command.
        """
        if identity is not None:
            return self._pump_decrypted(command, source, identity)
        digest = _Digest()
        hasher = threading.Thread(target=digest.read, args=(source,), daemon=True)
        with source.open("rb") as f:
            proc = subprocess.Popen(self.argv(command, stdin=True), stdin=f, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, preexec_fn=die_with_parent)
            hasher.start()
            try:
                out, err = proc.communicate()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        hasher.join()
        if digest.error:
            raise digest.error
        return Pumped(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                      digest.sha256, digest.size, digest.head, digest.sha256, digest.size)

    def _pump_decrypted(self, command: Sequence[str], source: Path, identity: Identity) -> Pumped:
        from finaiflow_ops.backup.encryption import age_failure

        digest = _Digest()  # of the stored (encrypted) file
        hasher = threading.Thread(target=digest.read, args=(source,), daemon=True)
        plain = _Digest()
        with tempfile.TemporaryFile() as age_err, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            age = identity.decrypt(source, stdout=subprocess.PIPE, stderr=age_err)
            proc = subprocess.Popen(self.argv(command, stdin=True), stdin=subprocess.PIPE, stdout=out,
                                    stderr=err, preexec_fn=die_with_parent)
            hasher.start()
            try:
                assert age.stdout and proc.stdin
                plain.relay(age.stdout, proc.stdin)
                age_status, status = age.wait(), proc.wait()
            except BaseException:
                for p in (age, proc):
                    p.kill()
                    p.wait()
                raise
            finally:
                assert age.stdout
                age.stdout.close()
            hasher.join()
            texts = []
            for f in (out, err, age_err):
                f.seek(0)
                texts.append(f.read().decode(errors="replace"))
        if digest.error:
            raise digest.error
        problem = f"decrypting it with age failed: {age_failure(texts[2])}" if age_status else ""
        return Pumped(status, texts[0], texts[1], digest.sha256, digest.size, plain.head, plain.sha256,
                      plain.size, problem)

    def snapshot(self) -> SnapshotSession:
        return SnapshotSession(self)


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class _Digest:
    """sha256, size and first bytes of a stream: a file read in a thread (hashlib releases the GIL),
    or a pipe relayed to another."""

    sha256: str = ""
    size: int = 0
    head: bytes = b""
    error: OSError | None = None
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)

    def read(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    self._add(chunk)
        except OSError as exc:
            self.error = exc
        self.sha256 = self._hash.hexdigest()

    def relay(self, source: IO[bytes], sink: IO[bytes]) -> None:
        """Copy `source` to `sink` to its end, hashing it; a sink that stops reading (a command that
        failed) does not stop the hashing: the whole stream is read and its checksum compared."""
        writing = True
        while chunk := source.read(CHUNK):
            self._add(chunk)
            if writing:
                try:
                    sink.write(chunk)
                except BrokenPipeError:
                    writing = False
        with suppress(BrokenPipeError):
            sink.close()
        self.sha256 = self._hash.hexdigest()

    def _add(self, chunk: bytes) -> None:
        if len(self.head) < MAGIC_BYTES:
            self.head += chunk[:MAGIC_BYTES - len(self.head)]
        self._hash.update(chunk)
        self.size += len(chunk)


class SnapshotSession:
    """A psql session holding a REPEATABLE READ transaction whose snapshot is exported.

    pg_dump --snapshot dumps exactly what this transaction sees, and the row counts asked here see
    the same: the manifest's counts describe the dump, even while the application writes.
    The snapshot stays valid only while this session is open: close it after pg_dump ends.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._proc = subprocess.Popen(
            db.argv(["psql", "-U", db.user, "-d", db.name, "-X", "-q", "-A", "-t", "-F", "\t",
                     "-v", "ON_ERROR_STOP=1"], stdin=True),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True, bufsize=1,
            preexec_fn=die_with_parent)
        try:
            rows = self.ask("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
                            "SELECT pg_export_snapshot(), current_setting('server_version')")
        except BaseException:
            self.__exit__()
            raise
        self.id, self.server_version = rows[0]

    def __enter__(self) -> SnapshotSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._errors.close()

    def send(self, sql: str) -> None:
        """Send SQL; its rows are read later with `answer` (psql works while the caller does)."""
        assert self._proc.stdin
        try:
            # psql runs a statement when it sees its ";", then the \echo marks the end of its rows.
            self._proc.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {_MARK}\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._fail()

    def answer(self) -> list[list[str]]:
        assert self._proc.stdout
        rows: list[list[str]] = []
        while True:
            line = self._proc.stdout.readline()
            if not line:
                self._fail()
            line = line.rstrip("\n")
            if line == _MARK:
                return rows
            if line:
                rows.append(line.split("\t"))

    def ask(self, sql: str) -> list[list[str]]:
        self.send(sql)
        return self.answer()

    def close(self) -> None:
        """End the transaction; the session must exit cleanly (its exit status is checked too)."""
        self.send("COMMIT;")
        self.answer()
        assert self._proc.stdin
        self._proc.stdin.close()
        status = self._proc.wait(timeout=60)
        if status != 0:
            self._fail()

    def _fail(self) -> None:
        status = self._proc.wait(timeout=60)
        self._errors.seek(0)
        stderr = self._errors.read().decode(errors="replace")
        raise self.db.failed(BackupFailed, f"psql (snapshot session) in {self.db.where}", status, stderr)
