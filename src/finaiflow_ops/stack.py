"""The project on a target as one thing to start, stop, observe and reach into, whichever backend
runs it: `runtime` is the backend (compose, or swarm when the target's engine is a swarm manager
running, or about to run, the project as a swarm stack), picked once by backends.select.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from finaiflow_ops.backends import BACKENDS, Backend, select
from finaiflow_ops.backends.protocol import MIGRATE, Requested
from finaiflow_ops.images import missing_images
from finaiflow_ops.progress import Progress
from finaiflow_ops.project import Project
from finaiflow_ops.status import ContainerInfo, ServiceStatus, StackStatus, published_urls
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["BACKENDS", "ContainerInfo", "ServiceStatus", "Stack", "StackStatus"]


@dataclass(frozen=True)
class Stack(Project):
    """A compose project on a target, run by one of the backends (compose or swarm)."""

    backend: Requested = "auto"  # compose | swarm | auto: what the target runs, else swarm on a swarm manager

    @cached_property
    def runtime(self) -> Backend:
        """The backend that runs the project (backends.select)."""
        return select(self, self.backend)

    # -- containers -----------------------------------------------------------------------------

    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]:
        """The project's containers (one-off `compose run` containers excluded), by service and name;
        on a swarm, the containers of its tasks that run on this engine."""
        return self.runtime.containers(service, all=all)

    def container(self, service: str) -> Container:
        """A running container of `service` (the first by name); on a swarm, of its running task
        on whichever node runs it."""
        return self.runtime.container(service)

    def exec(self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True,
             expect_output: bool = False) -> CommandResult:
        """Run a command inside a running container of `service` (see Project.exec_in)."""
        return self.exec_in(self.container(service), service, argv, user=user, check=check,
                            expect_output=expect_output)

    def psql(self, sql: str, *, database: str | None = None, expect_rows: bool = False) -> list[list[str]]:
        """Run one SQL statement with psql inside the database container; rows as lists of fields.
        `expect_rows`: a read that returns rows when all is well (Alembic's revision) is made once
        more when it printed nothing (see Project.exec_in); never for a write."""
        user = self.env.get("POSTGRES_USER", "postgres")
        db = database or self.env.get("POSTGRES_DB", user)
        result = self.exec(
            "postgres",
            ["psql", "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1", "-AtXq", "-F", "\t", "-c", sql],
            expect_output=expect_rows,
        )
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    # -- state ----------------------------------------------------------------------------------

    def status(self) -> StackStatus:
        return self.runtime.status()

    def urls(self, services: Iterable[ServiceStatus]) -> list[str]:
        """Published HTTP(S) URLs, from the port bindings of running containers."""
        return published_urls(services, self.target.address)

    def base_url(self) -> str:
        """The HTTPS URL nginx serves the application at."""
        return self.status().base_url()

    # -- lifecycle ------------------------------------------------------------------------------

    def missing_images(self) -> dict[str, str]:
        """Service -> image for the images the engine does not have (nothing is ever pulled)."""
        return missing_images(self)

    def up(self, *, migrate_service: str = "api", migrate: Sequence[str] = MIGRATE, timeout: float = 300.0,
           progress: Progress | None = None) -> StackStatus:  # fmt: skip
        """Start the stack and wait until every service is healthy (migrations first, in a one-off
        container or swarm job: never at application start, where replicas would race)."""
        return self.runtime.up(
            migrate_service=migrate_service, migrate=migrate, timeout=timeout, progress=progress
        )

    def down(self, *, volumes: bool = False) -> None:
        """Stop and remove the stack's containers and network; `volumes` also deletes its data."""
        self.runtime.down(volumes=volumes)
