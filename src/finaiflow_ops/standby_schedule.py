"""The warm standby retired on time, with nobody at the keyboard: `standby retire SERVICE --expired`
every few minutes on the target (a crontab entry, or a systemd timer where systemd runs).

Deploys, rollbacks and `standby retire` already retire a standby whose window ended (nothing waits
on a timer in a process); this job does it on a host where nobody runs a command for a while, so
the old release's memory comes back within EVERY_MINUTES of the window's end, and what an
interrupted command left is repaired within as long. Each run is under the deploy lock, like any
repair, and leaves the work to the command holding it, if one does. Installing is idempotent
(the entry is found by a marker naming the service and the project directory) and `remove` takes
out only this entry. The mechanism is finaiflow_ops.schedule, shared with the daily backup and the
certificate renewal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from finaiflow_ops import schedule as scheduling
from finaiflow_ops.errors import UsageError
from finaiflow_ops.target import Target

__all__ = ["EVERY_MINUTES", "MARK", "Job", "StandbySchedule", "install", "remove"]

EVERY_MINUTES = 5
MARK = "# finaiflow-ops standby retire:"


@dataclass(frozen=True)
class Job:
    """`standby retire SERVICE --expired` for one stack, with its output appended to a log."""

    executable: str
    project_dir: str
    service: str

    def __post_init__(self) -> None:
        for name, path in (("project dir", self.project_dir), ("executable", self.executable)):
            if not PurePosixPath(path).is_absolute():
                raise UsageError(f"the {name} {path!r} must be an absolute path for a scheduled job")
        if "%" in self.command():
            raise UsageError("the scheduled command contains '%', which crontab cannot hold",
                             hint="use a project directory and executable path without '%'")

    def command(self) -> str:
        return shlex.join([self.executable, "--project-dir", self.project_dir, "--yes", "standby", "retire",
                           self.service, "--expired"])

    @property
    def log(self) -> str:
        return str(PurePosixPath(self.project_dir) / ".finaiflow" / "standby-retire.log")

    @property
    def marker(self) -> str:
        return f"{MARK} {self.service} in {self.project_dir}"

    def cron_line(self) -> str:
        return f"*/{EVERY_MINUTES} * * * * {self.command()} >>{shlex.quote(self.log)} 2>&1"

    @property
    def unit(self) -> str:
        label = f"{PurePosixPath(self.project_dir).name}-{self.service}"
        return scheduling.unit_name("standby-retire", label, f"{self.project_dir}\0{self.service}")

    def systemd_units(self) -> dict[str, str]:
        """The service and timer unit files, by file name."""
        what = f"Retire the expired warm standby of {self.service} in {self.project_dir}"
        return scheduling.timer_units(self.unit, self.command(), log=self.log,
                                      on_calendar=f"*:0/{EVERY_MINUTES}", description=what,
                                      timer_description=f"{what}, every {EVERY_MINUTES} minutes")


@dataclass(frozen=True)
class StandbySchedule:
    """The job on a target after `standby schedule`: where, how, and whether anything changed."""

    target: str
    service: str
    scheduler: str  # cron or systemd
    installed: bool
    entry: str  # the crontab line, or the timer unit's name
    changed: bool


def _scheduler(target: Target) -> scheduling.Scheduler:
    kind = scheduling.scheduler(target)
    if kind == "none":
        raise UsageError(f"{target} has neither systemd nor cron to retire the standby on time",
                         hint="install cron (apt-get install cron) and start it; deploys and rollbacks "
                              "retire an expired standby anyway")
    return kind


def install(target: Target, job: Job) -> StandbySchedule:
    """Install (or update) the job; nothing changes when it is installed as wanted."""
    kind = _scheduler(target)
    if kind == "systemd":
        changed = scheduling.install_units(target, job.systemd_units())
        return StandbySchedule(str(target), job.service, kind, True, f"{job.unit}.timer", changed)
    changed = scheduling.set_cron_entry(target, job.marker, job.cron_line())
    return StandbySchedule(str(target), job.service, kind, True, job.cron_line(), changed)


def remove(target: Target, job: Job) -> StandbySchedule:
    """Take this job out; other entries and units stay as they are."""
    kind = _scheduler(target)
    if kind == "systemd":
        changed = scheduling.remove_units(target, job.systemd_units())
    else:
        changed = scheduling.set_cron_entry(target, job.marker, None)
    return StandbySchedule(str(target), job.service, kind, False, "", changed)
