"""The errors of backups and restores, under the root tree of finaiflow_ops.errors.

    OpsError
    ├── BackupFailed          a backup could not be made (database down, dump failed, disk full)  (exit 1)
    ├── RestoreFailed         a restore stopped before the swap; the live database is untouched   (exit 1)
    └── CheckFailed
        ├── VerifyFailed      a backup file failed verification; `problems` names each finding      (exit 1)
        └── StaleBackups      prune refused: no verified backup recent enough                       (exit 1)
"""

from __future__ import annotations

from collections.abc import Sequence

from finaiflow_ops.errors import CheckFailed, OpsError

__all__ = ["BackupFailed", "RestoreFailed", "StaleBackups", "VerifyFailed"]


class BackupFailed(OpsError):
    """A backup could not be made; no file of it counts as a backup."""


class RestoreFailed(OpsError):
    """A restore stopped before the swap: the live database was not touched."""


class VerifyFailed(CheckFailed):
    """A backup file failed verification: it is not a backup anyone should restore."""

    def __init__(self, path: str, problems: Sequence[str], *, hint: str | None = None) -> None:
        super().__init__(f"{path} failed verification: {problems[0]}", problems=problems,
                         hint=hint or "do not restore it; take a new backup (finaiflow-ops backup create)")
        self.path = path


class StaleBackups(CheckFailed):
    """Prune refused: deleting old backups while new ones fail would leave nothing to restore."""
