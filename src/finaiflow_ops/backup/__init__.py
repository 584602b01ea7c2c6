"""Backups that are proven by reading them back: create, verify, list, prune, schedule.

    database.py   the PostgreSQL database in its container: queries, dump and restore streams
    manifest.py   file names, format detection from magic bytes, the manifest (JSON)
    archive.py    create (snapshot, dump, full read-back, checksum, manifest) and verify
    encryption.py age: recipients (public keys), identities, the one-time read-back key
    offsite.py    copies to another directory or, over ssh, to another host (checked there)
    inventory.py  what a backup directory holds and which files count as verified backups
    retention.py  the retention policy (pure) and prune
    schedule.py   the daily job: a crontab entry or a systemd timer
    errors.py     BackupFailed, VerifyFailed, StaleBackups, RestoreFailed

Restores are in finaiflow_ops.restore.
"""

from finaiflow_ops.backup.archive import (
    Backup,
    Verification,
    create,
    default_directory,
    stack_release,
    verify,
)
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.errors import BackupFailed, RestoreFailed, StaleBackups, VerifyFailed
from finaiflow_ops.backup.inventory import BackupEntry, BackupList, list_backups
from finaiflow_ops.backup.manifest import Format, Manifest, detect_format
from finaiflow_ops.backup.retention import Policy, PruneResult, prune

__all__ = [
    "Backup",
    "BackupEntry",
    "BackupFailed",
    "BackupList",
    "Database",
    "Format",
    "Manifest",
    "Policy",
    "PruneResult",
    "RestoreFailed",
    "StaleBackups",
    "Verification",
    "VerifyFailed",
    "create",
    "default_directory",
    "detect_format",
    "list_backups",
    "prune",
    "stack_release",
    "verify",
]
