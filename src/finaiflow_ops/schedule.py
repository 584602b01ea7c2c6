"""A job the target runs on its own, on a schedule: a marked crontab entry, or a systemd timer.

The daily backup (backup/schedule.py), the certificate renewal (tls/schedule.py) and the warm
standby's retirement (standby_schedule.py) are such jobs; this is the mechanism they share, and
each of them renders its own entry and units.

- cron: the crontab is read with `crontab -l` and written whole with `crontab -` (which
  validates it), never edited in place. A job's entry is the line after its marker comment
  (`# finaiflow-ops ... <project dir>`), so several jobs and stacks share one crontab, an entry
  is replaced rather than added twice, and removing it leaves every other line as it was.
- systemd: a `.service` and its `.timer` in /etc/systemd/system, each written atomically and
  only when its text differs, the timer enabled and started; removing disables it first.

Installing is idempotent: each operation says whether it changed anything. Everything goes
through Target.run, so local, ssh and docker targets work alike.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from finaiflow_ops.errors import UsageError
from finaiflow_ops.target import Target

__all__ = [
    "SYSTEMD_DIR",
    "Scheduler",
    "cron_running",
    "find_block",
    "has_systemd",
    "install_units",
    "merge_block",
    "read_crontab",
    "remove_units",
    "resolve_executable",
    "scheduler",
    "set_cron_entry",
    "timer_state",
    "timer_units",
    "unit_name",
    "write_crontab",
]

Scheduler = Literal["systemd", "cron", "none"]
SYSTEMD_DIR = "/etc/systemd/system"
# Whether cron runs: Debian's cron writes its pid there; a killed cron whose parent does not reap
# it is a zombie, which `kill -0` would still find, hence its state (pgrep for other crons).
_CRON_RUNNING = (
    'pid=$(cat /run/crond.pid 2>/dev/null) '
    '&& state=$(sed -n "s/^State:[[:space:]]*\\([A-Z]\\).*/\\1/p" "/proc/$pid/status" 2>/dev/null) '
    '&& [ -n "$state" ] && [ "$state" != Z ] || pgrep -x crond >/dev/null 2>&1'
)
# The text and the path as $1 and $2, never pasted into the command line; umask: units are 0644.
_WRITE_FILE = 'umask 022 && printf "%s" "$1" >"$2.tmp" && mv -f "$2.tmp" "$2"'


def has_systemd(target: Target) -> bool:
    """Whether systemd is the target's init (what systemd itself checks)."""
    return target.exists("/run/systemd/system")


def scheduler(target: Target) -> Scheduler:
    """systemd when it is the host's init, else cron when crontab exists, else none."""
    if has_systemd(target):
        return "systemd"
    if target.run("sh", "-c", "command -v crontab", check=False).ok:
        return "cron"
    return "none"


# -- cron ---------------------------------------------------------------------------------------------

def cron_running(target: Target) -> bool:
    return target.run("sh", "-c", _CRON_RUNNING, check=False).ok


def read_crontab(target: Target, *, hint: str | None = None) -> str:
    """The user's crontab on the target ("" when there is none)."""
    result = target.run("crontab", "-l", check=False)
    if result.ok:
        return result.stdout
    if "no crontab" in result.stderr.lower():
        return ""
    raise UsageError(f"cannot read the crontab on {target}: {result.stderr.strip() or result.exit_status}",
                     hint=hint)


def write_crontab(target: Target, content: str) -> None:
    """Replace the crontab with `content`; empty means no crontab at all, as before our entry."""
    if not content.strip():
        target.run("crontab", "-r")
        return
    # Through argv, not stdin: Target.run feeds stdin on local targets only.
    target.run("sh", "-c", 'printf "%s" "$1" | crontab -', "crontab", content)


def find_block(crontab: str, marker: str) -> str:
    """The marker line and the entry after it, as they stand in `crontab` ("" when absent)."""
    lines = crontab.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == marker.strip():
            return "".join(lines[i:i + 2])
    return ""


def merge_block(crontab: str, marker: str, line: str | None) -> str:
    """`crontab` with the entry under `marker` replaced by `line` at the end, or taken out when
    `line` is None; every other line is kept as it was."""
    kept, skip = [], False
    for current in crontab.splitlines(keepends=True):
        if skip:
            skip = False  # the entry is the line after its marker
            continue
        if current.strip() == marker.strip():
            skip = True
            continue
        kept.append(current)
    rest = "".join(kept)
    if line is None:
        return rest
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return f"{rest}{marker}\n{line}\n"


def set_cron_entry(target: Target, marker: str, line: str | None, *, hint: str | None = None) -> bool:
    """Put `line` under `marker` in the target's crontab (take it out when None); True when the
    crontab changed, False when it already was as wanted (then it is not written)."""
    current = read_crontab(target, hint=hint)
    wanted = merge_block(current, marker, line)
    if wanted == current:
        return False
    write_crontab(target, wanted)
    return True


# -- systemd ------------------------------------------------------------------------------------------

def _timer(units: Iterable[str]) -> str:
    timers = [name for name in units if name.endswith(".timer")]
    if len(timers) != 1:
        raise ValueError(f"a scheduled job has exactly one .timer unit, not {timers}")
    return timers[0]


def timer_state(target: Target, timer: str) -> tuple[bool, bool]:
    """(enabled, active) of a timer unit."""
    enabled = target.run("systemctl", "is-enabled", timer, check=False).ok
    active = target.run("systemctl", "is-active", timer, check=False).ok
    return enabled, active


def install_units(target: Target, units: Mapping[str, str]) -> bool:
    """Write the unit files whose text differs, reload systemd if any did, and enable and start
    the timer unless it already is; True when anything changed."""
    changed = False
    for name, text in units.items():
        path = f"{SYSTEMD_DIR}/{name}"
        current = target.run("cat", "--", path, check=False)
        if not current.ok or current.stdout != text:
            target.run("sh", "-c", _WRITE_FILE, "write", text, path)
            changed = True
    if changed:
        target.run("systemctl", "daemon-reload")
    timer = _timer(units)
    if timer_state(target, timer) != (True, True):
        target.run("systemctl", "enable", "--now", timer)
        changed = True
    return changed


def remove_units(target: Target, units: Iterable[str]) -> bool:
    """Stop and disable the timer, remove the unit files; False when they were not there."""
    names = list(units)
    timer = _timer(names)
    if not target.exists(f"{SYSTEMD_DIR}/{timer}"):
        return False
    target.run("systemctl", "disable", "--now", timer, check=False)
    target.run("rm", "-f", *(f"{SYSTEMD_DIR}/{name}" for name in names))
    target.run("systemctl", "daemon-reload")
    return True


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


def timer_units(name: str, command: str, *, log: str, on_calendar: str, description: str,
                timer_description: str, persistent: bool = False) -> dict[str, str]:
    """A oneshot service that runs `command` with /bin/sh, its output appended to `log`, and the
    timer that starts it `on_calendar` (`persistent`: a run missed while the host was off comes at
    its start), by file name."""
    service = (
        "[Unit]\n"
        f"Description={description}\n"
        "After=docker.service\nWants=docker.service\n\n"
        "[Service]\nType=oneshot\n"
        f"ExecStart=/bin/sh -c {shlex.quote(command)}\n"
        f"StandardOutput=append:{log}\nStandardError=append:{log}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description={timer_description}\n\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar}\n"
        + ("Persistent=true\n" if persistent else "")
        + "\n[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def unit_name(job: str, label: str, key: str) -> str:
    """A systemd unit name for `job`, readable (`label`, slugged) and unique to `key` (several stacks
    may share a host): finaiflow-JOB-LABEL-<8 hex digits of key's sha256>."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") or "root"
    return f"finaiflow-{job}-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
