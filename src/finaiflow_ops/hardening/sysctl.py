"""Kernel network settings that harden a host without breaking Docker.

CIS-style baselines turn IP forwarding off; Docker needs it on (published ports and container
egress are forwarded). So forwarding is never written off, and where Docker runs it must be 1.
The settings here are per network namespace, read from the running kernel (`sysctl`), persisted
in /etc/sysctl.d/60-finaiflow.conf and loaded from that file only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops.hardening.base import (
    WITH_SBIN,
    Command,
    Context,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    WriteFile,
    run_many,
)

__all__ = ["BASELINE", "CONF", "FORWARDING", "SysctlRule", "render_conf", "wanted"]

CONF = "/etc/sysctl.d/60-finaiflow.conf"
FORWARDING = "net.ipv4.ip_forward"
BASELINE = {
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
}


def wanted(docker_runs: bool) -> dict[str, str]:
    return {**BASELINE, FORWARDING: "1"} if docker_runs else dict(BASELINE)


def render_conf(values: dict[str, str]) -> str:
    body = "".join(f"{key} = {value}\n" for key, value in sorted(values.items()) if key != FORWARDING
                   or value == "1")  # never written off: Docker needs forwarding
    return "# Written by finaiflow-ops harden apply. IP forwarding stays on: Docker needs it.\n" + body


@dataclass(frozen=True)
class SysctlState:
    wanted: dict[str, str]  # only keys this kernel has
    seen: dict[str, str]
    conf: str | None  # our file, as it is

    @property
    def differing(self) -> dict[str, str]:
        return {k: v for k, v in self.wanted.items() if self.seen.get(k) != v}


class SysctlRule(Rule[SysctlState]):
    id = "sysctl.network"
    title = "network sysctls hardened; IP forwarding kept on where Docker runs"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> SysctlState:
        keys = wanted(ctx.docker_runs)
        result, conf = run_many(ctx.target, (*WITH_SBIN, "sysctl", "-e", *keys), ("cat", CONF))
        if result.exit_status == 127:
            raise NotApplicable("sysctl (procps) is not installed")
        seen = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition("=")
            seen[key.strip()] = value.strip()
        present = {k: v for k, v in keys.items() if k in seen}
        return SysctlState(present, seen, conf.stdout if conf.ok else None)

    def evaluate(self, ctx: Context, state: SysctlState) -> Verdict:
        note = {FORWARDING: " - Docker needs it"}
        problems = [f"{k} is {state.seen.get(k)} (wanted {v}){note.get(k, '')}"
                    for k, v in state.differing.items()]
        return Verdict(tuple(problems), "sysctl (running kernel)", f"{len(state.wanted)} settings as wanted")

    def plan(self, ctx: Context, state: SysctlState) -> Sequence[Operation]:
        content = render_conf(state.wanted)
        write = [WriteFile(CONF, content)] if state.conf != content else []
        return [*write, Command(f"sysctl -p {CONF}", (*WITH_SBIN, "sysctl", "-p", CONF))]
