"""Renewal on a schedule: a systemd timer where systemd runs, a crontab entry elsewhere.

Both run `finaiflow-ops ... tls renew` on the target twice a day (Let's Encrypt's advice) at a
minute drawn from the project directory, so hosts and stacks do not all renew at once.
Installing is idempotent (the entry is recognised by its marker and replaced, never added
twice) and `remove` takes it out again, leaving the rest of the crontab as it was. The mechanism
(crontab and systemd, through Target.run) is finaiflow_ops.schedule, shared with the daily backup;
this module renders the renewal job.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from finaiflow_ops import schedule as scheduling
from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import Stack

__all__ = [
    "CRON_MARKER",
    "Kind",
    "Requested",
    "Schedule",
    "merge_crontab",
    "renew_command",
    "schedule",
    "systemd_units",
    "unit_name",
]

Kind = Literal["cron", "systemd"]
Requested = Literal["auto", "cron", "systemd"]  # auto: a systemd timer where systemd runs, cron elsewhere
CRON_MARKER = "# finaiflow-ops tls renew for "
_CRONTAB_HINT = "install cron (apt-get install cron), or use --kind systemd"


@dataclass(frozen=True)
class Schedule:
    """The renewal schedule on a target, after `tls schedule`."""

    target: str
    kind: Kind
    entry: str  # the crontab line, or the timer unit's name
    command: str
    changed: bool
    installed: bool


def renew_command(stack: Stack, *, ops_command: str, extra: Sequence[str] = ()) -> str:
    """The command the schedule runs on the target (local:// there, since it runs on it)."""
    return shlex.join([ops_command, "--target", "local://", "--project-dir", stack.project_dir,
                       "--env-file", stack.env_path, "--yes", "tls", "renew", *extra])


def _slot(project_dir: str) -> tuple[int, int]:
    digest = int(hashlib.sha256(project_dir.encode()).hexdigest(), 16)
    return digest % 60, (digest // 60) % 12  # minute, hour (and hour + 12)


def cron_line(project_dir: str, command: str, log: str) -> str:
    minute, hour = _slot(project_dir)
    # `%` ends the command in crontab syntax; none of our arguments should carry one.
    if "%" in command or "%" in log:
        raise UsageError("the renewal command contains '%', which crontab cannot hold",
                         hint="use a project directory and executable path without '%'")
    return f"{minute} {hour},{hour + 12} * * * {command} >>{shlex.quote(log)} 2>&1"


def merge_crontab(existing: str, project_dir: str, line: str | None) -> str:
    """`existing` with this project's entry replaced by `line` (or removed when None); others kept."""
    return scheduling.merge_block(existing, CRON_MARKER + project_dir, line)


def unit_name(project: str) -> str:
    return f"finaiflow-tls-renew-{re.sub(r'[^A-Za-z0-9_-]', '-', project)}"


def systemd_units(project: str, project_dir: str, command: str) -> dict[str, str]:
    """The service and timer unit files, by file name."""
    minute, hour = _slot(project_dir)
    name = unit_name(project)
    service = (
        "[Unit]\n"
        f"Description=Renew the TLS certificate of the FinaiFlow stack {project}\n"
        "Wants=network-online.target\nAfter=network-online.target docker.service\n\n"
        "[Service]\nType=oneshot\n"
        f"ExecStart=/bin/sh -c {shlex.quote(command)}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=Renew the TLS certificate of the FinaiFlow stack {project} twice a day\n\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {hour:02d},{hour + 12:02d}:{minute:02d}:00\n"
        "RandomizedDelaySec=15min\nPersistent=true\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def schedule(
    stack: Stack,
    *,
    ops_command: str,
    kind: Requested = "auto",
    remove: bool = False,
    extra: Sequence[str] = (),
    log: str | None = None,
) -> Schedule:
    """Install (or `remove`) the renewal schedule on the stack's target."""
    target = stack.target
    chosen: Kind = kind if kind != "auto" else ("systemd" if scheduling.has_systemd(target) else "cron")
    command = renew_command(stack, ops_command=ops_command, extra=extra)
    if chosen == "systemd":
        units = systemd_units(stack.project, stack.project_dir, command)
        timer = next(n for n in units if n.endswith(".timer"))
        changed = (scheduling.remove_units(target, units) if remove
                   else scheduling.install_units(target, units))
        return Schedule(str(target), "systemd", timer, command, changed, not remove)
    line = cron_line(stack.project_dir, command, log or f"{stack.project_dir}/letsencrypt-renew.log")
    changed = scheduling.set_cron_entry(target, CRON_MARKER + stack.project_dir, None if remove else line,
                                        hint=_CRONTAB_HINT)
    return Schedule(str(target), "cron", line, command, changed, not remove)
