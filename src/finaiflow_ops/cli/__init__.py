"""`finaiflow-ops`: parses, calls one library function, prints (rich text, or --json).

Exit codes: 0 success; 1 the operation ran and failed; 2 bad usage or input; 3 the target or its
Docker engine could not be reached. The last line on stderr says what is wrong and what to do.
"""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from finaiflow_ops.cli import alert, backup, deploy, env, harden, host, monitor, stack, tls
from finaiflow_ops.cli.options import Options, accept_global_options, global_options, last_step
from finaiflow_ops.errors import CommandFailed, OpsError, TargetUnreachable
from finaiflow_ops.output import err


class _Cli(click.Group):
    """The root command. Every command added to it takes the global options after its name too.

    A connection to the target that breaks in the middle of a command (ssh dies, the network
    goes) surfaces as a broken pipe or a refused connection to the forwarded engine socket. Click
    would turn a broken pipe into a silent exit 1 (meant for `... | head`): here it is exit 3,
    naming the target and the last step reached."""

    def invoke(self, ctx: click.Context) -> object:
        import requests

        try:
            return super().invoke(ctx)
        except (BrokenPipeError, ConnectionError, requests.ConnectionError) as exc:
            where = ctx.obj.target_url if isinstance(ctx.obj, Options) else "the target"
            lost = isinstance(ctx.obj, Options) and ctx.obj.target.kind == "ssh" and ctx.obj.target.ssh_lost
            what = "was lost" if lost else f"broke in the middle of the command ({type(exc).__name__})"
            raise TargetUnreachable(
                f"the connection to {where} {what}",
                hint="run `finaiflow-ops check`, then the command again: it picks up what was left") from None

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        accept_global_options(cmd)
        super().add_command(cmd, name)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]},
             params=global_options(after_command=False),
             epilog="Exit codes: 0 success; 1 the operation ran and failed (a check, a health gate); 2 bad "
                    "usage or input; 3 the target or its Docker engine could not be reached.")
@click.version_option(package_name="finaiflow-ops")
@click.pass_context
def cli(ctx: click.Context, target_url: str, project_dir: str, env_file: str | None,
        json: bool, yes: bool) -> None:
    """Deploy and operate FinaiFlow (FastAPI behind nginx, with PostgreSQL and Redis) on Docker
    Compose or Swarm, on this machine or a server reached over SSH.

    Prepare a fresh VPS and push images to it; generate and check the .env; bring the stack up
    and check it end to end; roll out and roll back releases with zero downtime; take, verify,
    prune and restore backups; issue, install and renew TLS certificates; audit and harden the host.

    The global options below go before or after the command (`finaiflow-ops stack status --json`).
    Reads print a table, or one JSON document with --json; progress and errors go to stderr.
    """
    given = frozenset(name for name in ctx.params
                      if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT))
    ctx.obj = Options(target_url, project_dir, env_file, json, yes, given)


# One module per command group; each registers its groups here.
for _group in (stack.stack, env.env, tls.tls_group, deploy.deploy, deploy.rollback, deploy.releases,
               deploy.lock, deploy.standby, monitor.check, monitor.logs, harden.harden, backup.backup,
               backup.restore, host.host_group, host.image_group, alert.alert_group):
    cli.add_command(_group)


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
        if isinstance(exc, TargetUnreachable) and last_step():
            # Cut short on the way: say how far it got (the next command picks up from there).
            exc = TargetUnreachable(f"{exc.message} (last step reached: {last_step()})", hint=exc.hint)
        err.print(f"error: {exc.one_line()}", markup=False)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
