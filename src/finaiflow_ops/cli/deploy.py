"""`finaiflow-ops deploy|rollback|releases|lock`: zero-downtime rollouts of a service."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass

import click
from rich.table import Table

from finaiflow_ops import alerting, rollout, schedule
from finaiflow_ops import releases as history
from finaiflow_ops import standby as standbys
from finaiflow_ops import standby_schedule as retire_schedule
from finaiflow_ops.backends.compose.rollout import DRAIN_TIMEOUT, HEALTH_TIMEOUT
from finaiflow_ops.cli.options import Options, emit, pass_options, progress
from finaiflow_ops.images import parse_duration
from finaiflow_ops.output import err, out
from finaiflow_ops.project import Project

_timeouts = [
    click.option("--health-timeout", default=None, type=click.FloatRange(1),
                 help="Seconds the new release has to prove it serves [compose: "
                      f"{HEALTH_TIMEOUT:.0f}, the gate of the new containers; swarm: the gate after "
                      "the engine's update, convergence then /health through nginx]."),
    click.option("--drain-timeout", default=None, type=click.FloatRange(0),
                 help="Seconds old nginx workers get to finish their requests [compose: "
                      f"{DRAIN_TIMEOUT:.0f}; refused on swarm, where the engine stops old tasks "
                      "after their stop_grace_period]."),
    click.option("--no-migrate", "no_migrate", is_flag=True,
                 help="The service has no Alembic migrations: run none, record no revision, check no "
                      "schema."),
]


def _with_timeouts(command: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_timeouts):
        command = option(command)
    return command


@click.command()
@click.argument("service")
@click.option("--image", required=True, help="The image to roll out; it must be on the target already.")
@click.option("--plan", "show_plan", is_flag=True, help="Print the steps without changing anything.")
@click.option("--replicas", type=click.IntRange(1), default=None,
              help="How many containers of the new release [as many as run now].")
@click.option("--no-backup", is_flag=True, help="Skip the pre-deploy backup.")
@click.option("--standby", "standby", default=None, metavar="DURATION",
              help="How long the previous release stays running out of nginx's upstream, for a rollback "
                   "in a second (15m, 900s; 0: off) [compose: 15m, when the host's memory holds both "
                   "releases; refused on swarm].")
@click.option("--silence", "silence", is_flag=True,
              help="Silence every alert but the Watchdog in Alertmanager during the deploy (ended after "
                   f"it; at most {alerting.DEPLOY_SILENCE_MINUTES:.0f} min if the deploy is killed).")
@_with_timeouts
@pass_options
def deploy(opts: Options, service: str, image: str, show_plan: bool, replicas: int | None, no_backup: bool,
           standby: str | None, silence: bool, health_timeout: float | None, drain_timeout: float | None,
           no_migrate: bool) -> None:
    """Rolling update of SERVICE to IMAGE, health-gated (compose: new containers beside the old, nginx
    switched, drained; swarm: the engine's rolling update, then /health through nginx)."""
    window = None if standby is None else parse_duration(standby if not standby.isdigit() else float(standby))
    if show_plan:
        steps = rollout.plan(opts.stack, service, image, replicas=replicas, backup=not no_backup,
                             migrate=not no_migrate, health_timeout=health_timeout,
                             drain_timeout=drain_timeout, standby=window)
        emit(opts, steps,
             functools.partial(_print_plan, service=service, image=image, target=str(opts.target)))
        return
    silencing = alerting.silenced(opts.stack, comment=f"finaiflow-ops deploy {service} {image}") \
        if silence else nullcontext()
    with silencing as made:
        if made is not None:
            progress(f"alerts silenced during the deploy (silence {made.id})")
        result = rollout.deploy(opts.stack, service, image, replicas=replicas, backup=not no_backup,
                                migrate=not no_migrate, health_timeout=health_timeout,
                                drain_timeout=drain_timeout, standby=window, progress=progress)
    emit(opts, result, _print_result)


def _print_plan(steps: rollout.Plan, *, service: str, image: str, target: str) -> None:
    out.print(f"deploy {service} to {image} ({steps.replicas} container(s)) on {target} would:")
    for number, step in enumerate(steps.steps, start=1):
        out.print(f"  {number:>2}. {step}", markup=False)


@click.command()
@click.argument("service")
@click.option("--to", "to", default=None,
              help="A release id (see `releases`) or an image [the previous release].")
@_with_timeouts
@pass_options
def rollback(opts: Options, service: str, to: str | None, health_timeout: float | None,
             drain_timeout: float | None, no_migrate: bool) -> None:
    """Back to the previous (or a named) release of SERVICE, through the same zero-downtime path."""
    emit(opts, rollout.rollback(opts.stack, service, to=to, confirm=opts.confirm, migrate=not no_migrate,
                                health_timeout=health_timeout, drain_timeout=drain_timeout,
                                progress=progress), _print_result)


def _print_result(result: rollout.DeployResult) -> None:
    if result.repaired:
        out.print(f"repaired first: {'; '.join(result.repaired)}", markup=False)
    before = result.previous.label if result.previous else "(none)"
    out.print(f"{result.kind} of {result.service}: {before} -> {result.release.label}", markup=False)
    out.print(f"  serving: {', '.join(result.containers)}; removed: {', '.join(result.retired) or 'none'}")
    out.print(f"  traffic switched after {result.switch_seconds:.1f} s, drained in "
              f"{result.drain_seconds:.1f} s, done in {result.total_seconds:.1f} s")
    if result.standby:
        out.print(f"  warm standby: {result.standby}", markup=False)
    if result.phases:
        out.print("  phases: " + ", ".join(f"{p.name} {p.seconds:.1f} s" for p in result.phases))


@click.command("releases")
@click.argument("service")
@pass_options
def releases(opts: Options, service: str) -> None:
    """The release history of SERVICE, the current one marked."""
    emit(opts, Releases.read(opts.stack, service),
         functools.partial(_print_releases, service=service, target=str(opts.target)))


@dataclass(frozen=True)
class Releases:
    """`releases`: the history, and the warm standby kept behind the current release (if any)."""

    service: str
    current: int | None
    releases: tuple[history.Release, ...]
    standby: standbys.Standby | None

    @classmethod
    def read(cls, stack: Project, service: str) -> Releases:
        past = history.history(stack, service)
        return cls(service, past.current, past.releases, standbys.get(stack, service))


def _print_releases(past: Releases, *, service: str, target: str) -> None:
    if not past.releases:
        out.print(f"no release of {service} recorded on {target} yet")
        return
    table = Table(title=f"{service} releases on {target}", title_justify="left")
    for column in ("", "id", "image", "kind", "revision", "backup", "deployed", "by", "note"):
        table.add_column(column)
    for r in reversed(past.releases):
        kept = past.standby is not None and past.standby.release == r.id
        table.add_row("*" if r.id == past.current else ("s" if kept else ""), str(r.id), r.image, r.kind,
                      r.revision or "-", r.backup or "-", r.deployed_at, r.deployed_by, r.note)
    out.print(table)
    out.print(f"warm standby: {past.standby.describe()}" if past.standby else "warm standby: none",
              markup=False)


@click.group()
def lock() -> None:
    """The deploy lock of the stack: who holds it; release an abandoned one."""


@lock.command("status")
@pass_options
def lock_status(opts: Options) -> None:
    """Who holds the deploy lock, since when, and whether it is abandoned."""
    emit(opts, history.lock_status(opts.stack), _print_lock)


def _print_lock(status: history.LockStatus) -> None:
    if status.lock is None:
        out.print(f"not locked ({status.path} on {status.target})")
    else:
        stale = f" [abandoned: {status.stale}]" if status.stale else ""
        out.print(f"locked by {status.lock.describe()}{stale}", markup=False)


@lock.command("release")
@pass_options
def lock_release(opts: Options) -> None:
    """Remove the deploy lock whoever holds it (after a deploy that died); --json: the lock removed."""
    status = history.lock_status(opts.stack)
    if status.lock is not None:
        opts.confirm(f"remove the deploy lock held by {status.lock.describe()}?")
        history.release_lock(opts.stack)
    emit(opts, status, _print_released)


def _print_released(status: history.LockStatus) -> None:
    err.print(f"released the lock of {status.lock.holder}" if status.lock
              else "not locked: nothing to release")


@click.group()
def standby() -> None:
    """The warm standby a deploy keeps (the previous release, out of nginx's upstream)."""


@standby.command("retire")
@click.argument("service")
@click.option("--expired", is_flag=True,
              help="Only once its window has ended (the scheduled job: a cron line every few minutes).")
@pass_options
def standby_retire(opts: Options, service: str, expired: bool) -> None:
    """Stop the warm standby of SERVICE gracefully and forget it (and repair what an interrupted
    deploy left); --json: what was done."""
    done = rollout.retire_standby(opts.stack, service, expired_only=expired, progress=progress)
    emit(opts, list(done), _print_retired)


def _print_retired(done: list[str]) -> None:
    err.print("; ".join(done) if done else "nothing to retire")


@standby.command("schedule")
@click.argument("service")
@click.option("--remove", is_flag=True, help="Take the scheduled job out.")
@click.option("--executable", default=None,
              help="The finaiflow-ops the job runs (default: this one on a local target, else the host's).")
@pass_options
def standby_schedule(opts: Options, service: str, remove: bool, executable: str | None) -> None:
    """Retire the warm standby of SERVICE on time: `standby retire SERVICE --expired` every 5 minutes
    on the target (crontab, or a systemd timer where systemd runs)."""
    job = retire_schedule.Job(schedule.resolve_executable(opts.target, executable), opts.stack.project_dir,
                               service)
    opts.confirm(f"{'remove' if remove else 'install'} `{job.command()}` every "
                 f"{retire_schedule.EVERY_MINUTES} minutes on {opts.target}?")
    done = retire_schedule.remove(opts.target, job) if remove else retire_schedule.install(opts.target, job)
    emit(opts, done, _print_standby_schedule)


def _print_standby_schedule(done: retire_schedule.StandbySchedule) -> None:
    state = "installed" if done.installed else "removed"
    out.print(f"standby retire of {done.service} on {done.target}: {state} "
              f"({done.scheduler}{', changed' if done.changed else ', already so'})")
    if done.entry:
        out.print(done.entry, markup=False)
