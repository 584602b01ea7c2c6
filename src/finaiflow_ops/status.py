"""What runs: containers, services and the stack, as `stack status` reports them on either backend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from finaiflow_ops.errors import UsageError
from finaiflow_ops.standby import Standby

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["ContainerInfo", "ServiceStatus", "StackStatus", "published_urls"]

_SERVICE_LABEL = "com.docker.compose.service"
STACK_LABEL = "com.docker.stack.namespace"
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"


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
            or c.labels.get(SWARM_SERVICE_LABEL, "").removeprefix(c.labels.get(STACK_LABEL, "") + "_"),
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
    standby: tuple[Standby, ...] = field(default=())  # warm standbys kept out of nginx's upstream

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)

    def base_url(self) -> str:
        """The HTTPS URL nginx serves the application at."""
        for url in self.urls:
            if url.startswith("https://"):
                return url.rstrip("/")
        raise UsageError(f"nginx publishes no HTTPS port on {self.target}", hint="start the stack first")


def published_urls(services: Iterable[ServiceStatus], address: str) -> list[str]:
    """Published HTTP(S) URLs, from the port bindings of running containers (`address` for the
    ones bound to every interface)."""
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
                    host = address if ip in ("0.0.0.0", "::") else ip  # noqa: S104
                    default = {"https": "443", "http": "80"}[scheme]
                    urls.append(f"{scheme}://{host}{'' if port == default else ':' + port}/")
    return sorted(set(urls))
