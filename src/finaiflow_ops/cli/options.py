"""The global options every command shares, and the small helpers commands print with.

The global options are accepted before the command (the root command's own options) and after
it, as people type them: `finaiflow-ops deploy api --image X --yes`, `finaiflow-ops stack status
--json`. Every command under the root carries them too (`accept_global_options`, applied when a
command joins the CLI); click parses them there like the command's own options, so a value that
looks like an option (`--comment --json`) and the arguments after `--` stay what they are. Given
after the command, they override what was given before it, as a repeated option does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from finaiflow_ops.errors import UsageError
from finaiflow_ops.output import err, jsonable, print_json
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
    explicit: frozenset[str] = field(default=frozenset())  # those given, not defaulted (by field name)

    @cached_property
    def target(self) -> Target:
        return Target.parse(self.target_url)

    @cached_property
    def stack(self) -> Stack:
        project_dir = self.project_dir
        if self.target.is_local:
            project_dir = str(Path(project_dir).resolve())
        return Stack(self.target, project_dir, env_file=self.env_file)

    def override(self, name: str, value: Any) -> None:
        """A global option given after the command: it replaces the one given before (or its default)."""
        setattr(self, name, value)
        self.explicit |= {name}
        for derived in ("target", "stack"):
            self.__dict__.pop(derived, None)

    def confirm(self, question: str) -> None:
        """Ask before changing a host; --yes answers, and is required without a terminal."""
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(f"{question.rstrip('?')}: needs confirmation", hint="pass --yes")
        if not click.confirm(question, default=False, err=True):
            raise click.Abort


pass_options = click.make_pass_decorator(Options)


# -- the global options, before and after the command ---------------------------------------------------

class GlobalOption(click.Option):
    """A global option given after the command's name (see the module's docstring)."""


def _given_after_command(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    opts = ctx.find_object(Options)
    if opts is None or param.name is None:
        return
    if ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        opts.override(param.name, value)


def global_options(*, after_command: bool) -> list[click.Option]:
    """The global options: the root command's (defaults, environment variables), or a command's
    (no default: only what is typed there counts, and goes into the root's Options)."""

    def option(decls: list[str], *, default: str | bool | None = None, envvar: str | None = None,
               **kwargs: Any) -> click.Option:
        if after_command:
            return GlobalOption(decls, expose_value=False, callback=_given_after_command, **kwargs)
        return click.Option(decls, default=default, envvar=envvar, show_default=isinstance(default, str),
                            **kwargs)

    return [
        option(["--target", "target_url"], default="local://", envvar="FINAIFLOW_TARGET", metavar="URL",
               help="Where the stack runs: local://, ssh://user@host[:port], docker://container."),
        option(["--project-dir"], default=".", envvar="FINAIFLOW_PROJECT_DIR", metavar="DIR",
               help="The stack directory on the target (compose.yaml and .env)."),
        option(["--env-file"], envvar="FINAIFLOW_ENV_FILE", metavar="FILE",
               help="The .env file (default: PROJECT_DIR/.env)."),
        option(["--json"], is_flag=True, default=False, help="Print one JSON document on stdout."),
        option(["--yes", "-y"], is_flag=True, default=False,
               help="Answer yes to confirmations (required without a terminal)."),
    ]


_GLOBAL_NAMES = {name for opt in global_options(after_command=True) for name in opt.opts}


def accept_global_options(command: click.Command) -> None:
    """Give `command`, and every command under it, the global options after its name."""
    if not any(isinstance(param, GlobalOption) for param in command.params):
        clash = _GLOBAL_NAMES.intersection(name for param in command.params
                                           for name in (*param.opts, *param.secondary_opts))
        if clash:
            raise ValueError(f"`{command.name}` has its own {', '.join(sorted(clash))}: a global option "
                             "means the same everywhere (read it from Options)")
        command.params.extend(global_options(after_command=True))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)


def relayed_args(ctx: click.Context) -> list[str]:
    """The command being run, rebuilt from what click parsed, to run it again elsewhere (relay):
    --json when given, the command's words, its options as --name=value (a value that looks like an
    option stays a value), its arguments after `--`. The other global options are left out: they
    describe this machine's view, and whoever runs it again gives its own."""
    chain: list[click.Context] = []
    at: click.Context | None = ctx
    while at is not None and at.parent is not None:
        chain.insert(0, at)
        at = at.parent
    opts = ctx.find_object(Options)
    args = ["--json"] if opts is not None and opts.json else []
    for level in chain:
        args.append(level.info_name or level.command.name or "")
        arguments: list[str] = []
        for param in level.command.params:
            if (isinstance(param, GlobalOption) or not param.name or param.name not in level.params
                    or level.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE):
                continue
            value = level.params[param.name]
            if isinstance(param, click.Option):
                args += _as_typed(param, value)
            else:
                arguments += [str(v) for v in (value if param.nargs != 1 else (value,))]
        if arguments:
            args += ["--", *arguments]
    return args


def _as_typed(option: click.Option, value: Any) -> list[str]:
    name = next((o for o in option.opts if o.startswith("--")), option.opts[0])
    if option.count:
        return [name] * int(value)
    if option.is_flag:
        return [option.secondary_opts[0]] if option.secondary_opts and not value else [name]
    joined = "=" if name.startswith("--") else ""  # `-xVALUE`: a short option's attached value
    return [f"{name}{joined}{v}" for v in (value if option.multiple else (value,))]


# -- printing -------------------------------------------------------------------------------------------

R = TypeVar("R")


def emit(opts: Options, result: R, render: Callable[[R], object], *, line: bool = False) -> None:
    """Print a command's result: as JSON with --json, else for a person through `render`.

    `line`: one of a stream of results (`logs --follow`): with --json, one compact JSON object a line.
    """
    if not opts.json:
        render(result)
    elif line:
        sys.stdout.write(json.dumps(jsonable(result)) + "\n")
        sys.stdout.flush()
    else:
        print_json(result)


_steps: list[str] = []


def progress(message: str) -> None:
    """Progress of long work, on stderr (the last step is kept for an error that cuts it short)."""
    _steps[:] = [message]
    err.print(f"[dim]…[/dim] {message}")


def last_step() -> str:
    """The last progress line printed, or ""."""
    return _steps[-1] if _steps else ""
