"""`finaiflow-ops`: parses, calls one library function, prints (rich text, or --json).

Exit codes: 0 success; 1 the operation ran and failed; 2 bad usage or input; 3 the target or its
Docker engine could not be reached. The last line on stderr says what is wrong and what to do.
"""

from __future__ import annotations

import sys

import click

from finaiflow_ops.cli import backup, deploy, env, harden, host, monitor, stack, tls
from finaiflow_ops.cli.options import Options, last_step, record_invocation
from finaiflow_ops.errors import CommandFailed, OpsError, TargetUnreachable
from finaiflow_ops.output import err


class _Cli(click.Group):
    """A connection to the target that breaks in the middle of a command (ssh dies, the network
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


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
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


# One module per command group; each registers its groups here.
for _group in (stack.stack, env.env, tls.tls_group, deploy.deploy, deploy.rollback, deploy.releases,
               deploy.lock, monitor.check, monitor.logs, harden.harden, backup.backup, backup.restore,
               host.host_group, host.image_group):
    cli.add_command(_group)


# -- entry point ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn library errors into one clear stderr line and a meaningful exit code."""
    record_invocation(list(sys.argv[1:] if argv is None else argv))
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
