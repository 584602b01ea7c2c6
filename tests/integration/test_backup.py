"""backup create / verify / list / prune against the reference stack's real PostgreSQL.

Every negative case must end the same way: one clear error line, exit status 1, and no file that
list, verify or prune counts as a verified backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finaiflow_ops import envfile
from finaiflow_ops import restore as restoring
from finaiflow_ops.backup import Policy, StaleBackups, VerifyFailed, archive, list_backups, prune
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.manifest import backup_name, manifest_path, read_manifest
from finaiflow_ops.health import wait_healthy
from finaiflow_ops.stack import Stack
from tests.integration.backups_support import (
    backups_in,
    cli,
    create_load_database,
    drop_database,
    error_line,
    kill_half_way,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(stack: Stack) -> Database:
    return Database.of(stack)


@pytest.fixture(scope="module")
def load_db(db: Database) -> Iterator[Database]:
    load = create_load_database(db)
    yield load
    drop_database(db, load.name)


@pytest.fixture(scope="module")
def good(db: Database, tmp_path_factory: pytest.TempPathFactory) -> archive.Backup:
    """One real, verified backup of the stack's database (the originals the negative tests copy)."""
    return archive.create(db, tmp_path_factory.mktemp("originals"))


def copy_backup(made: archive.Backup, directory: Path) -> Path:
    src = Path(made.path)
    shutil.copy2(src, directory / src.name)
    shutil.copy2(manifest_path(src), manifest_path(directory / src.name))
    return directory / src.name


def assert_nothing_verified(directory: Path) -> None:
    listing = list_backups(directory)
    assert listing.newest_verified is None, [(b.name, b.state) for b in listing.backups]
    for database in {b.database for b in listing.backups} or {"finaiflow_db"}:
        with pytest.raises(StaleBackups, match="there is no verified backup"):
            prune(directory, Policy(), database=database)


# -- create, list, verify --------------------------------------------------------------------------------

def test_create_writes_a_backup_read_back_in_full_with_its_manifest(stack: Stack, db: Database,
                                                                    tmp_path: Path) -> None:
    result = cli("--project-dir", stack.project_dir, "--json", "backup", "create", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    path = Path(made["path"])
    m = read_manifest(path)
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == made["manifest"]["sha256"]
    assert m.size == path.stat().st_size and m.format == "custom" and m.compression == "gzip level 1"
    assert m.tables == db.table_counts() and "public.tenants" in m.tables
    assert m.server_version.startswith("15.") and m.pg_dump_version.startswith("pg_dump (PostgreSQL) 15.")
    assert m.schema_revision == db.psql("SELECT version_num FROM alembic_version")[0][0]
    assert m.release == archive.stack_release(stack) != ""
    assert m.started_at <= m.finished_at <= m.verified_at and m.snapshot
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert backups_in(tmp_path) == [path.name, path.name + ".json"]  # no temp file left

    listed = cli("--project-dir", stack.project_dir, "--json", "backup", "list", "--dir", str(tmp_path))
    listing = json.loads(listed.stdout)
    assert listing["newest_verified"]["name"] == path.name and listing["newest_verified_age_seconds"] < 120
    verified = cli("--project-dir", stack.project_dir, "--json", "backup", "verify", str(path))
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["tables"] == m.tables


def test_row_counts_come_from_the_dump_snapshot_while_the_app_writes(load_db: Database,
                                                                     tmp_path: Path) -> None:
    before = load_db.table_counts()["public.writes"]
    stop = threading.Event()

    def write() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            load_db.psql("INSERT INTO writes DEFAULT VALUES")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        time.sleep(0.5)
        made = archive.create(load_db, tmp_path)  # its read-back compares the archive with the counts
    finally:
        stop.set()
        writer.join(timeout=10)
    after = load_db.table_counts()["public.writes"]
    counted = made.manifest.tables["public.writes"]
    assert before < counted < after, (before, counted, after)
    assert archive.verify(load_db, Path(made.path)).tables == made.manifest.tables


# -- damaged files ------------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size * 6 // 10)


def _truncate_and_fix_the_size(path: Path) -> None:
    _truncate(path)
    data = json.loads(manifest_path(path).read_text())
    data["size"] = path.stat().st_size
    manifest_path(path).write_text(json.dumps(data))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _wrong_checksum(path: Path) -> None:
    data = json.loads(manifest_path(path).read_text())
    data["sha256"] = hashlib.sha256(b"something else").hexdigest()
    manifest_path(path).write_text(json.dumps(data))


def _manifest_of_another_file(path: Path) -> None:
    data = json.loads(manifest_path(path).read_text())
    data["file"] = backup_name("finaiflow_db", datetime(2020, 1, 1, tzinfo=UTC))
    manifest_path(path).write_text(json.dumps(data))


def _no_manifest(path: Path) -> None:
    manifest_path(path).unlink()


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, "(truncated or altered)"),
    (_truncate_and_fix_the_size, "checksum mismatch"),
    (_flip_a_byte, "checksum mismatch"),
    (_wrong_checksum, "checksum mismatch"),
    (_manifest_of_another_file, "its manifest describes another file (finaiflow_db-20200101T000000Z.dump)"),
    (_no_manifest, "it has no manifest"),
])
def test_a_damaged_backup_fails_verification_and_stops_counting(
        stack: Stack, good: archive.Backup, tmp_path: Path, damage: object, message: str) -> None:
    path = copy_backup(good, tmp_path)
    assert list_backups(tmp_path).newest_verified is not None
    damage(path)  # type: ignore[operator]
    result = cli("--project-dir", stack.project_dir, "backup", "verify", str(path))
    assert result.returncode == 1
    line = error_line(result)
    assert f"{path} failed verification: " in line and message in line, line
    assert_nothing_verified(tmp_path)
    with pytest.raises(VerifyFailed, match=re.escape(message)):
        restoring.drill(Database.of(stack), path, directory=tmp_path)


def test_pg_restore_list_accepts_a_truncated_archive_that_verify_rejects(load_db: Database,
                                                                        tmp_path: Path) -> None:
    # Why the read-back reads every block: the runbook-style check passes on a file cut at 60 %.
    path = Path(archive.create(load_db, tmp_path).path)
    _truncate_and_fix_the_size(path)
    listed = load_db.pump(["pg_restore", "--list"], path)
    assert listed.ok and "TABLE DATA public blobs" in listed.stdout, listed.stderr
    back = archive.read_back(load_db, path)
    assert "reading it back with pg_restore failed" in back.problem, back.problem


# -- failures while creating ------------------------------------------------------------------------------

def test_a_database_role_that_does_not_exist_fails_cleanly(stack: Stack, tmp_path: Path) -> None:
    # A .env out of step with the database (regenerated, or copied from another host).
    values = dict(stack.env)
    values["POSTGRES_USER"] = "nobody_ops"
    env_file = tmp_path / "other.env"
    envfile.write(env_file, values)
    backups = tmp_path / "backups"
    result = cli("--project-dir", stack.project_dir, "--env-file", str(env_file), "backup", "create",
                 "--dir", str(backups))
    assert result.returncode == 1
    line = error_line(result)
    assert 'role "nobody_ops" does not exist' in line, line
    for secret in (v for k, v in stack.env.items() if "PASSWORD" in k or "SECRET" in k):
        assert secret not in result.stdout + result.stderr
    assert backups_in(backups) == []


def test_a_database_that_does_not_exist_fails_cleanly(stack: Stack, tmp_path: Path) -> None:
    result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path),
                 "--database", "no_such_db")
    assert result.returncode == 1
    assert 'database "no_such_db" does not exist' in error_line(result)
    assert backups_in(tmp_path) == []


def test_a_stopped_database_fails_cleanly(stack: Stack, tmp_path: Path) -> None:
    stack.compose("stop", "postgres")
    try:
        result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path))
    finally:
        stack.compose("start", "postgres")
        wait_healthy(stack, services=["postgres", "api"], timeout=120)
    assert result.returncode == 1
    assert "the database is not running" in error_line(result)
    assert_nothing_verified(tmp_path)


def test_a_full_file_system_fails_cleanly_and_leaves_nothing(stack: Stack, load_db: Database,
                                                             tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "filler").write_bytes(os.urandom(900_000))
        result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(mount),
                     "--database", load_db.name)
        assert result.returncode == 1
        assert "no space left" in error_line(result)
        assert backups_in(mount) == ["filler"]
        assert_nothing_verified(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_backup_killed_half_way_never_counts_and_the_next_run_cleans_up(
        stack: Stack, db: Database, load_db: Database, tmp_path: Path) -> None:
    args = ["--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path), "--database",
            load_db.name]
    kill_half_way(args, tmp_path)

    listing = list_backups(tmp_path)
    assert [b.state for b in listing.backups] == ["incomplete"]
    assert_nothing_verified(tmp_path)
    app = archive.session_name(tmp_path)
    orphans = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"  # noqa: S608

    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert "left by a backup that did not finish" in result.stderr
    assert [b.state for b in list_backups(tmp_path).backups] == ["verified"]
    assert not list(tmp_path.glob(".*.partial"))
    assert db.psql(orphans, database="postgres") == [["0"]]


def test_a_second_backup_into_the_same_directory_is_refused_while_one_runs(stack: Stack,
                                                                           tmp_path: Path) -> None:
    with archive.directory_lock(tmp_path):
        result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert f"another backup, prune or restore is running in {tmp_path}" in error_line(result)


# -- prune ----------------------------------------------------------------------------------------------

def _aged_copy(made: archive.Backup, directory: Path, days: int) -> Path:
    """A copy of a real backup that claims to have been taken `days` ago (name and manifest)."""
    when = made.manifest.started_at - timedelta(days=days)
    path = directory / backup_name(made.manifest.database, when)
    shutil.copy2(made.path, path)
    data = json.loads(made.manifest.to_json())
    data["file"] = path.name
    manifest_path(path).write_text(json.dumps(data))
    return path


def test_prune_deletes_old_backups_but_refuses_when_only_stale_ones_exist(
        stack: Stack, good: archive.Backup, tmp_path: Path) -> None:
    fresh = copy_backup(good, tmp_path)
    old = [_aged_copy(good, tmp_path, days) for days in (3, 20, 31, 45)]
    ops = ("--project-dir", stack.project_dir)
    preview = cli(*ops, "--json", "backup", "prune", "--dir", str(tmp_path), "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["deleted"] == [old[2].name, old[3].name]
    assert len(backups_in(tmp_path)) == 10  # nothing deleted by a dry run

    needs_yes = cli(*ops, "backup", "prune", "--dir", str(tmp_path))
    assert needs_yes.returncode == 2 and "needs confirmation" in error_line(needs_yes)
    done = cli(*ops, "--yes", "backup", "prune", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    kept = (fresh, old[0], old[1])
    assert backups_in(tmp_path) == sorted(n for p in kept for n in (p.name, p.name + ".json"))

    fresh.unlink()
    manifest_path(fresh).unlink()
    stale = cli(*ops, "--yes", "backup", "prune", "--dir", str(tmp_path))
    assert stale.returncode == 1
    assert "refusing to prune: the newest verified backup is 3.0 days old" in error_line(stale)
    assert len(backups_in(tmp_path)) == 4


# -- copies and the failure hook -------------------------------------------------------------------------

def test_copy_to_leaves_a_verified_copy_in_a_second_directory(stack: Stack, db: Database,
                                                              tmp_path: Path) -> None:
    main, second = tmp_path / "main", tmp_path / "second"
    result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(main),
                 "--copy-to", str(second))
    assert result.returncode == 0, result.stderr
    assert f"copied to {second}" in result.stdout
    assert backups_in(second) == backups_in(main)
    copy = list_backups(second).newest_verified
    assert copy is not None and copy.name == backups_in(main)[0]
    assert archive.verify(db, Path(copy.path)).sha256 == read_manifest(main / copy.name).sha256


def test_notify_runs_when_a_backup_fails_with_the_error_line(stack: Stack, tmp_path: Path) -> None:
    said = tmp_path / "notified.txt"
    hook = f'printf "%s|%s" "$FINAIFLOW_BACKUP_COMMAND" "$FINAIFLOW_BACKUP_ERROR" >{said}'
    result = cli("--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path / "b"),
                 "--database", "no_such_db", "--notify", hook)
    assert result.returncode == 1
    assert said.read_text() == "create|" + error_line(result).removeprefix("error: ")
