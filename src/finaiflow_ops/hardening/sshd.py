"""sshd: the effective configuration (`sshd -T`), its files' owner and mode.

Settings are applied in one drop-in, /etc/ssh/sshd_config.d/10-finaiflow.conf. sshd keeps the
FIRST value it reads for a keyword and Debian's sshd_config includes sshd_config.d/*.conf at its
top, so the drop-in sorts early: a cloud image's 50-cloud-init.conf ("PasswordAuthentication yes")
would otherwise win. Every apply is validated with `sshd -t`, checked against the current session
(`sshd -T -C user=...`: the key-based login that runs this must stay possible) before sshd is
reloaded, and undone when either check fails.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from finaiflow_ops import polling
from finaiflow_ops.errors import CheckFailed, TargetUnreachable
from finaiflow_ops.hardening.base import (
    WITH_SBIN,
    Command,
    Context,
    NotApplicable,
    Operation,
    Refuse,
    Rule,
    Severity,
    Verdict,
    WriteFile,
    mode_text,
    read_file,
    run_any,
    run_optional,
    wait_reachable,
)
from finaiflow_ops.target import CommandResult, Target

__all__ = ["DROP_IN", "SshAuthRule", "SshConfigFilesRule", "SshLimitsRule", "effective_config",
           "ssh_ports"]

DROP_IN = "/etc/ssh/sshd_config.d/10-finaiflow.conf"
SSHD = (*WITH_SBIN, "sshd")
MAIN_CONFIG = "/etc/ssh/sshd_config"
CONFIG_DIR = "/etc/ssh/sshd_config.d"
_HEADER = "# Written by finaiflow-ops harden apply; sshd keeps the first value it reads.\n"

# keyword (as `sshd -T` prints it) -> (spelling in a config file, value to write, values accepted)
Wanted = Mapping[str, tuple[str, str, frozenset[str]]]
AUTH: Wanted = {
    "permitrootlogin": ("PermitRootLogin", "prohibit-password",
                        frozenset({"prohibit-password", "without-password", "no", "forced-commands-only"})),
    "passwordauthentication": ("PasswordAuthentication", "no", frozenset({"no"})),
    "kbdinteractiveauthentication": ("KbdInteractiveAuthentication", "no", frozenset({"no"})),
    "permitemptypasswords": ("PermitEmptyPasswords", "no", frozenset({"no"})),
}
MAX_AUTH_TRIES = 4
CLIENT_ALIVE_INTERVAL = 300
LIMITS: Wanted = {
    "maxauthtries": ("MaxAuthTries", "3", frozenset(str(n) for n in range(1, MAX_AUTH_TRIES + 1))),
    "allowtcpforwarding": ("AllowTcpForwarding", "no", frozenset({"no"})),
    "x11forwarding": ("X11Forwarding", "no", frozenset({"no"})),
    "allowagentforwarding": ("AllowAgentForwarding", "no", frozenset({"no"})),
    # Lynis's SSH-7408: dead sessions found by sshd's own encrypted probes (not spoofable TCP
    # keepalives), every login's key fingerprint logged, no compression (CRIME-like oracles).
    "clientaliveinterval": ("ClientAliveInterval", str(CLIENT_ALIVE_INTERVAL),
                            frozenset(str(n) for n in range(1, CLIENT_ALIVE_INTERVAL + 1))),
    "clientalivecountmax": ("ClientAliveCountMax", "2", frozenset({"1", "2"})),
    "tcpkeepalive": ("TCPKeepAlive", "no", frozenset({"no"})),
    "loglevel": ("LogLevel", "VERBOSE", frozenset({"VERBOSE"})),
    "compression": ("Compression", "no", frozenset({"no"})),
}
_SPELLING = {key: spelled for wanted in (AUTH, LIMITS) for key, (spelled, _, _) in wanted.items()}


def parse_effective(text: str) -> dict[str, list[str]]:
    """`sshd -T` output: keyword (lower case) -> its values (several for port, listenaddress, ...)."""
    config: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            config.setdefault(key.lower(), []).append(value.strip())
    return config


def effective_config(target: Target, *criteria: str) -> dict[str, list[str]] | None:
    """sshd's effective configuration on the target (None when openssh-server is not installed)."""
    result = run_optional(target, *SSHD, "-T", *(("-C", ",".join(criteria)) if criteria else ()))
    return None if result is None else effective_from(result)


def effective_from(result: CommandResult) -> dict[str, list[str]] | None:
    """`sshd -T`'s result read (None: sshd is not installed)."""
    if result.exit_status == 127:
        return None
    if not result.ok:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise CheckFailed(f"`sshd -T` failed: {first}", hint="run as root; check `sshd -t`")
    return parse_effective(result.stdout)


def mismatches(config: Mapping[str, list[str]], wanted: Wanted) -> dict[str, str]:
    """keyword -> the value seen, for every wanted keyword whose effective value is not accepted."""
    bad = {}
    for key, (_, _, accepted) in wanted.items():
        seen = (config.get(key) or ["(unset)"])[0]
        if seen not in accepted:
            bad[key] = seen
    return bad


def parse_drop_in(text: str) -> dict[str, str]:
    """A drop-in written by us: keyword (lower case) -> its whole line."""
    lines = {}
    for line in text.splitlines():
        key = line.strip().split(" ", 1)[0]
        if key and not key.startswith("#"):
            lines[key.lower()] = line.strip()
    return lines


def render_drop_in(current: Mapping[str, str], fix: Mapping[str, str],
                   spelling: Mapping[str, str] | None = None) -> str:
    """The drop-in with `fix` (keyword -> value) merged into what it already holds, in a stable order."""
    merged = dict(current)
    spelled = {**_SPELLING, **(spelling or {})}
    for key, value in fix.items():
        merged[key] = f"{spelled.get(key, key)} {value}"
    return _HEADER + "".join(f"{merged[key]}\n" for key in sorted(merged))


@dataclass(frozen=True)
class SshdState:
    config: dict[str, list[str]]
    bad: dict[str, str]


class _EffectiveSettingsRule(Rule[SshdState]):
    wanted: Wanted

    def facts(self, ctx: Context) -> SshdState:
        config = effective_config(ctx.target)
        if config is None:
            raise NotApplicable("openssh-server is not installed")
        return SshdState(config, mismatches(config, self.wanted))

    def evaluate(self, ctx: Context, state: SshdState) -> Verdict:
        problems = [f"{_SPELLING[k]} is {v} (wanted {self.wanted[k][1]})" for k, v in state.bad.items()]
        shown = ", ".join(f"{_SPELLING[k]} {state.config.get(k, ['?'])[0]}" for k in self.wanted)
        return Verdict(tuple(problems), "sshd -T", shown)

    def plan(self, ctx: Context, state: SshdState) -> Sequence[Operation]:
        return [SshdDropIn({key: self.wanted[key][1] for key in state.bad})]


class SshAuthRule(_EffectiveSettingsRule):
    id = "ssh.auth"
    title = "sshd: keys only (no password, keyboard-interactive or root password login)"
    severity = Severity.HIGH
    wanted = AUTH


class SshLimitsRule(_EffectiveSettingsRule):
    id = "ssh.limits"
    title = (f"sshd: at most {MAX_AUTH_TRIES} auth tries, no TCP/agent/X11 forwarding, dead sessions ended, "
             "verbose log, no compression")
    severity = Severity.MEDIUM
    wanted = LIMITS


@dataclass(frozen=True)
class SshdDropIn(Operation):
    """Merge settings into the drop-in, validate, make sure this session survives, reload sshd."""

    fix: Mapping[str, str]
    spelling: Mapping[str, str] | None = None  # keyword -> its spelling, for keywords of other rules

    @property
    def description(self) -> str:  # type: ignore[override]
        spelled = {**_SPELLING, **(self.spelling or {})}
        settings = ", ".join(f"{spelled.get(k, k)} {v}" for k, v in self.fix.items())
        return (f"set {settings} in {DROP_IN}; " if settings else "") + "sshd -t; reload sshd; log in anew"

    def run(self, ctx: Context) -> None:
        target = ctx.target
        before = read_file(target, DROP_IN)
        WriteFile(DROP_IN, render_drop_in(parse_drop_in(before or ""), self.fix, self.spelling)).run(ctx)

        def undo() -> None:
            if before is None:
                target.run("rm", "-f", DROP_IN)
            else:
                WriteFile(DROP_IN, before).run(ctx)

        validated = run_any(target, *SSHD, "-t")
        if not validated.ok:
            undo()
            first = (validated.stderr.strip().splitlines() or ["invalid configuration"])[0]
            raise CheckFailed(f"sshd -t rejected the new configuration ({first}); {DROP_IN} restored")
        lockout = _would_lock_out(ctx)
        if lockout:
            undo()
            raise Refuse(f"{lockout}; {DROP_IN} restored, sshd not reloaded")
        _reload_sshd(ctx)
        refused = _new_login_fails(ctx)
        if refused:  # this session is still open (sshd's reload keeps it): undo through it
            undo()
            _reload_sshd(ctx)
            raise Refuse(f"a new SSH login with the new settings failed ({refused}); {DROP_IN} restored "
                         "and sshd reloaded with the previous settings")


def _new_login_fails(ctx: Context) -> str:
    """Log in anew, as the next session will, while this one stays open: why it failed ('' if not).

    The target's shared connection was made under the old settings and survives the reload, so it
    proves nothing about the next login; a second connection of its own negotiates the new
    algorithms and authenticates under the new rules."""
    if ctx.target.kind != "ssh":
        return ""
    why = ""
    # sshd re-executes itself on reload: a connection in that instant is reset or refused, which
    # says nothing about the new settings; a refused key or algorithm does not change on retry.
    for _ in polling.attempts(within=10, every=1):
        probe = Target.parse(ctx.target.url)
        try:
            probe.run("true", timeout=30)
            return ""
        except TargetUnreachable as exc:
            why = exc.message
            if not any(word in why for word in _TRANSIENT):
                return why
        finally:
            probe.close()
    return why


_TRANSIENT = ("Connection reset", "Connection refused", "Connection closed", "kex_exchange_identification")


def _would_lock_out(ctx: Context) -> str:
    """Why the current user could no longer log in with a key under the new config ('' if they can)."""
    session = ctx.session
    if not session.client:
        return ""  # not an SSH session: nothing to cut
    addr = session.client
    config = effective_config(ctx.target, f"user={session.user}", f"host={addr}", f"addr={addr}") or {}
    methods = (config.get("authenticationmethods") or ["any"])[0]
    allow_users = [u for line in config.get("allowusers", []) for u in line.split()]
    if (config.get("pubkeyauthentication") or ["yes"])[0] != "yes":
        return "public key authentication would be off for this session"
    if session.user == "root" and (config.get("permitrootlogin") or ["no"])[0] == "no":
        return "root logs in for this session and PermitRootLogin would be no"
    if methods != "any" and "publickey" not in methods:
        return f"AuthenticationMethods {methods} would not accept this session's key"
    if allow_users and not any(fnmatch.fnmatchcase(session.user, u.split("@")[0]) for u in allow_users):
        return f"AllowUsers would not include {session.user}"
    return ""


def _reload_sshd(ctx: Context) -> None:
    target = ctx.target
    if ctx.systemd:
        target.run("sh", "-c", "systemctl reload ssh 2>/dev/null || systemctl reload sshd")
    elif target.run("test", "-s", "/run/sshd.pid", check=False).ok:
        target.run("sh", "-c", 'kill -HUP "$(cat /run/sshd.pid)"')
    else:
        return  # sshd is not running: it reads the drop-in when it starts
    # sshd re-executes itself on a reload: new connections are refused for a moment.
    wait_reachable(target)


# -- config file owner and mode --------------------------------------------------------------------

@dataclass(frozen=True)
class FileMode:
    path: str
    user: str
    group: str
    mode: int

    @property
    def wanted_mode(self) -> int:
        return self.mode & 0o644  # 0600 or 0644: never writable or executable by others

    @property
    def ok(self) -> bool:
        return self.user == "root" and self.group == "root" and self.mode == self.wanted_mode


class SshConfigFilesRule(Rule[list[FileMode]]):
    id = "ssh.config-files"
    title = "sshd configuration files owned by root, mode 0600 or 0644"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> list[FileMode]:
        found = ctx.target.run("find", MAIN_CONFIG, CONFIG_DIR, "-maxdepth", "1", "-type", "f",
                               "-printf", "%u %g %m %p\\n", check=False)
        files = []
        for line in found.stdout.splitlines():
            user, group, mode, path = line.split(" ", 3)
            files.append(FileMode(path, user, group, int(mode, 8)))
        if not any(f.path == MAIN_CONFIG for f in files):
            raise NotApplicable("openssh-server is not installed")
        return files

    def evaluate(self, ctx: Context, state: list[FileMode]) -> Verdict:
        problems = [f"{f.path} is {f.user}:{f.group} {mode_text(f.mode)}" for f in state if not f.ok]
        return Verdict(tuple(problems), "file owner and mode",
                       f"{', '.join(f.path for f in state)}: root-owned, not writable by others")

    def plan(self, ctx: Context, state: list[FileMode]) -> Sequence[Operation]:
        ops: list[Operation] = []
        for f in state:
            if f.user != "root" or f.group != "root":
                ops.append(Command(f"chown root:root {f.path}", ("chown", "root:root", f.path)))
            if f.mode != f.wanted_mode:
                ops.append(Command(f"chmod {mode_text(f.wanted_mode)} {f.path}",
                                   ("chmod", mode_text(f.wanted_mode), f.path)))
        return ops


def ssh_ports(config: Mapping[str, list[str]]) -> frozenset[int]:
    """The ports sshd is configured for (22 when sshd is not installed)."""
    return frozenset(int(p) for p in config.get("port", []) if p.isdigit()) or frozenset({22})

