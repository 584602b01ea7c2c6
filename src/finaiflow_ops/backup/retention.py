"""Which backups to keep: the runbook's 30 days, or daily/weekly/monthly generations, and never
the newest verified ones.

The runbook's `find -mtime +30 -delete` deletes by age alone: after a month of silently failing
backups it deletes the last good one. Here only verified backups protect anything, the newest
`keep_last` of them are never deleted, and pruning is refused outright when no verified backup is
recent (stale backups are an alarm, not a reason to delete). `plan` is pure; `prune` applies it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from finaiflow_ops.backup.archive import directory_lock, record_failure
from finaiflow_ops.backup.errors import StaleBackups
from finaiflow_ops.backup.inventory import COMPANIONS, INCOMPLETE, BackupEntry, BackupState, list_backups
from finaiflow_ops.backup.manifest import read_manifest
from finaiflow_ops.errors import UsageError
from finaiflow_ops.progress import Progress, or_quiet

__all__ = ["Decision", "Policy", "PruneResult", "database_name", "plan", "policy", "prune"]

DEFAULT_KEEP_DAYS = 30  # the runbook's `find -mtime +30 -delete`


@dataclass(frozen=True)
class Policy:
    """A retention policy. Generations (daily/weekly/monthly) count verified backups only."""

    keep_days: int | None = DEFAULT_KEEP_DAYS  # keep everything younger than this (the runbook's rule)
    keep_last: int = 3  # the newest verified backups, never deleted whatever their age
    daily: int = 0  # the newest verified backup of each of the last N days that have one
    weekly: int = 0  # ... of each of the last N ISO weeks
    monthly: int = 0  # ... of each of the last N months
    max_age_hours: float = 26.0  # refuse to prune unless a verified backup is younger than this

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise UsageError("keep-last must be at least 1",
                             hint="the newest verified backup is never deleted")
        if self.keep_days is not None and self.keep_days < 1:
            raise UsageError("keep-days must be at least 1")
        if min(self.daily, self.weekly, self.monthly) < 0 or self.max_age_hours <= 0:
            raise UsageError("generation counts must not be negative and max-age must be positive")

    def describe(self) -> str:
        parts = [f"newest {self.keep_last} verified"]
        if self.keep_days is not None:
            parts.append(f"everything younger than {self.keep_days} days")
        parts += [f"{n} {label}" for n, label in ((self.daily, "daily"), (self.weekly, "weekly"),
                                                   (self.monthly, "monthly")) if n]
        return ", ".join(parts)


def policy(*, keep_days: int | None = None, keep_last: int = 3, daily: int = 0, weekly: int = 0,
           monthly: int = 0, max_age_hours: float = 26.0) -> Policy:
    """The policy `backup prune` applies: `keep_days` unset means the runbook's 30 days, unless
    generations (daily, weekly, monthly) are given: then they alone decide beyond `keep_last`."""
    if keep_days is None and not (daily or weekly or monthly):
        keep_days = DEFAULT_KEEP_DAYS
    return Policy(keep_days, keep_last, daily, weekly, monthly, max_age_hours)


def database_name(env: Mapping[str, str], name: str | None = None) -> str:
    """Whose backups: `name`, else the stack's database (POSTGRES_DB of its .env, else POSTGRES_USER,
    which is what the postgres image creates when POSTGRES_DB is unset, else postgres)."""
    return name or env.get("POSTGRES_DB") or env.get("POSTGRES_USER") or "postgres"


@dataclass(frozen=True)
class Decision:
    """What happens to one backup file, and why."""

    name: str
    path: str
    created_at: datetime
    state: BackupState
    size: int
    keep: bool
    why: str


_GENERATIONS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", lambda t: t.date().isoformat()),
    ("weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: f"{t.year}-{t.month:02d}"),
)


def plan(backups: Sequence[BackupEntry], policy: Policy, now: datetime) -> tuple[Decision, ...]:
    """Decide, for every backup, keep or delete (newest first); StaleBackups when none is recent."""
    ordered = sorted(backups, key=lambda b: (b.created_at, b.name), reverse=True)
    verified = [b for b in ordered if b.verified]
    limit = timedelta(hours=policy.max_age_hours)
    if not verified or now - verified[0].created_at > limit:
        seen = (f"the newest verified backup is {_age(now - verified[0].created_at)} old" if verified
                else "there is no verified backup")
        raise StaleBackups(
            f"refusing to prune: {seen} (limit {policy.max_age_hours:g} h)",
            hint="find out why backups fail (finaiflow-ops backup list) and take one before pruning",
        )
    reasons: dict[str, list[str]] = {b.name: [] for b in ordered}
    for b in verified[:policy.keep_last]:
        reasons[b.name].append(f"one of the newest {policy.keep_last} verified")
    for attr, period in _GENERATIONS:
        wanted: int = getattr(policy, attr)
        periods: list[str] = []
        for b in verified:
            key = period(b.created_at)
            if key in periods:
                continue  # an older backup of a period already represented
            if len(periods) == wanted:
                break
            periods.append(key)
            reasons[b.name].append(f"{attr} {key}")
    if policy.keep_days is not None:
        cutoff = now - timedelta(days=policy.keep_days)
        for b in ordered:
            if b.created_at >= cutoff and b.state != INCOMPLETE:
                reasons[b.name].append(f"younger than {policy.keep_days} days")
    return tuple(
        Decision(b.name, b.path, b.created_at, b.state, b.size, bool(reasons[b.name]),
                 "; ".join(reasons[b.name]) or _why_delete(b, policy))
        for b in ordered
    )


def _why_delete(b: BackupEntry, policy: Policy) -> str:
    if b.state == INCOMPLETE:
        return "incomplete: left by a backup that did not finish"
    if not b.verified:
        return f"{b.state} ({b.problem}) and outside the policy"
    return f"outside the policy ({policy.describe()})"


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


# -- applying it ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PruneResult:
    """What prune kept and deleted (or would delete, with dry_run), and why."""

    directory: str
    database: str
    policy: str
    dry_run: bool
    decisions: tuple[Decision, ...]

    @property
    def deleted(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.decisions if not d.keep)

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.decisions if d.keep)

    @property
    def freed_bytes(self) -> int:
        return sum(d.size for d in self.decisions if not d.keep)


def prune(directory: Path, policy: Policy, *, database: str, dry_run: bool = False,
          now: datetime | None = None, progress: Progress | None = None) -> PruneResult:
    """Apply `policy` to the backups of `database` in `directory`.

    Before anything is deleted, the checksums of the newest verified backups (the ones the
    deletions rely on) are confirmed; one that fails is marked failed and the plan is made again.
    """
    say = or_quiet(progress)
    now = now or datetime.now(UTC)
    with directory_lock(directory):
        while True:
            entries = list_backups(directory, database=database, now=now).backups
            decisions = plan(entries, policy, now)
            protected = [b for b in entries if b.verified][:policy.keep_last]
            damaged = [b for b in protected if not _intact(Path(b.path))]
            if not damaged:
                break
            for b in damaged:
                say(f"{b.name}: checksum differs from its manifest; marked failed")
                record_failure(Path(b.path), ["checksum mismatch (found by prune)"])
        if not dry_run:
            for d in decisions:
                if not d.keep:
                    _delete(Path(d.path))
                    say(f"deleted {d.name} ({d.why})")
    return PruneResult(str(directory), database, policy.describe(), dry_run, decisions)


def _intact(path: Path) -> bool:
    try:
        expected = read_manifest(path).sha256
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError):
        return False
    return digest.hexdigest() == expected


def _delete(archive: Path) -> None:
    for path in (archive, *(archive.with_name(archive.name + s) for s in COMPANIONS)):
        path.unlink(missing_ok=True)
