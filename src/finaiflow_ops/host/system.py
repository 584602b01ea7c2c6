"""The system part of a host: Docker engine, compose v2, cron, age and python3-venv, by setup.sh.

setup.sh is the one script that installs them: scripts/provision runs it on this machine, and
`run_setup` streams it to a target (`bash -s` over the target's connection), as root: directly
when the login is root, else through `sudo -n` (never a password prompt). Its `--facts` mode
asks the questions its steps ask, and changes nothing; what a run changed is the difference
between the facts before and after it, never reported by hand.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

from finaiflow_ops.errors import CommandFailed, TargetUnreachable, UsageError
from finaiflow_ops.progress import Progress
from finaiflow_ops.target import Target

__all__ = ["SCRIPT", "Login", "SystemFacts", "changes", "login", "read_facts", "run_setup"]

SCRIPT = Path(__file__).with_name("setup.sh")
_PREFIX = "[host setup] "
_SETUP_TIMEOUT = 900.0  # apt on a slow mirror, the engine's first start


@dataclass(frozen=True)
class Login:
    """Who the target's commands run as, and how they become root there."""

    user: str
    group: str
    sudo: tuple[str, ...] = ()  # ("sudo", "-n") for a user that is not root

    def as_root(self, *argv: str) -> tuple[str, ...]:
        return (*self.sudo, *argv)


def login(target: Target) -> Login:
    """The login user of `target`, and sudo when it is not root; a sudo that would ask for a
    password (or is missing) is a UsageError saying so, before anything runs."""
    user, uid, group = target.run("sh", "-c", "id -un; id -u; id -gn").stdout.split()
    if uid == "0":
        return Login(user, group)
    probe = target.run("sudo", "-n", "true", check=False)
    if probe.ok:
        return Login(user, group, ("sudo", "-n"))
    if probe.exit_status == 127:
        raise UsageError(f"{user} on {target} is not root and sudo is not installed there",
                         hint="connect as root, or install sudo on the host")
    if "password is required" in probe.stderr or "terminal is required" in probe.stderr:
        raise UsageError(f"sudo on {target} needs a password for {user}",
                         hint=f"allow {user} sudo without a password (NOPASSWD in /etc/sudoers.d/), "
                              "or connect as root")
    reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.exit_status}"
    raise UsageError(f"{user} cannot become root on {target} with sudo ({reason})",
                     hint="connect as root, or give the user sudo rights")


@dataclass(frozen=True)
class SystemFacts:
    """What setup.sh --facts reports: a version ("" when absent) or whether something holds."""

    docker_installed: str = ""  # dockerd's version
    docker_running: str = ""  # the engine's version, when it answers
    compose: str = ""  # `docker compose version --short`
    cron_installed: bool = False
    cron_running: bool = False
    age: str = ""
    python_venv: bool = False

    @classmethod
    def parse(cls, text: str) -> SystemFacts:
        """Read `name=value` lines; unknown names are ignored, missing ones keep their default."""
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        kwargs: dict[str, str | bool] = {}
        for f in fields(cls):
            if f.name in values:
                raw = values[f.name].strip()
                kwargs[f.name] = raw == "yes" if f.type == "bool" else raw
        return cls(**kwargs)  # type: ignore[arg-type]


# A fact that was missing before setup.sh ran and is there after: what the run did ({} its value).
_CHANGES = (
    ("docker_installed", "installed the Docker engine {}"), ("docker_running", "started the Docker engine"),
    ("compose", "installed compose v2 {}"), ("cron_installed", "installed cron"),
    ("cron_running", "started cron"), ("age", "installed age {}"), ("python_venv", "installed python3-venv"),
)


def changes(before: SystemFacts, after: SystemFacts) -> list[str]:
    """What a run of setup.sh changed, from the facts before and after it."""
    return [what.format(getattr(after, fact)) for fact, what in _CHANGES
            if not getattr(before, fact) and getattr(after, fact)]


def read_facts(target: Target, who: Login) -> SystemFacts:
    return SystemFacts.parse(_stream(target, who, ["--facts"], progress=None))


def run_setup(target: Target, who: Login, *, progress: Progress | None = None) -> None:
    """Install and start what is missing (setup.sh --python-venv); its progress lines go to
    `progress` as they come."""
    _stream(target, who, ["--python-venv"], progress=progress)


def _stream(target: Target, who: Login, args: Sequence[str], *, progress: Progress | None) -> str:
    """Run setup.sh on the target with ARGS, its text on standard input (`bash -s`); return its
    standard output. Its `[host setup]` lines are progress; the rest of its stderr is kept for an
    error."""
    argv = target.command_argv(who.as_root("bash", "-s", "--", *args))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    stdout, source = bytearray(), proc.stdout
    readers = [threading.Thread(target=_read_stderr, args=(proc.stderr, lines, progress), daemon=True),
               threading.Thread(target=lambda: stdout.extend(source.read()), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        proc.stdin.write(SCRIPT.read_bytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the other side ended first: its exit status and stderr below say why
    try:
        proc.wait(timeout=_SETUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise CommandFailed(f"setup.sh on {target} did not finish within {_SETUP_TIMEOUT:.0f} s",
                            output_tail="\n".join(lines[-20:]),
                            hint="see /var/log/dockerd.log and apt's state on the host") from None
    for reader in readers:
        reader.join()
    if proc.returncode == 0:
        return stdout.decode(errors="replace")
    stderr = "\n".join(lines)
    if target.kind == "ssh" and proc.returncode == 255:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "connection failed"
        raise TargetUnreachable(f"cannot reach {target}: {last}",
                                hint="check the host, port and that your SSH key is accepted")
    # The script's own error line is the message; what apt or dpkg printed is shown above it.
    errors = [ln.split("error: ", 1)[1] for ln in lines if ln.startswith(f"{_PREFIX}error: ")]
    others = [ln for ln in lines if not ln.startswith(_PREFIX)]
    why = errors[-1] if errors else f"exit {proc.returncode}"
    raise CommandFailed(f"setting up {target} failed: {why}", argv=argv, exit_status=proc.returncode,
                        output_tail="\n".join(others[-20:]),
                        hint="fix that on the host, then run host setup again (it does only what is missing)")


def _read_stderr(stream: IO[bytes], lines: list[str], progress: Progress | None) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        if progress and line.startswith(_PREFIX) and not line.startswith(f"{_PREFIX}error: "):
            progress(line[len(_PREFIX):])
