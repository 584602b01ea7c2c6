"""`finaiflow-ops backup create|verify|list|prune|schedule|physical|archive` and
`restore FILE|undo|drill`, `restore --to-time T|--latest`."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
from rich.table import Table

from finaiflow_ops import pitr, relay, releases
from finaiflow_ops import restore as restoring
from finaiflow_ops.backup import archive, encryption, offsite, pgbackrest, retention, schedule
from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.encryption import Identity
from finaiflow_ops.backup.inventory import BackupList, list_backups
from finaiflow_ops.backup.notify import notify_failure
from finaiflow_ops.cli.options import Options, emit, pass_options, progress, relayed_args
from finaiflow_ops.errors import CheckFailed, OpsError, UsageError
from finaiflow_ops.output import err, out
from finaiflow_ops.pitr import drill as pitr_drill

_DIR_HELP = "The backup directory (default: PROJECT_DIR/backups)."


def _directory(opts: Options, directory: str | None, *, asks: str = "") -> Path:
    """The backup directory on this machine: --dir, else PROJECT_DIR/backups of a local target.

    On an ssh target without --dir the command runs on the host (finaiflow_ops.relay), where its
    backups are, and this process exits with its status; `asks` is the question the command asks
    before changing something, asked here since the host has no terminal.
    """
    if directory:
        return Path(directory).resolve()
    if opts.target.kind == "ssh":
        _on_host(opts, asks=asks)
    return archive.default_directory(opts.stack)


def _on_host(opts: Options, *, asks: str = "") -> NoReturn:
    if asks:
        opts.confirm(f"{asks} (on {opts.target})")
    args = relayed_args(click.get_current_context())
    raise click.exceptions.Exit(relay.stream(opts.stack, args, yes=bool(asks) or opts.yes))


def _identity(path: Path | None) -> Identity | None:
    return Identity(str(path.resolve())).check() if path else None


_IDENTITY_HELP = ("The age identity (private key) file that decrypts an encrypted backup; it is never "
                  "printed or stored.")
_ENCRYPT_HELP = ("Encrypt to this age public key (age1...), ssh public key, or recipients file; "
                 "repeatable. Only public keys are needed here.")


_NOTIFY_HELP = ("A shell command run if this fails, with FINAIFLOW_BACKUP_ERROR (the error line) "
                "in its environment.")


@contextmanager
def _notifying(command: str | None, operation: str, directory: Path) -> Iterator[None]:
    """Run the --notify hook when the operation fails; the failure is still raised."""
    try:
        yield
    except OpsError as exc:
        if command:
            problem = notify_failure(command, error=exc.one_line(), operation=operation,
                                     directory=str(directory))
            if problem:
                err.print(f"warning: {problem}", markup=False)
        raise


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# -- backup ---------------------------------------------------------------------------------------------

@click.group()
def backup() -> None:
    """Backups proven by reading them back: create, verify, list, prune, schedule."""


@backup.command("create")
@click.option("--dir", "directory", default=None, help=_DIR_HELP)
@click.option("--database", default=None, help="The database to back up (default: POSTGRES_DB of the .env).")
@click.option("--compress", default=archive.DEFAULT_COMPRESS, show_default=True, type=click.IntRange(0, 9),
              help="zlib level (1 is 2.5x faster than pg_dump's default 6 for 2 % larger files).")
@click.option("--encrypt-to", "encrypt_to", multiple=True, help=_ENCRYPT_HELP)
@click.option("--copy-to", default=None, help="Also copy the verified backup there: a directory (another "
              "disk, a mount) or ssh://user@host[:port]/path.")
@click.option("--notify", default=None, help=_NOTIFY_HELP)
@click.option("--reason", default="manual", show_default=True, help="Why it is taken (in its manifest).")
@pass_options
def backup_create(opts: Options, directory: str | None, database: str | None, compress: int,
                  encrypt_to: tuple[str, ...], copy_to: str | None, notify: str | None, reason: str) -> None:
    """Dump the database on one snapshot, read it back in full, checksum it, write its manifest."""
    where = _directory(opts, directory)
    with _notifying(notify, "create", where):
        recipients = encryption.recipients(encrypt_to)
        destination = offsite.parse_destination(copy_to) if copy_to else None
        made = archive.create(Database.of(opts.stack, database), where, compress=compress,
                              release=archive.stack_release(opts.stack), project=opts.stack.project,
                              reason=reason, recipients=recipients, progress=progress)
        copied = offsite.copy(Path(made.path), destination, progress=progress) if destination else None
    emit(opts, made, functools.partial(_print_backup, copied=copied))


def _print_backup(made: archive.Backup, *, copied: str | None) -> None:
    if copied:
        out.print(f"copied to {copied} (read back, sha256 matches)")
    m = made.manifest
    out.print(f"{made.path}: {_mb(m.size)}, {m.rows} rows in {len(m.tables)} tables, "
              f"sha256 {m.sha256[:16]}…, dumped in {made.dump_seconds:.1f} s, "
              f"read back in {made.verify_seconds:.1f} s")


@backup.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--identity", type=click.Path(path_type=Path), default=None, help=_IDENTITY_HELP)
@pass_options
def backup_verify(opts: Options, file: Path, identity: Path | None) -> None:
    """Check FILE in full: manifest, size, checksum, a complete read, the row counts (exit 1 if not).

    An encrypted FILE is read in full only with --identity; without it, its checksum and manifest
    are checked and the output says that it was not read. On an ssh target, a FILE that is not on
    this machine is verified on the host.
    """
    if opts.target.kind == "ssh" and not file.exists():
        _on_host(opts)
    emit(opts, archive.verify(Database.of(opts.stack), file.resolve(), identity=_identity(identity),
                              progress=progress), _print_verified)


def _print_verified(result: archive.Verification) -> None:
    if not result.read_in_full:
        out.print(f"{result.path}: checksum and manifest ok (age-encrypted, {_mb(result.size)}); NOT read "
                  "back: reading it in full needs its private key, --identity FILE")
    else:
        out.print(f"{result.path}: ok ({'age-encrypted, ' if result.encrypted else ''}{result.format}, "
                  f"{_mb(result.size)}, {result.rows} rows in {len(result.tables)} tables, read back in "
                  f"{result.seconds:.1f} s)")


@backup.command("list")
@click.option("--dir", "directory", default=None, help=_DIR_HELP)
@click.option("--database", default=None, help="Only the backups of this database.")
@pass_options
def backup_list(opts: Options, directory: str | None, database: str | None) -> None:
    """The backups with their age, size and verified state; the age of the newest verified one."""
    emit(opts, list_backups(_directory(opts, directory), database=database), _print_listing)


def _print_listing(listing: BackupList) -> None:
    table = Table(title=f"backups in {listing.directory}", title_justify="left")
    for column in ("file", "age", "size", "state", "encrypted", "release"):
        table.add_column(column)
    for b in listing.backups:
        state = "[green]verified[/green]" if b.verified else f"[red]{b.state}[/red]: {b.problem}"
        table.add_row(b.name, _age(b.age_seconds), _mb(b.size), state, "age" if b.encrypted else "no",
                      b.release)
    out.print(table)
    newest = listing.newest_verified
    out.print(f"newest verified: {newest.name} ({_age(newest.age_seconds)} old)" if newest
              else "newest verified: none")


@backup.command("prune")
@click.option("--dir", "directory", default=None, help=_DIR_HELP)
@click.option("--database", default=None, help="Whose backups (default: POSTGRES_DB of the .env).")
@click.option("--keep-days", type=click.IntRange(1), default=None,
              help="Keep everything younger than this [default: 30, unless generations are given].")
@click.option("--keep-last", type=click.IntRange(1), default=3, show_default=True,
              help="The newest verified backups are never deleted.")
@click.option("--daily", type=click.IntRange(0), default=0, help="Keep the newest of the last N days.")
@click.option("--weekly", type=click.IntRange(0), default=0, help="... of each of the last N ISO weeks.")
@click.option("--monthly", type=click.IntRange(0), default=0, help="... of each of the last N months.")
@click.option("--max-age", "max_age_hours", type=click.FloatRange(min=0, min_open=True), default=26.0,
              show_default=True, help="Refuse to prune unless a verified backup is younger (hours).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--notify", default=None, help=_NOTIFY_HELP)
@pass_options
def backup_prune(opts: Options, directory: str | None, database: str | None, keep_days: int | None,
                 keep_last: int, daily: int, weekly: int, monthly: int, max_age_hours: float,
                 dry_run: bool, notify: str | None) -> None:
    """Delete backups outside the retention policy (the runbook's 30 days by default)."""
    asks = "" if dry_run else "delete backups outside the retention policy?"
    where = _directory(opts, directory, asks=asks)
    policy = retention.policy(keep_days=keep_days, keep_last=keep_last, daily=daily, weekly=weekly,
                              monthly=monthly, max_age_hours=max_age_hours)
    if not dry_run:
        opts.confirm(f"delete the backups in {where} outside the policy ({policy.describe()})?")
    with _notifying(notify, "prune", where):
        result = retention.prune(where, policy, database=retention.database_name(opts.stack.env, database),
                                 dry_run=dry_run, progress=progress)
    emit(opts, result, _print_pruned)


def _print_pruned(result: retention.PruneResult) -> None:
    dry_run = result.dry_run
    table = Table(title=f"prune {result.directory} ({result.policy}){' - dry run' if dry_run else ''}",
                  title_justify="left")
    for column in ("file", "state", "decision", "why"):
        table.add_column(column)
    for d in result.decisions:
        verb = "keep" if d.keep else ("would delete" if dry_run else "deleted")
        table.add_row(d.name, d.state, f"[{'green' if d.keep else 'red'}]{verb}[/]", d.why)
    out.print(table)
    out.print(f"{len(result.deleted)} {'to delete' if dry_run else 'deleted'} ({_mb(result.freed_bytes)}), "
              f"{len(result.kept)} kept")


@backup.command("schedule")
@click.option("--dir", "directory", default=None, help="The backup directory on the target "
              "(default: PROJECT_DIR/backups).")
@click.option("--at", default="02:00", show_default=True, help="Daily time, HH:MM, the target's local time.")
@click.option("--keep-days", type=click.IntRange(1), default=30, show_default=True,
              help="The prune that follows each backup keeps this many days.")
@click.option("--executable", default=None, help="finaiflow-ops on the target (default: found there).")
@click.option("--copy-to", default="", help="Copy each verified backup there too: an absolute directory on "
              "the target, or ssh://user@host[:port]/path.")
@click.option("--encrypt-to", "encrypt_to", multiple=True,
              help="Encrypt each backup to this age public key, or recipients file on the target "
                   "(repeatable).")
@click.option("--notify", default="", help="A shell command the job runs when the backup or prune fails.")
@click.option("--remove", is_flag=True, help="Take the daily job out.")
@click.option("--status", "show", is_flag=True, help="Only show whether it is installed (exit 1 if not).")
@pass_options
def backup_schedule(opts: Options, directory: str | None, at: str, keep_days: int, executable: str | None,
                    copy_to: str, encrypt_to: tuple[str, ...], notify: str, remove: bool, show: bool) -> None:
    """Install the daily backup and prune (crontab entry, or systemd timer) on the target."""
    target, project_dir = opts.target, opts.stack.project_dir
    if show:
        result = schedule.status(target, project_dir)
    elif remove:
        opts.confirm(f"remove the daily backup of {project_dir} from {target}?")
        result = schedule.remove(target, project_dir)
    else:
        job = schedule.daily_job(target, project_dir, directory=directory, at=at, keep_days=keep_days,
                                 executable=executable, copy_to=copy_to, encrypt_to=encrypt_to, notify=notify)
        opts.confirm(f"install the daily {at} backup of {project_dir} on {target} ({job.command()})?")
        result = schedule.install(target, job)
    emit(opts, result, functools.partial(_print_schedule, show=show))
    if show and not result.ok:
        why = "it is not installed" if not result.installed else f"{result.scheduler} is not running"
        raise CheckFailed(f"the daily backup of {project_dir} on {target} will not run: {why}",
                          hint="install it: finaiflow-ops backup schedule")


def _print_schedule(result: schedule.ScheduleStatus, *, show: bool) -> None:
    state = "installed" if result.installed else "not installed"
    change = " (changed)" if result.changed else (" (already so)" if not show else "")
    out.print(f"daily backup of {result.project_dir} on {result.target}: {state}{change}, scheduler "
              f"{result.scheduler}{'' if result.running or not result.installed else ' (NOT running)'}")
    if result.entry:
        out.print(result.entry, markup=False)


@backup.command("physical")
@click.option("--type", "kind", type=click.Choice(["auto", "full", "diff", "incr"]), default="auto",
              show_default=True, help=f"auto: full when the newest full is {pgbackrest.FULL_EVERY_DAYS} days "
              "old or there is none, else differential.")
@click.option("--retention-full", type=click.IntRange(1), default=None,
              help="Full backups to keep (default: the image's PGBACKREST_REPO1_RETENTION_FULL, 2); older "
                   "ones go with the WAL only they needed.")
@pass_options
def backup_physical(opts: Options, kind: pgbackrest.BackupKind, retention_full: int | None) -> None:
    """A pgBackRest backup of the database cluster into its repository, then pgBackRest's expire."""
    if opts.target.kind == "ssh":
        _on_host(opts)
    made = pgbackrest.Repository(opts.stack).backup(kind, retention_full=retention_full)
    emit(opts, made, _print_physical)


def _print_physical(made: pgbackrest.PhysicalBackup) -> None:
    out.print(f"pgBackRest {made.type} backup {made.label}: {_mb(made.size)} in the repository, taken in "
              f"{made.stopped - made.started:.0f} s; WAL from {made.wal_start}")


@backup.command("archive")
@pass_options
def backup_archive(opts: Options) -> None:
    """The WAL archive and physical backups: what a point-in-time restore can reach."""
    if opts.target.kind == "ssh":
        _on_host(opts)
    emit(opts, pgbackrest.Repository(opts.stack).info(), _print_archive)


def _print_archive(info: pgbackrest.RepoInfo) -> None:
    table = Table(title=f"pgBackRest repository (stanza {pgbackrest.STANZA}: {info.status})",
                  title_justify="left")
    for column in ("backup", "type", "finished", "size", "WAL from"):
        table.add_column(column)
    for b in info.backups:
        table.add_row(b.label, b.type, pgbackrest.iso(b.stopped), _mb(b.size), b.wal_start)
    out.print(table)
    newest = info.newest_archived
    out.print(f"{len(info.wal)} WAL segments archived, the newest at "
              f"{pgbackrest.iso(newest) if newest else '-'}")
    reach = info.reachable()
    out.print(f"a restore can reach: {pgbackrest.iso(reach[0])} to {pgbackrest.iso(reach[1])}" if reach
              else "a restore can reach: nothing yet (no physical backup: finaiflow-ops backup physical)")


# -- restore --------------------------------------------------------------------------------------------

class _RestoreGroup(click.Group):
    """`restore FILE` beside `restore undo` and `restore drill`: a first word that is not a
    subcommand is the file to restore (after the group's own options: `restore --yes FILE`)."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["file", *args]
        return super().resolve_command(ctx, args)


def _instant(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (2026-12-01T14:59:00Z)") from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone: add Z (UTC) or an offset (+01:00)")
    return when.astimezone(UTC)


@click.group(cls=_RestoreGroup, invoke_without_command=True)
@click.option("--to-time", "to_time", default=None, callback=_instant, metavar="ISO8601",
              help="Bring the database cluster back to this instant (point-in-time recovery).")
@click.option("--latest", is_flag=True, help="Bring it back to the last archived transaction (after the "
              "database volume is lost).")
@click.option("--before-release", "before_release", default=None, metavar="N",
              help="Bring it back to the restore point a deploy made just before its migrations (release "
                   "N of --service, as `releases` lists it).")
@click.option("--service", default="api", show_default=True, help="Whose release --before-release names.")
@pass_options
@click.pass_context
def restore(ctx: click.Context, opts: Options, to_time: datetime | None, latest: bool,
            before_release: str | None, service: str) -> None:
    """Restore a backup: `restore FILE`, `restore undo`, `restore drill [FILE]`, or the whole cluster
    to a point in time: `restore --to-time T` or `restore --latest`.

    `restore FILE` restores into a new database while the app keeps serving, checks it against the
    manifest, takes a safety backup, then swaps names in a short window; the replaced database is
    kept for `restore undo`. `--to-time`/`--latest` stop the database, keep a copy of its volume,
    restore from the pgBackRest repository and replay the archived WAL (downtime: it says how long).
    """
    given = [name for name, value in (("--to-time", to_time), ("--latest", latest),
                                      ("--before-release", before_release)) if value]
    if ctx.invoked_subcommand is not None:
        if given:
            raise click.UsageError(f"{given[0]} restores the whole cluster: no FILE or subcommand")
        return
    if len(given) != 1:
        raise click.UsageError("give FILE, or one of --to-time T, --latest, --before-release N (see --help)")
    point, just_before = "", ""
    if before_release:
        release = releases.history(opts.stack, service).find(before_release)
        if not release.restore_point:
            raise UsageError(f"release {release.label} of {service} has no restore point",
                             hint="deploys record one before their migrations since PITR came; use --to-time")
        point, to_time = release.restore_point, datetime.fromisoformat(release.restore_point_at)
        just_before = f", just before release {release.label} of {service}"
    what = "the last archived transaction" if latest else f"{to_time:%Y-%m-%dT%H:%M:%SZ}{just_before}"
    if opts.target.kind == "ssh":
        _on_host(opts, asks=f"bring the database cluster back to {what}?")
    opts.confirm(f"stop the database of {opts.stack.project} on {opts.target} and bring it back to {what}? "
                 "(a copy of its volume is kept)")
    emit(opts, pitr.restore_to(opts.stack, to_time, point=point, progress=progress), _print_pitr)


def _print_pitr(result: pitr.PitrResult) -> None:
    out.print(f"database restored to {result.target} from pgBackRest backup {result.backup}"
              f"{' (an interrupted restore, finished)' if result.resumed else ''}: the last transaction it "
              f"holds was committed at {result.last_transaction or 'an unknown time'}; {result.rows} rows in "
              f"{len(result.tables)} tables")
    out.print(f"downtime {result.downtime_seconds:.1f} s (restore and WAL replay "
              f"{result.restore_seconds:.1f} s); "
              f"api cache emptied ({result.cache_keys_flushed} keys); "
              + (f"the data it replaced is kept in the volume {result.safety_copy}" if result.safety_copy
                 else "there was no data volume to keep"))


@restore.command("file", hidden=True)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dir", "directory", default=None,
              help="Where the safety backup goes (default: PROJECT_DIR/backups).")
@click.option("--identity", type=click.Path(path_type=Path), default=None, help=_IDENTITY_HELP)
@pass_options
def restore_file(opts: Options, file: Path, directory: str | None, identity: Path | None) -> None:
    """Replace the live database with FILE (asks first unless --yes)."""
    where = _directory(opts, directory, asks=f"replace the live database with {file.name}?")
    key = _identity(identity)
    # A missing, unverified or undecryptable file is refused before asking.
    restoring.check_restorable(file.resolve(), key)
    opts.confirm(f"replace the database of {opts.stack.project} on {opts.target} with {file.name}? "
                 "(the current one is kept for `restore undo`)")
    result = restoring.restore(opts.stack, file.resolve(), directory=where, identity=key, progress=progress)
    emit(opts, result, functools.partial(_print_restored, name=file.name))


def _print_restored(result: restoring.RestoreResult, *, name: str) -> None:
    out.print(f"{result.database} restored from {name}: {result.rows} rows in "
              f"{len(result.tables)} tables match the manifest; restored in {result.restore_seconds:.1f} s, "
              f"connections refused for {result.swap_seconds:.2f} s")
    out.print(f"previous database kept as {result.previous} (restore undo); "
              f"safety backup {result.safety_backup}")


@restore.command("undo")
@pass_options
def restore_undo(opts: Options) -> None:
    """Put back the database the newest restore replaced (asks first unless --yes)."""
    opts.confirm(f"put the previous database of {opts.stack.project} on {opts.target} back?")
    emit(opts, restoring.undo(opts.stack, progress=progress), _print_undone)


def _print_undone(result: restoring.UndoResult) -> None:
    out.print(f"{result.database} is {result.restored_from} again; the replaced one is kept as "
              f"{result.set_aside}")


@restore.command("drill")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--dir", "directory", default=None, help=_DIR_HELP)
@click.option("--identity", type=click.Path(path_type=Path), default=None, help=_IDENTITY_HELP)
@click.option("--pitr", is_flag=True, help="A point-in-time drill: a random instant of the last 24 hours "
              "restored from the pgBackRest repository into a scratch container, compared with the "
              "database's heartbeat rows of that instant.")
@click.option("--at", "at", default=None, callback=_instant, metavar="ISO8601",
              help="With --pitr: this instant instead of a random one.")
@pass_options
def restore_drill(opts: Options, file: Path | None, directory: str | None, identity: Path | None,
                  pitr: bool, at: datetime | None) -> None:
    """Restore FILE (default: the newest verified backup) into a scratch database, compare, drop it;
    or, with --pitr, an instant of the last 24 hours into a scratch container."""
    if pitr or at:
        if file or identity or directory:
            raise click.UsageError("--pitr drills the pgBackRest repository: no FILE, --dir or --identity")
        if opts.target.kind == "ssh":
            _on_host(opts)
        emit(opts, pitr_drill(opts.stack, at, progress=progress), _print_pitr_drill)
        return
    # A named FILE on this machine needs no directory: its own is used.
    local_file = file is not None and (opts.target.is_local or file.exists())
    where = file.resolve().parent if file and local_file and not directory else _directory(opts, directory)
    emit(opts, restoring.drill(Database.of(opts.stack), file.resolve() if file else None, directory=where,
                               identity=_identity(identity), progress=progress), _print_drill)


def _print_pitr_drill(result: pitr.PitrDrillResult) -> None:
    out.print(f"point-in-time drill passed: {result.target} restored from pgBackRest backup {result.backup} "
              f"into a scratch container in {result.seconds:.1f} s; its {result.heartbeats} heartbeat rows "
              f"up to then (the newest at {result.last_heartbeat}) match the live database's; "
              "scratch removed")


def _print_drill(result: restoring.DrillResult) -> None:
    out.print(f"drill passed: {Path(result.file).name} restored into {result.scratch_database} in "
              f"{result.seconds:.1f} s ({result.mb_per_s:.1f} MB/s), {result.rows} rows in "
              f"{len(result.tables)} tables match the manifest; scratch database dropped")
