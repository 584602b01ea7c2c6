"""Backups encrypted to an age public key, against the reference stack's real PostgreSQL.

The private key exists only in this test's temporary directory (as it would on an operator's
machine, never on the database host). Every command's output is checked for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from finaiflow_ops import restore as restoring
from finaiflow_ops.backup import list_backups
from finaiflow_ops.backup.database import Database, quote_ident
from finaiflow_ops.backup.encryption import Identity
from finaiflow_ops.backup.manifest import backup_name, manifest_path, read_manifest
from finaiflow_ops.backup.schedule import Job, resolve_executable
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.integration.backups_support import (
    backups_in,
    content_hashes,
    create_load_database,
    drop_database,
    error_line,
    kill_half_way,
)

pytestmark = pytest.mark.integration
SEALED_DB = "ops_backup_sealed"


@dataclass(frozen=True)
class Keys:
    identity: Path  # the private key
    public: str
    secret: str  # the private key's text: must never appear in any output
    other_identity: Path  # a key pair that is not a recipient
    other_public: str


def _keygen(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    return subprocess.run(["age-keygen", "-y", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    where = tmp_path_factory.mktemp("operator-keys")
    public, other = _keygen(where / "identity.txt"), _keygen(where / "other.txt")
    secret = next(ln for ln in (where / "identity.txt").read_text().splitlines()
                  if ln.startswith("AGE-SECRET-KEY-"))
    return Keys(where / "identity.txt", public, secret, where / "other.txt", other)


class Ops:
    """The CLI against the stack; every output is checked for the private key."""

    def __init__(self, stack: Stack, keys: Keys) -> None:
        self.stack, self.keys = stack, keys

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", "--project-dir",
                               self.stack.project_dir, *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert self.keys.secret not in done.stdout + done.stderr, "the private key was printed"
        assert self.keys.secret[15:40] not in done.stdout + done.stderr, "part of the private key was printed"
        return done


@pytest.fixture(scope="module")
def ops(stack: Stack, keys: Keys) -> Ops:
    return Ops(stack, keys)


@pytest.fixture(scope="module")
def db(stack: Stack) -> Database:
    return Database.of(stack)


@pytest.fixture(scope="module")
def sealed_db(db: Database) -> Iterator[Database]:
    """A small database of awkward values: NULLs, unicode, control characters, every byte in bytea."""
    drop_database(db, SEALED_DB)
    db.psql(f"CREATE DATABASE {quote_ident(SEALED_DB)}", database="postgres")
    sealed = db.named(SEALED_DB)
    sealed.psql("CREATE TABLE notes (id int PRIMARY KEY, label text, payload bytea); "
                "CREATE TABLE empty (id int); "
                "INSERT INTO notes VALUES (1, E'Zürich ☕ 東京 \\t \\n \\\\.', NULL), (2, NULL, "
                "(SELECT string_agg(decode(lpad(to_hex(g), 2, '0'), 'hex'), ''::bytea ORDER BY g) "
                " FROM generate_series(0, 255) g)); "
                "INSERT INTO notes SELECT g, md5(g::text), NULL FROM generate_series(3, 2000) g")
    yield sealed
    drop_database(db, SEALED_DB)


@pytest.fixture(scope="module")
def sealed_backup(ops: Ops, keys: Keys, sealed_db: Database,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = ops("--json", "backup", "create", "--dir", str(tmp_path_factory.mktemp("sealed")),
               "--database", sealed_db.name, "--encrypt-to", keys.public)
    assert made.returncode == 0, made.stderr
    return Path(json.loads(made.stdout)["path"])


def assert_no_plaintext(directory: Path) -> None:
    """No file in `directory` holds a pg_dump archive (custom archives start with PGDMP)."""
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                assert not f.read(5).startswith(b"PGDMP"), f"{path.name} is a plaintext archive"


def decrypted(path: Path, identity: Path) -> bytes:
    argv = ["age", "-d", "-i", str(identity), str(path)]
    return subprocess.run(argv, capture_output=True, check=True).stdout


# -- create, verify, restore ------------------------------------------------------------------------------

def test_an_encrypted_backup_keeps_only_ciphertext_and_records_its_encryption(
        sealed_backup: Path, sealed_db: Database, keys: Keys) -> None:
    assert sealed_backup.name.endswith(".dump.age")
    assert backups_in(sealed_backup.parent) == [sealed_backup.name, sealed_backup.name + ".json"]
    assert sealed_backup.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert_no_plaintext(sealed_backup.parent)
    m = read_manifest(sealed_backup)
    assert m.encryption is not None and m.encryption.tool == "age" and m.encryption.version.startswith("1.")
    assert m.encryption.recipients == (keys.public,)
    assert m.sha256 == hashlib.sha256(sealed_backup.read_bytes()).hexdigest()
    assert m.size == sealed_backup.stat().st_size
    plain = decrypted(sealed_backup, keys.identity)
    assert plain.startswith(b"PGDMP") and m.format == "custom"
    assert (m.encryption.plaintext_sha256, m.encryption.plaintext_size) == (hashlib.sha256(plain).hexdigest(),
                                                                            len(plain))
    assert m.tables == sealed_db.table_counts() and m.tables["public.notes"] == 2000
    # The one-time read-back key is a recipient too; its private half was never kept.
    assert m.encryption.check_recipient.startswith("age1") and m.encryption.check_recipient != keys.public
    assert "AGE-SECRET-KEY" not in manifest_path(sealed_backup).read_text()


def test_verify_without_the_identity_checks_the_checksum_and_says_it_did_not_read_it(
        ops: Ops, sealed_backup: Path) -> None:
    result = ops("backup", "verify", str(sealed_backup))
    assert result.returncode == 0, result.stderr
    assert "NOT read back" in result.stdout and "--identity FILE" in result.stdout
    as_json = json.loads(ops("--json", "backup", "verify", str(sealed_backup)).stdout)
    assert as_json["encrypted"] is True and as_json["read_in_full"] is False


def test_verify_with_the_identity_reads_it_back_in_full(ops: Ops, keys: Keys, sealed_backup: Path) -> None:
    result = ops("--json", "backup", "verify", str(sealed_backup), "--identity", str(keys.identity))
    assert result.returncode == 0, result.stderr
    verified = json.loads(result.stdout)
    assert verified["read_in_full"] is True
    assert verified["tables"] == dict(read_manifest(sealed_backup).tables)


def test_an_encrypted_backup_restores_to_identical_contents(db: Database, sealed_db: Database, keys: Keys,
                                                           sealed_backup: Path) -> None:
    copy = restoring.restore_into(db, sealed_backup, "ops_sealed_round_trip",
                                  identity=Identity(str(keys.identity)))
    try:
        assert content_hashes(db.named(copy.database)) == content_hashes(sealed_db)
    finally:
        drop_database(db, copy.database)


def test_drill_of_an_encrypted_backup_needs_its_identity(ops: Ops, keys: Keys, sealed_backup: Path) -> None:
    where = ("restore", "drill", str(sealed_backup))
    without = ops(*where)
    assert without.returncode == 2
    assert "is encrypted" in error_line(without) and "pass --identity FILE" in error_line(without)
    drill = ops("--json", *where, "--identity", str(keys.identity))
    assert drill.returncode == 0, drill.stderr
    assert json.loads(drill.stdout)["tables"] == dict(read_manifest(sealed_backup).tables)


# -- wrong keys, damaged files ---------------------------------------------------------------------------

def test_a_wrong_or_missing_identity_is_refused_and_nothing_changes(
        ops: Ops, db: Database, keys: Keys, sealed_backup: Path, tmp_path: Path) -> None:
    live = content_hashes(db)
    before = backups_in(sealed_backup.parent)
    for command in (("restore", str(sealed_backup), "--dir", str(tmp_path)),
                    ("restore", "drill", str(sealed_backup)),
                    ("backup", "verify", str(sealed_backup))):
        wrong = ops("--yes", *command, "--identity", str(keys.other_identity))
        assert wrong.returncode == 2, wrong.stderr
        line = error_line(wrong)
        assert f"the identity {keys.other_identity} cannot decrypt {sealed_backup.name}" in line, line
        assert "not the private key of any of its recipients" in line and "nothing was changed" in line
        missing = ops("--yes", *command, "--identity", str(tmp_path / "nowhere.txt"))
        assert missing.returncode == 2 and "no identity file at" in error_line(missing)
    assert content_hashes(db) == live
    assert db.databases(f"{db.name}_restore_") == [] and db.databases(f"{db.name}_drill_") == []
    assert backups_in(sealed_backup.parent) == before  # not marked failed: the file is fine
    assert list(tmp_path.iterdir()) == []  # no safety backup was taken


def test_a_flipped_byte_in_an_encrypted_backup_fails_with_or_without_the_identity(
        ops: Ops, keys: Keys, sealed_backup: Path, tmp_path: Path) -> None:
    path = tmp_path / sealed_backup.name
    data = bytearray(sealed_backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    shutil.copy2(manifest_path(sealed_backup), manifest_path(path))
    for identity in ((), ("--identity", str(keys.identity))):
        result = ops("backup", "verify", str(path), *identity)
        assert result.returncode == 1
        assert "checksum mismatch: the file's sha256" in error_line(result)
    assert [b.state for b in list_backups(tmp_path).backups] == ["failed"]


def test_a_private_key_given_as_recipient_is_refused_without_being_shown(
        ops: Ops, keys: Keys, sealed_db: Database, tmp_path: Path) -> None:
    for value in (keys.secret, str(keys.identity)):  # Ops checks the outputs for the key
        result = ops("backup", "create", "--dir", str(tmp_path), "--database", sealed_db.name,
                     "--encrypt-to", value)
        assert result.returncode == 2
        assert "private key" in error_line(result) and "age-keygen -y" in error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_recipients_file_encrypts_to_each_of_its_keys(
        ops: Ops, keys: Keys, sealed_db: Database, tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops team\n{keys.public}\n\n{keys.other_public}  \n")
    made = ops("--json", "backup", "create", "--dir", str(tmp_path / "b"), "--database", sealed_db.name,
               "--encrypt-to", str(recipients))
    assert made.returncode == 0, made.stderr
    path = Path(json.loads(made.stdout)["path"])
    assert read_manifest(path).encryption.recipients == (keys.public, keys.other_public)  # type: ignore[union-attr]
    for identity in (keys.identity, keys.other_identity):
        verified = ops("--json", "backup", "verify", str(path), "--identity", str(identity))
        assert verified.returncode == 0 and json.loads(verified.stdout)["read_in_full"] is True


# -- killed half-way, list, prune, restore ------------------------------------------------------------------

@pytest.fixture(scope="module")
def load_db(db: Database) -> Iterator[Database]:
    load = create_load_database(db)
    yield load
    drop_database(db, load.name)


def test_an_encrypted_backup_killed_half_way_leaves_only_ciphertext_and_never_counts(
        ops: Ops, stack: Stack, keys: Keys, load_db: Database, tmp_path: Path) -> None:
    args = ["--project-dir", stack.project_dir, "backup", "create", "--dir", str(tmp_path), "--database",
            load_db.name, "--encrypt-to", keys.public]
    partial = kill_half_way(args, tmp_path)

    assert len(partial) == 1 and partial[0].name.endswith(".dump.age.partial")
    assert_no_plaintext(tmp_path)
    assert [(b.state, b.encrypted) for b in list_backups(tmp_path).backups] == [("incomplete", True)]

    again = ops(*args[2:])
    assert again.returncode == 0, again.stderr
    assert "left by a backup that did not finish" in again.stderr
    assert [(b.state, b.encrypted) for b in list_backups(tmp_path).backups] == [("verified", True)]
    assert_no_plaintext(tmp_path)


def _aged(backup: Path, days: int) -> Path:
    """A copy of an encrypted backup that claims to have been taken `days` ago (name and manifest)."""
    m = read_manifest(backup)
    path = backup.with_name(backup_name(m.database, m.started_at - timedelta(days=days), encrypted=True))
    shutil.copy2(backup, path)
    data = json.loads(m.to_json())
    data["file"] = path.name
    manifest_path(path).write_text(json.dumps(data))
    return path


def test_encrypted_backups_are_listed_as_such_and_pruned_by_the_policy(
        ops: Ops, sealed_backup: Path, tmp_path: Path) -> None:
    fresh = tmp_path / sealed_backup.name
    shutil.copy2(sealed_backup, fresh)
    shutil.copy2(manifest_path(sealed_backup), manifest_path(fresh))
    old = [_aged(fresh, days) for days in (10, 40)]
    listed = json.loads(ops("--json", "backup", "list", "--dir", str(tmp_path)).stdout)
    assert [(b["name"], b["state"], b["encrypted"]) for b in listed["backups"]] == [
        (p.name, "verified", True) for p in (fresh, *old)]
    shown = ops("backup", "list", "--dir", str(tmp_path))
    assert "encrypted" in shown.stdout and "age" in shown.stdout
    pruned = ops("--yes", "--json", "backup", "prune", "--dir", str(tmp_path), "--database",
                 read_manifest(fresh).database, "--keep-last", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == [old[1].name]
    assert backups_in(tmp_path) == sorted(n for p in (fresh, old[0]) for n in (p.name, p.name + ".json"))


@pytest.mark.destructive
def test_restore_with_the_identity_swaps_in_the_data_and_the_safety_backup_is_encrypted_too(
        ops: Ops, stack: Stack, db: Database, keys: Keys, tmp_path: Path) -> None:
    made = ops("--json", "backup", "create", "--dir", str(tmp_path), "--encrypt-to", keys.public)
    assert made.returncode == 0, made.stderr
    path = Path(json.loads(made.stdout)["path"])
    live = content_hashes(db)
    kept: list[str] = []
    try:
        restored = ops("--yes", "--json", "restore", str(path), "--dir", str(tmp_path),
                       "--identity", str(keys.identity))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        kept.append(result["previous"])
        assert content_hashes(db) == live
        safety = Path(result["safety_backup"])
        assert safety.name.endswith(".dump.age") and read_manifest(safety).reason == "pre-restore"
        assert read_manifest(safety).encryption.recipients == (keys.public,)  # type: ignore[union-attr]
        assert_no_plaintext(tmp_path)
    finally:
        if kept:
            undone = ops("--yes", "--json", "restore", "undo")
            assert undone.returncode == 0, undone.stderr
            kept.append(json.loads(undone.stdout)["set_aside"])
        for name in kept:
            drop_database(db, name)
    assert content_hashes(db) == live


def test_the_scheduled_job_encrypts_in_crons_environment(stack: Stack, keys: Keys, tmp_path: Path) -> None:
    job = Job(resolve_executable(Target.parse("local://"), None), stack.project_dir, str(tmp_path),
              create_options=("--encrypt-to", keys.public))
    minute_hour_etc_command = job.cron_block().splitlines()[1].split(" ", 5)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh"}
    done = subprocess.run(["/bin/sh", "-c", minute_hour_etc_command[5].replace(r"\%", "%")], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, Path(job.log).read_text()
    newest = list_backups(tmp_path).newest_verified
    assert newest is not None and newest.encrypted, Path(job.log).read_text()
    assert read_manifest(Path(newest.path)).encryption.recipients == (keys.public,)  # type: ignore[union-attr]
    assert_no_plaintext(tmp_path)
