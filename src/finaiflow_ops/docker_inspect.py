"""Typed views of `docker inspect` data, for the fields this package reads of it.

    mounts(container.attrs)            # (Mount(source, destination), ...)
    source_at(container.attrs, "/x")   # the host path mounted at /x, or None
    Inspect.from_attrs(container.attrs)  # creation time, exit code, last health check output
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Inspect", "Mount", "epoch", "mounts", "source_at"]


@dataclass(frozen=True)
class Mount:
    """One mount of a container: the host path (of a volume or a bind mount) and where it is mounted."""

    source: str
    destination: str

    @classmethod
    def from_json(cls, mount: Mapping[str, Any]) -> Mount:
        return cls(str(mount.get("Source") or ""), str(mount.get("Destination") or ""))


def mounts(attrs: Mapping[str, Any]) -> tuple[Mount, ...]:
    """The mounts of a container's inspect data."""
    return tuple(Mount.from_json(m) for m in attrs.get("Mounts") or ())


def source_at(attrs: Mapping[str, Any], destination: str) -> str | None:
    """The host path mounted at `destination` in the container, or None when nothing is."""
    return next((m.source for m in mounts(attrs) if m.destination == destination and m.source), None)


@dataclass(frozen=True)
class Inspect:
    """The fields of `docker container inspect` the roll reads."""

    created: float  # epoch seconds
    exit_code: str  # "?" when the engine does not say
    health_output: str  # the last health check's output, on one line ("no health output")
    health_test: tuple[str, ...] = ()  # the image's health check as an argv ("" when it has none)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Inspect:
        state = attrs.get("State") or {}
        log = (state.get("Health") or {}).get("Log") or []
        output = "no health output"
        if log:
            last = log[-1]
            output = " ".join(str(last.get("Output", "")).split())[:200] or f"exit {last.get('ExitCode')}"
        created = epoch(attrs["Created"]) if attrs.get("Created") else 0.0
        return cls(created, str(state.get("ExitCode", "?")), output,
                   health_argv((attrs.get("Config") or {}).get("Healthcheck") or {}))


def health_argv(healthcheck: Mapping[str, Any]) -> tuple[str, ...]:
    """A container's HEALTHCHECK test as the argv that runs it in the container (() for NONE)."""
    test = [str(part) for part in healthcheck.get("Test") or ()]
    if test[:1] == ["CMD"]:
        return tuple(test[1:])
    if test[:1] == ["CMD-SHELL"] and len(test) > 1:
        return ("/bin/sh", "-c", test[1])
    return ()


def epoch(docker_time: str) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2026-11-24T03:06:27.017640131Z") as epoch seconds."""
    head, _, rest = docker_time.rstrip("Z").partition(".")
    fraction = float(f"0.{rest[:6]}") if rest else 0.0
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + fraction
