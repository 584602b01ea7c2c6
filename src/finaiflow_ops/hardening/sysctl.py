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

__all__ = ["BASELINE", "CONF", "FORWARDING", "KERNEL", "KERNEL_CONF", "KernelSysctlRule", "SysctlRule",
           "render_conf", "wanted"]

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
    # Lynis's scan profile (KRNL-6000) too; all.rp_filter is left alone (see docs/hardening.md).
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.conf.default.log_martians": "1",
    "net.ipv4.conf.all.bootp_relay": "0",
    "net.ipv4.conf.all.proxy_arp": "0",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    "net.ipv6.conf.all.accept_source_route": "0",
    "net.ipv6.conf.default.accept_source_route": "0",
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


# -- the kernel's own settings ----------------------------------------------------------------------

KERNEL_CONF = "/etc/sysctl.d/61-finaiflow-kernel.conf"
# key -> (value written, values accepted). Lynis's scan profile (KRNL-6000), minus what would
# break a Docker host (none of these does: Docker needs neither ptrace of others' processes,
# kernel pointers, SysRq nor unprivileged BPF).
KERNEL: dict[str, tuple[str, frozenset[str]]] = {
    "fs.suid_dumpable": ("0", frozenset({"0"})),
    "fs.protected_fifos": ("2", frozenset({"2"})),
    "fs.protected_regular": ("2", frozenset({"2"})),
    "fs.protected_symlinks": ("1", frozenset({"1"})),
    "fs.protected_hardlinks": ("1", frozenset({"1"})),
    "kernel.core_uses_pid": ("1", frozenset({"1"})),
    "kernel.ctrl-alt-del": ("0", frozenset({"0"})),
    "kernel.dmesg_restrict": ("1", frozenset({"1"})),
    "kernel.kptr_restrict": ("2", frozenset({"2"})),
    "kernel.perf_event_paranoid": ("3", frozenset({"3"})),
    "kernel.randomize_va_space": ("2", frozenset({"2"})),
    "kernel.sysrq": ("0", frozenset({"0"})),
    # 2 is stricter (and cannot be undone until reboot): accepted, never written back to 1.
    "kernel.unprivileged_bpf_disabled": ("1", frozenset({"1", "2"})),
    "kernel.yama.ptrace_scope": ("1", frozenset({"1", "2", "3"})),
    "dev.tty.ldisc_autoload": ("0", frozenset({"0"})),
    "net.core.bpf_jit_harden": ("2", frozenset({"2"})),
}


def _proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


@dataclass(frozen=True)
class KernelState:
    seen: dict[str, str]  # keys this kernel shows, with their running values
    writable: frozenset[str]  # keys this host may set (a container's /proc/sys/kernel is read-only)
    persisted: dict[str, str]  # what our file says
    conf: str | None

    @property
    def differing(self) -> dict[str, str]:
        """Keys this host can set whose running value is not accepted."""
        return {k: v for k, v in self.seen.items() if k in self.writable and v not in KERNEL[k][1]}

    @property
    def read_only_differing(self) -> dict[str, str]:
        return {k: v for k, v in self.seen.items() if k not in self.writable and v not in KERNEL[k][1]}


def render_kernel_conf(keys: list[str]) -> str:
    body = "".join(f"{key} = {KERNEL[key][0]}\n" for key in sorted(keys))
    return ("# Written by finaiflow-ops harden apply: the kernel's own hardening (applied at boot where\n"
            "# this host cannot set them now, as in a container).\n" + body)


class KernelSysctlRule(Rule[KernelState]):
    id = "sysctl.kernel"
    title = "kernel sysctls hardened (core dumps of setuid programs, dmesg, kernel pointers, BPF, ...)"
    severity = Severity.LOW

    def facts(self, ctx: Context) -> KernelState:
        keys = list(KERNEL)
        result, conf, *writable = run_many(
            ctx.target, (*WITH_SBIN, "sysctl", "-e", *keys), ("cat", KERNEL_CONF),
            *(("test", "-w", _proc_path(k)) for k in keys))
        if result.exit_status == 127:
            raise NotApplicable("sysctl (procps) is not installed")
        seen = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in KERNEL:
                seen[key.strip()] = value.strip()
        can = frozenset(k for k, w in zip(keys, writable, strict=True) if w.ok)
        text = conf.stdout if conf.ok else None
        persisted = {}
        for line in (text or "").splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                persisted[key.strip()] = value.strip()
        return KernelState(seen, can, persisted, text)

    def evaluate(self, ctx: Context, state: KernelState) -> Verdict:
        problems = [f"{k} is {v} (wanted {KERNEL[k][0]})" for k, v in state.differing.items()]
        problems += [f"{k} is {v} and cannot be set here: not persisted in {KERNEL_CONF} either"
                     for k, v in state.read_only_differing.items() if state.persisted.get(k) != KERNEL[k][0]]
        fixed_at_boot = [k for k in state.read_only_differing if state.persisted.get(k) == KERNEL[k][0]]
        detail = f"{len(state.seen)} settings as wanted"
        if fixed_at_boot:
            detail += (f"; {len(fixed_at_boot)} read-only here (a container shares its host's kernel): "
                       f"persisted in {KERNEL_CONF} for the next boot ({', '.join(fixed_at_boot)})")
        return Verdict(tuple(problems), "sysctl (running kernel), " + KERNEL_CONF, detail)

    def plan(self, ctx: Context, state: KernelState) -> Sequence[Operation]:
        content = render_kernel_conf(list(state.seen))
        ops: list[Operation] = [WriteFile(KERNEL_CONF, content)] if state.conf != content else []
        settings = [f"{k}={KERNEL[k][0]}" for k in state.differing]
        return ops + [Command(f"sysctl -w {kv}", (*WITH_SBIN, "sysctl", "-w", kv)) for kv in settings]
