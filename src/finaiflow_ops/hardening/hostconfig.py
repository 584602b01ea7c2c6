"""Host rules that are Debian packages and configuration files, as Lynis asks for them.

Each rule here names the packages it needs, the files it owns (written whole, with a header saying
who wrote them) and the settings it keeps in files it shares with the system (`KEY VALUE` lines in
/etc/login.defs, the rest left alone). The facts are read in one round trip; apply installs what
is missing (apt's lists refreshed when empty or stale), writes what differs, then runs the rule's
own steps (start a service, initialise a database), each only when its check says so.
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
from finaiflow_ops.target import CommandResult

__all__ = ["HEADER", "ConfigState", "HostConfigRule", "ManagedFile", "Settings", "set_keys"]

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
class ConfigState:
    missing_packages: tuple[str, ...]
    files: dict[str, str | None]  # path -> current content (None: missing)
    extra: tuple[CommandResult, ...] = field(default=())  # the rule's own facts, in its order


class HostConfigRule(Rule[ConfigState]):
    """Packages installed, owned files as written, settings as wanted, plus the rule's own facts."""

    packages: tuple[str, ...] = ()

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        return ()

    def settings(self, ctx: Context) -> Sequence[Settings]:
        return ()

    def extra_facts(self, ctx: Context) -> Sequence[Sequence[str]]:
        """Commands whose results `extra_problems` and `extra_operations` read."""
        return ()

    def extra_problems(self, ctx: Context, state: ConfigState) -> list[str]:
        return []

    def extra_operations(self, ctx: Context, state: ConfigState) -> list[Operation]:
        return []

    # -- the rule -------------------------------------------------------------------------------

    def _paths(self, ctx: Context) -> list[str]:
        return [f.path for f in self.managed(ctx)] + [s.path for s in self.settings(ctx)]

    def facts(self, ctx: Context) -> ConfigState:
        paths, extra = self._paths(ctx), self.extra_facts(ctx)
        results = run_many(ctx.target, ("dpkg-query", "--version"),
                           *(("dpkg-query", "-W", "-f", "${Status}", p) for p in self.packages),
                           *(("cat", "--", p) for p in paths), *extra)
        if results[0].exit_status == 127:
            raise NotApplicable("not a Debian-based host (no dpkg-query)")
        packages = results[1:1 + len(self.packages)]
        missing = tuple(p for p, r in zip(self.packages, packages, strict=True)
                        if not (r.ok and r.stdout.strip().endswith(" installed")))
        read = results[1 + len(self.packages):1 + len(self.packages) + len(paths)]
        files = {p: (r.stdout if r.ok else None) for p, r in zip(paths, read, strict=True)}
        return ConfigState(missing, files, tuple(results[1 + len(self.packages) + len(paths):]))

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
        problems += self.extra_problems(ctx, state)
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
        return ops + self.extra_operations(ctx, state)
