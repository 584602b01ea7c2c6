"""The compose backend: the project's containers, owned by compose (labels, names, `docker compose
ps`), read through the Docker engine and changed through the compose CLI (Project.compose)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from finaiflow_ops import health
from finaiflow_ops import standby as standbys
from finaiflow_ops.backends.compose.rollout import ComposeRollout
from finaiflow_ops.backends.protocol import MIGRATE, BackendName, Located, Settings
from finaiflow_ops.errors import UsageError
from finaiflow_ops.images import image_variable, require_images
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.project import Project
from finaiflow_ops.status import ContainerInfo, ServiceStatus, StackStatus, published_urls
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["ComposeBackend"]

_PROJECT_LABEL = "com.docker.compose.project"
_SERVICE_LABEL = "com.docker.compose.service"
_ONEOFF_LABEL = "com.docker.compose.oneoff"
MIGRATION_TIMEOUT = 900.0


class ComposeBackend:
    """The project run by `docker compose` on the target's engine."""

    name: BackendName = "compose"

    def __init__(self, project: Project) -> None:
        self.project = project

    @property
    def env(self) -> dict[str, str]:
        return self.project.env

    def services(self) -> list[str]:
        return self.project.services()

    # -- containers -----------------------------------------------------------------------------

    def engine_containers(self, service: str | None = None, *, all: bool = True) -> list[Container]:
        """The engine's containers of the project (one-off `compose run` containers excluded)."""
        labels = [f"{_PROJECT_LABEL}={self.project.name}", f"{_ONEOFF_LABEL}=False"]
        if service:
            labels.append(f"{_SERVICE_LABEL}={service}")
        found: list[Container] = self.project.target.docker().containers.list(
            all=all, filters={"label": labels}
        )
        return found

    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]:
        found = self.engine_containers(service, all=all)
        return sorted((ContainerInfo.from_container(c) for c in found), key=lambda c: (c.service, c.name))

    def container(self, service: str) -> Container:
        """A running container of `service` (the first by name)."""
        running = [c for c in self.containers(service, all=False) if c.state == "running"]
        if not running:
            raise UsageError(
                f"service {service} has no running container on {self.project.target}",
                hint="start the stack: finaiflow-ops stack up",
            )
        return self.project.target.docker().containers.get(running[0].id)

    def locate(self, service: str) -> Located:
        c = self.container(service)
        return Located(
            ("docker",), c.id or c.name or "", f"{service} of {self.project.name} on {self.project.target}"
        )

    def wait_healthy(self, services: Sequence[str], *, timeout: float,
                     progress: Progress | None = None) -> None:  # fmt: skip
        """Until every container of `services` runs and is healthy (health.wait_healthy)."""
        health.wait_healthy(self, services=services, timeout=timeout, progress=progress)

    def exec(self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True) -> CommandResult:
        """Run a command inside a running container of `service`."""
        return self.project.exec_in(self.container(service), service, argv, user=user, check=check)

    def logs(self, container_id: str, *, tail: int = 30) -> str:
        return self.project.logs(container_id, tail=tail)

    # -- state ----------------------------------------------------------------------------------

    def status(self) -> StackStatus:
        by_service: dict[str, list[ContainerInfo]] = {name: [] for name in self.project.services()}
        for c in self.containers():
            by_service.setdefault(c.service, []).append(c)
        services = tuple(ServiceStatus(name, tuple(cs)) for name, cs in by_service.items())
        return StackStatus(
            target=str(self.project.target),
            project=self.project.name,
            project_dir=self.project.project_dir,
            services=services,
            urls=tuple(self.urls(services)),
            standby=tuple(standbys.read_all(self.project).values()),
        )

    def urls(self, services: Sequence[ServiceStatus]) -> list[str]:
        return published_urls(services, self.project.target.address)

    # -- lifecycle ------------------------------------------------------------------------------

    def up(self, *, migrate_service: str = "api", migrate: Sequence[str] = MIGRATE, timeout: float = 300.0,
           progress: Progress | None = None) -> StackStatus:  # fmt: skip
        """Start the stack and wait until every service is healthy.

        The migration service's dependencies start first, then its migrations run in a one-off
        container (never at application start: replicas would race), then everything else.
        """
        say = or_quiet(progress)
        require_images(self.project, hint="build them (on this machine: sudo scripts/provision)")
        self.retire_standbys(say)
        deps = self.project.dependencies(migrate_service)
        if deps:
            say(f"starting {', '.join(deps)}")
            self.project.compose("up", "--detach", "--no-build", "--pull", "never", *deps)
            health.wait_healthy(self, services=deps, timeout=timeout, progress=say)
        if migrate:
            say(f"running migrations ({' '.join(migrate)})")
            self.project.compose("run", "--rm", "--no-deps", "-T", migrate_service, *migrate)
        say("starting all services")
        self.project.compose("up", "--detach", "--no-build", "--pull", "never", "--remove-orphans")
        health.wait_healthy(self, timeout=timeout, progress=say)
        return self.status()

    def retire_standbys(self, say: Progress) -> None:
        """Stop and remove every warm standby (finaiflow_ops.standby) before `compose up`: compose
        scales a service back to its configured count by removing the containers beyond it, and
        may remove the serving ones rather than the standby (seen with compose 2.26)."""
        import docker.errors

        for service, kept in standbys.read_all(self.project).items():
            say(f"retiring the warm standby of {service} ({kept.describe()}) before compose up")
            for c in self.engine_containers(service):
                if c.name in kept.containers:
                    with contextlib.suppress(docker.errors.NotFound):
                        c.stop(timeout=40)
                        c.remove()
            standbys.drop(self.project, service)

    def down(self, *, volumes: bool = False) -> None:
        """Stop and remove the stack's containers and network; `volumes` also deletes its data."""
        self.project.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []))

    def one_off_where(self, image: str) -> str:
        return f"in a one-off container of {image}"

    def run_once(self, service: str, image: str, argv: Sequence[str]) -> None:
        """`argv` in a one-off container of `service` with `image` (compose run --rm)."""
        self.project.compose(
            "run",
            "--rm",
            "--no-deps",
            "-T",
            service,
            *argv,
            env={image_variable(self.project, service): image},
            timeout=MIGRATION_TIMEOUT,
        )

    def rollout(self, service: str, settings: Settings, progress: Progress) -> ComposeRollout:
        return ComposeRollout(self, service, settings, progress)
