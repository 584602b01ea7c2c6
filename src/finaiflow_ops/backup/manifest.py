"""What a backup is on disk: its file name, its format (read from its first bytes) and its manifest.

A backup is two files in the backup directory:

    finaiflow_db-20250101T020000Z.dump         the pg_dump archive (names sort by UTC time)
    finaiflow_db-20250101T020000Z.dump.json    its manifest, written last, only after a full read-back

An encrypted backup is `NAME.dump.age` (the archive encrypted with age) and `NAME.dump.age.json`,
whose `encryption` names the tool, the recipients' public keys and the plaintext's checksum.

A file without a valid manifest beside it is never a backup. Both are written under a temporary
name, fsynced and renamed into place, so a killed run leaves only hidden `.partial` files.
A failed verification leaves a `.failed` marker beside the archive (what was wrong, and when).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ENCRYPTED_SUFFIX",
    "MANIFEST_SUFFIX",
    "Encryption",
    "Format",
    "FormatKind",
    "Manifest",
    "atomic_write",
    "backup_name",
    "detect_format",
    "failed_marker",
    "is_encrypted_name",
    "manifest_path",
    "parse_name",
    "read_manifest",
]

SUFFIX = ".dump"
MANIFEST_SUFFIX = ".json"
FAILED_SUFFIX = ".failed"
PARTIAL_SUFFIX = ".partial"
MANIFEST_VERSION = 1
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"(?P<db>[A-Za-z0-9_.-]+?)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?\.dump(?:\.age)?")
ENCRYPTED_SUFFIX = ".age"
# How many bytes detect_format needs (a tar header's "ustar" is at offset 257).
MAGIC_BYTES = 512


def backup_name(database: str, when: datetime, seq: int = 0, *, encrypted: bool = False) -> str:
    """The file name of a backup of `database` started at `when` (UTC); `seq` breaks ties."""
    stamp = when.astimezone(UTC).strftime(_STAMP)
    return f"{database}-{stamp}{f'-{seq}' if seq else ''}{SUFFIX}{ENCRYPTED_SUFFIX if encrypted else ''}"


def is_encrypted_name(name: str) -> bool:
    return name.endswith(SUFFIX + ENCRYPTED_SUFFIX)


def parse_name(name: str) -> tuple[str, datetime] | None:
    """The database and start time a backup file name encodes, or None for any other file."""
    match = _NAME_RE.fullmatch(name)
    if not match:
        return None
    return match["db"], datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def failed_marker(archive: Path) -> Path:
    return archive.with_name(archive.name + FAILED_SUFFIX)


# -- format ---------------------------------------------------------------------------------------

FormatKind = Literal["custom", "tar", "plain", "gzip", "zstd", "age", "openpgp", "empty", "unknown"]


@dataclass(frozen=True)
class Format:
    """What a file's first bytes say it is."""

    kind: FormatKind
    detail: str = ""  # for pg_dump custom archives: archive version and compression

    @property
    def restorable(self) -> bool:
        """Whether pg_restore reads it as it is (the only kind `backup create` writes)."""
        return self.kind == "custom"

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


def detect_format(head: bytes) -> Format:
    """The format of a file from its first bytes (MAGIC_BYTES of them), never from its name."""
    if not head:
        return Format("empty")
    if head.startswith(b"PGDMP"):
        return Format("custom", _custom_detail(head))
    if head[257:262] == b"ustar":
        return Format("tar")
    if head.startswith(b"\x1f\x8b"):
        return Format("gzip")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return Format("zstd")
    if head.startswith(b"age-encryption.org/v1"):
        return Format("age")
    # ASCII-armoured, or a binary public-key-encrypted session key packet (old and new format).
    if head.startswith(b"-----BEGIN PGP MESSAGE") or head[0] in (0x84, 0x85, 0xC1):
        return Format("openpgp")
    if head.startswith(b"--\n-- PostgreSQL database dump"):
        return Format("plain")
    return Format("unknown")


def _custom_detail(head: bytes) -> str:
    """pg_dump's archive header: PGDMP, version (3 bytes), int size, offset size, format, compression."""
    if len(head) < 11:
        return "truncated header"
    major, minor, _rev, int_size = head[5], head[6], head[7], head[8]
    detail = f"archive {major}.{minor}"
    # Archives before 1.15 (pg_dump 15 and older) store the zlib level as a signed int:
    # one sign byte, then int_size bytes, least significant first.
    if (major, minor) < (1, 15) and 0 < int_size <= 8 and len(head) >= 12 + int_size:
        level = int.from_bytes(head[12:12 + int_size], "little")
        detail += ", " + (f"gzip level {level}" if level > 0 else "uncompressed")
    return detail


# -- manifest -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Encryption:
    """How a backup file is encrypted, as its manifest records it (public keys only; see encryption.py)."""

    tool: str
    version: str
    recipients: tuple[str, ...]  # the public keys whose private keys decrypt it
    check_recipient: str  # the one-time key it was read back with at creation; its private half is gone
    plaintext_sha256: str  # of the pg_dump archive inside (what `age -d` outputs)
    plaintext_size: int


@dataclass(frozen=True)
class Manifest:
    """Everything known about a backup when it was written and read back in full."""

    file: str
    sha256: str
    size: int
    format: str
    database: str
    server_version: str
    pg_dump_version: str
    compression: str
    started_at: datetime
    finished_at: datetime
    verified_at: datetime
    snapshot: str
    tables: Mapping[str, int] = field(default_factory=dict)
    release: str = ""
    schema_revision: str = ""
    project: str = ""
    reason: str = "manual"
    # None for a plaintext archive; for an encrypted file, sha256 and size above are the stored file's.
    encryption: Encryption | None = None
    version: int = MANIFEST_VERSION

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        if self.encryption is None:
            del data["encryption"]  # plaintext manifests stay as they always were
        for key in ("started_at", "finished_at", "verified_at"):
            data[key] = getattr(self, key).isoformat()
        data["tables"] = dict(sorted(self.tables.items()))
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; anything missing or mistyped is a ValueError naming the field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}")
        try:
            tables = {str(k): _int(v, f"tables.{k}") for k, v in dict(data["tables"]).items()}
            return cls(
                file=_str(data["file"], "file"),
                sha256=_sha(data["sha256"]),
                size=_int(data["size"], "size"),
                format=_str(data["format"], "format"),
                database=_str(data["database"], "database"),
                server_version=_str(data["server_version"], "server_version"),
                pg_dump_version=_str(data["pg_dump_version"], "pg_dump_version"),
                compression=_str(data["compression"], "compression"),
                started_at=_time(data["started_at"], "started_at"),
                finished_at=_time(data["finished_at"], "finished_at"),
                verified_at=_time(data["verified_at"], "verified_at"),
                snapshot=_str(data["snapshot"], "snapshot"),
                tables=tables,
                release=_str(data.get("release", ""), "release"),
                schema_revision=_str(data.get("schema_revision", ""), "schema_revision"),
                project=_str(data.get("project", ""), "project"),
                reason=_str(data.get("reason", "manual"), "reason"),
                encryption=_encryption(data["encryption"]) if data.get("encryption") is not None else None,
            )
        except KeyError as exc:
            raise ValueError(f"field {exc.args[0]} missing") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed ({exc})") from None


def _encryption(data: object) -> Encryption:
    if not isinstance(data, dict):
        raise ValueError("field encryption is not a JSON object")
    recipients = data["recipients"]
    if not isinstance(recipients, list) or not recipients:
        raise ValueError("field encryption.recipients is not a list of public keys")
    return Encryption(
        tool=_str(data["tool"], "encryption.tool"),
        version=_str(data["version"], "encryption.version"),
        recipients=tuple(_str(r, "encryption.recipients") for r in recipients),
        check_recipient=_str(data.get("check_recipient", ""), "encryption.check_recipient"),
        plaintext_sha256=_sha(data["plaintext_sha256"], "encryption.plaintext_sha256"),
        plaintext_size=_int(data["plaintext_size"], "encryption.plaintext_size"),
    )


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name} is not a string")
    return value


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"field {name} is not a non-negative integer")
    return value


def _sha(value: object, name: str = "sha256") -> str:
    text = _str(value, name)
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"field {name} is not a hex SHA-256 digest")
    return text


def _time(value: object, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(_str(value, name))
    except ValueError:
        raise ValueError(f"field {name} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"field {name} has no time zone")
    return parsed


def read_manifest(archive: Path) -> Manifest:
    """The manifest beside `archive`; OSError when missing or unreadable, ValueError when invalid."""
    return Manifest.from_json(manifest_path(archive).read_text(encoding="utf-8"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` so that it is either absent, or complete and on disk (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
