"""finaiflow-ops run on the target host itself, over the target's connection.

Backups of a remote target stay on it (PROJECT_DIR/backups, where the runbook keeps them and
where the daily job writes them): a dump streamed to the operator's laptop and back would cross
the network twice. So backup and restore commands for an ssh target run on the host, through the
finaiflow-ops that `host setup` installed there (the one the daily job runs too), and their
output comes back as it is printed. Paths in such a command are paths on the host.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from finaiflow_ops.errors import TargetUnreachable, UsageError
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import CommandResult

__all__ = ["command_line", "run", "stream"]

# Global options a relayed command line gets from the Stack instead (they mean this machine here).
_GLOBALS_WITH_VALUE = ("--target", "--project-dir", "--env-file")


def executable(stack: Stack) -> str:
    """The host's finaiflow-ops; a clear error naming `host setup` when it has none."""
    found = stack.target.run("sh", "-c", "command -v finaiflow-ops", check=False).stdout.strip()
    if not found:
        raise UsageError(f"finaiflow-ops is not installed on {stack.target}",
                         hint=f"install it there: finaiflow-ops --target {stack.target} host setup")
    return found


def command_line(stack: Stack, args: Sequence[str], *, yes: bool = False) -> list[str]:
    """The host's argv for `finaiflow-ops ARGS` on this stack: the global options that name this
    machine's view (--target, --project-dir, --env-file, before or after the command) replaced by
    the stack's own; `yes` answers the host's confirmation (there is no terminal there: ask here
    first). What follows `--` is arguments, kept as it is. ARGS gives option values that look like
    options as --name=value (the CLI's `relayed_args` does)."""
    kept: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            kept += [arg, *rest]
        elif arg in _GLOBALS_WITH_VALUE:
            next(rest, None)
        elif not arg.startswith(tuple(f"{name}=" for name in _GLOBALS_WITH_VALUE)):
            kept.append(arg)
    env_file = ["--env-file", stack.env_file] if stack.env_file else []
    answer = ["--yes"] if yes else []
    return [executable(stack), "--project-dir", stack.project_dir, *env_file, *answer, *kept]


def run(stack: Stack, *args: str, yes: bool = False, timeout: float | None = None) -> CommandResult:
    """`finaiflow-ops ARGS` on the host, its output captured (for the library's own callers); a
    failure is a CommandFailed with the host's last error line."""
    return stack.target.run(*command_line(stack, args, yes=yes), timeout=timeout)


def stream(stack: Stack, args: Sequence[str], *, yes: bool = False) -> int:
    """`finaiflow-ops ARGS` on the host, printing here as it prints there; its exit status."""
    argv = stack.target.command_argv(command_line(stack, args, yes=yes))
    sys.stdout.flush()
    sys.stderr.flush()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr, check=False)
    if done.returncode == 255 and stack.target.ssh_lost:
        raise TargetUnreachable(f"the SSH connection to {stack.target} was lost while finaiflow-ops ran "
                                "there",
                                hint="see what it did with the same command's list/status, then run it again")
    return done.returncode
