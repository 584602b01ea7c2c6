"""fail2ban: Debian's sshd jail on every host, and the runbook's jail `nginx-limit-req`, reading
the log nginx really writes, banning where it stops traffic to containers.

A host is often hardened before the stack arrives: fail2ban is installed and runs Debian's sshd
jail from the start (`fail2ban.sshd`), and the nginx jail is "not applicable yet", in the audit
and in apply alike, until nginx's log directory is known (a stack, or --nginx-logs).

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
    Command,
    Context,
    NotApplicable,
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

__all__ = ["CHAIN", "JAIL", "JAIL_FILE", "SETTINGS", "SSHD_JAIL_FILE", "Fail2banRule", "Fail2banSshdRule",
           "render_jail", "render_sshd_jail"]

JAIL = "nginx-limit-req"
JAIL_FILE = "/etc/fail2ban/jail.d/finaiflow-nginx-limit-req.local"
SETTINGS = {"maxretry": "10", "findtime": "60", "bantime": "3600"}  # the runbook's values
CHAIN = "DOCKER-USER"
START_TIMEOUT = 30.0
SSHD_JAIL = "sshd"
SSHD_JAIL_FILE = "/etc/fail2ban/jail.d/finaiflow-sshd.local"
AUTH_LOG = "/var/log/auth.log"
NO_LOG_YET = ("not applicable yet: nginx's log directory is not known (no stack on this host yet, or "
              "nginx not running); run with --project-dir once the stack runs, or pass --nginx-logs DIR")


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
    expected_log: str
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
        if not ctx.nginx_logs:  # the same verdict for audit and apply: nothing to jail yet
            raise NotApplicable(NO_LOG_YET)
        expected = f"{ctx.nginx_logs.rstrip('/')}/error.log"
        client = ("fail2ban-client",)
        log, chain, ping, jail_file, status, *got = run_many(
            ctx.target, ("test", "-f", expected), ("iptables", "-S", CHAIN),
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
        if not state.jail_running:
            server = "" if state.server_running else " (fail2ban is not)"
            problems.append(f"jail {JAIL} is not running{server}")
            return Verdict(tuple(problems), source)
        problems += [f"{key} is {state.settings.get(key)} (wanted {value})"
                     for key, value in SETTINGS.items() if state.settings.get(key) != value]
        if state.expected_log not in state.logpaths:
            reads = ", ".join(state.logpaths) or "no file"
            problems.append(f"reads {reads}, not nginx's {state.expected_log}")
        if CHAIN not in state.chains.values():
            seen = ", ".join(sorted(set(state.chains.values()))) or "no iptables action"
            problems.append(f"bans go to {seen}, which traffic to containers does not cross (wanted {CHAIN})")
        shown = ", ".join(f"{k} {v}" for k, v in state.settings.items())
        return Verdict(tuple(problems), source, f"{shown}, log {', '.join(state.logpaths)}, chain {CHAIN}")

    def plan(self, ctx: Context, state: JailState) -> Sequence[Operation]:
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
        ops.append(StartJail(JAIL))
        return ops


def render_sshd_jail(systemd: bool) -> str:
    """Debian's sshd jail, on: from the journal where systemd runs (bookworm has no rsyslog, so no
    auth.log by default), else from auth.log."""
    source = "backend = systemd\n" if systemd else f"backend = auto\nlogpath = {AUTH_LOG}\n"
    return ("# Written by finaiflow-ops harden apply: Debian's sshd jail, with its filter and defaults.\n"
            f"[{SSHD_JAIL}]\nenabled = true\n{source}")


@dataclass(frozen=True)
class SshdJailState:
    installed: bool
    server_running: bool
    jail_running: bool
    jail_file: str | None
    auth_log: bool


class Fail2banSshdRule(Rule[SshdJailState]):
    id = "fail2ban.sshd"
    title = "fail2ban installed and running Debian's sshd jail"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> SshdJailState:
        ping, status, jail_file, auth_log = run_many(
            ctx.target, ("fail2ban-client", "ping"), ("fail2ban-client", "status", SSHD_JAIL),
            ("cat", SSHD_JAIL_FILE), ("test", "-f", AUTH_LOG))
        return SshdJailState(ping.exit_status != 127, ping.ok, status.ok,
                             jail_file.stdout if jail_file.ok else None, auth_log.ok)

    def evaluate(self, ctx: Context, state: SshdJailState) -> Verdict:
        source = f"fail2ban-client ping, status {SSHD_JAIL}"
        if not state.installed:
            return Verdict(("fail2ban is not installed",), source)
        if not state.server_running:
            return Verdict(("fail2ban is not running",), source)
        if not state.jail_running:
            return Verdict((f"jail {SSHD_JAIL} is not running",), source)
        return Verdict((), source, f"jail {SSHD_JAIL} running")

    def plan(self, ctx: Context, state: SshdJailState) -> Sequence[Operation]:
        ops: list[Operation] = [] if state.installed else [apt_install("fail2ban")]
        content = render_sshd_jail(ctx.systemd)
        if state.jail_file != content:
            ops.append(WriteFile(SSHD_JAIL_FILE, content))
        if not ctx.systemd and not state.auth_log:  # fail2ban refuses to start a jail without its log
            ops.append(Command(f"create {AUTH_LOG}", ("install", "-m", "0640", "/dev/null", AUTH_LOG)))
        ops.append(StartJail(SSHD_JAIL))
        return ops


@dataclass(frozen=True)
class StartJail(Operation):
    """Start fail2ban, or reload it when it runs, and wait against a deadline until the jail runs."""

    jail: str

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"start or reload fail2ban (jail {self.jail})"

    def run(self, ctx: Context) -> None:
        target = ctx.target
        # Decided now, not when planning: installing the package may have started the server.
        if _client(ctx, "ping") is not None:
            run_any(target, "fail2ban-client", "reload")  # errors show in the status below
        elif ctx.systemd:
            target.run("systemctl", "enable", "--now", "fail2ban")
        else:
            run_any(target, "fail2ban-client", "start")
        for _attempt in polling.attempts(within=START_TIMEOUT, every=0.5):
            if _client(ctx, "status", self.jail) is not None:
                return
        log = read_file(target, "/var/log/fail2ban.log") or ""
        errors = [line for line in log.splitlines() if "ERROR" in line]
        raise CommandFailed(f"jail {self.jail} did not start within {START_TIMEOUT:.0f} s",
                            output_tail="\n".join(errors[-5:]),
                            hint="see /var/log/fail2ban.log on the target")

