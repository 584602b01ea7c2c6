"""Helpers for the backup and restore integration tests: the CLI, table contents, a load database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from finaiflow_ops.backup.database import Database, quote_ident
from finaiflow_ops.health import probe

LOAD_DB = "ops_backup_load"
LOAD_ROWS = 40_000  # ~40 MB of random text and bytea: a dump takes a few seconds, not minutes


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ}, check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command (progress lines start with the ellipsis)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("…")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def commits_either_side(psql: Callable[[str], list[list[str]]], table: str) -> datetime:
    """A new `table` (id int) with rows 1 and 2 committed a second apart, through `psql` (SQL ->
    rows); the instant halfway between their commits: `restore --to-time` it gives back row 1 only."""
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY)")
    psql(f"INSERT INTO {table} VALUES (1)")  # noqa: S608
    time.sleep(1)
    psql(f"INSERT INTO {table} VALUES (2)")  # noqa: S608
    rows = psql(f"SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM {table} ORDER BY id")  # noqa: S608
    commits = {int(i): float(t) for i, t in rows}
    return datetime.fromtimestamp((commits[1] + commits[2]) / 2, UTC)


def content_hashes(db: Database) -> dict[str, str]:
    """Per table: md5 of all its rows' text forms, sorted (equal hashes = equal contents)."""
    hashes = {}
    for table in db.table_counts():
        schema, _, name = table.partition(".")
        rows = db.psql(f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "  # noqa: S608
                       f"FROM {schema}.{name} t")
        hashes[table] = rows[0][0]
    return hashes


def create_load_database(db: Database) -> Database:
    """A database of random text and bytea (compresses about 2:1, like real data, unlike pgbench's)."""
    db.psql(f"DROP DATABASE IF EXISTS {quote_ident(LOAD_DB)} WITH (FORCE)", database="postgres")
    db.psql(f"CREATE DATABASE {quote_ident(LOAD_DB)}", database="postgres")
    load = db.named(LOAD_DB)
    md5s = "||".join(["md5(random()::text)"] * 8)
    load.psql("CREATE TABLE blobs (id bigint PRIMARY KEY, note text, payload bytea); "
              "CREATE TABLE writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
    load.psql(f"INSERT INTO blobs SELECT g, {md5s}, decode({md5s}, 'hex') "  # noqa: S608
              f"FROM generate_series(1, {LOAD_ROWS}) g")
    return load


def drop_database(db: Database, name: str) -> None:
    db.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)", database="postgres")


@dataclass
class HealthProbe:
    """/health probed in a background thread, bounded in count and time."""

    url: str
    interval: float = 0.1
    limit_seconds: float = 180.0
    results: list[tuple[float, int | None]] = field(default_factory=list)  # (time, status)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < 5000:
            p = probe(self.url, timeout=5)
            self.results.append((time.monotonic(), p.status))
            self._stop.wait(self.interval)

    @property
    def failures(self) -> list[tuple[float, int | None]]:
        return [r for r in self.results if r[1] != 200]


@contextmanager
def probing(url: str) -> Iterator[HealthProbe]:
    hp = HealthProbe(url)
    thread = threading.Thread(target=hp.run, daemon=True)
    thread.start()
    try:
        yield hp
    finally:
        hp._stop.set()
        thread.join(timeout=10)


def kill_half_way(args: list[str], directory: Path) -> list[Path]:
    """Run `finaiflow-ops ARGS` (a backup into `directory`) and SIGKILL it once its temporary file
    holds a megabyte; that file (bounded: 60 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "finaiflow_ops.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in directory.glob(".*.partial") if p.stat().st_size > 1_000_000]
        if partial:
            break
        time.sleep(0.05)
    assert partial and proc.poll() is None, "the backup finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return partial


def backups_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != ".lock")
