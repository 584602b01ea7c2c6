"""What every hardening rule shares: results, the rule protocol, the context, and operations.

A rule is split the way pyinfra splits facts from operations:

    facts(ctx)            reads the EFFECTIVE state on the target (sshd -T, ufw status, docker info, ...)
    evaluate(ctx, state)  compares it with what is wanted: a Verdict (problems, and where they were read)
    plan(ctx, state)      the operations that remove exactly those problems (empty when there are none)

`check()` is facts + evaluate; `apply()` is facts + evaluate + plan, runs the operations, and checks
again. Nothing decides "changed" by hand: a change is an operation that ran, so a second apply
plans nothing and says so. Because `check` and `apply` read the same facts, audit and apply cannot
drift apart.

Control flow a rule can raise from `facts` or `plan`:
    NotApplicable(reason)   the rule does not concern this target (no stack, Docker not installed)
    Refuse(reason)          applying would be unsafe here (cut the SSH session, no DOCKER-USER chain)
    Manual(reason)          no automatic fix (the compose file or an image must change): what to do
"""

from __future__ import annotations

import base64
import shlex
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from finaiflow_ops import polling
from finaiflow_ops.docker_inspect import source_at
from finaiflow_ops.errors import CommandFailed, OpsError, TargetUnreachable, UsageError
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

    from finaiflow_ops.stack import Stack
    from finaiflow_ops.target import Target

__all__ = [
    "WITH_SBIN",
    "Change",
    "Command",
    "Context",
    "Finding",
    "Manual",
    "NotApplicable",
    "Operation",
    "Outcome",
    "Refuse",
    "Rule",
    "Session",
    "Severity",
    "Status",
    "Verdict",
    "WriteFile",
    "apt_install",
    "mode_text",
    "read_file",
    "run_any",
    "run_many",
    "run_optional",
    "wait_reachable",
]

NGINX_LOG_DIR_IN_CONTAINER = "/var/log/nginx"
# Admin programs (sshd, sysctl) live in sbin, which is not on every PATH (cron, non-login shells).
WITH_SBIN = ("env", "PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin")


class Severity(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    SKIP = "skip"  # not applicable here, or not run (a scanner or its database missing): never "pass"
    ERROR = "error"  # the state could not be read; counts as failing


class Outcome(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    REFUSED = "refused"
    MANUAL = "manual"
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one target: problems found, or why it was skipped."""

    rule: str
    title: str
    severity: Severity
    status: Status
    problems: tuple[str, ...] = ()
    detail: str = ""  # what was seen when it passes, or why it was skipped
    source: str = ""  # where the state was read from: "sshd -T", "ufw status verbose", ...

    @property
    def failed(self) -> bool:
        return self.status in (Status.FAIL, Status.ERROR)

    @property
    def summary(self) -> str:
        return "; ".join(self.problems) if self.problems else self.detail


@dataclass(frozen=True)
class Change:
    """What `apply` did for one rule: the operations that ran, or why none did."""

    rule: str
    outcome: Outcome
    actions: tuple[str, ...] = ()
    reason: str = ""
    after: Finding | None = None  # the rule checked again after applying

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.CHANGED

    @property
    def ok(self) -> bool:
        """Nothing left to do: applied and now passing, already compliant, or not applicable."""
        if self.outcome in (Outcome.REFUSED, Outcome.MANUAL, Outcome.FAILED):
            return False
        return self.after is None or not self.after.failed


@dataclass(frozen=True)
class Verdict:
    problems: tuple[str, ...]
    source: str
    detail: str = ""


class RuleStop(Exception):
    """Raised by a rule to end a check or an apply early, with a reason for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotApplicable(RuleStop):
    """The rule does not concern this target."""


class Refuse(RuleStop):
    """Applying would be unsafe on this target; nothing was changed."""


class Manual(RuleStop):
    """No automatic fix: the reason says what to change by hand."""


# -- the context ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """The SSH session a command arrives through (from $SSH_CONNECTION), when there is one."""

    user: str
    client: str
    server_port: int | None


@dataclass(frozen=True)
class Context:
    """What the rules look at: a host (the target) and, when there is one, the stack it runs.

    `nginx_log_dir` overrides where nginx's logs are on the target (by default: the host path of
    the nginx container's /var/log/nginx volume). `pip_audit` and `trivy` name the scanners.
    """

    target: Target
    stack: Stack | None = None
    no_stack_reason: str = "no stack given"
    nginx_log_dir: str | None = None
    pip_audit: str | None = None  # None: pip-audit from PATH or next to this Python
    trivy: str = "trivy"

    @cached_property
    def _host(self) -> list[CommandResult]:
        return run_many(self.target, ("sh", "-c", 'echo "${SSH_CONNECTION:-}"; id -un'),
                        ("test", "-d", "/run/systemd/system"), ("test", "-S", "/var/run/docker.sock"))

    @property
    def session(self) -> Session:
        out = self._host[0].stdout.splitlines()
        fields = (out[0].split() if out else []) + ["", "", "", ""]
        user = out[1].strip() if len(out) > 1 else ""
        port = int(fields[3]) if fields[3].isdigit() else None
        return Session(user=user, client=fields[0], server_port=port)

    @property
    def systemd(self) -> bool:
        """Whether services on the target are run by systemd (else they are started by hand)."""
        return self._host[1].ok

    @property
    def docker_runs(self) -> bool:
        """Whether a Docker engine runs on the target (its socket exists)."""
        return self._host[2].ok

    def need_stack(self) -> Stack:
        if self.stack is None:
            raise NotApplicable(self.no_stack_reason)
        return self.stack

    def nginx_container(self) -> Container:
        stack = self.need_stack()
        try:
            return stack.container("nginx")
        except UsageError as exc:
            raise NotApplicable(f"nginx is not running in {stack.project}") from exc

    def volume_dir(self, destination: str) -> str | None:
        """The host path of the nginx container's mount at `destination` (a volume or bind mount)."""
        return source_at(self.nginx_container().attrs, destination)

    @cached_property
    def nginx_logs(self) -> str | None:
        """Where nginx writes its logs on the target host: the override, else its volume's path."""
        if self.nginx_log_dir:
            return self.nginx_log_dir
        if self.stack is None:
            return None
        try:
            return self.volume_dir(NGINX_LOG_DIR_IN_CONTAINER)
        except NotApplicable:
            return None


# -- operations ---------------------------------------------------------------------------------

class Operation(ABC):
    """One change on the target; `description` is what the user is told ran."""

    description: str

    @abstractmethod
    def run(self, ctx: Context) -> None: ...


@dataclass(frozen=True)
class Command(Operation):
    description: str
    argv: tuple[str, ...]
    timeout: float = 300.0

    def run(self, ctx: Context) -> None:
        ctx.target.run(*self.argv, timeout=self.timeout)


# Atomic on the target: a temporary file beside the destination, its mode set, then renamed.
_WRITE = ('set -e; mkdir -p "$(dirname "$1")"; tmp=$(mktemp "$1.XXXXXX"); '
          'printf "%s" "$2" >"$tmp"; chmod "$3" "$tmp"; mv -f "$tmp" "$1"')


@dataclass(frozen=True)
class WriteFile(Operation):
    path: str
    content: str
    mode: int = 0o644
    note: str = ""  # what the new content does, for the user

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"write {self.path} (mode {self.mode:04o})" + (f": {self.note}" if self.note else "")

    def run(self, ctx: Context) -> None:
        ctx.target.run("sh", "-c", _WRITE, "sh", self.path, self.content, f"{self.mode:04o}")


def read_file(target: Target, path: str) -> str | None:
    """A file's text on the target, or None when it does not exist or cannot be read."""
    result = target.run("cat", "--", path, check=False)
    return result.stdout if result.ok else None


def run_any(target: Target, *argv: str, timeout: float | None = 120) -> CommandResult:
    """Run a program, never raising for its exit status (sshd and fail2ban-client exit 255 on their
    own errors; Target tells those apart from ssh failing to connect)."""
    return target.run(*argv, check=False, timeout=timeout)


# Several commands in one round trip: over SSH every command is a new connection, and an audit
# reads dozens of facts. Each command's status, stdout and stderr come back base64-encoded.
_BATCH = ('o=$(mktemp); e=$(mktemp); for cmd do eval "$cmd" >"$o" 2>"$e" </dev/null; status=$?; '
          'printf "%s %s %s\\n" "$status" "$(base64 -w0 <"$o")" "$(base64 -w0 <"$e")"; done; rm -f "$o" "$e"')


def run_many(target: Target, *commands: Sequence[str], timeout: float | None = 120) -> list[CommandResult]:
    """Run commands on the target in one call, each with its own result (127: not installed)."""
    batch = target.run("sh", "-c", _BATCH, "sh", *(shlex.join(c) for c in commands), timeout=timeout)
    lines = batch.stdout.splitlines()
    if len(lines) != len(commands):
        raise CommandFailed(f"reading facts on {target} returned {len(lines)} of {len(commands)} results",
                            output_tail=batch.stderr)
    results = []
    for argv, line in zip(commands, lines, strict=True):
        status, out, err = [*line.split(" ", 2), "", ""][:3]
        results.append(CommandResult(tuple(argv), int(status), _decode(out), _decode(err)))
    return results


def _decode(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace") if text else ""


def run_optional(target: Target, *argv: str, timeout: float | None = 120) -> CommandResult | None:
    """Run a program that may not be installed: None when it is not."""
    try:
        result = run_any(target, *argv, timeout=timeout)
    except UsageError:  # a local target: the program is not on PATH
        return None
    return None if result.exit_status == 127 else result


def wait_reachable(target: Target, *, timeout: float = 15.0) -> None:
    """After a daemon reload (sshd re-executes itself), wait until the target answers again."""
    for attempt in polling.attempts(within=timeout, every=0.3):
        try:
            target.run("true")
            return
        except TargetUnreachable:
            if attempt.last:
                raise


# apt's package lists are refreshed first when they are missing (a fresh image: `apt-get install`
# would say "Unable to locate package") or older than a day (stale: the versions they name are
# gone from the mirror, a 404), and once more when the install still fails on them.
APT_STALE_MINUTES = 1440
_APT_INSTALL = (
    'export DEBIAN_FRONTEND=noninteractive; '
    f'if ! find /var/lib/apt/lists -maxdepth 1 -name "*_Packages*" -mmin -{APT_STALE_MINUTES} | grep -q .; '
    'then apt-get update -q; fi; '
    'apt-get install -y -q "$@" || { apt-get update -q && apt-get install -y -q "$@"; }')


def apt_install(*packages: str) -> Command:
    """Install Debian packages, refreshing apt's lists first when they are empty or stale."""
    return Command(f"install {' '.join(packages)} (apt-get, lists refreshed when empty or stale)",
                   ("sh", "-c", _APT_INSTALL, "sh", *packages), timeout=900.0)


def mode_text(mode: int) -> str:
    return f"{mode:04o}"


# -- the rule protocol ----------------------------------------------------------------------------

S = TypeVar("S")


class Rule(ABC, Generic[S]):
    """A hardening rule: a stable id, a severity, facts, a verdict and the operations to comply."""

    id: ClassVar[str]
    title: ClassVar[str]
    severity: ClassVar[Severity]

    @abstractmethod
    def facts(self, ctx: Context) -> S:
        """Read the effective state on the target (may raise NotApplicable)."""

    @abstractmethod
    def evaluate(self, ctx: Context, state: S) -> Verdict:
        """Compare the state with what is wanted."""

    def plan(self, ctx: Context, state: S) -> Sequence[Operation]:
        """The operations that make a failing state compliant (may raise Refuse or Manual)."""
        raise Manual("no automatic fix for this rule")

    # -- derived: never overridden ------------------------------------------------------------------

    def finding(self, status: Status, *, problems: Sequence[str] = (), detail: str = "",
                source: str = "") -> Finding:
        return Finding(self.id, self.title, self.severity, status, tuple(problems), detail, source)

    def _observe(self, ctx: Context) -> tuple[Finding, S | None]:
        try:
            state = self.facts(ctx)
            verdict = self.evaluate(ctx, state)
        except NotApplicable as stop:
            return self.finding(Status.SKIP, detail=stop.reason), None
        except TargetUnreachable:
            raise
        except OpsError as exc:  # a command failed: the state is unknown, which is not a pass
            return self.finding(Status.ERROR, problems=[exc.one_line()]), None
        status = Status.FAIL if verdict.problems else Status.PASS
        return self.finding(status, problems=verdict.problems, detail=verdict.detail,
                            source=verdict.source), state

    def check(self, ctx: Context) -> Finding:
        return self._observe(ctx)[0]

    def apply(self, ctx: Context) -> Change:
        before, state = self._observe(ctx)
        if before.status is Status.SKIP:
            return Change(self.id, Outcome.SKIPPED, reason=before.detail, after=before)
        if before.status is Status.PASS:
            return Change(self.id, Outcome.UNCHANGED, reason="no change: already compliant", after=before)
        if state is None:
            return Change(self.id, Outcome.FAILED, reason=before.summary, after=before)
        try:
            operations = list(self.plan(ctx, state))
        except Refuse as stop:
            return Change(self.id, Outcome.REFUSED, reason=stop.reason, after=before)
        except Manual as stop:
            return Change(self.id, Outcome.MANUAL, reason=stop.reason, after=before)
        done: list[str] = []
        for op in operations:
            try:
                op.run(ctx)
            except Refuse as stop:  # an operation found it unsafe half-way, and undid its part
                return Change(self.id, Outcome.REFUSED, tuple(done), stop.reason, self.check(ctx))
            except TargetUnreachable:
                raise
            except OpsError as exc:
                said = getattr(exc, "output_tail", "").strip().splitlines()
                reason = f"{op.description}: {exc.one_line()}" + (f": {said[-1]}" if said else "")
                return Change(self.id, Outcome.FAILED, tuple(done), reason, self.check(ctx))
            done.append(op.description)
        return Change(self.id, Outcome.CHANGED, tuple(done), after=self.check(ctx))

