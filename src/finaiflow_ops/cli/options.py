"""The global options every command shares, and the small helpers commands print with."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import click

from finaiflow_ops.errors import UsageError
from finaiflow_ops.output import err, print_json
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target


@dataclass
class Options:
    """The global options, shared by every command."""

    target_url: str
    project_dir: str
    env_file: str | None
    json: bool
    yes: bool

    @cached_property
    def target(self) -> Target:
        return Target.parse(self.target_url)

    @cached_property
    def stack(self) -> Stack:
        project_dir = self.project_dir
        if self.target.is_local:
            project_dir = str(Path(project_dir).resolve())
        return Stack(self.target, project_dir, env_file=self.env_file)

    def confirm(self, question: str) -> None:
        """Ask before changing a host; --yes answers, and is required without a terminal."""
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(f"{question.rstrip('?')}: needs confirmation", hint="pass --yes")
        if not click.confirm(question, default=False, err=True):
            raise click.Abort


pass_options = click.make_pass_decorator(Options)

R = TypeVar("R")


def emit(opts: Options, result: R, render: Callable[[R], object]) -> None:
    """Print a command's result: as JSON with --json, else for a person through `render`."""
    if opts.json:
        print_json(result)
    else:
        render(result)


_steps: list[str] = []
_invocation: list[str] = []  # the command line as typed (main() records it), for relaying it


def record_invocation(args: list[str]) -> None:
    _invocation[:] = args


def invocation() -> list[str]:
    """The command line's arguments as typed, after the program name."""
    return list(_invocation)


def progress(message: str) -> None:
    """Progress of long work, on stderr (the last step is kept for an error that cuts it short)."""
    _steps[:] = [message]
    err.print(f"[dim]…[/dim] {message}")


def last_step() -> str:
    """The last progress line printed, or ""."""
    return _steps[-1] if _steps else ""
