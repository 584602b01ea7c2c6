"""The errors of backups and restores: defined in finaiflow_ops.errors (the one tree), named here
for the backup modules and their callers."""

from __future__ import annotations

from finaiflow_ops.errors import ArchiveGap, BackupFailed, RestoreFailed, StaleBackups, VerifyFailed

__all__ = ["ArchiveGap", "BackupFailed", "RestoreFailed", "StaleBackups", "VerifyFailed"]
