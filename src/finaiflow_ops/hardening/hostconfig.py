"""Host rules that are Debian packages and configuration files, as Lynis asks for them.

Each rule here names the packages it needs, the files it owns (written whole, with a header saying
who wrote them) and the settings it keeps in files it shares with the system (`KEY VALUE` lines in
/etc/login.defs, the rest left alone). The facts are read in one round trip; apply installs what
is missing (apt's lists refreshed when empty or stale), writes what differs, then runs the rule's
own conditions' fixes (start a service, initialise a database), each only when its check fails.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from finaiflow_ops.hardening.base import (
    Context,
    NotApplicable,
    Operation,
    Rule,
    Verdict,
    WriteFile,
    apt_install,
    run_many,
)

__all__ = ["HEADER", "Condition", "ConfigState", "HostConfigRule", "ManagedFile", "Settings", "read_keys",
           "set_keys"]

HEADER = "# Written by finaiflow-ops harden apply"


@dataclass(frozen=True)
class ManagedFile:
    """A file this rule owns: its whole content and mode."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Settings:
    """`KEY VALUE` lines kept in a file shared with the system; other lines are left as they are."""

    path: str
    values: Mapping[str, str]


def set_keys(text: str, values: Mapping[str, str]) -> str:
    """`text` with each KEY's first uncommented line set to `KEY VALUE` (appended when absent),
    and further uncommented lines of the same KEY commented out."""
    lines = text.splitlines()
    for key, value in values.items():
        pattern = re.compile(rf"^\s*{re.escape(key)}(\s|$)")
        hits = [i for i, line in enumerate(lines) if pattern.match(line)]
        if not hits:
            lines.append(f"{key} {value}")
            continue
        lines[hits[0]] = f"{key} {value}"
        for i in hits[1:]:
            lines[i] = f"# {lines[i]}  (superseded by finaiflow-ops harden)"
    return "\n".join(lines) + "\n"


def read_keys(text: str, keys: Sequence[str]) -> dict[str, str]:
    """The value of each KEY's first uncommented line ("" when absent)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] in keys and parts[0] not in found:
            found[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return {key: found.get(key, "") for key in keys}


@dataclass(frozen=True)
class Condition:
    """Something that must hold once the packages are there (a service running, a database made)."""

    check: tuple[str, ...]  # a command on the target that exits 0 when it holds
    problem: str  # what the audit says when it does not
    fix: Operation | tuple[Operation, ...]  # what makes it hold

    @property
    def operations(self) -> tuple[Operation, ...]:
        return self.fix if isinstance(self.fix, tuple) else (self.fix,)


@dataclass(frozen=True)
class ConfigState:
    missing_packages: tuple[str, ...]
    files: dict[str, str | None]  # path -> current content (None: missing)
    held: tuple[bool, ...] = field(default=())  # each condition's check, in the rule's order


class HostConfigRule(Rule[ConfigState]):
    """Packages installed, owned files as written, settings as wanted, plus the rule's own facts."""

    packages: tuple[str, ...] = ()

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        return ()

    def settings(self, ctx: Context) -> Sequence[Settings]:
        return ()

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        return ()

    def applies(self, ctx: Context) -> str:
        """Why the rule does not concern this host ('' when it does); read before anything else."""
        return ""

    # -- the rule -------------------------------------------------------------------------------

    def _paths(self, ctx: Context) -> list[str]:
        return [f.path for f in self.managed(ctx)] + [s.path for s in self.settings(ctx)]

    def facts(self, ctx: Context) -> ConfigState:
        reason = self.applies(ctx)
        if reason:
            raise NotApplicable(reason)
        paths, checks = self._paths(ctx), [c.check for c in self.conditions(ctx)]
        results = run_many(ctx.target, ("dpkg-query", "--version"),
                           *(("dpkg-query", "-W", "-f", "${Status}", p) for p in self.packages),
                           *(("cat", "--", p) for p in paths), *checks)
        if results[0].exit_status == 127:
            raise NotApplicable("not a Debian-based host (no dpkg-query)")
        packages, results = results[1:1 + len(self.packages)], results[1 + len(self.packages):]
        missing = tuple(p for p, r in zip(self.packages, packages, strict=True)
                        if not (r.ok and r.stdout.strip().endswith(" installed")))
        files = {p: (r.stdout if r.ok else None) for p, r in zip(paths, results, strict=False)}
        return ConfigState(missing, files, tuple(r.ok for r in results[len(paths):]))

    def evaluate(self, ctx: Context, state: ConfigState) -> Verdict:
        problems = [f"{p} is not installed" for p in state.missing_packages]
        for f in self.managed(ctx):
            seen = state.files.get(f.path)
            if seen != f.content:
                problems.append(f"{f.path} is missing" if seen is None else f"{f.path} differs from ours")
        for s in self.settings(ctx):
            values = read_keys(state.files.get(s.path) or "", list(s.values))
            problems += [f"{s.path}: {key} is {values[key] or 'unset'} (wanted {value})"
                         for key, value in s.values.items() if values[key] != value]
        if not state.missing_packages:  # conditions are about what the packages bring
            conditions = zip(self.conditions(ctx), state.held, strict=True)
            problems += [c.problem for c, held in conditions if not held]
        shown = ", ".join([*self.packages, *self._paths(ctx)])
        return Verdict(tuple(problems), "dpkg-query, files", shown)

    def plan(self, ctx: Context, state: ConfigState) -> Sequence[Operation]:
        ops: list[Operation] = [apt_install(*state.missing_packages)] if state.missing_packages else []
        ops += [WriteFile(f.path, f.content, f.mode) for f in self.managed(ctx)
                if state.files.get(f.path) != f.content]
        for s in self.settings(ctx):
            current = state.files.get(s.path) or ""
            if read_keys(current, list(s.values)) != dict(s.values):
                note = ", ".join(f"{k} {v}" for k, v in s.values.items())
                ops.append(WriteFile(s.path, set_keys(current, s.values), 0o644, note=note))
        return ops + [op for c, held in zip(self.conditions(ctx), state.held, strict=True) if not held
                      for op in c.operations]
