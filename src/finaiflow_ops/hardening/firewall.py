"""The host firewall: ufw active, incoming denied by default, only SSH, 80 and 443 allowed.

ufw does not see ports that Docker publishes (Docker's DNAT sends them through FORWARD, not
INPUT: moby issue 4737), so this rule is only half the story: `docker.published-ports` checks
that nothing but nginx is published publicly.

Rules are read with `ufw show added` (the exact commands, so an extra rule is deleted with the
same words), the state with `ufw status verbose`, and the effective INPUT policy with
`iptables -S INPUT`. Enabling is refused when the current SSH session's port would not be allowed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops.hardening.base import (
    Command,
    Context,
    Operation,
    Refuse,
    Rule,
    Severity,
    Verdict,
    apt_install,
    run_many,
)
from finaiflow_ops.hardening.sshd import SSHD, effective_from, ssh_ports

__all__ = ["UfwRule", "UfwRuleLine", "parse_added", "parse_status"]

WEB_PORTS = frozenset({80, 443})
# ufw application profiles shipped by Debian packages, by the ports they open.
_APPS = {"openssh": {22}, "nginx full": {80, 443}, "nginx http": {80}, "nginx https": {443},
         "www": {80}, "www secure": {443}, "www full": {80, 443}}
_PORTS = re.compile(r"^[\d,:]+(/\w+)?$")


@dataclass(frozen=True)
class UfwRuleLine:
    """One rule as `ufw show added` prints it: `ufw allow 22/tcp`."""

    text: str
    action: str  # allow, limit, deny, reject
    inbound: bool
    ports: frozenset[int] | None  # None: every port (or an application ufw does not describe)

    @property
    def opens(self) -> bool:
        return self.inbound and self.action in ("allow", "limit")

    def allows(self, port: int) -> bool:
        return self.opens and (self.ports is None or port in self.ports)

    @property
    def delete_argv(self) -> tuple[str, ...]:
        return ("ufw", "--force", "delete", *shlex.split(self.text)[1:])


def _port_set(spec: str) -> frozenset[int]:
    ports: set[int] = set()
    for part in spec.split("/")[0].split(","):
        low, _, high = part.partition(":")
        ports.update(range(int(low), int(high or low) + 1))
    return frozenset(ports)


def parse_rule(text: str) -> UfwRuleLine | None:
    """Read one `ufw ...` line; None for routed rules (they do not concern incoming traffic)."""
    words = shlex.split(text)
    if len(words) < 3 or words[0] != "ufw" or words[1] == "route":
        return None
    action, rest = words[1], words[2:]
    inbound = True
    while rest and rest[0] in ("in", "out", "log", "log-all", "on"):
        word = rest.pop(0)
        if word == "out":
            inbound = False
        if word == "on" and rest:
            rest.pop(0)
    if rest and rest[0] not in ("from", "to", "proto"):  # simple: `ufw allow 22/tcp`, `ufw allow OpenSSH`
        spec = rest[0]
        ports = _port_set(spec) if _PORTS.match(spec) else _APPS.get(spec.lower())
        return UfwRuleLine(text, action, inbound, frozenset(ports) if ports is not None else None)
    ports_found: set[int] = set()
    apps_known = True
    for i, word in enumerate(rest[:-1]):
        if word == "port":
            ports_found |= _port_set(rest[i + 1])
        elif word == "app":
            app = _APPS.get(rest[i + 1].lower())
            apps_known = apps_known and app is not None
            ports_found |= app or set()
    if not ports_found or not apps_known:
        return UfwRuleLine(text, action, inbound, None)
    return UfwRuleLine(text, action, inbound, frozenset(ports_found))


def parse_added(text: str) -> list[UfwRuleLine]:
    return [r for line in text.splitlines() if line.startswith("ufw ") and (r := parse_rule(line.strip()))]


def parse_status(text: str) -> tuple[bool, str]:
    """(active, incoming default) from `ufw status verbose`."""
    active = bool(re.search(r"^Status:\s*active", text, re.M))
    match = re.search(r"^Default:\s*(\w+) \(incoming\)", text, re.M)
    return active, match.group(1) if match else ""


@dataclass(frozen=True)
class UfwState:
    installed: bool
    active: bool
    incoming: str  # deny, reject, allow
    rules: tuple[UfwRuleLine, ...]
    input_policy: str  # DROP, ACCEPT (iptables -S INPUT)
    ssh_ports: frozenset[int]
    session_port: int | None

    @property
    def wanted_ports(self) -> frozenset[int]:
        return self.ssh_ports | WEB_PORTS

    @property
    def missing(self) -> list[int]:
        return [p for p in sorted(self.wanted_ports) if not any(r.allows(p) for r in self.rules)]

    @property
    def extra(self) -> list[UfwRuleLine]:
        return [r for r in self.rules if r.opens and (r.ports is None or r.ports - self.wanted_ports)]


class UfwRule(Rule[UfwState]):
    id = "firewall.ufw"
    title = "ufw active, incoming denied, only SSH, 80 and 443 allowed"
    severity = Severity.HIGH

    def facts(self, ctx: Context) -> UfwState:
        sshd, status, defaults, added, chain = run_many(
            ctx.target, (*SSHD, "-T"), ("ufw", "status", "verbose"), ("cat", "/etc/default/ufw"),
            ("ufw", "show", "added"), ("iptables", "-S", "INPUT"))
        ports, session_port = ssh_ports(effective_from(sshd) or {}), ctx.session.server_port
        if status.exit_status == 127:
            return UfwState(False, False, "", (), "", ports, session_port)
        active, incoming = parse_status(status.stdout)
        if not active:  # ufw prints no defaults while inactive: read the ones it will load
            policy = re.search(r'^DEFAULT_INPUT_POLICY="?(\w+)', defaults.stdout, re.M)
            names = {"DROP": "deny", "REJECT": "reject", "ACCEPT": "allow"}
            incoming = names.get(policy.group(1) if policy else "", "")
        policy_line = re.search(r"^-P INPUT (\w+)", chain.stdout, re.M)
        return UfwState(True, active, incoming, tuple(parse_added(added.stdout)),
                        policy_line.group(1) if policy_line else "", ports, session_port)

    def evaluate(self, ctx: Context, state: UfwState) -> Verdict:
        source = "ufw status verbose, ufw show added, iptables -S INPUT"
        if not state.installed:
            return Verdict(("ufw is not installed",), source)
        problems = []
        if not state.active:
            problems.append("ufw is inactive")
        elif state.input_policy not in ("DROP", "REJECT"):
            policy = state.input_policy or "unknown"
            problems.append(f"iptables INPUT policy is {policy}: ufw's rules are not loaded")
        if state.incoming not in ("deny", "reject"):
            problems.append(f"incoming default is {state.incoming or 'unknown'} (wanted deny)")
        problems += [f"{p}/tcp is not allowed{' (SSH)' if p in state.ssh_ports else ''}"
                     for p in state.missing]
        problems += [f"extra rule: {r.text}" for r in state.extra]
        allowed = ", ".join(str(p) for p in sorted(state.wanted_ports))
        return Verdict(tuple(problems), source, f"active, incoming deny, allowed {allowed}")

    def plan(self, ctx: Context, state: UfwState) -> Sequence[Operation]:
        port = state.session_port
        if port is None and ctx.target.kind == "ssh":
            raise Refuse("cannot tell which port this SSH session uses ($SSH_CONNECTION is not set): "
                         "not enabling a firewall that could cut it")
        if port is not None and port not in state.ssh_ports:
            configured = ", ".join(str(p) for p in sorted(state.ssh_ports))
            raise Refuse(f"this SSH session uses port {port}, but sshd is configured for {configured}: "
                         f"allowing only that would cut the session (restart sshd on its new port first)")
        ops: list[Operation] = [] if state.installed else [apt_install("ufw")]
        if state.incoming not in ("deny", "reject"):
            ops.append(Command("ufw default deny incoming", ("ufw", "default", "deny", "incoming")))
        ops += [Command(f"ufw allow {p}/tcp", ("ufw", "allow", f"{p}/tcp")) for p in state.missing]
        ops += [Command(f"ufw delete {r.text.removeprefix('ufw ')}", r.delete_argv) for r in state.extra]
        if not state.active:
            ops.append(Command("ufw --force enable", ("ufw", "--force", "enable")))
        elif state.input_policy not in ("DROP", "REJECT"):
            ops.append(Command("ufw reload", ("ufw", "reload")))
        return ops
