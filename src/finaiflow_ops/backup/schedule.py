"""The runbook's daily backup on the target: a crontab entry, or a systemd timer where systemd runs.

The job is `backup create && backup prune`: prune runs only after a backup succeeded, and refuses
on its own when the newest verified backup is stale. Installing is idempotent (our entry is found
by a marker comment naming the project directory, so several stacks can share a host) and
`remove` takes out only our entry. Everything goes through Target.run, so local, ssh and docker
targets work alike; the crontab is written with `crontab -` (which validates it) and never edited
in place.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from finaiflow_ops.errors import UsageError
from finaiflow_ops.target import Target

__all__ = ["Job", "ScheduleStatus", "install", "remove", "resolve_executable", "status"]

MARK = "# finaiflow-ops backup schedule:"
SYSTEMD_DIR = "/etc/systemd/system"
_TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
# Whether cron runs: Debian's cron writes its pid there; a killed cron whose parent does not reap
# it is a zombie, which `kill -0` would still find, hence its state (pgrep for other crons).
_CRON_RUNNING = (
    'pid=$(cat /run/crond.pid 2>/dev/null) '
    '&& state=$(sed -n "s/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p" "/proc/$pid/status" 2>/dev/null) '
    '&& [ -n "$state" ] && [ "$state" != Z ] || pgrep -x crond >/dev/null 2>&1'
)


@dataclass(frozen=True)
class Job:
    """The daily job of one stack: back up, then prune, with the output appended to a log."""

    executable: str
    project_dir: str
    directory: str
    at: str = "02:00"
    keep_days: int = 30
    copy_to: str = ""  # a second directory that receives a verified copy of each backup
    notify: str = ""  # a command run when the backup or the prune fails

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
        return (f"{base} backup create {where}{copy}{hook} && "
                f"{base} backup prune {where} --keep-days {self.keep_days}{hook}")

    @property
    def log(self) -> str:
        return str(PurePosixPath(self.directory) / "schedule.log")

    def cron_block(self) -> str:
        """The two crontab lines: our marker, and the entry (cron reads a bare % as a newline)."""
        hour, minute = self.hour_minute
        line = f"{{ {self.command()}; }} >>{shlex.quote(self.log)} 2>&1".replace("%", r"\%")
        return f"{MARK} {self.project_dir}\n{minute} {hour} * * * {line}\n"

    @property
    def unit(self) -> str:
        return unit_name(self.project_dir)

    def systemd_units(self) -> dict[str, str]:
        """The service and timer unit files, by file name."""
        hour, minute = self.hour_minute
        service = (
            "[Unit]\n"
            f"Description=FinaiFlow daily backup of {self.project_dir}\n"
            "After=docker.service\nWants=docker.service\n\n"
            "[Service]\nType=oneshot\n"
            f"ExecStart=/bin/sh -c {shlex.quote(self.command())}\n"
            f"StandardOutput=append:{self.log}\nStandardError=append:{self.log}\n"
        )
        timer = (
            "[Unit]\n"
            f"Description=FinaiFlow daily backup of {self.project_dir}\n\n"
            "[Timer]\n"
            f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00\n"
            "Persistent=true\n\n"  # a host that was off at 02:00 backs up when it starts
            "[Install]\nWantedBy=timers.target\n"
        )
        return {f"{self.unit}.service": service, f"{self.unit}.timer": timer}


def unit_name(project_dir: str) -> str:
    """A systemd unit name unique to a project directory (several stacks may share a host)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", PurePosixPath(project_dir).name).strip("-") or "root"
    return f"finaiflow-backup-{slug}-{hashlib.sha256(project_dir.encode()).hexdigest()[:8]}"


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


def scheduler(target: Target) -> str:
    """systemd when it is the host's init, else cron when crontab exists, else none."""
    if target.exists("/run/systemd/system"):
        return "systemd"
    if target.run("sh", "-c", "command -v crontab", check=False).ok:
        return "cron"
    return "none"


def resolve_executable(target: Target, executable: str | None) -> str:
    """The finaiflow-ops the job runs: given, or this one (local), or the target's on its PATH."""
    if executable is None:
        if target.is_local:
            beside = Path(sys.executable).parent / "finaiflow-ops"
            executable = str(beside) if beside.exists() else ""
        if not executable:
            found = target.run("sh", "-c", "command -v finaiflow-ops", check=False)
            executable = found.stdout.strip()
    if not executable or not target.run("test", "-x", executable, check=False).ok:
        at = f" at {executable}" if executable else ""
        raise UsageError(f"finaiflow-ops is not installed on {target}{at}",
                         hint="install it there, or name it with --executable")
    return executable


# -- cron --------------------------------------------------------------------------------------------

def _crontab(target: Target) -> str:
    result = target.run("crontab", "-l", check=False)
    if result.ok:
        return result.stdout
    if "no crontab" in result.stderr:
        return ""
    raise UsageError(f"cannot read the crontab on {target}: {result.stderr.strip() or result.exit_status}")


def without_block(crontab: str, project_dir: str) -> str:
    """The crontab with our entry for `project_dir` (marker line and the line after it) taken out."""
    lines = crontab.splitlines(keepends=True)
    out, skip = [], False
    for line in lines:
        if skip:
            skip = False
            continue
        if line.rstrip("\n") == f"{MARK} {project_dir}":
            skip = True
            continue
        out.append(line)
    return "".join(out)


def _block(crontab: str, project_dir: str) -> str:
    lines = crontab.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") == f"{MARK} {project_dir}":
            return "".join(lines[i:i + 2])
    return ""


def _write_crontab(target: Target, content: str) -> None:
    if not content.strip():
        target.run("crontab", "-r")  # as it was before our entry: no crontab at all
        return
    # Through argv, not stdin: Target.run feeds stdin on local targets only.
    target.run("sh", "-c", 'printf "%s" "$1" | crontab -', "crontab", content)


# -- systemd ------------------------------------------------------------------------------------------

def _write_file(target: Target, path: str, content: str) -> None:
    script = 'umask 022 && printf "%s" "$2" >"$1.tmp" && mv "$1.tmp" "$1"'
    target.run("sh", "-c", script, "write", path, content)


def _timer_state(target: Target, unit: str) -> tuple[bool, bool]:
    enabled = target.run("systemctl", "is-enabled", f"{unit}.timer", check=False).ok
    active = target.run("systemctl", "is-active", f"{unit}.timer", check=False).ok
    return enabled, active


# -- the operations ------------------------------------------------------------------------------------

def status(target: Target, project_dir: str) -> ScheduleStatus:
    kind = scheduler(target)
    if kind == "systemd":
        unit = unit_name(project_dir)
        enabled, active = _timer_state(target, unit)
        entry = ""
        if enabled:
            timer = target.run("cat", f"{SYSTEMD_DIR}/{unit}.timer", check=False).stdout
            entry = next((ln for ln in timer.splitlines() if ln.startswith("OnCalendar=")), "")
        return ScheduleStatus(str(target), project_dir, kind, enabled, active, entry)
    if kind == "cron":
        block = _block(_crontab(target), project_dir)
        running = target.run("sh", "-c", _CRON_RUNNING, check=False).ok
        return ScheduleStatus(str(target), project_dir, kind, bool(block), running, block.strip())
    return ScheduleStatus(str(target), project_dir, kind, False, False, "")


def install(target: Target, job: Job) -> ScheduleStatus:
    """Install (or update) the job; nothing changes when it is already installed as wanted."""
    kind = scheduler(target)
    if kind == "none":
        raise UsageError(f"{target} has neither systemd nor cron to run the daily backup",
                         hint="install cron (apt-get install cron) and start it")
    changed = False
    if kind == "cron":
        current = _crontab(target)
        rest = without_block(current, job.project_dir)
        wanted = rest + ("" if not rest or rest.endswith("\n") else "\n") + job.cron_block()
        if wanted != current:
            _write_crontab(target, wanted)
            changed = True
    else:
        for name, text in job.systemd_units().items():
            path = f"{SYSTEMD_DIR}/{name}"
            if target.run("cat", path, check=False).stdout != text:
                _write_file(target, path, text)
                changed = True
        if changed:
            target.run("systemctl", "daemon-reload")
        if _timer_state(target, job.unit) != (True, True):
            target.run("systemctl", "enable", "--now", f"{job.unit}.timer")
            changed = True
    result = status(target, job.project_dir)
    return ScheduleStatus(result.target, result.project_dir, result.scheduler, result.installed,
                          result.running, result.entry, changed)


def remove(target: Target, project_dir: str) -> ScheduleStatus:
    """Take our job out; other entries and units stay as they are."""
    kind = scheduler(target)
    changed = False
    if kind == "cron":
        current = _crontab(target)
        rest = without_block(current, project_dir)
        if rest != current:
            _write_crontab(target, rest)
            changed = True
    elif kind == "systemd":
        unit = unit_name(project_dir)
        if target.exists(f"{SYSTEMD_DIR}/{unit}.timer"):
            target.run("systemctl", "disable", "--now", f"{unit}.timer", check=False)
            target.run("rm", "-f", f"{SYSTEMD_DIR}/{unit}.timer", f"{SYSTEMD_DIR}/{unit}.service")
            target.run("systemctl", "daemon-reload")
            changed = True
    result = status(target, project_dir)
    return ScheduleStatus(result.target, result.project_dir, result.scheduler, result.installed,
                          result.running, result.entry, changed)
