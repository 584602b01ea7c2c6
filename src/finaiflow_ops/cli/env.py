"""`finaiflow-ops env generate|check`: the stack's .env."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.table import Table

from finaiflow_ops import envfile
from finaiflow_ops.cli.options import Options, emit, pass_options
from finaiflow_ops.errors import CheckFailed, UsageError
from finaiflow_ops.output import out

# `env generate` reads the SMTP password from this environment variable: it is never an option.
SMTP_PASSWORD = "ALERT_SMTP_PASSWORD"  # noqa: S105 - a variable's name, not a password


@click.group()
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
@click.option("--project-name", default="finaiflow", show_default=True,
              help="The compose project name (several stacks can share one engine).")
@click.option("--prometheus-port", default=9090, show_default=True, type=click.IntRange(1, 65535),
              help="The loopback port Prometheus is published on.")
@click.option("--alertmanager-port", default=9093, show_default=True, type=click.IntRange(1, 65535),
              help="The loopback port Alertmanager is published on.")
# The --alert-* options: each sets the .env key of its name (--alert-smtp-host: ALERT_SMTP_HOST).
@click.option("--alert-webhook-url", metavar="URL",
              help="The paging webhook: critical alerts (warnings too, without --alert-warning-webhook-url).")
@click.option("--alert-warning-webhook-url", metavar="URL", help="A second webhook for warnings.")
@click.option("--alert-heartbeat-url", metavar="URL",
              help="The dead man's switch: a healthchecks-style URL the Watchdog pings.")
@click.option("--alert-smtp-host", metavar="HOST:PORT", help="E-mail the alerts through this SMTP server.")
@click.option("--alert-smtp-from", metavar="ADDRESS", help="The alert e-mails' sender.")
@click.option("--alert-smtp-to", metavar="ADDRESS", help="The alert e-mails' recipient.")
@click.option("--alert-smtp-username", metavar="USER",
              help=f"The SMTP login; its password is read from ${SMTP_PASSWORD} (never an option).")
@click.option("--force", is_flag=True, help="Replace an existing .env (its secrets are lost).")
@pass_options  # opts is positional-only: the --alert-* options arrive in **alerting
def env_generate(opts: Options, /, domain: str, extra_hosts: tuple[str, ...], bind: str, http_port: int,
                 https_port: int, api_image: str, rate_limit: int, project_name: str,
                 prometheus_port: int, alertmanager_port: int, force: bool, **alerting: str | None) -> None:
    """Write a new .env with strong generated secrets (mode 0600), on the target; never prints them.

    The --alert-* options set Alertmanager's receivers (--alert-smtp-host sets ALERT_SMTP_HOST, and
    so on), checked as `env check` does; the webhook URLs are secrets too.
    """
    receivers = envfile.alert_receivers(_receiver_settings(alerting), name=_option_of)
    local = opts.target.is_local
    path = str(Path(opts.env_file or Path(opts.project_dir) / ".env")) if local else opts.stack.env_path
    if force and opts.target.exists(path):
        opts.confirm(f"replace {path} on {opts.target} (the database and Redis passwords in it are lost)?")
    values = envfile.generate(domain=domain, extra_hosts=extra_hosts, bind=bind, http_port=http_port,
                              https_port=https_port, api_image=api_image, rate_limit_rps=rate_limit,
                              project_name=project_name, prometheus_port=prometheus_port,
                              alertmanager_port=alertmanager_port) | receivers
    written = (envfile.write(Path(path), values, force=force) if local
               else envfile.write_on(opts.target, path, values, force=force))
    where = "" if local else f" on {opts.target}"
    done = f"wrote {written}{where} (mode 0600, {len(values)} keys; secrets generated, not shown)"
    emit(opts, {"path": str(written), "keys": sorted(values)}, lambda _: out.print(done))


def _receiver_settings(alerting: dict[str, str | None]) -> dict[str, str]:
    """The .env receiver settings the --alert-* options give, and the SMTP password from the
    environment: on the command line it would land in shell history and in ps."""
    settings = {name.upper(): value for name, value in alerting.items() if value is not None}
    if "ALERT_SMTP_USERNAME" in settings:
        password = os.environ.get(SMTP_PASSWORD, "")
        if not password:
            raise UsageError(f"--alert-smtp-username needs the SMTP password in ${SMTP_PASSWORD}",
                             hint=f"export {SMTP_PASSWORD} and run it again (there is no option for it: "
                                  "it would land in shell history and ps)")
        settings[SMTP_PASSWORD] = password
    return settings


def _option_of(key: str) -> str:
    """The option that sets an ALERT_* key (the password has none: it stays its variable's name)."""
    return key if key == SMTP_PASSWORD else "--" + key.lower().replace("_", "-")


@env.command("check")
@pass_options
def env_check(opts: Options) -> None:
    """Validate the .env for production; names each failing key, never its value."""
    loaded = opts.stack.load_env() if not opts.target.is_local else envfile.load(Path(opts.stack.env_path))
    findings = envfile.check(loaded)
    path = f"{opts.stack.env_path}" + ("" if opts.target.is_local else f" on {opts.target}")
    emit(opts, {"path": path, "ok": not findings, "findings": findings},
         lambda _: _print_findings(path, findings))
    if findings:
        raise CheckFailed(f"{path} is not ready for production ({len(findings)} problem(s))",
                          problems=[f"{f.key}: {f.problem}" for f in findings],
                          hint="fix the keys named above")


def _print_findings(path: str, findings: list[envfile.Finding]) -> None:
    if not findings:
        out.print(f"{path}: ok for production")
        return
    table = Table(title=f"{path}: {len(findings)} problem(s)", title_justify="left")
    table.add_column("key")
    table.add_column("problem")
    for f in findings:
        table.add_row(f.key, f.problem)
    out.print(table)
