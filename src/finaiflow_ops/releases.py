"""What a target remembers about rollouts, in PROJECT_DIR/.finaiflow/ on the target itself:

    releases.json   the release history per service, with the current release marked
    deploy.lock     who is deploying (user@host, pid, since, command); absent when nobody is
    audit.log       one JSON line per deploy, rollback, repair, refusal or lock take-over
    loadgate.json   the zero-downtime gate's last verdict (written by loadtests/gate.py)

Kept on the target, not on the operator's laptop, so that every operator and every CI job sees
the same history and the same lock. Files are written through `Target.run` (a rename makes each
write atomic) and hold no secret: image references, ids, hashes, revisions, names and times.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

from finaiflow_ops import envfile
from finaiflow_ops.errors import CommandFailed, DeployLocked, UsageError
from finaiflow_ops.progress import Progress
from finaiflow_ops.project import STATE_DIR, Project

__all__ = [
    "STATE_DIR",
    "DeployLocked",
    "History",
    "Lock",
    "LockStatus",
    "Release",
    "audit",
    "config_hash",
    "deploy_lock",
    "history",
    "lock_status",
    "read_state",
    "record",
    "release_lock",
    "write_state",
]

KEEP_RELEASES = 50  # per service; older records are dropped (their images may be long gone)
LOCK_MAX_AGE = 30 * 60.0  # a deploy takes minutes at most: a lock this old was abandoned

ReleaseKind = Literal["deploy", "rollback", "observed"]  # observed: found running, not deployed by us

# Shell snippets run on the target with the text and the path as $1 and $2: arguments, never
# text pasted into a command line.
_READ = '[ -e "$1" ] || exit 3; cat -- "$1"'
_WRITE = 'mkdir -p -- "${2%/*}" && printf "%s" "$1" >"$2.tmp.$$" && mv -f -- "$2.tmp.$$" "$2"'
_CREATE = 'mkdir -p -- "${2%/*}" && set -C && printf "%s" "$1" >"$2"'  # noclobber: O_EXCL, atomic
_APPEND = 'mkdir -p -- "${2%/*}" && printf "%s\\n" "$1" >>"$2"'
_REMOVE_IF = '[ "$(cat -- "$2" 2>/dev/null)" = "$1" ] && rm -f -- "$2"'


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _state_path(stack: Project, name: str) -> str:
    return stack.state_path(name)


def read_state(stack: Project, name: str) -> str | None:
    """The text of a state file, None when it does not exist."""
    result = stack.target.run("sh", "-c", _READ, "sh", _state_path(stack, name), check=False)
    if result.exit_status == 3:
        return None
    if not result.ok:
        raise CommandFailed(f"cannot read {_state_path(stack, name)} on {stack.target}",
                            output_tail=result.stderr.strip())
    return result.stdout


def write_state(stack: Project, name: str, text: str) -> None:
    """Replace a state file atomically."""
    stack.target.run("sh", "-c", _WRITE, "sh", text, _state_path(stack, name))


def config_hash(service_config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """What says whether a service's configuration changed between two releases: its resolved
    config without the image (that is the release itself) and the build section, secret values
    replaced, hashed."""
    config = {k: v for k, v in service_config.items() if k not in ("image", "build")}
    text = envfile.redact(json.dumps(config, sort_keys=True), env)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- release history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One release of a service: what ran, how it was configured, and the schema it needs."""

    id: int
    service: str
    image: str  # the reference (finaiflow/api:1.1.0)
    image_id: str  # the content digest the reference pointed at (sha256:...)
    config_hash: str  # the service's compose config without its image and without secret values
    revision: str = ""  # the Alembic head this release migrated the database to ("" if none)
    revisions: tuple[str, ...] = ()  # every revision its migration scripts know
    backup: str | None = None  # the pre-deploy backup's id, when one was taken
    kind: ReleaseKind = "deploy"
    previous: int | None = None  # the release it replaced
    deployed_at: str = ""
    deployed_by: str = ""
    note: str = ""
    # The PostgreSQL restore point made just before its migrations ("" when none): the name and
    # its time (ISO 8601 UTC), so that `restore --before-release N` can bring the cluster back there.
    restore_point: str = ""
    restore_point_at: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["revisions"] = tuple(values.get("revisions") or ())
        return cls(**values)

    @property
    def label(self) -> str:
        return f"#{self.id} {self.image}"


@dataclass(frozen=True)
class History:
    """A service's releases, oldest first, and the current one."""

    service: str
    current: int | None = None
    releases: tuple[Release, ...] = field(default=())

    def get(self, release_id: int | None) -> Release | None:
        return next((r for r in self.releases if r.id == release_id), None)

    @property
    def current_release(self) -> Release | None:
        return self.get(self.current)

    def find(self, ref: str) -> Release:
        """A release by id ("3" or "#3") or by image reference (the newest with that image)."""
        wanted = ref.removeprefix("#")
        if wanted.isdigit() and (found := self.get(int(wanted))):
            return found
        for r in reversed(self.releases):
            if ref in (r.image, r.image_id):
                return r
        known = ", ".join(r.label for r in self.releases[-5:]) or "none"
        raise UsageError(f"no release {ref!r} of {self.service} in the history",
                         hint=f"see `finaiflow-ops releases {self.service}` (latest: {known})")

    def next_id(self) -> int:
        return max((r.id for r in self.releases), default=0) + 1

    def appended(self, release: Release) -> History:
        """This history with `release` recorded as the current one (what `record` would write)."""
        added = replace(release, id=self.next_id())
        return replace(self, current=added.id, releases=(*self.releases, added))


def _load_all(stack: Project) -> dict[str, Any]:
    text = read_state(stack, "releases.json")
    if not text:
        return {"services": {}}
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"{_state_path(stack, 'releases.json')} on {stack.target} is not valid JSON",
                         hint="restore it from a backup or move it aside to start a new history") from None
    return data


def history(stack: Project, service: str) -> History:
    """The release history of `service` on the stack's target."""
    entry = _load_all(stack).get("services", {}).get(service, {})
    releases = tuple(Release.from_json(r) for r in entry.get("releases", ()))
    return History(service, entry.get("current"), releases)


def record(stack: Project, release: Release) -> Release:
    """Append `release` to its service's history as the current one; returns it with its id.
    Call it holding the deploy lock: the read-modify-write is not atomic by itself."""
    data = _load_all(stack)
    entry = data.setdefault("services", {}).setdefault(release.service, {"current": None, "releases": []})
    past = History(release.service, entry.get("current"),
                   tuple(Release.from_json(r) for r in entry.get("releases", ())))
    release = replace(release, id=past.next_id(), deployed_at=release.deployed_at or now(),
                      deployed_by=release.deployed_by or who())
    entry["releases"] = [*entry.get("releases", []), asdict(release)][-KEEP_RELEASES:]
    entry["current"] = release.id
    write_state(stack, "releases.json", json.dumps(data, indent=2) + "\n")
    return release


# -- audit log ----------------------------------------------------------------------------------------


def audit(stack: Project, action: str, **details: Any) -> None:
    """Append one JSON line to the audit log: when, who, what, and its details."""
    line = json.dumps({"time": now(), "by": who(), "pid": os.getpid(), "action": action, **details},
                      default=str, sort_keys=False)
    stack.target.run("sh", "-c", _APPEND, "sh", line, _state_path(stack, "audit.log"))


# -- the deploy lock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    """Who holds a stack's deploy lock."""

    holder: str  # user@host
    host: str
    pid: int
    since: str
    command: str
    token: str = field(default="", repr=False)  # ours, so that releasing never removes another's lock

    @property
    def age_seconds(self) -> float:
        try:
            return (datetime.now(UTC) - datetime.fromisoformat(self.since)).total_seconds()
        except ValueError:
            return float("inf")

    def stale_reason(self, *, max_age: float = LOCK_MAX_AGE) -> str:
        """Why this lock is abandoned ("" when it may still be held): its process is gone (checked
        only from the host that took it), or it is older than any deploy takes."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        if self.age_seconds > max_age:
            return f"it is {self.age_seconds / 60:.0f} min old"
        return ""

    def describe(self) -> str:
        return f"{self.holder} (pid {self.pid}) since {self.since}: {self.command}"


@dataclass(frozen=True)
class LockStatus:
    """`lock status`: the lock file, its holder if any, and whether it is abandoned."""

    target: str
    path: str
    lock: Lock | None
    stale: str = ""

    @property
    def held(self) -> bool:
        return self.lock is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _read_lock(stack: Project) -> tuple[Lock | None, str]:
    text = read_state(stack, "deploy.lock")
    if text is None:
        return None, ""
    try:
        data = json.loads(text)
        return Lock(**{k: data[k] for k in ("holder", "host", "pid", "since", "command", "token")}), text
    except (ValueError, KeyError, TypeError):
        # Unreadable (a crash mid-write cannot do this, the write is a rename): treat as abandoned.
        return Lock("unknown", "", 0, "1970-01-01T00:00:00+00:00", "unreadable lock file"), text


def lock_status(stack: Project) -> LockStatus:
    lock, _ = _read_lock(stack)
    return LockStatus(str(stack.target), _state_path(stack, "deploy.lock"),
                      replace(lock, token="") if lock else None, lock.stale_reason() if lock else "")


def acquire(stack: Project, command: str, *, progress: Progress | None = None,
            max_age: float = LOCK_MAX_AGE) -> Lock:
    """Take the deploy lock or fail fast naming its holder; an abandoned lock is taken over."""
    mine = Lock(who(), socket.gethostname(), os.getpid(), now(), command, secrets.token_hex(8))
    text = json.dumps(asdict(mine))
    path = _state_path(stack, "deploy.lock")
    for _ in range(3):  # a take-over can race with another one; the O_EXCL create decides
        if stack.target.run("sh", "-c", _CREATE, "sh", text, path, check=False).ok:
            return mine
        held, held_text = _read_lock(stack)
        if held is None:
            continue  # released between our create and our read: try again
        reason = held.stale_reason(max_age=max_age)
        if not reason:
            raise DeployLocked(f"{stack.project} on {stack.target} is locked by {held.describe()}",
                               hint="wait for it to finish; if it is dead, `finaiflow-ops lock release`")
        if progress:
            progress(f"taking over the deploy lock of {held.describe()}: {reason}")
        audit(stack, "lock-takeover", previous=asdict(replace(held, token="")), reason=reason)
        stack.target.run("sh", "-c", _REMOVE_IF, "sh", held_text, path, check=False)
    raise DeployLocked(f"could not take the deploy lock of {stack.project} on {stack.target}",
                       hint="another deploy is taking it at the same time; try again")


def release(stack: Project, lock: Lock) -> None:
    """Give our lock back (only ours: the token must match)."""
    held, text = _read_lock(stack)
    if held is not None and held.token == lock.token:
        stack.target.run("sh", "-c", _REMOVE_IF, "sh", text, _state_path(stack, "deploy.lock"), check=False)


def release_lock(stack: Project) -> Lock | None:
    """Remove the lock whoever holds it (`lock release`, after a crash); returns what was removed."""
    held, text = _read_lock(stack)
    if held is not None:
        stack.target.run("sh", "-c", _REMOVE_IF, "sh", text, _state_path(stack, "deploy.lock"))
        audit(stack, "lock-release", previous=asdict(replace(held, token="")))
    return held


@contextlib.contextmanager
def deploy_lock(stack: Project, command: str, *, progress: Progress | None = None) -> Iterator[Lock]:
    """Hold the deploy lock for the duration of the block (released on error too; a SIGKILL
    leaves it behind, and the next command takes it over since its process is gone)."""
    lock = acquire(stack, command, progress=progress)
    try:
        yield lock
    finally:
        release(stack, lock)
