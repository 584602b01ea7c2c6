"""Host hardening that is applied and verified by the same code, and understands Docker.

Each rule (one module per concern) reads the effective state, says what is wrong, and applies
only what differs; `audit` runs the checks, `apply` the fixes, and a second `apply` changes
nothing. Host rules look at the target; stack rules (published ports, containers, files, nginx,
scans) at the compose project on it and are skipped, with the reason, when there is none.

    from finaiflow_ops.hardening import context, audit, apply
    ctx = context(Target.parse("ssh://root@vps"), Stack(target, "/opt/finaiflow"))
    report = audit(ctx)                  # report.findings, report.passed (no high-severity failure)
    changes = apply(ctx, only=["firewall.ufw"])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from finaiflow_ops.errors import TargetUnreachable, UsageError
from finaiflow_ops.hardening.base import (
    Change,
    Context,
    Finding,
    Outcome,
    Rule,
    Severity,
    Status,
)
from finaiflow_ops.hardening.containers import (
    ContainerLimitsRule,
    PrivilegedContainersRule,
    PublishedPortsRule,
)
from finaiflow_ops.hardening.docker import DaemonSettingsRule, DaemonTcpSocketRule
from finaiflow_ops.hardening.fail2ban import Fail2banRule, Fail2banSshdRule
from finaiflow_ops.hardening.files import AppDirsRule, EnvFileModeRule, TlsKeyModeRule
from finaiflow_ops.hardening.firewall import UfwRule
from finaiflow_ops.hardening.host import (
    AuditdRule,
    BannersRule,
    CoreDumpsRule,
    FileIntegrityRule,
    HardeningPackagesRule,
    KernelModulesRule,
    LoginDefsRule,
    MalwareScannerRule,
    ProcessAccountingRule,
    ShellTimeoutRule,
    SyslogRule,
)
from finaiflow_ops.hardening.nginx import NginxHeadersRule, NginxRateLimitRule, NginxServerTokensRule
from finaiflow_ops.hardening.packages import UnattendedUpgradesRule
from finaiflow_ops.hardening.scans import DependencyAuditRule, ImageScanRule
from finaiflow_ops.hardening.sshd import SshAuthRule, SshConfigFilesRule, SshLimitsRule
from finaiflow_ops.hardening.sshd_crypto import SshCryptoRule
from finaiflow_ops.hardening.sysctl import KernelSysctlRule, SysctlRule
from finaiflow_ops.progress import Progress
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

__all__ = [
    "RULES",
    "ApplyReport",
    "AuditReport",
    "Change",
    "Context",
    "Finding",
    "Outcome",
    "Rule",
    "Severity",
    "Status",
    "apply",
    "audit",
    "context",
    "select",
]

# In the order apply runs them: sshd before the firewall (which allows sshd's port), the
# firewall before fail2ban, host before stack.
RULES: tuple[Rule[Any], ...] = (
    SshAuthRule(),
    SshLimitsRule(),
    SshCryptoRule(),
    SshConfigFilesRule(),
    UfwRule(),
    Fail2banSshdRule(),
    Fail2banRule(),
    SysctlRule(),
    KernelSysctlRule(),
    CoreDumpsRule(),
    KernelModulesRule(),
    BannersRule(),
    LoginDefsRule(),
    ShellTimeoutRule(),
    UnattendedUpgradesRule(),
    HardeningPackagesRule(),
    ProcessAccountingRule(),
    AuditdRule(),
    FileIntegrityRule(),
    MalwareScannerRule(),
    SyslogRule(),
    DaemonTcpSocketRule(),
    DaemonSettingsRule(),
    PublishedPortsRule(),
    PrivilegedContainersRule(),
    ContainerLimitsRule(),
    EnvFileModeRule(),
    TlsKeyModeRule(),
    AppDirsRule(),
    NginxServerTokensRule(),
    NginxHeadersRule(),
    NginxRateLimitRule(),
    DependencyAuditRule(),
    ImageScanRule(),
)



@dataclass(frozen=True)
class AuditReport:
    """Every selected rule's finding on one target; `passed` when no high-severity rule fails."""

    target: str
    project: str  # the stack's compose project, "" when there is none
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return not self.high_failures

    @property
    def high_failures(self) -> tuple[str, ...]:
        return tuple(f.rule for f in self.findings if f.failed and f.severity is Severity.HIGH)

    @property
    def failures(self) -> tuple[str, ...]:
        """Every rule not compliant (any severity): `harden audit` exits 1 when there is one, as
        `harden apply` does when one is left after it."""
        return tuple(f.rule for f in self.findings if f.failed)

    @property
    def compliant(self) -> bool:
        return not self.failures

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(f.status.value for f in self.findings)
        return {status.value: counted.get(status.value, 0) for status in Status}


@dataclass(frozen=True)
class ApplyReport:
    """What apply did, rule by rule; `ok` when nothing was refused, failed or left to do by hand."""

    target: str
    project: str
    changes: tuple[Change, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.changes)

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(c.rule for c in self.changes if c.changed)

    @property
    def failures(self) -> tuple[str, ...]:
        """The rules left not compliant (as an audit right after would name them)."""
        return tuple(c.rule for c in self.changes if not c.ok)


def select(only: Iterable[str] = ()) -> list[Rule[Any]]:
    """The rules with these ids (all when none), in apply order; an unknown id is a usage error."""
    wanted = list(only)
    known = {rule.id for rule in RULES}
    unknown = [rule_id for rule_id in wanted if rule_id not in known]
    if unknown:
        raise UsageError(f"unknown rule {', '.join(unknown)}", hint=f"rules: {', '.join(sorted(known))}")
    return [rule for rule in RULES if not wanted or rule.id in wanted]


def context(target: Target, stack: Stack | None = None, **options: Any) -> Context:
    """A context for the rules: the target (must answer), and the stack when it is usable there.

    A stack whose compose file, .env or Docker engine is missing is left out with the reason,
    which the stack rules then report as their skip reason.
    """
    target.run("true")  # an unreachable target is exit 3 at once, not twenty identical errors
    reason = "no stack given (--project-dir)"
    if stack is not None:
        try:
            _ = stack.compose_path, stack.env
            stack.target.docker()
            return Context(target, stack, **options)
        except UsageError as exc:
            reason = f"no stack: {exc.message}"
        except TargetUnreachable as exc:
            reason = f"no stack: {exc.message}"
    return Context(target, None, no_stack_reason=reason, **options)


def _project(ctx: Context) -> str:
    return ctx.stack.project if ctx.stack is not None else ""


def _each(only: Sequence[str], verb: str, progress: Progress | None) -> Iterator[Rule[Any]]:
    for rule in select(only):
        if progress:
            progress(f"{verb} {rule.id}")
        yield rule


def audit(ctx: Context, *, only: Sequence[str] = (), progress: Progress | None = None) -> AuditReport:
    """Check the selected rules (all by default) on the context's target."""
    findings = tuple(rule.check(ctx) for rule in _each(only, "checking", progress))
    return AuditReport(str(ctx.target), _project(ctx), findings)


def apply(ctx: Context, *, only: Sequence[str] = (), progress: Progress | None = None) -> ApplyReport:
    """Apply the selected rules in order: each changes only what its check finds wrong."""
    changes = tuple(rule.apply(ctx) for rule in _each(only, "applying", progress))
    return ApplyReport(str(ctx.target), _project(ctx), changes)
