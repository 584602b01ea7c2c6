"""Typed views of `docker inspect` data, for the fields this package reads of it.

    mounts(container.attrs)            # (Mount(source, destination), ...)
    source_at(container.attrs, "/x")   # the host path mounted at /x, or None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Mount", "mounts", "source_at"]


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
