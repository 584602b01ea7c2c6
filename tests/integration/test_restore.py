"""restore, restore undo and restore drill against the reference stack's real PostgreSQL.

The module seeds the live database through the api and directly (several tables, NULLs, unicode,
control characters, every byte value in bytea, large rows), and removes all of it at the end; the
restore test puts the original database back with undo, so the stack is left as it was found.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from finaiflow_ops import envfile
from finaiflow_ops import restore as restoring
from finaiflow_ops.backup import VerifyFailed, archive
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.manifest import manifest_path
from finaiflow_ops.stack import Stack
from tests.integration.backups_support import (
    backups_in,
    cli,
    content_hashes,
    drop_database,
    error_line,
    probing,
)

pytestmark = [pytest.mark.integration, pytest.mark.destructive]
PROBE_TABLE = "ops_backup_probe"
BULK_ROWS = 20_000  # ~20 MB of random text: restoring takes seconds, long enough to probe the api


@dataclass
class Seed:
    tenant_ids: list[int] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    kept_databases: list[str] = field(default_factory=list)  # NAME_prev_* / NAME_undone_* made here


def api(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{base_url}/api/v1", verify=False, timeout=10)


@pytest.fixture(scope="module")
def db(stack: Stack) -> Database:
    return Database.of(stack)


@pytest.fixture(scope="module")
def seed(stack: Stack, base_url: str, db: Database) -> Iterator[Seed]:
    seed = Seed()
    try:
        with api(base_url) as client:
            for name in ("Zürich ☕ 東京", "O'Brien & Söhne", "plain"):
                r = client.post("/tenants", json={"name": name, "domain": f"t-{uuid.uuid4().hex[:10]}.test"})
                assert r.status_code == 201, r.text
                seed.tenant_ids.append(r.json()["id"])
        tag = uuid.uuid4().hex[:8]
        rows = db.psql(
            "INSERT INTO users (tenant_id, email, password_hash) VALUES "  # noqa: S608
            f"(NULL, 'ünï-{tag}@exämple.org', 'x'), ({seed.tenant_ids[0]}, 'ops-{tag}@example.org', 'y') "
            "RETURNING id")
        seed.user_ids = [int(r[0]) for r in rows]
        db.psql(f"INSERT INTO sessions (user_id, token_hash, expires_at) VALUES ({seed.user_ids[0]}, "  # noqa: S608
                f"md5('{tag}'), now() + interval '1 day')")
        db.psql(f"CREATE TABLE {PROBE_TABLE} "
                "(id int PRIMARY KEY, label text, note text, payload bytea, big text)")
        all_bytes = ("(SELECT string_agg(decode(lpad(to_hex(g), 2, '0'), 'hex'), ''::bytea ORDER BY g) "
                     "FROM generate_series(0, 255) g)")
        md5s = "||".join(["md5(random()::text)"] * 30)
        db.psql(
            f"INSERT INTO {PROBE_TABLE} VALUES "  # noqa: S608
            f"(1, E'Zürich ☕ 東京 \\t tab \\n newline \\\\ backslash \\\\. dot', NULL, {all_bytes}, NULL), "
            "(2, '', 'a NULL payload', NULL, (SELECT string_agg(md5(g::text), '') "
            "                                  FROM generate_series(1, 40000) g)), "
            "(3, NULL, NULL, decode(repeat('00ff', 500000), 'hex'), NULL); "
            f"INSERT INTO {PROBE_TABLE} (id, label) "
            f"SELECT g, {md5s} FROM generate_series(10, {BULK_ROWS + 9}) g")
        yield seed
    finally:
        _clean_up(stack, db, seed)


def _clean_up(stack: Stack, db: Database, seed: Seed) -> None:
    """Put the original database back if a test left a restored one live; remove all seeded data."""
    prefix = f"{db.name}_prev_"
    if any(name.startswith(prefix) and name in db.databases(prefix) for name in seed.kept_databases):
        seed.kept_databases.append(restoring.undo(stack).set_aside)
    for name in seed.kept_databases:
        drop_database(db, name)
    db.psql(f"DROP TABLE IF EXISTS {PROBE_TABLE}")
    if seed.user_ids:
        db.psql(f"DELETE FROM users WHERE id IN ({', '.join(map(str, seed.user_ids))})")  # noqa: S608
    if seed.tenant_ids:
        db.psql(f"DELETE FROM tenants WHERE id IN ({', '.join(map(str, seed.tenant_ids))})")  # noqa: S608


@pytest.fixture(scope="module")
def seeded_backup(seed: Seed, db: Database, tmp_path_factory: pytest.TempPathFactory) -> archive.Backup:
    return archive.create(db, tmp_path_factory.mktemp("restore-backups"))


# -- into a new database ------------------------------------------------------------------------------------

def test_a_backup_restores_to_identical_contents_in_every_table(db: Database,
                                                                seeded_backup: archive.Backup) -> None:
    before = content_hashes(db)
    assert {"public.tenants", "public.users", "public.sessions", f"public.{PROBE_TABLE}"} <= set(before)
    copy = restoring.restore_into(db, Path(seeded_backup.path), "ops_restore_round_trip")
    try:
        assert content_hashes(db.named(copy.database)) == before
        assert copy.tables == seeded_backup.manifest.tables
    finally:
        drop_database(db, copy.database)


def test_the_drill_restores_into_a_scratch_database_and_drops_it(stack: Stack, db: Database,
                                                                 seeded_backup: archive.Backup) -> None:
    result = cli("--project-dir", stack.project_dir, "--json", "restore", "drill",
                 "--dir", str(Path(seeded_backup.path).parent))
    assert result.returncode == 0, result.stderr
    drill = json.loads(result.stdout)
    assert drill["file"] == seeded_backup.path and drill["tables"] == dict(seeded_backup.manifest.tables)
    assert drill["scratch_database"].startswith(f"{db.name}_drill_")
    assert db.databases(f"{db.name}_drill_") == []


def test_a_damaged_backup_is_refused_before_the_live_database_is_touched(
        stack: Stack, db: Database, seeded_backup: archive.Backup, tmp_path: Path) -> None:
    src = Path(seeded_backup.path)
    path = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    manifest_path(path).write_text(manifest_path(src).read_text())
    before = content_hashes(db)
    result = cli("--project-dir", stack.project_dir, "--yes", "restore", str(path), "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "checksum mismatch" in error_line(result)
    assert content_hashes(db) == before
    assert db.databases(f"{db.name}_restore_") == [] and db.databases(f"{db.name}_prev_") == []
    # No safety backup was taken: the file was refused first.
    assert backups_in(tmp_path) == sorted([path.name, path.name + ".json", path.name + ".failed"])


def test_restore_asks_for_confirmation(stack: Stack, seeded_backup: archive.Backup) -> None:
    result = cli("--project-dir", stack.project_dir, "restore", seeded_backup.path)
    assert result.returncode == 2 and "needs confirmation" in error_line(result)


def test_undo_without_a_previous_database_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    values = dict(stack.env)
    values["POSTGRES_DB"] = "postgres"  # a database no restore ever replaced
    env_file = tmp_path / "other.env"
    envfile.write(env_file, values)
    result = cli("--project-dir", stack.project_dir, "--env-file", str(env_file), "--yes", "restore", "undo")
    assert result.returncode == 2 and "no previous database of postgres" in error_line(result)


# -- the swap, and undo ----------------------------------------------------------------------------------

def test_restore_swaps_the_backup_in_while_the_api_serves_and_undo_puts_the_previous_data_back(
        stack: Stack, base_url: str, db: Database, seed: Seed, seeded_backup: archive.Backup) -> None:
    backed_up = content_hashes(db)
    tid = seed.tenant_ids[2]
    with api(base_url) as client:  # change the live data after the backup, through the api
        r = client.put(f"/tenants/{tid}", json={"name": "changed after the backup", "domain": "changed.test"})
        assert r.status_code == 200, r.text
        assert client.get(f"/tenants/{tid}").json()["name"] == "changed after the backup"  # now cached
        later = client.post("/tenants", json={"name": "later", "domain": f"l-{uuid.uuid4().hex[:8]}.test"})
        seed.tenant_ids.append(later.json()["id"])
    changed, changed_counts = content_hashes(db), db.table_counts()
    assert changed != backed_up

    steps: list[tuple[float, str]] = []
    with probing(f"{base_url}/health") as health:
        result = restoring.restore(stack, Path(seeded_backup.path), directory=Path(seeded_backup.path).parent,
                                   progress=lambda msg: steps.append((time.monotonic(), msg)))
        time.sleep(1)
    seed.kept_databases.append(result.previous)
    swap_started = next(t for t, msg in steps if msg.startswith("swapping"))
    before_swap = [status for t, status in health.results if t < swap_started]
    assert len(before_swap) >= 10 and set(before_swap) == {200}, before_swap  # restore into a new database
    if health.failures:  # the swap window: connections refused for a moment, then served again
        assert health.failures[-1][0] - health.failures[0][0] < 3, health.failures
    assert health.results[-1][1] == 200
    assert result.swap_seconds < 5 and result.tables == seeded_backup.manifest.tables

    assert content_hashes(db) == backed_up
    with api(base_url) as client:
        assert client.get(f"/tenants/{tid}").json()["name"] == "plain"  # the cache was emptied
        assert client.get(f"/tenants/{seed.tenant_ids[-1]}").status_code == 404
    assert archive.verify(db, Path(result.safety_backup)).tables == changed_counts  # the data it replaced

    undone = cli("--project-dir", stack.project_dir, "--yes", "--json", "restore", "undo")
    assert undone.returncode == 0, undone.stderr
    seed.kept_databases.append(json.loads(undone.stdout)["set_aside"])
    assert content_hashes(db) == changed
    with api(base_url) as client:
        assert client.get(f"/tenants/{tid}").json()["name"] == "changed after the backup"


def test_restore_into_refuses_a_file_that_is_not_a_backup(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "finaiflow_db-20250101T000000Z.dump"
    path.write_bytes(b"--\n-- PostgreSQL database dump\n")
    with pytest.raises(VerifyFailed, match="it has no manifest"):
        restoring.restore_into(db, path, "ops_never_created")
    assert db.databases("ops_never_created") == []
