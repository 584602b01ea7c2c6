"""`finaiflow-ops check` and `finaiflow-ops logs`: the runbook's verification and its log commands."""

from __future__ import annotations

import click
from rich.table import Table

from finaiflow_ops import logs as logs_
from finaiflow_ops import monitoring
from finaiflow_ops.cli.options import Options, emit, pass_options
from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.output import out

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


@click.command("check")
@click.option("--url", default=None, help="The HTTPS URL nginx serves at (default: what nginx publishes).")
@click.option("--max-backup-age", default=monitoring.BACKUP_MAX_AGE_HOURS, show_default=True,
              type=click.FloatRange(min=0), help="Hours the newest verified backup may be old.")
@click.option("--min-cert-days", default=None, type=click.FloatRange(min=0),
              help="Days the served certificate must still be valid [14, or a sixth of a shorter lifetime].")
@pass_options
def check(opts: Options, url: str | None, max_backup_age: float, min_cert_days: float | None) -> None:
    """Verify the deployment: services, /health, metrics, targets, alerts, backup age, WAL archiving,
    certificate.

    Exits 1 naming every failing item; warnings are shown and do not fail.
    """
    report = monitoring.check(opts.stack, url=url, backup_max_age_hours=max_backup_age,
                              cert_min_days=min_cert_days)
    emit(opts, report, _print_check)
    if not report.ok:
        raise CheckFailed(f"check failed on {report.target}: {'; '.join(report.failing)}",
                          problems=report.failing,
                          hint="for a failing service, see `finaiflow-ops logs SERVICE --since 15m`")


def _print_check(report: monitoring.CheckReport) -> None:
    title = f"check of {report.project} on {report.target} ({report.url})"
    table = Table(title=title, title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for item in report.items:
        colour = _COLOURS[item.status]
        table.add_row(item.name, f"[{colour}]{item.status}[/{colour}]", item.detail)
    out.print(table)


def _print_lines(result: logs_.Logs) -> None:
    for line in result.lines:
        _print_line(line)


def _print_line(line: logs_.LogLine) -> None:
    out.print(line.text, markup=False, highlight=False)


@click.command("logs")
@click.argument("service", required=False)
@click.option("--since", default=None, help="Only lines newer than this: 30s, 15m, 2h, 1d, or an ISO time.")
@click.option("--tail", type=click.IntRange(min=0), default=None,
              help=f"Lines per container (default: all with --since, else the last {logs_.DEFAULT_TAIL}).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until interrupted.")
@pass_options
def logs(opts: Options, service: str | None, since: str | None, tail: int | None, follow: bool) -> None:
    """The containers' logs with their time stamps, merged in time order; secrets redacted.

    With --json: one JSON document, or one JSON object a line with --follow.
    """
    when = logs_.parse_since(since) if since else None
    if not follow:
        emit(opts, logs_.read(opts.stack, service, since=when, tail=tail), _print_lines)
        return
    try:
        for line in logs_.follow(opts.stack, service, since=when, tail=tail):
            emit(opts, line, _print_line, line=True)
    except KeyboardInterrupt:
        pass
