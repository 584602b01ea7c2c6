"""`finaiflow-ops stack up|down|status`: the reference stack on the target."""

from __future__ import annotations

from dataclasses import replace

import click
from rich.table import Table

from finaiflow_ops.backends.protocol import Requested
from finaiflow_ops.backup import pgbackrest
from finaiflow_ops.cli.options import Options, emit, pass_options, progress
from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.output import err, out
from finaiflow_ops.stack import BACKENDS, StackStatus


@click.group()
def stack() -> None:
    """The reference stack on the target: up, down, status."""


@stack.command("up")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for health.")
@click.option("--staging", is_flag=True,
              help="Then ready it as a staging: development-CA certificate, first backup, daily backup job.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="compose or swarm; auto: what the target runs already, else swarm on a swarm manager.")
@pass_options
def stack_up(opts: Options, timeout: float, staging: bool, backend: Requested) -> None:
    """Start the stack (migrations first) and wait until every service is healthy; then the
    pgBackRest stanza that the database's WAL is archived into."""
    stack = replace(opts.stack, backend=backend)
    status = stack.up(timeout=timeout, progress=progress)
    if "postgres" in stack.services():
        progress("creating the pgBackRest stanza (continuous WAL archiving; docs/backups.md)")
        pgbackrest.Repository(stack).ensure_stanza()
    if staging:
        from finaiflow_ops import staging as staging_setup

        staging_setup.prepare(stack, progress=progress)
    emit(opts, status, _print_up)


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
    emit(opts, status, _print_status)
    if not status.healthy:
        sick = [s.name for s in status.services if not s.healthy]
        raise CheckFailed(f"not healthy: {', '.join(sick)}", hint="see `finaiflow-ops stack up` or the logs")


def _print_up(status: StackStatus) -> None:
    _print_status(status)
    https = [u for u in status.urls if u.startswith("https://")]
    out.print(f"serving at {https[0] if https else '(no HTTPS port published)'}")


def _print_status(status: StackStatus) -> None:
    table = Table(title=f"{status.project} on {status.target}", title_justify="left")
    for column in ("service", "container", "state", "health", "image", "ports"):
        table.add_column(column)
    standing = {name: kept for kept in status.standby for name in kept.containers}
    for svc in status.services:
        if not svc.containers:
            table.add_row(svc.name, "-", "[red]missing[/red]", "", "", "")
        for c in svc.containers:
            colour = "green" if c.ready else "red"
            role = " (standby)" if c.name in standing else ""
            table.add_row(svc.name, c.name + role, f"[{colour}]{c.state}[/{colour}]", c.health, c.image,
                          ", ".join(c.ports))
    out.print(table)
    for kept in status.standby:
        out.print(f"warm standby of {kept.service}: {kept.describe()}", markup=False)
