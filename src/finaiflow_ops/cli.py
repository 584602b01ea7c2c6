"""`finaiflow-ops`: parses, calls one library function, prints (rich text, or --json).

Exit codes: 0 success; 1 the operation ran and failed; 2 bad usage or input; 3 the target or its
Docker engine could not be reached. The last line on stderr says what is wrong and what to do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click
from rich.table import Table

from finaiflow_ops import envfile
from finaiflow_ops.errors import CheckFailed, CommandFailed, OpsError, UsageError
from finaiflow_ops.output import err, out, print_json
from finaiflow_ops.stack import Stack, StackStatus
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


def progress(message: str) -> None:
    err.print(f"[dim]…[/dim] {message}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--target", "target_url", default="local://", envvar="FINAIFLOW_TARGET", show_default=True,
              help="Where the stack runs: local://, ssh://user@host[:port], docker://container.")
@click.option("--project-dir", default=".", envvar="FINAIFLOW_PROJECT_DIR", show_default=True,
              help="The stack directory on the target (compose.yaml and .env).")
@click.option("--env-file", default=None, envvar="FINAIFLOW_ENV_FILE",
              help="The .env file (default: PROJECT_DIR/.env).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--yes", "-y", is_flag=True, help="Answer yes to confirmations (required without a terminal).")
@click.version_option(package_name="finaiflow-ops")
@click.pass_context
def cli(ctx: click.Context, target_url: str, project_dir: str, env_file: str | None,
        as_json: bool, yes: bool) -> None:
    """Deploy primitives for FinaiFlow: stack, env, and more as they land."""
    ctx.obj = Options(target_url, project_dir, env_file, as_json, yes)


# -- stack -------------------------------------------------------------------------------------------

@cli.group()
def stack() -> None:
    """The reference stack on the target: up, down, status."""


@stack.command("up")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for health.")
@pass_options
def stack_up(opts: Options, timeout: float) -> None:
    """Start the stack (migrations first) and wait until every service is healthy."""
    status = opts.stack.up(timeout=timeout, progress=progress)
    _print_status(opts, status)
    if not opts.json:
        https = [u for u in status.urls if u.startswith("https://")]
        out.print(f"serving at {https[0] if https else '(no HTTPS port published)'}")


@stack.command("down")
@click.option("--volumes", is_flag=True, help="Also delete the data volumes (database, cache, logs).")
@pass_options
def stack_down(opts: Options, volumes: bool) -> None:
    """Stop and remove the stack's containers (data volumes are kept unless --volumes)."""
    what = "stop the stack and DELETE its data volumes" if volumes else "stop the stack"
    opts.confirm(f"{what} on {opts.target}?")
    opts.stack.down(volumes=volumes)
    err.print(f"stack {opts.stack.project} stopped on {opts.target}")


@stack.command("status")
@pass_options
def stack_status(opts: Options) -> None:
    """Services, containers, images, health and published URLs (exit 1 if any is not healthy)."""
    status = opts.stack.status()
    _print_status(opts, status)
    if not status.healthy:
        sick = [s.name for s in status.services if not s.healthy]
        raise CheckFailed(f"not healthy: {', '.join(sick)}", hint="see `finaiflow-ops stack up` or the logs")


def _print_status(opts: Options, status: StackStatus) -> None:
    if opts.json:
        print_json(status)
        return
    table = Table(title=f"{status.project} on {status.target}", title_justify="left")
    for column in ("service", "container", "state", "health", "image", "ports"):
        table.add_column(column)
    for svc in status.services:
        if not svc.containers:
            table.add_row(svc.name, "-", "[red]missing[/red]", "", "", "")
        for c in svc.containers:
            colour = "green" if c.ready else "red"
            table.add_row(svc.name, c.name, f"[{colour}]{c.state}[/{colour}]", c.health, c.image,
                          ", ".join(c.ports))
    out.print(table)


# -- env -----------------------------------------------------------------------------------------------

@cli.group()
def env() -> None:
    """The stack's .env: generate (like the runbook's setup.sh) and check for production."""


@env.command("generate")
@click.option("--domain", default="staging.finaiflow.test", show_default=True, help="The primary domain.")
@click.option("--host", "extra_hosts", multiple=True, help="Another allowed host name (repeatable).")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address nginx publishes on (0.0.0.0 on a public VPS).")
@click.option("--http-port", default=80, show_default=True, type=click.IntRange(1, 65535))
@click.option("--https-port", default=443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-image", default="finaiflow/api:1.0.0", show_default=True)
@click.option("--rate-limit", default=20, show_default=True, type=click.IntRange(1),
              help="nginx requests per second per client address (a local staging stack wants more).")
@click.option("--force", is_flag=True, help="Replace an existing .env (its secrets are lost).")
@pass_options
def env_generate(opts: Options, domain: str, extra_hosts: tuple[str, ...], bind: str, http_port: int,
                 https_port: int, api_image: str, rate_limit: int, force: bool) -> None:
    """Write a new .env with strong generated secrets (mode 0600); never prints them."""
    if not opts.target.is_local:
        raise UsageError("env generate writes a local file",
                         hint="generate it here, then copy it to the target with scp (mode 0600)")
    path = Path(opts.env_file or Path(opts.project_dir) / ".env")
    if force and path.exists():
        opts.confirm(f"replace {path} (the database and Redis passwords in it are lost)?")
    values = envfile.generate(domain=domain, extra_hosts=extra_hosts, bind=bind, http_port=http_port,
                              https_port=https_port, api_image=api_image, rate_limit_rps=rate_limit)
    written = envfile.write(path, values, force=force)
    if opts.json:
        print_json({"path": str(written), "keys": sorted(values)})
    else:
        out.print(f"wrote {written} (mode 0600, {len(values)} keys; secrets generated, not shown)")


@env.command("check")
@pass_options
def env_check(opts: Options) -> None:
    """Validate the .env for production; names each failing key, never its value."""
    path = opts.env_file or str(Path(opts.project_dir) / ".env")
    if not opts.target.is_local:
        raise UsageError("env check reads a local file", hint="run it on the host that has the .env")
    findings = envfile.check(envfile.load(Path(path)))
    if opts.json:
        print_json({"path": path, "ok": not findings, "findings": findings})
    elif not findings:
        out.print(f"{path}: ok for production")
    else:
        table = Table(title=f"{path}: {len(findings)} problem(s)", title_justify="left")
        table.add_column("key")
        table.add_column("problem")
        for f in findings:
            table.add_row(f.key, f.problem)
        out.print(table)
    if findings:
        raise CheckFailed(f"{path} is not ready for production ({len(findings)} problem(s))",
                          problems=[f"{f.key}: {f.problem}" for f in findings],
                          hint="fix the keys named above")


# -- entry point ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn library errors into one clear stderr line and a meaningful exit code."""
    try:
        code = cli.main(args=argv, prog_name="finaiflow-ops", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted: nothing was changed")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except OpsError as exc:
        if isinstance(exc, CommandFailed) and exc.output_tail:
            err.print(exc.output_tail, markup=False)
        err.print(f"error: {exc.one_line()}", markup=False)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
