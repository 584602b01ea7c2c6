"""Which containers of a compose service serve: what the start-first rollout reads before it acts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from finaiflow_ops.proxy import Upstream
from finaiflow_ops.status import ContainerInfo

__all__ = ["ServiceState", "names"]


@dataclass(frozen=True)
class ServiceState:
    """The service's containers, and which of them nginx routes to."""

    containers: tuple[ContainerInfo, ...]
    upstream: Upstream | None
    env_image_id: str
    # With `server S:PORT`, nginx resolved S when its current workers started: containers
    # created after that moment get no traffic. Epoch seconds; None when unknown.
    resolved_at: float | None = None
    created: Mapping[str, float] = field(default_factory=dict)  # container id -> creation (epoch)
    # The containers standby.json names (the previous release kept warm, out of the upstream).
    standby_names: frozenset[str] = frozenset()
    switching: bool = False  # the switching flag is raised (under the lock: left by a killed command)

    @property
    def running(self) -> list[ContainerInfo]:
        return [c for c in self.containers if c.state == "running"]

    @property
    def stopped(self) -> list[ContainerInfo]:
        return [c for c in self.containers if c.state != "running"]

    @property
    def serving(self) -> list[ContainerInfo]:
        """The containers traffic goes to: those the upstream names. With the entrypoint's
        `server S:PORT`: those that existed when nginx resolved S, and of them those of the image
        .env names (others were started by an interrupted deploy). Failing all, every running one."""
        running = self.running
        if self.upstream and not self.upstream.by_service_name:
            named = [c for c in running if c.name in self.upstream.hosts]
            if named:
                return named
        known = running
        if self.resolved_at is not None:
            # ps gives whole seconds: a container created within a second of the reload counts as known.
            known = [c for c in running if self.created.get(c.id, 0.0) <= self.resolved_at + 1.0] or running
        return [c for c in known if c.image_id == self.env_image_id] or known

    @property
    def standing_by(self) -> list[ContainerInfo]:
        """The recorded standby's running containers that nginx does not route to."""
        serving = {c.id for c in self.serving}
        return [c for c in self.running if c.name in self.standby_names and c.id not in serving]

    @property
    def standby_serves(self) -> bool:
        """nginx routes to the recorded standby: a switch to it was interrupted before the record went."""
        return any(c.name in self.standby_names for c in self.serving)

    @property
    def extras(self) -> list[ContainerInfo]:
        """Running containers that neither serve nor stand by."""
        kept = {c.id for c in (*self.serving, *self.standing_by)}
        return [c for c in self.running if c.id not in kept]

    @property
    def never_served(self) -> list[ContainerInfo]:
        """Extras created after every serving container: started by a deploy that never switched.
        They get no grace period; one still starting has no SIGTERM handler yet (PID 1 ignores it).
        None when the standby serves: the newer extras are the release a rollback switched away from."""
        if self.standby_serves:
            return []
        newest = max((self.created.get(c.id, 0.0) for c in self.serving), default=0.0)
        return [c for c in self.extras if self.created.get(c.id, 0.0) > newest]


def names(containers: Sequence[ContainerInfo]) -> str:
    return ", ".join(c.name for c in containers)
