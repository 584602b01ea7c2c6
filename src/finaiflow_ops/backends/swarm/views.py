"""Typed views of the engine's JSON for a swarm service: the fields the deploy code reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ServiceView", "UpdateStatus", "spec_image"]


def _image(container_spec: Mapping[str, Any]) -> str:
    return str(container_spec.get("Image", "")).split("@", 1)[0]


def spec_image(attrs: Mapping[str, Any]) -> str:
    """The image (without its digest) a service's spec runs."""
    return _image(attrs["Spec"]["TaskTemplate"]["ContainerSpec"])


@dataclass(frozen=True)
class UpdateStatus:
    """The engine's UpdateStatus of a service: its last (or current) update or rollback."""

    state: str  # updating, completed, paused, rollback_started, rollback_completed, ...; "" for none
    message: str
    started_at: str
    completed_at: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> UpdateStatus:
        data = data or {}
        return cls(
            str(data.get("State", "")),
            str(data.get("Message", "")),
            str(data.get("StartedAt", "")),
            str(data.get("CompletedAt", "")),
        )


@dataclass(frozen=True)
class ServiceView:
    """A swarm service as `docker service inspect` shows it."""

    name: str
    image: str
    previous_image: str  # the image of PreviousSpec ("" without one): where `service rollback` goes
    replicas: int
    parallelism: int
    order: str
    failure_action: str
    update: UpdateStatus

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ServiceView:
        spec = attrs["Spec"]
        previous = (attrs.get("PreviousSpec") or {}).get("TaskTemplate", {}).get("ContainerSpec", {})
        update = spec.get("UpdateConfig") or {}
        return cls(
            name=str(spec.get("Name", "")),
            image=spec_image(attrs),
            previous_image=_image(previous),
            replicas=int((spec.get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)),
            parallelism=int(update.get("Parallelism", 1)),
            order=str(update.get("Order", "stop-first")),
            failure_action=str(update.get("FailureAction", "pause")),
            update=UpdateStatus.from_json(attrs.get("UpdateStatus")),
        )
