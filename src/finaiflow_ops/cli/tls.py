"""`finaiflow-ops tls issue|install|renew|schedule|inspect|check|dev-ca|dev-cert`.

Files named by options (certificates, keys, CA files, certbot's directory) are on the target,
where certbot and nginx run; the development CA is on this machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, get_args

import click
from rich.table import Table

from finaiflow_ops import tls
from finaiflow_ops.cli.options import Options, emit, pass_options, progress
from finaiflow_ops.errors import CheckFailed, UsageError
from finaiflow_ops.output import err, out
from finaiflow_ops.tls.schedule import Requested


@click.group("tls")
def tls_group() -> None:
    """TLS certificates: issue, install, renew, schedule, inspect, check, development CA."""


def acme_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the commands that run certbot or install its certificates."""
    @click.option("--server", default=None, help="ACME directory URL (default: Let's Encrypt).")
    @click.option("--staging", is_flag=True, help="Use Let's Encrypt's staging directory.")
    @click.option("--acme-dir", default=None, help="certbot's state on the target [PROJECT_DIR/letsencrypt].")
    @click.option("--ca-bundle", default=None,
                  help="CA file certbot trusts for the ACME server's own TLS (a private server).")
    @click.option("--certbot", "certbot_path", default=None, help="certbot executable on the target.")
    @click.option("--ca-file", "ca_files", multiple=True,
                  help="Extra trusted root for the chain check, on the target (repeatable).")
    @click.option("--window", default=tls.DEFAULT_RENEW_WINDOW_DAYS, type=click.IntRange(0), metavar="DAYS",
                  help="Refuse certificates with fewer days left than this (default: those in the last "
                       "third of their lifetime, when they are renewed).")
    @click.option("--ops-command", default=None, help="finaiflow-ops on the target, for the deploy hook.")
    @functools.wraps(command)
    def wrapper(*args: Any, server: str | None, staging: bool, acme_dir: str | None, ca_bundle: str | None,
                certbot_path: str | None, ca_files: tuple[str, ...], window: int | None,
                ops_command: str | None, **kwargs: Any) -> Any:
        if staging and server:
            raise UsageError("--staging and --server exclude each other")
        kwargs["acme"] = tls.AcmeOptions(
            server=tls.LETSENCRYPT_STAGING if staging else server, acme_dir=acme_dir, ca_bundle=ca_bundle,
            certbot=certbot_path, ca_files=ca_files, ops_command=ops_command, renew_window_days=window)
        return command(*args, **kwargs)
    return wrapper


@tls_group.command("issue")
@click.option("--domain", "domains", multiple=True, help="Domain to cover (repeatable) [from .env].")
@click.option("--email", default=None, help="ACME account contact [ACME_EMAIL in .env].")
@click.option("--standalone", is_flag=True,
              help="certbot answers the challenge itself: only before nginx runs (port 80 must be free).")
@click.option("--http-port", default=80, show_default=True, help="Port certbot listens on with --standalone.")
@click.option("--force-renewal", is_flag=True, help="Get a new certificate even if the current one is fine.")
@acme_options
@pass_options
def tls_issue(opts: Options, domains: tuple[str, ...], email: str | None, standalone: bool, http_port: int,
              force_renewal: bool, acme: tls.AcmeOptions) -> None:
    """Get a certificate (webroot through the running nginx, no downtime) and install it."""
    opts.confirm(f"request a certificate and make nginx serve it on {opts.target}?")
    result = tls.issue(opts.stack, domains=domains, email=email, options=acme, standalone=standalone,
                       http_port=http_port, force=force_renewal, progress=progress)
    emit(opts, result, _print_issued)


@tls_group.command("install")
@click.option("--lineage", default=None, help="certbot's lineage [ACME_DIR/config/live/DOMAIN].")
@click.option("--cert", "cert_path", default=None, help="Full chain PEM (leaf first), instead of --lineage.")
@click.option("--key", "key_path", default=None, help="Private key PEM, with --cert.")
@click.option("--domain", "domains", multiple=True, help="Domain it must cover (repeatable) [from .env].")
@acme_options
@pass_options
def tls_install(opts: Options, lineage: str | None, cert_path: str | None, key_path: str | None,
                domains: tuple[str, ...], acme: tls.AcmeOptions) -> None:
    """Validate a certificate, then install it into nginx with a graceful reload (rollback on failure)."""
    if bool(cert_path) != bool(key_path) or (cert_path and lineage):
        raise UsageError("give --cert with --key, or --lineage, not both")
    opts.confirm(f"replace the certificate nginx serves on {opts.target}?")
    stack = opts.stack
    if cert_path and key_path:
        read = functools.partial(tls.read_file, opts.target)
        result = tls.install(stack, read(cert_path, what="certificate"), read(key_path, what="key"),
                             domains=domains, renew_window_days=acme.renew_window_days,
                             ca_files=[read(f, what="CA file") for f in acme.ca_files], progress=progress)
    else:
        result = tls.install_lineage(stack, lineage or acme.lineage(stack, domains), ca_files=acme.ca_files,
                                     domains=domains, renew_window_days=acme.renew_window_days,
                                     progress=progress)
    emit(opts, result, _print_installed)


@tls_group.command("renew")
@click.option("--dry-run", is_flag=True, help="Ask the ACME server (its staging) and change nothing.")
@click.option("--force", is_flag=True, help="Renew even if not due.")
@click.option("--domain", default=None, help="The certificate to renew [DOMAIN].")
@acme_options
@pass_options
def tls_renew(opts: Options, dry_run: bool, force: bool, domain: str | None, acme: tls.AcmeOptions) -> None:
    """certbot renew (webroot, deploy hook = install); nothing happens unless it is due or --force."""
    if not dry_run:
        opts.confirm(f"renew the certificate on {opts.target} if due?")
    result = tls.renew(opts.stack, options=acme, domain=domain, dry_run=dry_run, force=force,
                       progress=progress)
    what = "dry run passed" if dry_run else ("renewed and installed" if result.renewed else "not due")
    emit(opts, result, lambda r: out.print(f"{what} ({r.seconds} s); lineage {r.lineage}"))


@tls_group.command("schedule")
@click.option("--remove", is_flag=True, help="Remove the renewal schedule.")
@click.option("--kind", type=click.Choice(get_args(Requested)), default="auto", show_default=True,
              help="auto: a systemd timer where systemd runs, cron elsewhere.")
@acme_options
@pass_options
def tls_schedule(opts: Options, remove: bool, kind: Requested, acme: tls.AcmeOptions) -> None:
    """Install (idempotently) or remove the twice-daily `tls renew` (with these options) on the target."""
    opts.confirm(f"{'remove' if remove else 'install'} the renewal schedule on {opts.target}?")
    result = tls.schedule(opts.stack, ops_command=acme.ops(opts.stack), remove=remove, extra=acme.cli_args(),
                          kind=kind)
    emit(opts, result, _print_schedule)


@tls_group.command("inspect")
@click.argument("file")
@pass_options
def tls_inspect(opts: Options, file: str) -> None:
    """Subject, names, issuer, days left, key type of a PEM certificate file (and its chain)."""
    report = tls.inspect_pem(tls.read_file(opts.target, file, what="certificate file"), source=file)
    emit(opts, report, functools.partial(_print_chain, title=file))


@tls_group.command("check")
@click.argument("url", required=False)
@click.option("--servername", default=None, help="Name to ask for (SNI, Host) when URL names an address.")
@click.option("--ca-file", default=None, help="Verify against this CA file (on this machine).")
@click.option("--dev-ca", is_flag=True, help="Verify against the development CA.")
@click.option("--insecure", is_flag=True, help="Do not verify the certificate chain.")
@click.option("--http-url", default=None, help="Plain-HTTP URL that must redirect [port 80].")
@click.option("--min-days", default=None, type=click.FloatRange(min=0),
              help="Days the certificate must still be valid [14, or a sixth of a shorter lifetime].")
@click.option("--installed/--no-installed", default=None,
              help="Compare with the certificate installed in the stack [yes when URL is omitted].")
@pass_options
def tls_check(opts: Options, url: str | None, servername: str | None, ca_file: str | None, dev_ca: bool,
              insecure: bool, http_url: str | None, min_days: float | None, installed: bool | None) -> None:
    """Check a live HTTPS endpoint (default: the stack's): TLS 1.2+ only, certificate, HSTS, redirect."""
    if dev_ca:
        ca_file = str(tls.ensure_dev_ca().cert_path)
    report = tls.check_stack_endpoint(opts.stack, url, servername=servername, http_url=http_url,
                                      installed=installed, ca_file=ca_file, verify=not insecure,
                                      min_days=min_days)
    emit(opts, report, _print_endpoint)
    if not report.ok:
        raise CheckFailed(f"{report.url} fails {len(report.problems)} TLS check(s): {report.problems[0]}",
                          problems=report.problems, hint="see the table (or --json) for every check")


@tls_group.command("dev-ca")
@pass_options
def tls_dev_ca(opts: Options) -> None:
    """The development CA's certificate file (made on first use): give it to clients as their CA."""
    ca = tls.ensure_dev_ca()
    emit(opts, ca, lambda c: out.print(str(c.cert_path)))


@tls_group.command("dev-cert")
@click.option("--domain", "domains", multiple=True, help="Domain to cover (repeatable) [from .env].")
@pass_options
def tls_dev_cert(opts: Options, domains: tuple[str, ...]) -> None:
    """Issue a staging certificate from the development CA and install it (replaces the self-signed one)."""
    opts.confirm(f"replace the certificate nginx serves on {opts.target} with a development one?")
    result = tls.install_dev_certificate(opts.stack, domains=domains, progress=progress)
    emit(opts, result, _print_dev_certificate)


def _print_issued(result: tls.IssueResult) -> None:
    _print_certificate(result.certificate, title=f"issued by {result.server} in {result.seconds} s")
    out.print(f"lineage: {result.lineage}; served by nginx: {'yes' if result.installed else 'no'}")


def _print_installed(result: tls.InstallResult) -> None:
    _print_certificate(result.certificate, title="installed" if result.changed else "already installed")
    for note in result.notes:
        err.print(f"note: {note}")


def _print_dev_certificate(result: tls.InstallResult) -> None:
    _print_certificate(result.certificate, title="development certificate installed")
    out.print(f"verify with: --ca-file {tls.ensure_dev_ca().cert_path}")


def _print_schedule(result: tls.Schedule) -> None:
    state = "installed" if result.installed else "removed"
    out.print(f"{result.kind} renewal {state}{'' if result.changed else ' (already so, nothing changed)'}: "
              f"{result.entry}")


def _print_chain(report: tls.ChainReport, *, title: str) -> None:
    _print_certificate(report.leaf, title=title)
    for i, cert in enumerate(report.chain, start=2):
        out.print(f"chain {i}: {cert.subject} (issuer {cert.issuer}, {cert.days_left} days left)")


def _print_endpoint(report: tls.EndpointReport) -> None:
    table = Table(title=f"{report.url} ({report.servername})", title_justify="left")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for f in report.findings:
        table.add_row(f.check, "[green]ok[/green]" if f.ok else "[red]FAIL[/red]", f.detail)
    out.print(table)


def _print_certificate(cert: tls.CertificateInfo, *, title: str) -> None:
    table = Table(title=title, title_justify="left", show_header=False)
    rows = (("subject", cert.subject), ("names", ", ".join(cert.sans)), ("issuer", cert.issuer),
            ("valid", f"{cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}"),
            ("days left", str(cert.days_left)),
            ("key", cert.key_type), ("sha256", cert.fingerprint))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
