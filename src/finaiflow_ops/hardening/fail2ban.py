"""fail2ban: the runbook's jail `nginx-limit-req`, reading the log nginx really writes, banning
where it stops traffic to containers.

The runbook's jail reads /var/log/nginx/error.log on the host, which the nginx container never
writes, and bans in INPUT, which traffic to a published container port never crosses (Docker
DNATs it into FORWARD). Here the log path is the host path of the nginx container's log volume
(from the Docker engine), and bans go to DOCKER-USER, the chain Docker consults first in FORWARD
and never flushes. After DNAT the destination port is the container's (80/443), whatever port
the host publishes, hence `port = http,https`.

State is read from the running server (`fail2ban-client get ...`), not from the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops import polling
from finaiflow_ops.errors import CommandFailed
from finaiflow_ops.hardening.base import (
    Context,
    Operation,
    Refuse,
    Rule,
    Severity,
    Verdict,
    WriteFile,
    apt_install,
    read_file,
    run_any,
    run_many,
)

__all__ = ["CHAIN", "JAIL", "JAIL_FILE", "SETTINGS", "Fail2banRule", "render_jail"]

JAIL = "nginx-limit-req"
JAIL_FILE = "/etc/fail2ban/jail.d/finaiflow-nginx-limit-req.local"
SETTINGS = {"maxretry": "10", "findtime": "60", "bantime": "3600"}  # the runbook's values
CHAIN = "DOCKER-USER"
START_TIMEOUT = 30.0


def render_jail(logpath: str) -> str:
    settings = "".join(f"{key} = {value}\n" for key, value in SETTINGS.items())
    return (
        "# Written by finaiflow-ops harden apply.\n"
        f"[{JAIL}]\n"
        "enabled = true\n"
        f"filter = {JAIL}\n"
        "# The nginx container's error log, at its volume's path on this host.\n"
        f"logpath = {logpath}\n"
        "backend = auto\n"
        f"{settings}"
        "# Traffic to containers crosses FORWARD, where Docker consults DOCKER-USER first; after\n"
        "# Docker's DNAT the port is the container's, so http,https whatever the host publishes.\n"
        "port = http,https\n"
        "banaction = iptables-multiport\n"
        f"chain = {CHAIN}\n"
    )


@dataclass(frozen=True)
class JailState:
    installed: bool
    server_running: bool
    jail_running: bool
    settings: dict[str, str]
    logpaths: tuple[str, ...]
    chains: dict[str, str]  # action -> the chain it bans in
    expected_log: str | None
    log_exists: bool
    jail_file: str | None
    docker_user_chain: bool


def _client(ctx: Context, *args: str) -> str | None:
    result = run_any(ctx.target, "fail2ban-client", *args)
    return result.stdout.strip() if result.ok else None


def _listed(text: str | None) -> tuple[str, ...]:
    """The items of fail2ban-client's tree output ("|- a", "`- b")."""
    return tuple(line.split("- ", 1)[1].strip() for line in (text or "").splitlines()
                 if line.lstrip().startswith(("|-", "`-")))


class Fail2banRule(Rule[JailState]):
    id = "fail2ban.nginx-limit-req"
    title = "fail2ban jail nginx-limit-req on the nginx container's log, banning in DOCKER-USER"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> JailState:
        expected = f"{ctx.nginx_logs.rstrip('/')}/error.log" if ctx.nginx_logs else None
        client = ("fail2ban-client",)
        log, chain, ping, jail_file, status, *got = run_many(
            ctx.target, ("test", "-f", expected or "/nonexistent"), ("iptables", "-S", CHAIN),
            (*client, "ping"), ("cat", JAIL_FILE), (*client, "status", JAIL),
            *((*client, "get", JAIL, key) for key in (*SETTINGS, "logpath", "actions")))
        installed, running = ping.exit_status != 127, status.ok
        text = jail_file.stdout if jail_file.ok else None
        if not running:
            return JailState(installed, ping.ok, False, {}, (), {}, expected, log.ok, text, chain.ok)
        settings = {key: result.stdout.strip() for key, result in zip(SETTINGS, got, strict=False)}
        logpaths = _listed(got[-2].stdout)
        actions = [a.strip() for a in got[-1].stdout.splitlines()[1:] if a.strip()]
        chains = {action: result.stdout.strip() for action, result in zip(actions, run_many(
            ctx.target, *((*client, "get", JAIL, "action", action, "chain") for action in actions)),
            strict=True) if result.ok}
        return JailState(True, True, True, settings, logpaths, chains, expected, log.ok, text, chain.ok)

    def evaluate(self, ctx: Context, state: JailState) -> Verdict:
        source = f"fail2ban-client status/get {JAIL}"
        if not state.installed:
            return Verdict(("fail2ban is not installed",), source)
        problems = []
        if state.expected_log is None:
            problems.append("no nginx log directory known (no stack, or nginx not running): "
                            "pass --nginx-logs DIR")
        if not state.jail_running:
            server = "" if state.server_running else " (fail2ban is not)"
            problems.append(f"jail {JAIL} is not running{server}")
            return Verdict(tuple(problems), source)
        problems += [f"{key} is {state.settings.get(key)} (wanted {value})"
                     for key, value in SETTINGS.items() if state.settings.get(key) != value]
        if state.expected_log and state.expected_log not in state.logpaths:
            reads = ", ".join(state.logpaths) or "no file"
            problems.append(f"reads {reads}, not nginx's {state.expected_log}")
        if CHAIN not in state.chains.values():
            seen = ", ".join(sorted(set(state.chains.values()))) or "no iptables action"
            problems.append(f"bans go to {seen}, which traffic to containers does not cross (wanted {CHAIN})")
        shown = ", ".join(f"{k} {v}" for k, v in state.settings.items())
        return Verdict(tuple(problems), source, f"{shown}, log {', '.join(state.logpaths)}, chain {CHAIN}")

    def plan(self, ctx: Context, state: JailState) -> Sequence[Operation]:
        if state.expected_log is None:
            raise Refuse("no nginx log directory known: run against the stack (--project-dir) "
                         "or pass --nginx-logs")
        if not state.log_exists:
            raise Refuse(f"{state.expected_log} does not exist: start nginx first (fail2ban will not start a "
                         "jail without its log)")
        if not state.docker_user_chain:
            raise Refuse(f"iptables has no {CHAIN} chain: start Docker first (bans in INPUT would not stop "
                         "traffic to containers)")
        ops: list[Operation] = [] if state.installed else [apt_install("fail2ban")]
        content = render_jail(state.expected_log)
        if state.jail_file != content:
            ops.append(WriteFile(JAIL_FILE, content))
        ops.append(StartJail(reload=state.server_running))
        return ops


@dataclass(frozen=True)
class StartJail(Operation):
    """(Re)load fail2ban and wait, against a deadline, until the jail runs."""

    reload: bool

    @property
    def description(self) -> str:  # type: ignore[override]
        return "reload fail2ban" if self.reload else "start fail2ban"

    def run(self, ctx: Context) -> None:
        target = ctx.target
        if self.reload:
            run_any(target, "fail2ban-client", "reload")  # errors show in the status below
        elif ctx.systemd:
            target.run("systemctl", "enable", "--now", "fail2ban")
        else:
            run_any(target, "fail2ban-client", "start")
        for _attempt in polling.attempts(within=START_TIMEOUT, every=0.5):
            if _client(ctx, "status", JAIL) is not None:
                return
        log = read_file(target, "/var/log/fail2ban.log") or ""
        errors = [line for line in log.splitlines() if "ERROR" in line]
        raise CommandFailed(f"jail {JAIL} did not start within {START_TIMEOUT:.0f} s",
                            output_tail="\n".join(errors[-5:]),
                            hint="see /var/log/fail2ban.log on the target")

