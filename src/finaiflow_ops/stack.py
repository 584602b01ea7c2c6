"""The compose project on a target: its files, services, containers and compose calls.

Compose stays the owner of every container (labels, names, `docker compose ps`); this module
reads containers through the Docker engine and changes them through the compose CLI. When the
target's engine is a swarm manager running (or about to run) the project as a swarm stack,
`up`, `down`, `status` and `base_url` go to finaiflow_ops.swarm instead (the `swarm` property),
and the containers of the swarm's tasks on this engine are found like compose's.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from finaiflow_ops import envfile
from finaiflow_ops.errors import CommandFailed, UsageError
from finaiflow_ops.project import Project
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

    from finaiflow_ops.swarm.cluster import Swarm

__all__ = ["ContainerInfo", "ServiceStatus", "Stack", "StackStatus"]

_PROJECT_LABEL = "com.docker.compose.project"
_SERVICE_LABEL = "com.docker.compose.service"
_ONEOFF_LABEL = "com.docker.compose.oneoff"
_STACK_LABEL = "com.docker.stack.namespace"
_SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
BACKENDS = ("auto", "compose", "swarm")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ContainerInfo:
    """One container of the stack, as the engine reports it."""

    name: str
    id: str
    service: str
    image: str
    image_id: str
    state: str  # created, running, restarting, exited, ...
    health: str  # healthy, unhealthy, starting, or "none" when the image has no healthcheck
    ports: tuple[str, ...]  # "127.0.0.1:443->443/tcp"
    restarts: int = 0

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "none")

    @classmethod
    def from_container(cls, c: Container) -> ContainerInfo:
        attrs = c.attrs
        state = attrs["State"]
        ports = []
        for port, bindings in sorted((attrs["NetworkSettings"].get("Ports") or {}).items()):
            for b in bindings or ():
                ports.append(f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}->{port}")  # noqa: S104
        return cls(
            name=c.name or "",
            id=c.id[:12] if c.id else "",
            service=c.labels.get(_SERVICE_LABEL)
            or c.labels.get(_SWARM_SERVICE_LABEL, "").removeprefix(c.labels.get(_STACK_LABEL, "") + "_"),
            image=attrs["Config"]["Image"],
            image_id=attrs["Image"],
            state=state["Status"],
            health=(state.get("Health") or {}).get("Status", "none"),
            ports=tuple(ports),
            restarts=attrs.get("RestartCount", 0),
        )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    containers: tuple[ContainerInfo, ...]

    @property
    def healthy(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers)


@dataclass(frozen=True)
class StackStatus:
    """What `stack status` reports: every service with its containers, and the published URLs."""

    target: str
    project: str
    project_dir: str
    services: tuple[ServiceStatus, ...]
    urls: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)


@dataclass(frozen=True)
class Stack(Project):
    """A compose project on a target, run by one of the backends (compose or swarm)."""

    backend: str = "auto"  # compose | swarm | auto: what the target runs, else swarm on a swarm manager

    # -- backend --------------------------------------------------------------------------------

    @cached_property
    def swarm(self) -> Swarm | None:
        """The swarm backend when the project runs (or is to run) as a swarm stack, else None.

        auto: a swarm stack of this project on the target wins, then compose containers of it;
        with neither, a swarm manager engine with swarm.yaml in the project directory means swarm.
        """
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
        if self.backend == "compose":
            return None
        self.compose_path  # noqa: B018 - both backends need it: say first when it is missing
        from finaiflow_ops.swarm.cluster import SWARM_FILE, Swarm, engine_state

        swarm = Swarm(self)
        if self.backend == "swarm":
            swarm.require_manager()
            return swarm
        if not engine_state(self)[1]:
            return None
        if swarm.services():
            return swarm
        if self._compose_containers(None, all=True):
            return None
        return swarm if self.target.exists(posixpath.join(self.project_dir, SWARM_FILE)) else None

    # -- containers -----------------------------------------------------------------------------

    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]:
        """The project's containers (one-off `compose run` containers excluded), by service and name;
        on a swarm, the containers of its tasks that run on this engine."""
        found = self._compose_containers(service, all=all)
        if not found and self.swarm is not None:
            labels = [f"{_STACK_LABEL}={self.project}"]
            if service:
                labels.append(f"{_SWARM_SERVICE_LABEL}={self.project}_{service}")
            found = self.target.docker().containers.list(all=all, filters={"label": labels})
        return sorted((ContainerInfo.from_container(c) for c in found), key=lambda c: (c.service, c.name))

    def _compose_containers(self, service: str | None, *, all: bool) -> list[Container]:
        labels = [f"{_PROJECT_LABEL}={self.project}", f"{_ONEOFF_LABEL}=False"]
        if service:
            labels.append(f"{_SERVICE_LABEL}={service}")
        found: list[Container] = self.target.docker().containers.list(all=all, filters={"label": labels})
        return found

    def container(self, service: str) -> Container:
        """A running container of `service` (the first by name); on a swarm, of its running task
        on whichever node runs it."""
        if self.swarm is not None:
            return self.swarm.container(service)
        running = [c for c in self.containers(service, all=False) if c.state == "running"]
        if not running:
            raise UsageError(f"service {service} has no running container on {self.target}",
                             hint="start the stack: finaiflow-ops stack up")
        return self.target.docker().containers.get(running[0].id)

    def exec(self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True) -> CommandResult:
        """Run a command inside a running container of `service`."""
        code, streams = self.container(service).exec_run(list(argv), user=user, demux=True)
        out, err = cast("tuple[bytes | None, bytes | None]", streams)
        result = CommandResult(tuple(argv), code or 0, (out or b"").decode(errors="replace"),
                               (err or b"").decode(errors="replace"))
        if check and not result.ok:
            raise CommandFailed(
                f"`{' '.join(argv[:3])}` failed in {service} (exit {result.exit_status})",
                argv=argv, exit_status=result.exit_status,
                output_tail=envfile.redact(result.stderr or result.stdout, self.env),
            )
        return result

    def psql(self, sql: str, *, database: str | None = None) -> list[list[str]]:
        """Run one SQL statement with psql inside the database container; rows as lists of fields."""
        user = self.env.get("POSTGRES_USER", "postgres")
        db = database or self.env.get("POSTGRES_DB", user)
        result = self.exec("postgres", ["psql", "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1", "-AtXq",
                                        "-F", "\t", "-c", sql])
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def logs(self, container_id: str, *, tail: int = 30) -> str:
        raw: Any = self.target.docker().containers.get(container_id).logs(tail=tail, timestamps=False)
        return envfile.redact(raw.decode(errors="replace"), self.env)

    # -- state ----------------------------------------------------------------------------------

    def status(self) -> StackStatus:
        if self.swarm is not None:
            return self.swarm.status()
        by_service: dict[str, list[ContainerInfo]] = {name: [] for name in self.services()}
        for c in self.containers():
            by_service.setdefault(c.service, []).append(c)
        services = tuple(ServiceStatus(name, tuple(cs)) for name, cs in by_service.items())
        return StackStatus(
            target=str(self.target),
            project=self.project,
            project_dir=self.project_dir,
            services=services,
            urls=tuple(self.urls(services)),
        )

    def urls(self, services: Iterable[ServiceStatus]) -> list[str]:
        """Published HTTP(S) URLs, from the port bindings of running containers."""
        urls = []
        for svc in services:
            for c in svc.containers:
                if c.state != "running":
                    continue
                for binding in c.ports:
                    host_part, _, container_port = binding.partition("->")
                    ip, _, port = host_part.rpartition(":")
                    scheme = {"443/tcp": "https", "80/tcp": "http", "9090/tcp": "http"}.get(container_port)
                    if scheme:
                        host = self.target.address if ip in ("0.0.0.0", "::") else ip  # noqa: S104
                        default = {"https": "443", "http": "80"}[scheme]
                        urls.append(f"{scheme}://{host}{'' if port == default else ':' + port}/")
        return sorted(set(urls))

    def base_url(self) -> str:
        """The HTTPS URL nginx serves the application at."""
        for url in self.status().urls:
            if url.startswith("https://"):
                return url.rstrip("/")
        raise UsageError(f"nginx publishes no HTTPS port on {self.target}", hint="start the stack first")

    # -- lifecycle ------------------------------------------------------------------------------

    def missing_images(self) -> dict[str, str]:
        """Service -> image for the images the engine does not have (nothing is ever pulled)."""
        import docker.errors

        missing = {}
        for service, image in self.images().items():
            try:
                self.target.docker().images.get(image)
            except docker.errors.ImageNotFound:
                missing[service] = image
        return missing

    def up(
        self,
        *,
        migrate_service: str = "api",
        migrate: Sequence[str] = ("alembic", "upgrade", "head"),
        timeout: float = 300.0,
        progress: Progress | None = None,
    ) -> StackStatus:
        """Start the stack and wait until every service is healthy.

        The migration service's dependencies start first, then its migrations run in a one-off
        container (never at application start: replicas would race), then everything else.
        """
        from finaiflow_ops import health

        if self.swarm is not None:
            return self.swarm.up(timeout=timeout, progress=progress)
        say = progress or (lambda _msg: None)
        missing = self.missing_images()
        if missing:
            listed = ", ".join(f"{img} ({svc})" for svc, img in sorted(missing.items()))
            raise UsageError(f"images missing on {self.target}: {listed}",
                             hint="build them (on this machine: sudo scripts/provision)")
        deps = self.dependencies(migrate_service)
        if deps:
            say(f"starting {', '.join(deps)}")
            self.compose("up", "--detach", "--no-build", "--pull", "never", *deps)
            health.wait_healthy(self, services=deps, timeout=timeout, progress=say)
        if migrate:
            say(f"running migrations ({' '.join(migrate)})")
            self.compose("run", "--rm", "--no-deps", "-T", migrate_service, *migrate)
        say("starting all services")
        self.compose("up", "--detach", "--no-build", "--pull", "never", "--remove-orphans")
        health.wait_healthy(self, timeout=timeout, progress=say)
        return self.status()

    def down(self, *, volumes: bool = False) -> None:
        """Stop and remove the stack's containers and network; `volumes` also deletes its data."""
        if self.swarm is not None:
            self.swarm.down(volumes=volumes)
            return
        self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []))
