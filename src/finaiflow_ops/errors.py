"""The errors finaiflow_ops raises, all under one root.

    OpsError                       root; carries a one-line message and a hint (what to do)
    ├── UsageError                 bad input: missing file, bad option, invalid value   (exit 2)
    │   └── EnvFileError           a .env that is missing, unreadable or malformed
    ├── TargetUnreachable          the target host or its Docker engine cannot be reached (exit 3)
    ├── CommandFailed              a command on the target exited non-zero              (exit 1)
    ├── CheckFailed                a check ran and found problems                      (exit 1)
    └── HealthTimeout              a service did not become healthy before its deadline (exit 1)

Messages never contain secret values: callers name keys, files and services, never contents.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CheckFailed",
    "CommandFailed",
    "EnvFileError",
    "HealthTimeout",
    "OpsError",
    "TargetUnreachable",
    "UsageError",
]


class OpsError(Exception):
    """Root of every error this library raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint as a single line, for the last line on stderr."""
        text = " ".join(self.message.split())
        return f"{text}: {self.hint}" if self.hint else text


class UsageError(OpsError):
    """Bad usage or input: a missing file, a bad option, an invalid value."""

    exit_code = 2


class EnvFileError(UsageError):
    """A .env file that is missing, unreadable or malformed."""


class TargetUnreachable(OpsError):
    """The target host, or the Docker engine that runs the stack, cannot be reached."""

    exit_code = 3


class CommandFailed(OpsError):
    """A command on the target exited non-zero."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        exit_status: int | None = None,
        output_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.output_tail = output_tail


class CheckFailed(OpsError):
    """A check ran and found problems; `problems` lists them, one line each."""

    def __init__(self, message: str, *, problems: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = tuple(problems)


class HealthTimeout(OpsError):
    """A service or container did not become healthy before its deadline."""
