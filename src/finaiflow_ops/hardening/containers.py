"""The stack's containers, as compose declares them and as the engine runs them.

Published ports matter more than the firewall: Docker publishes a port with its own DNAT rules,
which ufw never sees (moby issue 4737), so "ufw allow 22,80,443" leaves a database or Prometheus
published on 0.0.0.0 open to the world. Only nginx may publish on a public address; everything
else is bound to 127.0.0.1 or not published. Both the compose configuration (what the next
`up` creates) and the running containers (what is open now) are checked.

None of these rules applies itself: the fix is in the compose file, which is the user's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from finaiflow_ops.docker_inspect import mounts
from finaiflow_ops.hardening.base import (
    Context,
    Manual,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
)
from finaiflow_ops.stack import ContainerInfo

__all__ = [
    "ContainerFacts",
    "ContainerLimitsRule",
    "Exposure",
    "PrivilegedContainersRule",
    "PublishedPortsRule",
    "exposures",
]

PUBLIC_SERVICES = frozenset({"nginx"})
DOCKER_SOCKETS = frozenset({"/var/run/docker.sock", "/run/docker.sock"})
# Ports the runbook (or a habit) publishes, and what is behind them.
_KNOWN = {9090: "the Prometheus UI", 3000: "Grafana", 5432: "PostgreSQL", 6379: "Redis", 8000: "the API",
          9093: "Alertmanager"}


@dataclass(frozen=True)
class Exposure:
    """One port binding of one service: where it was seen, the host address and port, the container port."""

    service: str
    where: str  # "compose file" or a container name
    host_ip: str
    host_port: str
    target: int

    @property
    def public(self) -> bool:
        return self.host_ip in ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - what we look for

    def describe(self) -> str:
        what = _KNOWN.get(self.target)
        ip = self.host_ip or "0.0.0.0"  # noqa: S104 - compose's default address, reported
        text = f"{self.service} publishes {self.target} on {ip}:{self.host_port} ({self.where})"
        return text + (f": {what} open to the internet" if what else "")


def exposures(config: Mapping[str, Any], containers: Iterable[ContainerInfo]) -> list[Exposure]:
    """Every port binding, from compose's resolved configuration and from the running containers."""
    found = []
    for name, service in (config.get("services") or {}).items():
        for port in service.get("ports") or ():
            if isinstance(port, dict) and port.get("published"):
                found.append(Exposure(name, "compose file", str(port.get("host_ip") or ""),
                                      str(port["published"]), int(port["target"])))
    for c in containers:
        if c.state != "running":
            continue
        for binding in c.ports:  # "127.0.0.1:8443->443/tcp", ":::9090->9090/tcp"
            host, _, container_port = binding.partition("->")
            ip, _, port = host.rpartition(":")
            found.append(Exposure(c.service, c.name, ip, port,
                                  int(container_port.split("/")[0])))
    return found


class PublishedPortsRule(Rule[list[Exposure]]):
    id = "docker.published-ports"
    title = "only nginx publishes ports publicly (Docker-published ports bypass ufw)"
    severity = Severity.HIGH

    def facts(self, ctx: Context) -> list[Exposure]:
        stack = ctx.need_stack()
        return exposures(stack.config, stack.containers())

    def evaluate(self, ctx: Context, state: list[Exposure]) -> Verdict:
        bad = [e for e in state if e.public and e.service not in PUBLIC_SERVICES]
        problems = [e.describe() for e in bad]
        if problems:
            problems[-1] += " (Docker-published ports bypass ufw)"
        local = sum(1 for e in state if not e.public)
        return Verdict(tuple(problems), "compose config, running containers",
                       f"{len(state)} bindings: public only for {', '.join(sorted(PUBLIC_SERVICES))}, "
                       f"{local} on loopback")

    def plan(self, ctx: Context, state: list[Exposure]) -> Sequence[Operation]:
        raise Manual('bind these ports to 127.0.0.1 in the compose file ("127.0.0.1:9090:9090") or remove '
                     "them, then `stack up`; reach them through an SSH tunnel")


@dataclass(frozen=True)
class ContainerFacts:
    """What the rules read of a container's `docker inspect`."""

    name: str
    privileged: bool
    docker_socket: tuple[str, ...]  # mount sources/destinations that are the Docker socket
    memory: int  # bytes; 0 = no limit
    healthcheck: bool

    @classmethod
    def from_inspect(cls, name: str, attrs: Mapping[str, Any]) -> ContainerFacts:
        host = attrs.get("HostConfig") or {}
        sockets = tuple(sorted({m.source for m in mounts(attrs)
                                if {m.source, m.destination} & DOCKER_SOCKETS}))
        test = ((attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
        return cls(name, bool(host.get("Privileged")), sockets, int(host.get("Memory") or 0),
                   bool(test) and test != ["NONE"])


def container_facts(ctx: Context) -> list[ContainerFacts]:
    stack = ctx.need_stack()
    infos = stack.containers()
    if not infos:
        raise NotApplicable(f"no containers in {stack.project} (the stack is not started)")
    engine = stack.target.docker()
    return [ContainerFacts.from_inspect(info.name, engine.containers.get(info.id).attrs) for info in infos]


class _ContainersRule(Rule[list[ContainerFacts]]):
    def facts(self, ctx: Context) -> list[ContainerFacts]:
        return container_facts(ctx)


class PrivilegedContainersRule(_ContainersRule):
    id = "docker.containers.privileged"
    title = "no privileged containers, no Docker socket mounted into a container"
    severity = Severity.HIGH

    def evaluate(self, ctx: Context, state: list[ContainerFacts]) -> Verdict:
        problems = [f"{c.name} is privileged" for c in state if c.privileged]
        problems += [f"{c.name} mounts the Docker socket {', '.join(c.docker_socket)} (root on the host)"
                     for c in state if c.docker_socket]
        return Verdict(tuple(problems), "docker inspect", f"{len(state)} containers unprivileged, no socket")

    def plan(self, ctx: Context, state: list[ContainerFacts]) -> Sequence[Operation]:
        raise Manual("remove `privileged: true` and docker.sock volumes from the compose file, "
                     "then `stack up`")


class ContainerLimitsRule(_ContainersRule):
    id = "docker.containers.limits"
    title = "every container has a memory limit and a health check"
    severity = Severity.MEDIUM

    def evaluate(self, ctx: Context, state: list[ContainerFacts]) -> Verdict:
        problems = [f"{c.name} has no memory limit" for c in state if not c.memory]
        problems += [f"{c.name} has no health check" for c in state if not c.healthcheck]
        return Verdict(tuple(problems), "docker inspect",
                       f"{len(state)} containers limited, with health checks")

    def plan(self, ctx: Context, state: list[ContainerFacts]) -> Sequence[Operation]:
        raise Manual("set mem_limit and a healthcheck for these services in the compose file, "
                     "then `stack up`")
