"""What a backup directory holds, and which of its files count as verified backups.

Listing is cheap on purpose (no file is read beyond its manifest): a backup counts as verified
when its manifest is valid, names this very file, states its size, and no later verification
failed (a `.failed` marker). `backup verify` is the full check: checksum and a complete read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from finaiflow_ops.backup.manifest import (
    FAILED_SUFFIX,
    MANIFEST_SUFFIX,
    PARTIAL_SUFFIX,
    failed_marker,
    is_encrypted_name,
    parse_name,
    read_manifest,
)

__all__ = ["BackupEntry", "BackupList", "BackupState", "list_backups"]

# verified; unverified (no valid manifest); failed (verification); incomplete (a killed run)
BackupState = Literal["verified", "unverified", "failed", "incomplete"]
VERIFIED: Final = "verified"
UNVERIFIED: Final = "unverified"
FAILED: Final = "failed"
INCOMPLETE: Final = "incomplete"


@dataclass(frozen=True)
class BackupEntry:
    """One file in the backup directory that is, or claims to be, a backup."""

    name: str
    path: str
    database: str
    created_at: datetime
    size: int
    state: BackupState
    problem: str  # why it is not verified; empty when it is
    age_seconds: float
    release: str = ""
    reason: str = ""
    encrypted: bool = False  # an age-encrypted archive (NAME.dump.age): restoring it needs the identity

    @property
    def verified(self) -> bool:
        return self.state == VERIFIED


@dataclass(frozen=True)
class BackupList:
    """The backups of a directory, newest first."""

    directory: str
    backups: tuple[BackupEntry, ...]

    @property
    def newest_verified(self) -> BackupEntry | None:
        return next((b for b in self.backups if b.verified), None)

    @property
    def newest_verified_age_seconds(self) -> float | None:
        newest = self.newest_verified
        return newest.age_seconds if newest else None


def list_backups(directory: Path, *, database: str | None = None, now: datetime | None = None) -> BackupList:
    """The backups in `directory` (of `database` only, when given), newest first."""
    now = now or datetime.now(UTC)
    entries = []
    if directory.is_dir():
        for path in directory.iterdir():
            entry = _entry(path, now)
            if entry and (database is None or entry.database == database):
                entries.append(entry)
    entries.sort(key=lambda e: (e.created_at, e.name), reverse=True)
    return BackupList(str(directory), tuple(entries))


def _entry(path: Path, now: datetime) -> BackupEntry | None:
    name = path.name
    if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
        inner = name[1:-len(PARTIAL_SUFFIX)]
        parsed = parse_name(inner)
        if parsed is None:  # a manifest being written, or another tool's temp file
            return None
        return _make(path, inner, parsed, now, INCOMPLETE, "left by a backup that did not finish")
    parsed = parse_name(name)
    if parsed is None or not path.is_file():
        return None  # manifests, markers and foreign files are not backups
    state, problem, release, reason = _state(path)
    return _make(path, name, parsed, now, state, problem, release, reason)


def _make(path: Path, name: str, parsed: tuple[str, datetime], now: datetime, state: BackupState,
          problem: str, release: str = "", reason: str = "") -> BackupEntry:
    database, created = parsed
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # deleted while listing (a concurrent prune)
        size = 0
    return BackupEntry(name, str(path), database, created, size, state, problem,
                       (now - created).total_seconds(), release, reason, is_encrypted_name(name))


def _state(path: Path) -> tuple[BackupState, str, str, str]:
    """(state, problem, release, reason) of an archive, from its manifest and failure marker."""
    marker = failed_marker(path)
    if marker.exists():
        return FAILED, _marker_problem(marker), "", ""
    try:
        manifest = read_manifest(path)
    except FileNotFoundError:
        return UNVERIFIED, "no manifest (never verified)", "", ""
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return UNVERIFIED, f"manifest unreadable: {exc}", "", ""
    if manifest.file != path.name:
        return UNVERIFIED, f"manifest describes {manifest.file}, not this file", "", ""
    size = path.stat().st_size
    if size != manifest.size:
        return UNVERIFIED, f"{size} bytes, the manifest says {manifest.size}", manifest.release, ""
    return VERIFIED, "", manifest.release, manifest.reason


def _marker_problem(marker: Path) -> str:
    try:
        return str(json.loads(marker.read_text(encoding="utf-8"))["problem"])
    except (OSError, ValueError, KeyError, TypeError):
        return "failed verification"


# Suffixes of the companion files of an archive; prune deletes them with it.
COMPANIONS = (MANIFEST_SUFFIX, FAILED_SUFFIX)
