"""Backup and restore against the runbook's plain commands, on about 1 GB of generated data.

The database runs in a throwaway container of the stack's own PostgreSQL image (same memory limit
and shared memory as the stack), holding two tables of random hex text and bytea: that compresses
about 2:1 like real data (pgbench's tables compress 50:1 and would measure nothing). The container
and every file are removed at the end.

Measured in the same run, interleaved (baseline, ours, ours, baseline, ...) so that a neighbour's
load on the machine hits both sides alike; ratios compare the best round of each side (other load
only ever adds time), and every round is in the report:
  backup   the runbook: `pg_dump -Fc` (zlib level 6, the default) through `docker exec` into a file
           ours: `backup create` = snapshot + pg_dump -Z1 into a file + a full read-back through
           pg_restore counting every table's rows + sha256 + manifest
  restore  the runbook: `createdb NEWDB`, `pg_restore -d NEWDB` of its own dump, through `docker exec`
           ours: restore into a new database with the file's checksum computed meanwhile,
           then every table's row count compared with the manifest (restore_into, as the drill)
  physical (pgBackRest, the repository inside the container, as the stack's image configures it:
           zstd level 1, two processes)
           backup: `pgbackrest --type=full backup` (checksums every page and file as it copies), then
           `pgbackrest verify` (reads the whole repository back against its checksums); against the
           same plain `pg_dump -Fc` (target: at most 0.5x)
           restore: `pgbackrest restore` into an empty directory, a second postgres started on it
           (recovery to consistency, promoted), every table counted; against the plain pg_restore
Informational: `pg_dump -Fd -j2 -Z1` to a directory inside the container (parallel, not streamable).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finaiflow_ops.backup import archive
from finaiflow_ops.backup.database import Database
from finaiflow_ops.restore import drop_database, restore_into
from finaiflow_ops.target import Target

IMAGE = "finaiflow/postgres:15"
USER = "finaiflow_user"
DB = "bench"
BACKUP_TARGET = 1.0  # our verified backup no slower than the plain dump
RESTORE_TARGET = 1.2  # our checked restore within 1.2x of the plain pg_restore
PHYSICAL_TARGET = 0.5  # the verified pgBackRest full backup at most half the plain dump
RESTORED = "/var/lib/postgresql/restored"  # the physical restore's directory, in the container
SOCKETS = "/var/run/postgresql/restored"  # its server's socket directory, in the container
Say = Callable[[str], None]


@dataclass
class Side:
    """One side of a comparison: what it does, and its timings."""

    what: str
    seconds: list[float] = field(default_factory=list)
    output_mb: float = 0.0
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def best(self) -> float:
        """The fastest round: neighbours' load only ever adds time, so the minimum compares best."""
        return min(self.seconds)

    def report(self, data_mb: float) -> dict[str, Any]:
        return {"what": self.what, "seconds": [round(s, 2) for s in self.seconds],
                "best_seconds": round(self.best, 2),
                "median_seconds": round(statistics.median(self.seconds), 2),
                "mb_per_s": round(data_mb / self.best, 1),
                **({"output_mb": round(self.output_mb, 1)} if self.output_mb else {}),
                **{k: [round(v, 2) for v in vs] for k, vs in self.extra.items()}}


def _docker(*args: str, stdin: Path | None = None, stdout: Path | None = None) -> None:
    with (stdin or Path(os.devnull)).open("rb") as src, (stdout or Path(os.devnull)).open("wb") as dst:
        done = subprocess.run(["docker", *args], stdin=src, stdout=dst, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:4])} failed: {done.stderr.decode()[-500:]}")


def _timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def start_database(name: str, say: Say) -> Database:
    say(f"starting {name} from {IMAGE}")
    _docker("run", "-d", "--name", name, "--memory", "1g", "--shm-size", "256m",
            "-e", f"POSTGRES_USER={USER}", "-e", f"POSTGRES_DB={DB}",
            "-e", f"POSTGRES_PASSWORD={secrets.token_urlsafe(24)}", IMAGE)
    db = Database(Target.parse("local://"), name, USER, DB, f"bench container {name}")
    deadline = time.monotonic() + 90
    # Over TCP: the entrypoint's first-start server listens on the socket only, then stops.
    ready = ["docker", "exec", name, "pg_isready", "-q", "-h", "127.0.0.1", "-U", USER, "-d", DB]
    while subprocess.run(ready, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not accept connections within 90 s")
        time.sleep(0.5)
    _docker("exec", "-e", f"PGBACKREST_PG1_USER={USER}", name, "pgbackrest", "--stanza=main", "stanza-create")
    return db


def _pgbackrest(name: str, *args: str) -> None:
    _docker("exec", "-e", f"PGBACKREST_PG1_USER={USER}", name, "pgbackrest", "--stanza=main", *args)


def physical_backup(name: str) -> tuple[float, float]:
    """A full pgBackRest backup, then verify: (backup seconds, verify seconds)."""
    backup_seconds = _timed(lambda: _pgbackrest(name, "--type=full", "--repo1-retention-full=1", "backup"))
    return backup_seconds, _timed(lambda: _pgbackrest(name, "verify"))


def physical_restore(name: str, tables: dict[str, int]) -> None:
    """The newest backup restored into an empty directory, a postgres started on it, tables counted."""
    _docker("exec", name, "rm", "-rf", RESTORED)
    _pgbackrest(name, f"--pg1-path={RESTORED}", "--type=immediate", "--target-action=promote",
                "--archive-mode=off", "restore")
    _docker("exec", name, "mkdir", "-p", SOCKETS)
    _docker("exec", name, "pg_ctl", "-D", RESTORED, "-w", "-t", "600", "-o",
            f"-p 5433 -c listen_addresses= -c unix_socket_directories={SOCKETS} -c archive_mode=off", "start")
    try:
        for table, rows in tables.items():
            count = f"SELECT count(*) FROM {table}"  # noqa: S608
            out = subprocess.run(["docker", "exec", name, "psql", "-h", SOCKETS, "-p", "5433", "-U", USER,
                                  "-d", DB, "-Atc", count], capture_output=True, text=True, check=False)
            if out.returncode != 0 or int(out.stdout.strip() or -1) != rows:
                raise RuntimeError(f"the physical restore holds {out.stdout.strip()} rows in {table}, "
                                   f"not {rows}")
    finally:
        _docker("exec", name, "pg_ctl", "-D", RESTORED, "-m", "fast", "-w", "stop")
        _docker("exec", name, "rm", "-rf", RESTORED)


def generate(db: Database, rows: int, say: Say) -> float:
    """Two tables of random hex text and bytea, filled in parallel (one session per core); MB of data."""
    md5s = "||".join(["md5(random()::text)"] * 8)
    say(f"generating {rows} rows of random text and bytea in two tables")
    procs = []
    for table, lo, hi in (("bench_a", 1, rows // 2), ("bench_b", rows // 2 + 1, rows)):
        sql = (f"CREATE TABLE {table} (id bigint PRIMARY KEY, note text, payload bytea); "  # noqa: S608
               f"INSERT INTO {table} SELECT g, {md5s}, decode({md5s}, 'hex') "
               f"FROM generate_series({lo}, {hi}) g")
        psql = ["psql", "-U", USER, "-d", DB, "-v", "ON_ERROR_STOP=1", "-qc", sql]
        procs.append(subprocess.Popen(db.argv(psql), stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"generating data failed: {err.decode()[-300:]}")
    db.psql("VACUUM ANALYZE")
    return int(db.psql("SELECT pg_database_size(current_database())")[0][0]) / 1e6


def run(*, rows: int, rounds: int, say: Say) -> dict[str, Any]:
    name = f"finaiflow-bench-pg-{secrets.token_hex(4)}"
    work = Path(tempfile.mkdtemp(prefix="finaiflow-bench-"))
    try:
        db = start_database(name, say)
        data_mb = generate(db, rows, say)
        say(f"database: {data_mb:.0f} MB on disk")
        backup_base = Side("pg_dump -Fc (zlib 6, the default) via docker exec > file")
        backup_ours = Side("backup create: snapshot, pg_dump -Z1 > file, full read-back with row counts, "
                           "sha256, manifest")
        restore_base = Side("createdb NEWDB && pg_restore -d NEWDB < the runbook's dump, via docker exec")
        restore_ours = Side("restore into a new database: sha256 of the file restored, "
                            "row counts vs manifest")
        physical_backup_side = Side("pgbackrest full backup (zstd 1, 2 processes) + pgbackrest verify")
        physical_restore_side = Side("pgbackrest restore into an empty directory, postgres started on it, "
                                     "every table counted")
        tables = db.table_counts()
        base_file, ours_file = work / "baseline.dump", Path()
        for i in range(rounds):
            say(f"round {i + 1}: pgBackRest full backup and verify")
            took, verified = physical_backup(name)
            physical_backup_side.seconds.append(took + verified)
            physical_backup_side.extra.setdefault("backup_seconds", []).append(took)
            physical_backup_side.extra.setdefault("verify_seconds", []).append(verified)
            say(f"round {i + 1}: pgBackRest restore")
            physical_restore_side.seconds.append(_timed(lambda: physical_restore(name, tables)))
            order = ("base", "ours") if i % 2 == 0 else ("ours", "base")
            for side in order:
                if side == "base":
                    say(f"round {i + 1}: baseline pg_dump")
                    backup_base.seconds.append(_timed(lambda: _docker(
                        "exec", name, "pg_dump", "-U", USER, "-Fc", DB, stdout=base_file)))
                    backup_base.output_mb = base_file.stat().st_size / 1e6
                else:
                    say(f"round {i + 1}: backup create")
                    for old in (work / "ours").glob("*"):
                        old.unlink()
                    made = archive.create(db, work / "ours")
                    backup_ours.seconds.append(made.seconds)
                    backup_ours.extra.setdefault("dump_seconds", []).append(made.dump_seconds)
                    backup_ours.extra.setdefault("read_back_seconds", []).append(made.verify_seconds)
                    backup_ours.output_mb = made.size / 1e6
                    ours_file = Path(made.path)
            for side in order:
                target = f"restored_{side}_{i}"
                if side == "base":
                    say(f"round {i + 1}: baseline createdb and pg_restore")

                    def plain_restore(t: str = target) -> None:
                        _docker("exec", name, "createdb", "-U", USER, t)
                        _docker("exec", "-i", name, "pg_restore", "-U", USER, "-d", t, stdin=base_file)

                    restore_base.seconds.append(_timed(plain_restore))
                else:
                    say(f"round {i + 1}: restore into a new database")
                    restore_ours.seconds.append(restore_into(db, ours_file, target).seconds)
                drop_database(db, target)
        say("informational: pg_dump -Fd -j2 -Z1 inside the container")
        parallel = Side("pg_dump -Fd -j2 -Z1 to a directory inside the container (not streamable)")
        inside = "/var/lib/postgresql/bench-parallel"  # in the container's own file system
        parallel.seconds.append(_timed(lambda: _docker(
            "exec", name, "pg_dump", "-U", USER, "-Fd", "-j2", "-Z1", "-f", inside, DB)))
        _docker("exec", name, "rm", "-rf", inside)
        backup_ratio = backup_ours.best / backup_base.best
        restore_ratio = restore_ours.best / restore_base.best
        physical_ratio = physical_backup_side.best / backup_base.best
        physical_restore_ratio = physical_restore_side.best / restore_base.best
        return {
            "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
            "database": {"rows": rows, "size_mb": round(data_mb, 1), "tables": 2, "rounds": rounds},
            "backup": {"baseline": backup_base.report(data_mb), "ours": backup_ours.report(data_mb),
                       "ratio": round(backup_ratio, 3), "target": f"<= {BACKUP_TARGET}",
                       "passed": backup_ratio <= BACKUP_TARGET},
            "restore": {"baseline": restore_base.report(data_mb), "ours": restore_ours.report(data_mb),
                        "ratio": round(restore_ratio, 3), "target": f"<= {RESTORE_TARGET}",
                        "passed": restore_ratio <= RESTORE_TARGET},
            "physical_backup": {"baseline": backup_base.report(data_mb),
                                "ours": physical_backup_side.report(data_mb),
                                "ratio": round(physical_ratio, 3), "target": f"<= {PHYSICAL_TARGET}",
                                "passed": physical_ratio <= PHYSICAL_TARGET},
            "physical_restore": {"baseline": restore_base.report(data_mb),
                                 "ours": physical_restore_side.report(data_mb),
                                 "ratio": round(physical_restore_ratio, 3), "target": "(information)",
                                 "passed": True},
            "informational": {"parallel_directory_dump": parallel.report(data_mb)},
        }
    finally:
        say(f"removing {name} and {work}")
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        for path in sorted(work.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        work.rmdir()
