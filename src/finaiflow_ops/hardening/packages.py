"""Security updates install themselves: unattended-upgrades installed and enabled in apt's
periodic configuration (read as apt resolves it, `apt-config dump`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops.hardening.base import (
    Context,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    WriteFile,
    apt_install,
    run_many,
)

__all__ = ["AUTO_UPGRADES", "PERIODIC", "UnattendedUpgradesRule", "periodic_values"]

AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
PERIODIC = {"APT::Periodic::Update-Package-Lists": "1", "APT::Periodic::Unattended-Upgrade": "1"}


def periodic_values(dump: str) -> dict[str, str]:
    """The APT::Periodic settings from `apt-config dump` (`Key "value";` lines)."""
    return {m.group(1): m.group(2) for m in re.finditer(r'^(APT::Periodic::[\w-]+) "([^"]*)";', dump, re.M)}


@dataclass(frozen=True)
class UpgradesState:
    installed: bool
    periodic: dict[str, str]


class UnattendedUpgradesRule(Rule[UpgradesState]):
    id = "packages.unattended-upgrades"
    title = "unattended-upgrades installed and enabled"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> UpgradesState:
        status, dump = run_many(ctx.target, ("dpkg-query", "-W", "-f", "${Status}", "unattended-upgrades"),
                                ("apt-config", "dump"))
        if status.exit_status == 127 or not dump.ok:
            raise NotApplicable("not a Debian-based host (no dpkg-query, apt-config)")
        installed = status.ok and status.stdout.strip().endswith(" installed")
        return UpgradesState(installed, periodic_values(dump.stdout))

    def evaluate(self, ctx: Context, state: UpgradesState) -> Verdict:
        problems = [] if state.installed else ["unattended-upgrades is not installed"]
        problems += [f"{key} is {state.periodic.get(key, 'unset')} (wanted {value})"
                     for key, value in PERIODIC.items() if state.periodic.get(key) != value]
        return Verdict(tuple(problems), "dpkg-query, apt-config dump", "installed, daily lists and upgrades")

    def plan(self, ctx: Context, state: UpgradesState) -> Sequence[Operation]:
        ops: list[Operation] = [] if state.installed else [apt_install("unattended-upgrades")]
        if any(state.periodic.get(k) != v for k, v in PERIODIC.items()):
            body = "".join(f'{key} "{value}";\n' for key, value in PERIODIC.items())
            ops.append(WriteFile(AUTO_UPGRADES, body))
        return ops
