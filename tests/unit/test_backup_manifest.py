"""Backup files on disk: names, format detection from magic bytes, the manifest, counts comparison."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from finaiflow_ops.backup.archive import compare_counts
from finaiflow_ops.backup.manifest import (
    Manifest,
    atomic_write,
    backup_name,
    detect_format,
    parse_name,
)

# The first bytes of a real `pg_dump --format=custom --compress=1` archive of PostgreSQL 15:
# magic, archive version 1.14.0, int size 4, offset size 8, format 1 (custom), then the
# compression level as a sign byte and a 4-byte little-endian int.
PG15_CUSTOM_Z1 = bytes.fromhex("5047444d50010e0004080100010000000000")


def _manifest(**changes: object) -> Manifest:
    now = datetime(2025, 1, 2, 2, 0, 5, tzinfo=UTC)
    fields: dict[str, object] = dict(
        file="finaiflow_db-20250102T020000Z.dump", sha256="ab" * 32, size=1234, format="custom",
        database="finaiflow_db", server_version="15.20", pg_dump_version="pg_dump (PostgreSQL) 15.20",
        compression="gzip level 1", started_at=now - timedelta(seconds=5), finished_at=now,
        verified_at=now, snapshot="00000003-0000001B-1",
        tables={"public.users": 3, "public.tenants": 0, 'public."Odd name"': 7},
        release="1.0.0", schema_revision="0001_initial", project="finaiflow", reason="manual",
    )
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


# -- names ------------------------------------------------------------------------------------------

def test_backup_names_sort_by_utc_time_and_parse_back() -> None:
    paris = timezone(timedelta(hours=1))
    first = datetime(2025, 1, 2, 3, 0, 0, tzinfo=paris)  # 02:00 UTC
    later = datetime(2025, 1, 2, 2, 30, 0, tzinfo=UTC)
    names = [backup_name("finaiflow_db", later), backup_name("finaiflow_db", first)]
    assert names[1] == "finaiflow_db-20250102T020000Z.dump"
    assert sorted(names) == [names[1], names[0]]
    assert parse_name(names[1]) == ("finaiflow_db", datetime(2025, 1, 2, 2, 0, tzinfo=UTC))


def test_backup_names_break_ties_and_keep_hyphenated_database_names() -> None:
    when = datetime(2025, 1, 2, 2, 0, tzinfo=UTC)
    name = backup_name("my-db", when, seq=2)
    assert name == "my-db-20250102T020000Z-2.dump"
    assert parse_name(name) == ("my-db", when)


@pytest.mark.parametrize("name", [
    "finaiflow_db-20250102T020000Z.dump.json", "finaiflow_db-20250102T020000Z.dump.failed",
    ".finaiflow_db-20250102T020000Z.dump.partial", "finaiflow_db.dump", "notes.txt",
    "finaiflow_db-2025-01-02.dump",
])
def test_other_files_are_not_backup_names(name: str) -> None:
    assert parse_name(name) is None


# -- format from magic bytes ------------------------------------------------------------------------

def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("toc.dat")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


@pytest.mark.parametrize(("head", "kind"), [
    (PG15_CUSTOM_Z1, "custom"),
    (_tar_bytes(), "tar"),
    (gzip.compress(b"--\n-- PostgreSQL database dump\n", mtime=0), "gzip"),  # one id in every xdist worker
    (bytes.fromhex("28b52ffd") + b"\x00" * 8, "zstd"),
    (b"age-encryption.org/v1\n-> X25519 abc\n", "age"),
    (b"-----BEGIN PGP MESSAGE-----\n\nhQEMA", "openpgp"),
    (bytes([0x85, 0x01, 0x0C]) + b"\x03" * 10, "openpgp"),
    (b"--\n-- PostgreSQL database dump\n--\n", "plain"),
    (b"", "empty"),
    (b"PK\x03\x04 a zip file", "unknown"),
])
def test_format_is_read_from_the_first_bytes(head: bytes, kind: str) -> None:
    assert detect_format(head[:512]).kind == kind


def test_custom_archive_header_gives_version_and_compression() -> None:
    fmt = detect_format(PG15_CUSTOM_Z1)
    assert (fmt.kind, fmt.detail, fmt.restorable) == ("custom", "archive 1.14, gzip level 1", True)
    uncompressed = PG15_CUSTOM_Z1[:12] + b"\x00\x00\x00\x00"
    assert detect_format(uncompressed).detail == "archive 1.14, uncompressed"
    assert detect_format(b"PGDMP\x01").detail == "truncated header"


def test_the_file_name_does_not_decide_the_format(tmp_path: Path) -> None:
    disguised = tmp_path / "finaiflow_db-20250102T020000Z.dump"
    disguised.write_bytes(gzip.compress(b"SELECT 1;"))
    fmt = detect_format(disguised.read_bytes()[:512])
    assert fmt.kind == "gzip" and not fmt.restorable


# -- manifest ---------------------------------------------------------------------------------------

def test_manifest_round_trips_through_json() -> None:
    m = _manifest()
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert again.rows == 10
    assert json.loads(m.to_json())["started_at"] == "2025-01-02T02:00:00+00:00"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("sha256"), "field sha256 missing"),
    (lambda d: d.update(sha256="not-hex"), "not a hex SHA-256"),
    (lambda d: d.update(size=-1), "size is not a non-negative integer"),
    (lambda d: d.update(size=True), "size is not a non-negative integer"),
    (lambda d: d.update(started_at="2025-01-02T02:00:00"), "started_at has no time zone"),
    (lambda d: d.update(finished_at="yesterday"), "finished_at is not an ISO-8601 time"),
    (lambda d: d.update(version=2), "manifest version 2"),
    (lambda d: d.update(tables={"public.users": "3"}), "tables.public.users"),
])
def test_invalid_manifests_are_refused_naming_the_field(edit: object, message: str) -> None:
    data = json.loads(_manifest().to_json())
    edit(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        Manifest.from_json(json.dumps(data))


def test_a_manifest_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        Manifest.from_json('{"file": ')
    with pytest.raises(ValueError, match="not a JSON object"):
        Manifest.from_json("[]")


def test_atomic_write_leaves_the_complete_file_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "b.json", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# -- counts -----------------------------------------------------------------------------------------

def test_count_comparison_names_every_difference() -> None:
    expected = {"public.users": 3, "public.tenants": 2, "public.sessions": 0}
    seen = {"public.users": 3, "public.tenants": 1, "public.extra": 5}
    assert compare_counts(expected, seen) == [
        "table public.extra is in the archive but not in the snapshot",
        "table public.sessions is missing from the archive",
        "table public.tenants has 1 rows in the archive, the snapshot had 2",
    ]
    assert compare_counts(expected, dict(expected)) == []
