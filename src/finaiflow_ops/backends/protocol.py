"""What the Stack and the deploy workflow (rollout.py) ask of a backend, compose or swarm.

A backend runs the project (up, down, status, its containers, a one-off command such as the
migrations) and rolls one service to an image, forward or back. A roll is a list of Steps: each
has a description (what `deploy --plan` prints) and an action (what `deploy` runs), so the plan
is the steps' descriptions and never a second account of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from finaiflow_ops.progress import Progress
from finaiflow_ops.project import Project
from finaiflow_ops.status import ContainerInfo, StackStatus

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendName",
    "Kind",
    "Located",
    "Roll",
    "Running",
    "ServiceRollout",
    "Settings",
    "Step",
]

Kind = Literal["deploy", "rollback"]
BackendName = Literal["compose", "swarm"]
Requested = Literal["auto", "compose", "swarm"]
BACKENDS: tuple[Requested, ...] = ("auto", "compose", "swarm")
MIGRATE: tuple[str, ...] = ("alembic", "upgrade", "head")


@dataclass(frozen=True)
class Step:
    """One step of a deploy or rollback."""

    phase: str  # the name its time is counted under (DeployResult.phases, the audit line); "" for none
    description: str  # what it does, as `deploy --plan` says it
    action: Callable[[], object]
    switches: bool = False  # once it is done, traffic is on the new release


@dataclass(frozen=True)
class Settings:
    """The options of one deploy or rollback, as a backend receives them. None: the backend's
    default; a backend refuses (UsageError) an option it has no meaning for, never ignores it."""

    health_timeout: float | None = None  # how long the new release has to prove it serves
    drain_timeout: float | None = None  # how long old nginx workers get to finish (compose only)
    proxy: str | None = None  # the nginx service in front (compose only)
    migrate: bool = True  # the service has Alembic migrations: run them, read and check revisions
    standby: float | None = None  # seconds the previous release is kept warm after a deploy; 0: off


@dataclass(frozen=True)
class Roll:
    """What to roll the service to."""

    kind: Kind
    image: str
    image_id: str
    replicas: int | None  # None: as many as run now
    previous_image: str  # what serves before the roll ("" when nothing does)
    previous: int | None = None  # its release id, when the history knows it
    # Called before the new release is gated (the migrations, when they run beside its start);
    # raises to fail the roll, the new containers removed.
    before_gate: Callable[[], None] | None = None


@dataclass(frozen=True)
class Running:
    """The release that serves now, as the backend sees it."""

    image: str
    image_id: str  # "" when the engine cannot say
    image_ids: frozenset[str]  # every image id that serves; empty: compare by reference

    def is_release(self, image: str, image_id: str) -> bool:
        return self.image_ids == {image_id} if self.image_ids else self.image == image


@dataclass(frozen=True)
class Outcome:
    """What a roll left: the containers (or tasks) serving, those retired, the drain's length."""

    containers: tuple[str, ...]
    retired: tuple[str, ...]
    drain_seconds: float
    standby: str = ""  # what became of the warm standby (kept, refused, used, not used and why)


@dataclass(frozen=True)
class Located:
    """Where a service's running container is: the docker CLI that reaches its engine (run on the
    target), its id, and how messages name it."""

    docker: tuple[str, ...]
    container_id: str
    where: str


class ServiceRollout(Protocol):
    """One service, about to be rolled on a backend (reads its state when built)."""

    @property
    def config_hash(self) -> str: ...
    def repairs(self) -> list[Step]: ...
    def running(self) -> Running | None: ...
    def replicas(self, wanted: int | None) -> int: ...
    def revisions(self, image: str) -> tuple[str, tuple[str, ...]]: ...
    def steps(self, roll: Roll) -> list[Step]: ...
    def lead_for_standby(self) -> None: ...
    def from_standby(self, roll: Roll, release: int) -> list[Step]: ...
    def outcome(self) -> Outcome: ...
    def close(self) -> None: ...


class Backend(Protocol):
    """The project run by compose or by a swarm."""

    @property
    def name(self) -> BackendName: ...
    @property
    def project(self) -> Project: ...
    def up(self, *, migrate_service: str = "api", migrate: Sequence[str] = MIGRATE, timeout: float = 300.0,
           progress: Progress | None = None) -> StackStatus: ...  # fmt: skip
    def down(self, *, volumes: bool = False) -> None: ...
    def status(self) -> StackStatus: ...
    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]: ...
    def container(self, service: str) -> Container: ...
    def locate(self, service: str) -> Located: ...
    def wait_healthy(self, services: Sequence[str], *, timeout: float,
                     progress: Progress | None = None) -> None: ...  # fmt: skip
    def one_off_where(self, image: str) -> str: ...
    def run_once(self, service: str, image: str, argv: Sequence[str]) -> None: ...
    def rollout(self, service: str, settings: Settings, progress: Progress) -> ServiceRollout: ...
