"""The runbook's daily backup on the target: a crontab entry, or a systemd timer where systemd runs.

The job is `backup create && backup prune`: prune runs only after a backup succeeded, and refuses
on its own when the newest verified backup is stale. Installing is idempotent (our entry is found
by a marker comment naming the project directory, so several stacks can share a host) and
`remove` takes out only our entry. The mechanism (crontab and systemd, through Target.run) is
finaiflow_ops.schedule, shared with the certificate renewal; this module renders the job.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from finaiflow_ops import schedule as scheduling
from finaiflow_ops.backup import encryption, offsite
from finaiflow_ops.backup.archive import backups_of
from finaiflow_ops.errors import UsageError
from finaiflow_ops.schedule import SYSTEMD_DIR, resolve_executable, scheduler
from finaiflow_ops.target import Target

__all__ = ["SYSTEMD_DIR", "Job", "ScheduleStatus", "daily_job", "install", "remove", "resolve_executable",
           "scheduler", "status"]

MARK = "# finaiflow-ops backup schedule:"
_TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class Job:
    """The daily job of one stack: the verified pg_dump backup, then the pgBackRest physical backup
    (full once a week, differential otherwise), then prune, with the output appended to a log."""

    executable: str
    project_dir: str
    directory: str
    at: str = "02:00"
    keep_days: int = 30
    copy_to: str = ""  # a second directory that receives a verified copy of each backup
    notify: str = ""  # a command run when the backup or the prune fails
    create_options: tuple[str, ...] = ()  # more `backup create` options: --encrypt-to K, an ssh --copy-to

    def __post_init__(self) -> None:
        if not _TIME_RE.fullmatch(self.at):
            raise UsageError(f"bad time {self.at!r}", hint="use HH:MM, 24-hour, in the target's local time")
        for name, path in (("project dir", self.project_dir), ("backup dir", self.directory),
                           ("executable", self.executable), ("copy directory", self.copy_to or "/")):
            if not PurePosixPath(path).is_absolute():
                raise UsageError(f"the {name} {path!r} must be an absolute path for a scheduled job")

    @property
    def hour_minute(self) -> tuple[int, int]:
        match = _TIME_RE.fullmatch(self.at)
        assert match
        return int(match[1]), int(match[2])

    def command(self) -> str:
        """The shell command the scheduler runs."""
        base = f"{shlex.quote(self.executable)} --project-dir {shlex.quote(self.project_dir)} --yes"
        where = f"--dir {shlex.quote(self.directory)}"
        hook = f" --notify {shlex.quote(self.notify)}" if self.notify else ""
        copy = f" --copy-to {shlex.quote(self.copy_to)}" if self.copy_to else ""
        extra = "".join(f" {shlex.quote(arg)}" for arg in self.create_options)
        return (f"{base} backup create{extra} {where}{copy}{hook} && "
                f"{base} backup physical{hook} && "
                f"{base} backup prune {where} --keep-days {self.keep_days}{hook}")

    @property
    def log(self) -> str:
        return str(PurePosixPath(self.directory) / "schedule.log")

    @property
    def marker(self) -> str:
        return marker(self.project_dir)

    def cron_line(self) -> str:
        """The crontab entry (cron reads a bare % as a newline)."""
        hour, minute = self.hour_minute
        line = f"{{ {self.command()}; }} >>{shlex.quote(self.log)} 2>&1".replace("%", r"\%")
        return f"{minute} {hour} * * * {line}"

    def cron_block(self) -> str:
        """The two crontab lines: our marker, and the entry."""
        return f"{self.marker}\n{self.cron_line()}\n"

    @property
    def unit(self) -> str:
        return unit_name(self.project_dir)

    def systemd_units(self) -> dict[str, str]:
        """The service and timer unit files, by file name (a host that was off at the time backs up
        when it starts)."""
        hour, minute = self.hour_minute
        what = f"FinaiFlow daily backup of {self.project_dir}"
        return scheduling.timer_units(self.unit, self.command(), log=self.log,
                                      on_calendar=f"*-*-* {hour:02d}:{minute:02d}:00", description=what,
                                      timer_description=what, persistent=True)


def daily_job(target: Target, project_dir: str, *, directory: str | None = None, at: str = "02:00",
              keep_days: int = 30, executable: str | None = None, copy_to: str = "",
              encrypt_to: Sequence[str] = (), notify: str = "") -> Job:
    """The daily job of the stack in `project_dir` on `target`, checked there: its finaiflow-ops
    (`resolve_executable`), backups into `directory` (default PROJECT_DIR/backups), a copy to
    `copy_to` (a directory on the target, or ssh://...), encrypted to `encrypt_to` (public keys, or
    recipients files on the target, read at each run)."""
    # An ssh destination goes to `backup create` as it is (validated here); Job.copy_to takes
    # directories only.
    remote = copy_to if copy_to and offsite.parse_destination(copy_to).target else ""
    keys = [arg for key in encryption.job_recipients(target, encrypt_to) for arg in ("--encrypt-to", key)]
    return Job(resolve_executable(target, executable), project_dir, directory or backups_of(project_dir), at,
               keep_days, "" if remote else copy_to, notify,
               create_options=(*keys, *(("--copy-to", remote) if remote else ())))


def marker(project_dir: str) -> str:
    """The comment line above the crontab entry of a project directory's daily backup."""
    return f"{MARK} {project_dir}"


def unit_name(project_dir: str) -> str:
    """A systemd unit name unique to a project directory (several stacks may share a host)."""
    return scheduling.unit_name("backup", PurePosixPath(project_dir).name, project_dir)


@dataclass(frozen=True)
class ScheduleStatus:
    """Whether the daily backup of a project is scheduled on a target, and whether it would run."""

    target: str
    project_dir: str
    scheduler: str  # cron, systemd, or none (the host has neither)
    installed: bool
    running: bool  # the cron daemon runs / the timer is active
    entry: str  # the crontab lines or the timer's OnCalendar, when installed
    changed: bool = False

    @property
    def ok(self) -> bool:
        return self.installed and self.running


def without_block(crontab: str, project_dir: str) -> str:
    """The crontab with our entry for `project_dir` (marker line and the line after it) taken out."""
    return scheduling.merge_block(crontab, marker(project_dir), None)


def _units(project_dir: str) -> tuple[str, str]:
    unit = unit_name(project_dir)
    return f"{unit}.service", f"{unit}.timer"


# -- the operations ------------------------------------------------------------------------------------

def status(target: Target, project_dir: str) -> ScheduleStatus:
    kind = scheduler(target)
    if kind == "systemd":
        timer = _units(project_dir)[1]
        enabled, active = scheduling.timer_state(target, timer)
        entry = ""
        if enabled:
            text = target.run("cat", f"{SYSTEMD_DIR}/{timer}", check=False).stdout
            entry = next((ln for ln in text.splitlines() if ln.startswith("OnCalendar=")), "")
        return ScheduleStatus(str(target), project_dir, kind, enabled, active, entry)
    if kind == "cron":
        block = scheduling.find_block(scheduling.read_crontab(target), marker(project_dir))
        running = scheduling.cron_running(target)
        return ScheduleStatus(str(target), project_dir, kind, bool(block), running, block.strip())
    return ScheduleStatus(str(target), project_dir, kind, False, False, "")


def install(target: Target, job: Job) -> ScheduleStatus:
    """Install (or update) the job; nothing changes when it is already installed as wanted."""
    kind = scheduler(target)
    if kind == "none":
        raise UsageError(f"{target} has neither systemd nor cron to run the daily backup",
                         hint="install cron (apt-get install cron) and start it")
    if kind == "cron":
        changed = scheduling.set_cron_entry(target, job.marker, job.cron_line())
    else:
        changed = scheduling.install_units(target, job.systemd_units())
    return replace(status(target, job.project_dir), changed=changed)


def remove(target: Target, project_dir: str) -> ScheduleStatus:
    """Take our job out; other entries and units stay as they are."""
    kind = scheduler(target)
    changed = False
    if kind == "cron":
        changed = scheduling.set_cron_entry(target, marker(project_dir), None)
    elif kind == "systemd":
        changed = scheduling.remove_units(target, _units(project_dir))
    return replace(status(target, project_dir), changed=changed)
