"""The stack's container logs, as the runbook reads them (`compose logs -t [-f] [SERVICE]`), with
every line timestamped by Docker, containers merged in time order, and secrets from .env redacted.

    for line in logs.read(stack, "api", since=logs.parse_since("15m")): print(line.text)
    for line in logs.follow(stack, duration=60): ...

nginx writes its access log to the nginx_logs volume (fail2ban reads it there); only its errors
reach the container log.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from finaiflow_ops import envfile
from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import ContainerInfo, Stack

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.types.daemon import CancellableStream

__all__ = ["LogLine", "Logs", "follow", "parse_since", "read"]

DEFAULT_TAIL = 200  # per container, when neither --tail nor --since says otherwise
_SINCE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_POLL_SECONDS = 2.0  # how often follow looks for new containers (a rolling update starts some)


@dataclass(frozen=True)
class LogLine:
    """One line of a container's log, with the time Docker received it."""

    time: str  # RFC 3339 in UTC, nanoseconds as Docker gives them
    service: str
    container: str
    message: str

    @property
    def text(self) -> str:
        return f"{self.time} {self.container} | {self.message}"


@dataclass(frozen=True)
class Logs:
    """What `logs` read: the lines of every container of the service(s), in time order."""

    project: str
    services: tuple[str, ...]
    since: str | None
    lines: tuple[LogLine, ...]


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (30s, 15m, 2h, 1d) or an ISO 8601 time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    match = _SINCE_RE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a duration nor a time",
                         hint="use e.g. 30s, 15m, 2h, 1d, or 2024-05-01T12:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def sort_key(timestamp: str) -> str:
    """Docker trims trailing zeros off the nanoseconds; pad them so the text sorts as time does."""
    stamp, _, fraction = timestamp.rstrip("Z").partition(".")
    return f"{stamp}.{fraction:0<9}"


def _containers(stack: Stack, service: str | None) -> list[ContainerInfo]:
    if service:
        known = stack.services()
        if service not in known:
            raise UsageError(f"no service {service!r} in {stack.project}",
                             hint=f"services: {', '.join(known)}")
    return stack.containers(service)


def _parse(raw: str, info: ContainerInfo, env: dict[str, str]) -> LogLine:
    stamp, _, message = raw.partition(" ")
    return LogLine(stamp, info.service, info.name, envfile.redact(message, env))


def read(stack: Stack, service: str | None = None, *, since: datetime | None = None,
         tail: int | None = None) -> Logs:
    """The logs of a service (or every service), merged in time order.

    `tail` counts lines per container; without it and without `since`, the last DEFAULT_TAIL.
    """
    containers = _containers(stack, service)
    engine = stack.target.docker()
    env = stack.env
    lines: list[LogLine] = []
    for info in containers:
        raw = engine.containers.get(info.id).logs(timestamps=True, since=since, tail=_tail(tail, since))
        lines += [_parse(row, info, env) for row in raw.decode(errors="replace").splitlines() if row]
    lines.sort(key=lambda ln: sort_key(ln.time))
    services = (service,) if service else tuple(sorted({c.service for c in containers}))
    return Logs(stack.project, services, since.isoformat() if since else None, tuple(lines))


def _tail(tail: int | None, since: datetime | None) -> int | Literal["all"]:
    if tail is not None:
        return tail
    return "all" if since else DEFAULT_TAIL


def follow(stack: Stack, service: str | None = None, *, since: datetime | None = None,
           tail: int | None = None, duration: float | None = None) -> Iterator[LogLine]:
    """Lines as they are written, from every container of the service(s), including containers
    that start later (a rolling update's), until `duration` seconds pass (None: until interrupted).

    Lines of different containers come in the order they arrive, each with Docker's time stamp.
    """
    env = stack.env
    engine = stack.target.docker()
    lines: queue.Queue[LogLine] = queue.Queue()
    stop = threading.Event()
    streams: dict[str, CancellableStream[bytes] | None] = {}

    def pump(info: ContainerInfo, container: Container, first: bool) -> None:
        # A container found after the start is read from its beginning: its first lines are news.
        stream = container.logs(timestamps=True, stream=True, follow=True, since=since if first else None,
                                tail=_tail(tail, since) if first else "all")
        streams[info.id] = stream
        pending = b""
        # The stream ends, or raises, when the container goes away or when we close it.
        with contextlib.suppress(Exception):
            for chunk in stream:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for row in complete:
                    if row:
                        lines.put(_parse(row.decode(errors="replace"), info, env))
                if stop.is_set():
                    return

    def start(found: Iterable[ContainerInfo], first: bool) -> None:
        for info in found:
            if info.id not in streams:
                streams[info.id] = None
                thread = threading.Thread(target=pump, args=(info, engine.containers.get(info.id), first),
                                          daemon=True)
                thread.start()

    deadline = None if duration is None else time.monotonic() + duration
    start(_containers(stack, service), True)
    next_poll = time.monotonic() + _POLL_SECONDS
    try:
        while deadline is None or time.monotonic() < deadline:
            left = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            with contextlib.suppress(queue.Empty):
                yield lines.get(timeout=max(0.0, min(_POLL_SECONDS, left)))
            if time.monotonic() >= next_poll:
                start((c for c in stack.containers(service) if c.state == "running"), False)
                next_poll = time.monotonic() + _POLL_SECONDS
    finally:
        stop.set()
        for stream in list(streams.values()):
            if stream is not None:
                stream.close()
