"""A new staging made ready the way a first deploy leaves a host.

After `stack up`: a staging certificate from the development CA (TLS checked with verification
on), a first pgBackRest backup, a first verified backup, and the daily backup job.
`finaiflow-ops stack up --staging`, the acceptance session and the test session do this; the
checklist itself only reads, so a staging that lacks any of it fails the matching item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finaiflow_ops import relay, tls
from finaiflow_ops.backup import archive, pgbackrest, schedule
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.manifest import manifest_path
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.stack import Stack

__all__ = ["Prepared", "prepare", "undo"]


@dataclass(frozen=True)
class Prepared:
    """What `prepare` made, so that a test session can take it away again."""

    backup: str
    backup_directory_created: bool
    schedule_installed: bool


def prepare(stack: Stack, *, progress: Progress | None = None) -> Prepared:
    say = or_quiet(progress)
    say("installing a staging certificate from the development CA")
    tls.install_dev_certificate(stack)
    say("taking a first pgBackRest backup (point-in-time recovery reaches back to its end)")
    pgbackrest.Repository(stack).backup("full")
    if stack.target.kind == "ssh":
        return _prepare_on_host(stack, say)
    directory = archive.default_directory(stack)
    created = not directory.exists()
    say(f"taking a first verified backup into {directory}")
    made = archive.create(Database.of(stack), directory, release=archive.stack_release(stack),
                          project=stack.project, reason="first backup of a new staging")
    installed = False
    if schedule.scheduler(stack.target) != "none" and not schedule.status(stack.target,
                                                                          stack.project_dir).installed:
        say("installing the daily backup job")
        job = schedule.Job(schedule.resolve_executable(stack.target, None), stack.project_dir, str(directory))
        installed = schedule.install(stack.target, job).installed
    return Prepared(str(made.path), created, installed)


def _prepare_on_host(stack: Stack, say: Progress) -> Prepared:
    """The backup and its daily job on a remote host, by the host's own finaiflow-ops (the backups
    stay there, as the daily job's do)."""
    made = archive.take(stack, reason="first backup of a new staging", progress=say)
    installed = False
    if not schedule.status(stack.target, stack.project_dir).installed:
        say("installing the daily backup job on the host")
        relay.run(stack, "backup", "schedule", yes=True, timeout=120)
        installed = True
    return Prepared(made, False, installed)


def undo(stack: Stack, prepared: Prepared) -> None:
    """Remove what `prepare` made (the certificate goes with the stack's volumes)."""
    if prepared.schedule_installed:
        schedule.remove(stack.target, stack.project_dir)
    if stack.target.kind == "ssh":
        stack.target.run("rm", "-f", "--", prepared.backup, str(manifest_path(Path(prepared.backup))))
        return
    for path in (Path(prepared.backup), manifest_path(Path(prepared.backup))):
        path.unlink(missing_ok=True)
    directory = Path(prepared.backup).parent
    if prepared.backup_directory_created:
        (directory / ".lock").unlink(missing_ok=True)
        if not any(directory.iterdir()):
            directory.rmdir()
