"""Files of the stack on the host: the .env (secrets) 0600, TLS private keys 0600, and the
application's logs/ and uploads/ owned by the uid the api runs as (the runbook's chown 1001).

Modes are read with testinfra on the target; TLS keys are found in the nginx container's
certificate volume, at its path on the host (from the engine), by content ("PRIVATE KEY").
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops.hardening.base import (
    Command,
    Context,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    mode_text,
)

__all__ = ["APP_DIRS", "APP_UID", "AppDirsRule", "EnvFileModeRule", "FileFact", "TlsKeyModeRule"]

APP_UID = 1001
APP_DIRS = ("logs", "uploads")
TLS_DIR_IN_CONTAINER = "/etc/nginx/ssl"


@dataclass(frozen=True)
class FileFact:
    path: str
    mode: int

    @property
    def private(self) -> bool:
        return not self.mode & 0o077

    @property
    def wanted_mode(self) -> int:
        return self.mode & 0o700 or 0o600


def _modes(ctx: Context, paths: Sequence[str]) -> list[FileFact]:
    host = ctx.target.host_facts()
    return [FileFact(p, host.file(p).mode) for p in paths]


def _chmod(files: Sequence[FileFact]) -> list[Operation]:
    return [Command(f"chmod {mode_text(f.wanted_mode)} {f.path}", ("chmod", mode_text(f.wanted_mode), f.path))
            for f in files if not f.private]


def _mode_problems(files: Sequence[FileFact]) -> tuple[str, ...]:
    return tuple(f"{f.path} is mode {mode_text(f.mode)} (readable by others; wanted 0600)"
                 for f in files if not f.private)


class EnvFileModeRule(Rule[list[FileFact]]):
    id = "files.env-mode"
    title = ".env (the stack's secrets) mode 0600"
    severity = Severity.HIGH

    def facts(self, ctx: Context) -> list[FileFact]:
        path = ctx.need_stack().env_path
        if not ctx.target.host_facts().file(path).exists:
            raise NotApplicable(f"no .env at {path}")
        return _modes(ctx, [path])

    def evaluate(self, ctx: Context, state: list[FileFact]) -> Verdict:
        return Verdict(_mode_problems(state), "file mode", f"{state[0].path} {mode_text(state[0].mode)}")

    def plan(self, ctx: Context, state: list[FileFact]) -> Sequence[Operation]:
        return _chmod(state)


class TlsKeyModeRule(Rule[list[FileFact]]):
    id = "files.tls-keys"
    title = "TLS private keys (nginx's certificate volume) mode 0600"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> list[FileFact]:
        directory = ctx.volume_dir(TLS_DIR_IN_CONTAINER)
        if directory is None:
            raise NotApplicable(f"nginx has no volume at {TLS_DIR_IN_CONTAINER}")
        found = ctx.target.run("grep", "-rl", "--", "PRIVATE KEY", directory, check=False)
        if found.exit_status > 1:
            raise NotApplicable(f"cannot read {directory} on {ctx.target} (run as root)")
        keys = sorted(found.stdout.split("\n"))
        return _modes(ctx, [k for k in keys if k])

    def evaluate(self, ctx: Context, state: list[FileFact]) -> Verdict:
        shown = ", ".join(f"{posixpath.basename(f.path)} {mode_text(f.mode)}" for f in state)
        shown = shown or "no key found"
        return Verdict(_mode_problems(state), "file mode (nginx_ssl volume)", shown)

    def plan(self, ctx: Context, state: list[FileFact]) -> Sequence[Operation]:
        return _chmod(state)


@dataclass(frozen=True)
class DirOwners:
    path: str
    foreign: tuple[str, ...]  # entries not owned by APP_UID:APP_UID (the first few)


class AppDirsRule(Rule[list[DirOwners]]):
    id = "files.app-dirs"
    title = f"logs/ and uploads/ owned by {APP_UID}:{APP_UID} (the uid the api runs as)"
    severity = Severity.LOW

    def facts(self, ctx: Context) -> list[DirOwners]:
        stack = ctx.need_stack()
        dirs = [posixpath.join(stack.project_dir, name) for name in APP_DIRS]
        present = [d for d in dirs if ctx.target.run("test", "-d", d, check=False).ok]
        if not present:
            raise NotApplicable(f"no {' or '.join(n + '/' for n in APP_DIRS)} in {stack.project_dir}")
        uid = str(APP_UID)
        owners = []
        for d in present:
            listed = ctx.target.run("find", d, "(", "!", "-uid", uid, "-o", "!", "-gid", uid, ")", "-print")
            foreign = listed.stdout.splitlines()
            more = (f"... {len(foreign) - 5} more",) if len(foreign) > 5 else ()
            owners.append(DirOwners(d, (*foreign[:5], *more)))
        return owners

    def evaluate(self, ctx: Context, state: list[DirOwners]) -> Verdict:
        problems = tuple(f"{d.path}: not owned by {APP_UID}: {', '.join(d.foreign)}"
                         for d in state if d.foreign)
        return Verdict(problems, "find -uid/-gid", ", ".join(d.path for d in state))

    def plan(self, ctx: Context, state: list[DirOwners]) -> Sequence[Operation]:
        owner = f"{APP_UID}:{APP_UID}"
        return [Command(f"chown -R {owner} {d.path}", ("chown", "-R", owner, d.path))
                for d in state if d.foreign]
