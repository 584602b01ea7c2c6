"""The swarm backend: the project as a swarm stack (`docker stack deploy` of the compose file plus
swarm.yaml), a one-off command as a swarm job, and a roll through the engine's rolling update with
our gate through nginx after it (docs/swarm.md)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import docker.errors

from finaiflow_ops import health, polling
from finaiflow_ops.backends.protocol import (
    MIGRATE,
    BackendName,
    Located,
    Outcome,
    Roll,
    Running,
    Settings,
    Step,
)
from finaiflow_ops.backends.swarm.cluster import NAMESPACE_LABEL, Swarm
from finaiflow_ops.backends.swarm.update import DONE, UPDATE_TIMEOUT, Update
from finaiflow_ops.backends.swarm.views import ServiceView
from finaiflow_ops.errors import HealthTimeout, OpsError, UsageError
from finaiflow_ops.images import image_id, image_revisions
from finaiflow_ops.progress import Progress
from finaiflow_ops.project import Project
from finaiflow_ops.releases import config_hash
from finaiflow_ops.status import SWARM_SERVICE_LABEL, ContainerInfo, StackStatus

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["SwarmBackend", "SwarmRollout"]

HEALTH_HTTP_TIMEOUT = 60.0  # /health through nginx, after the engine's update (its own gate)


class SwarmBackend:
    """The project as a swarm stack on the target (a manager)."""

    name: BackendName = "swarm"

    def __init__(self, project: Project, swarm: Swarm | None = None) -> None:
        self.project = project
        self.swarm = swarm or Swarm(project)

    def up(self, *, migrate_service: str = "api", migrate: Sequence[str] = MIGRATE, timeout: float = 300.0,
           progress: Progress | None = None) -> StackStatus:  # fmt: skip
        return self.swarm.up(migrate_service=migrate_service, migrate=migrate, timeout=timeout,
                             progress=progress)

    def down(self, *, volumes: bool = False) -> None:
        self.swarm.down(volumes=volumes)

    def status(self) -> StackStatus:
        return self.swarm.status()

    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]:
        """The containers of the stack's tasks that run on the target's engine."""
        labels = [f"{NAMESPACE_LABEL}={self.project.name}"]
        if service:
            labels.append(f"{SWARM_SERVICE_LABEL}={self.swarm.full_name(service)}")
        found = self.project.target.docker().containers.list(all=all, filters={"label": labels})
        return sorted((ContainerInfo.from_container(c) for c in found), key=lambda c: (c.service, c.name))

    def container(self, service: str) -> Container:
        """The container of the running task of `service`, on whichever node runs it."""
        return self.swarm.container(service)

    def locate(self, service: str) -> Located:
        docker_argv, container_id, task = self.swarm.running_container(service)
        where = f"{service} of swarm stack {self.project.name} on node {self.swarm.node_name(task.node_id)}"
        return Located(tuple(docker_argv), container_id, where)

    def wait_healthy(self, services: Sequence[str], *, timeout: float,
                     progress: Progress | None = None) -> None:  # fmt: skip
        """Until each service runs its wanted number of tasks, on whichever nodes, and each task's
        container passed its last health check (a task counts as running once its first check
        passed; one whose checks fail since is about to be replaced). A replaced task's exited
        container, kept by the engine, is no failure here."""
        for attempt in polling.attempts(within=timeout, every=1):
            left = max(timeout - attempt.elapsed, 1.0)
            self.swarm.wait_converged(services, timeout=left, progress=progress)
            unsettled = self.swarm.unsettled(services)
            if not unsettled:
                return
            if attempt.last:
                raise HealthTimeout(f"still failing their health check after {timeout:.0f} s: "
                                    f"{', '.join(unsettled)}",
                                    hint="see `finaiflow-ops logs SERVICE` for why")

    def one_off_where(self, image: str) -> str:
        return f"as a swarm job of {image}"

    def run_once(self, service: str, image: str, argv: Sequence[str]) -> None:
        """`argv` once as a swarm job with the service's spec and `image`."""
        spec = self.swarm.spec().stack["services"][service]
        self.swarm.run_job(spec, argv, image=image, timeout=UPDATE_TIMEOUT)

    def rollout(self, service: str, settings: Settings, progress: Progress) -> SwarmRollout:
        return SwarmRollout(self, service, settings, progress)


class SwarmRollout:
    """One swarm service: its roll through the engine's rolling update, gated through nginx."""

    def __init__(self, backend: SwarmBackend, service: str, settings: Settings, say: Progress) -> None:
        for option, value in (("--drain-timeout", settings.drain_timeout), ("proxy", settings.proxy)):
            if value is not None:
                raise UsageError(
                    f"{option} has no meaning on a swarm: the engine stops each old task itself, after its "
                    "stop_grace_period (swarm.yaml), and routes through its own network",
                    hint=f"leave {option} out on a swarm stack",
                )
        if settings.standby:
            raise UsageError(
                "--standby has no meaning on a swarm: a service's tasks all run its one spec, so the "
                "previous release cannot stay running beside it (a rollback is `docker service rollback`)",
                hint="leave --standby out on a swarm stack",
            )
        self.backend = backend
        self.swarm = backend.swarm
        self.project = backend.project
        self.service = service
        self.say = say
        self.health_timeout = settings.health_timeout
        self.update = Update(self.swarm, service, say)
        self._tasks: tuple[str, ...] = ()
        # Read before anything changes: the files must resolve, and a release records it.
        resolved = self.swarm.config().get("services", {}).get(service, {})
        self.config_hash = config_hash(resolved, self.project.env)

    @cached_property
    def view(self) -> ServiceView:
        return self.swarm.view(self.service)  # UsageError when the service is not deployed

    def repairs(self) -> list[Step]:
        return []  # the engine reconciles its own tasks

    def running(self) -> Running | None:
        image = self.view.image
        try:
            found = image_id(self.project, image)
        except UsageError:
            found = ""
        return Running(image, found, frozenset())

    def replicas(self, wanted: int | None) -> int:
        return wanted or self.view.replicas

    def revisions(self, image: str) -> tuple[str, tuple[str, ...]]:
        """The Alembic head and revisions of `image`, read in a running task of the service; none
        when that task cannot be reached."""
        try:
            return image_revisions(self.swarm.container(self.service), image, self.say)
        except (OpsError, docker.errors.DockerException) as exc:
            self.say(f"could not read the Alembic revisions of {image} ({exc}); recorded without them")
            return "", ()

    def steps(self, roll: Roll) -> list[Step]:
        view = self.view
        full = self.swarm.full_name(self.service)
        if roll.kind == "rollback" and view.previous_image == roll.image:
            argv, how = (
                ["rollback"],
                f"docker service rollback {full} (the engine's previous spec is {roll.image})",
            )
        else:
            argv = [
                "update",
                "--image",
                roll.image,
                *(["--replicas", str(roll.replicas)] if roll.replicas else []),
            ]
            how = f"docker service update --image {roll.image} {full}"
        gate = (
            f"at most {self.health_timeout:.0f} s"
            if self.health_timeout is not None
            else (f"at most {UPDATE_TIMEOUT:.0f} s, then {HEALTH_HTTP_TIMEOUT:.0f} s")
        )
        back = roll.previous_image or roll.image
        return [
            Step(
                "rolling update",
                f"{how}: {self.replicas(roll.replicas)} task(s), {view.parallelism} at a "
                f"time, order {view.order}, on failure {view.failure_action}",
                lambda: self.roll(roll, argv, back),
            ),
            Step(
                "health",
                f"wait until every task runs {roll.image}, then until /health answers 200 through "
                f"nginx ({gate}); on any failure: docker service rollback, and exit 1 naming the "
                "engine's error",
                lambda: self.gate(roll, back),
                switches=True,
            ),
        ]

    def roll(self, roll: Roll, argv: list[str], back: str) -> None:
        self.say(f"docker service {argv[0]} of {self.swarm.full_name(self.service)} to {roll.image}")
        state, _seconds = self.update.run(argv, roll.image, UPDATE_TIMEOUT)
        if state == DONE:
            return
        why = state if state.startswith("stalled") else self.update.task_error() or state
        if state.startswith("rollback_completed"):
            put_back = DONE  # the engine's own failure_action
        elif state.startswith("rollback"):
            put_back = state  # the engine's rollback stopped: a second one would go to the failed spec
        else:
            put_back = self.update.put_back(back, UPDATE_TIMEOUT)
        raise self.update.failed(roll.kind, roll.image, why, put_back)

    def gate(self, roll: Roll, back: str) -> None:
        """Our gate after the engine's: every task on the new image, and /health answering via nginx."""
        converge = self.health_timeout if self.health_timeout is not None else UPDATE_TIMEOUT
        http = self.health_timeout if self.health_timeout is not None else HEALTH_HTTP_TIMEOUT
        try:
            self.swarm.wait_converged([self.service], timeout=converge)
            health.wait_http(
                f"{self.swarm.status().base_url()}/health",
                timeout=http,
                domain=self.project.env.get("DOMAIN"),
            )
        except OpsError as exc:
            self.say(f"{roll.image} does not serve ({exc.message})")
            raise self.update.failed(
                roll.kind, roll.image, exc.message, self.update.put_back(back, UPDATE_TIMEOUT)
            ) from None
        self._tasks = tuple(t.name for t in self.swarm.tasks(self.service))

    def lead_for_standby(self) -> None:
        pass  # no standby on a swarm

    def from_standby(self, roll: Roll, release: int) -> list[Step]:
        return []  # no standby on a swarm (refused in __init__): the rollback takes the engine's path

    def outcome(self) -> Outcome:
        return Outcome(self._tasks, (), 0.0)

    def close(self) -> None:
        pass
