"""`finaiflow-ops harden audit|apply`: host and stack hardening, checked and applied by the same rules."""

from __future__ import annotations

import click
from rich.table import Table

from finaiflow_ops import hardening
from finaiflow_ops.cli.options import Options, emit, pass_options, progress
from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.hardening import ApplyReport, AuditReport, Outcome, Status
from finaiflow_ops.output import err, out

_STATUS_COLOUR = {Status.PASS: "green", Status.FAIL: "red", Status.ERROR: "red", Status.SKIP: "yellow"}
_OUTCOME_COLOUR = {Outcome.CHANGED: "cyan", Outcome.UNCHANGED: "green", Outcome.SKIPPED: "yellow",
                   Outcome.REFUSED: "red", Outcome.MANUAL: "red", Outcome.FAILED: "red"}

only_option = click.option("--only", "only", multiple=True, metavar="RULE_ID",
                           help="Only this rule (repeatable); see `harden audit` for the ids.")
logs_option = click.option("--nginx-logs", default=None, metavar="DIR",
                           help="Where nginx's logs are on the target (default: its log volume's path).")


@click.group()
def harden() -> None:
    """Host and stack hardening: audit (read only) and apply (idempotent)."""


def _context(opts: Options, nginx_logs: str | None) -> hardening.Context:
    return hardening.context(opts.target, opts.stack, nginx_log_dir=nginx_logs)


@harden.command("audit")
@only_option
@logs_option
@pass_options
def harden_audit(opts: Options, only: tuple[str, ...], nginx_logs: str | None) -> None:
    """Check every rule on the target (exit 1 when a rule is not compliant, as apply would leave it)."""
    hardening.select(only)  # an unknown id is a usage error before anything runs
    report = hardening.audit(_context(opts, nginx_logs), only=only, progress=progress)
    emit(opts, report, _print_audit)
    if not report.compliant:  # the same meaning as apply's exit 1: a rule is not compliant
        high = f" (high severity: {', '.join(report.high_failures)})" if report.high_failures else ""
        raise CheckFailed(f"not compliant: {', '.join(report.failures)}{high}",
                          hint="see the findings above; `finaiflow-ops harden apply` fixes what it can")


@harden.command("apply")
@only_option
@logs_option
@pass_options
def harden_apply(opts: Options, only: tuple[str, ...], nginx_logs: str | None) -> None:
    """Apply what differs (asks first unless --yes); a second run changes nothing."""
    rules = hardening.select(only)
    where = f"{opts.target} (this machine)" if opts.target.is_local else str(opts.target)
    opts.confirm(f"apply {len(rules)} hardening rule(s) to {where}: firewall, sshd, fail2ban, sysctl, files?")
    report = hardening.apply(_context(opts, nginx_logs), only=only, progress=progress)
    emit(opts, report, _print_apply)
    if not report.ok:
        raise CheckFailed(f"not compliant after apply: {', '.join(report.failures)}",
                          hint="see the reasons above")


def _print_audit(report: AuditReport) -> None:
    title = f"hardening audit of {report.target}" + (f" ({report.project})" if report.project else "")
    table = Table(title=title, title_justify="left")
    for column in ("rule", "severity", "status", "finding", "read from"):
        table.add_column(column)
    for f in report.findings:
        colour = _STATUS_COLOUR[f.status]
        table.add_row(f.rule, f.severity.value, f"[{colour}]{f.status.value}[/{colour}]", f.summary, f.source)
    out.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in report.counts.items() if n)
    err.print(f"{counts}; high-severity failures: {', '.join(report.high_failures) or 'none'}")


def _print_apply(report: ApplyReport) -> None:
    table = Table(title=f"hardening apply on {report.target}", title_justify="left")
    for column in ("rule", "outcome", "what", "now"):
        table.add_column(column)
    for c in report.changes:
        colour = _OUTCOME_COLOUR[c.outcome]
        what = "\n".join(c.actions) + ("\n" if c.actions and c.reason else "") + c.reason
        now = c.after.status.value if c.after else ""
        table.add_row(c.rule, f"[{colour}]{c.outcome.value}[/{colour}]", what, now)
    out.print(table)
    state = "all compliant" if report.ok else "some need attention"
    err.print(f"{len(report.changed)} rule(s) changed; {state}")
