"""The warm standby: after a deploy, the previous release's containers kept running, out of nginx's
upstream, for a window, so that a rollback is an upstream switch and a graceful reload.

    PROJECT_DIR/.finaiflow/standby.json   {"services": {"api": {release, image, containers, until, ...}}}

The record is written on the target beside releases.json and the deploy lock, under the deploy
lock, and nothing waits on a timer in a process: the first deploy, rollback or `standby retire`
after the window (or the job `standby schedule` installs) retires the containers and drops the
record. The memory check refuses a standby where the host, with both releases running, would keep
less than a reserve free (MemAvailable of the target's /proc/meminfo).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from finaiflow_ops.errors import UsageError
from finaiflow_ops.project import Project
from finaiflow_ops.releases import read_state, write_state

__all__ = ["DEFAULT_WINDOW", "STATE_FILE", "Memory", "Standby", "drop", "get", "keep", "memory", "read_all"]

DEFAULT_WINDOW = 15 * 60.0  # seconds a standby is kept after a deploy
STATE_FILE = "standby.json"
MIN_RESERVE = 256 * 1024 * 1024  # bytes the host must keep free with both releases running
RESERVE_SHARE = 0.10  # ... or this share of its memory, whichever is more


@dataclass(frozen=True)
class Standby:
    """A release kept warm behind the current one."""

    service: str
    release: int  # the release id the containers run
    image: str
    image_id: str
    containers: tuple[str, ...]  # container names
    since: str  # ISO times (UTC)
    until: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Standby:
        return cls(str(data["service"]), int(data["release"]), str(data["image"]), str(data["image_id"]),
                   tuple(data.get("containers") or ()), str(data["since"]), str(data["until"]))

    @classmethod
    def kept(cls, service: str, release: int, image: str, image_id: str, containers: tuple[str, ...],
             window: float) -> Standby:
        start = datetime.now(UTC)
        end = start + timedelta(seconds=window)
        return cls(service, release, image, image_id, containers, start.isoformat(timespec="seconds"),
                   end.isoformat(timespec="seconds"))

    def remaining(self, at: datetime | None = None) -> float:
        """Seconds left in the window (negative once it has ended; an unreadable time has ended)."""
        try:
            end = datetime.fromisoformat(self.until)
        except ValueError:
            return -1.0
        return (end - (at or datetime.now(UTC))).total_seconds()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    @property
    def label(self) -> str:
        return f"#{self.release} {self.image}"

    def describe(self) -> str:
        left = self.remaining()
        when = f"until {self.until} ({left / 60:.0f} min left)" if left > 0 else f"expired at {self.until}"
        return f"{self.label} on {', '.join(self.containers)}, {when}"


def read_all(project: Project) -> dict[str, Standby]:
    """Every recorded standby, by service (an unreadable file counts as none: the next command's
    repairs retire containers no record names)."""
    text = read_state(project, STATE_FILE)
    if not text:
        return {}
    try:
        services = json.loads(text).get("services", {})
        return {name: Standby.from_json(entry) for name, entry in services.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def get(project: Project, service: str) -> Standby | None:
    return read_all(project).get(service)


def _write(project: Project, records: dict[str, Standby]) -> None:
    data = {"services": {name: asdict(record) for name, record in sorted(records.items())}}
    write_state(project, STATE_FILE, json.dumps(data, indent=2) + "\n")


def keep(project: Project, record: Standby) -> None:
    """Record `record` as the service's standby (replacing any). Under the deploy lock."""
    _write(project, {**read_all(project), record.service: record})


def drop(project: Project, service: str) -> None:
    """Forget the service's standby (its containers were retired, or serve again)."""
    records = read_all(project)
    if records.pop(service, None) is not None:
        _write(project, records)


def parse_window(seconds: float | None) -> float:
    if seconds is None:
        return DEFAULT_WINDOW
    if seconds < 0:
        raise UsageError(f"invalid standby window {seconds:g} s", hint="give 0 (off) or more seconds")
    return seconds


@dataclass(frozen=True)
class Memory:
    """The target host's memory, from /proc/meminfo (bytes)."""

    total: int
    available: int

    @classmethod
    def parse(cls, meminfo: str) -> Memory | None:
        values: dict[str, int] = {}
        for line in meminfo.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[key.strip()] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
        if "MemTotal" not in values or "MemAvailable" not in values:
            return None
        return cls(values["MemTotal"], values["MemAvailable"])

    @property
    def reserve(self) -> int:
        return max(MIN_RESERVE, int(self.total * RESERVE_SHARE))

    def refuses_standby(self) -> str:
        """Why the host cannot keep a standby, measured with both releases running ("" when it can)."""
        if self.available >= self.reserve:
            return ""
        mib = 1024 * 1024
        return (f"only {self.available // mib} MiB of {self.total // mib} MiB available with both releases "
                f"running (the standby needs {self.reserve // mib} MiB left free)")


def memory(project: Project) -> Memory | None:
    """The target's memory now; None when it cannot be read (not Linux)."""
    result = project.target.run("cat", "/proc/meminfo", check=False)
    return Memory.parse(result.stdout) if result.ok else None

