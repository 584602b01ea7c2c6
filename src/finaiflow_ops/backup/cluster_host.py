"""Where the stack's database cluster lives, and how it is stopped, started and run once: what a
point-in-time restore (finaiflow_ops.pitr) and pgBackRest with the database down
(backup.pgbackrest.Repository) need, on either backend.

    compose   the target's engine; `docker compose stop | up | run` of the postgres service
    swarm     the engine of the node labelled finaiflow.db=true, which holds the service's volumes
              (PROJECT_pg_data, PROJECT_pg_archive, named by `docker stack deploy`); the service
              scaled to 0 and back to 1; a one-off container of the service's image, environment and
              volume mounts on that engine (no network), labelled so that one left behind by a killed
              run is found and ended

pgBackRest's settings are the image's PGBACKREST_* environment, so a one-off container of the image
with both volumes is all a restore needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from finaiflow_ops import health, polling
from finaiflow_ops.backends.swarm.cluster import DB_LABEL
from finaiflow_ops.errors import HealthTimeout, UsageError
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from finaiflow_ops.backends.swarm.cluster import Swarm
    from finaiflow_ops.stack import Stack

__all__ = ["ONE_OFF_LABEL", "ClusterHost", "ComposeHost", "SwarmHost", "db_node", "of", "one_off_argv"]

SERVICE = "postgres"
DEFAULT_IMAGE = "finaiflow/postgres:15"
ONE_OFF_LABEL = "finaiflow.one-off"  # value: the project; on a swarm's one-off postgres containers
_STOP_TIMEOUT = 120.0  # the service's stop_grace_period (60 s), with margin
_COMPOSE_ONEOFF = "com.docker.compose.oneoff"
_SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"


class ClusterHost(Protocol):
    """The engine that holds the database volumes, and the database service's stop, start and
    one-off run there."""

    @property
    def engine(self) -> Any: ...  # the Docker SDK client of that engine
    @property
    def docker(self) -> tuple[str, ...]: ...  # the docker CLI reaching it, run on the target
    @property
    def image(self) -> str: ...  # the postgres service's image
    def stop(self, *, check: bool = True) -> None: ...
    def start(self) -> None: ...
    def wait_healthy(self, *, timeout: float, progress: Progress | None = None) -> None: ...
    def run_once(self, entrypoint: str, args: Sequence[str], *, timeout: float, check: bool = True,
                 failure: str | None = None, hint: str | None = None) -> CommandResult: ...  # fmt: skip
    def end_one_offs(self) -> None: ...
    def logs(self, *, tail: int = 200) -> str: ...


def of(stack: Stack) -> ClusterHost:
    """The database cluster's host for the backend that runs `stack`."""
    from finaiflow_ops.backends.swarm import SwarmBackend

    runtime = stack.runtime
    if isinstance(runtime, SwarmBackend):
        return SwarmHost(stack, runtime.swarm)
    return ComposeHost(stack)


class ComposeHost:
    """The postgres service of a compose project, on the target's engine."""

    docker: tuple[str, ...] = ("docker",)

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    @cached_property
    def engine(self) -> Any:
        return self.stack.target.docker()

    @cached_property
    def image(self) -> str:
        return self.stack.images().get(SERVICE) or DEFAULT_IMAGE

    def stop(self, *, check: bool = True) -> None:
        self.stack.compose("stop", SERVICE, check=check, timeout=120)

    def start(self) -> None:
        self.stack.compose("up", "--detach", "--no-deps", "--no-build", "--pull", "never", SERVICE,
                           timeout=120)

    def wait_healthy(self, *, timeout: float, progress: Progress | None = None) -> None:
        health.wait_healthy(self.stack, services=[SERVICE], timeout=timeout, progress=progress)

    def run_once(self, entrypoint: str, args: Sequence[str], *, timeout: float, check: bool = True,
                 failure: str | None = None, hint: str | None = None) -> CommandResult:  # fmt: skip
        """`ENTRYPOINT ARGS` in a one-off container of the service (`compose run --rm`)."""
        return self.stack.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", entrypoint, SERVICE,
                                  *args, check=check, timeout=timeout, failure=failure, hint=hint)

    def end_one_offs(self) -> None:
        """A killed run's `compose run` container may still be writing: end it."""
        labels = [f"com.docker.compose.project={self.stack.name}", f"{_COMPOSE_ONEOFF}=True",
                  f"com.docker.compose.service={SERVICE}"]
        for c in self.engine.containers.list(all=True, filters={"label": labels}):
            c.remove(force=True)

    def logs(self, *, tail: int = 200) -> str:
        containers = self.stack.containers(SERVICE)
        return self.stack.logs(containers[0].id, tail=tail) if containers else ""


class SwarmHost:
    """The postgres service of a swarm stack, on the engine of its database node."""

    def __init__(self, stack: Stack, swarm: Swarm) -> None:
        self.stack = stack
        self.swarm = swarm
        self.service = swarm.full_name(SERVICE)
        self._before: set[str] = set()  # the service's tasks before start()

    @cached_property
    def node(self) -> str:
        """The database node: labelled, even while the service is scaled to 0."""
        labelled = [n for n, a in self.swarm.nodes.items()
                    if (a.get("Spec", {}).get("Labels") or {}).get(DB_LABEL) == "true"]
        return db_node(labelled, self.swarm.service(SERVICE).tasks(), DB_LABEL)  # type: ignore[no-untyped-call]

    @cached_property
    def engine(self) -> Any:
        return self.swarm.node_client(self.node)

    @cached_property
    def docker(self) -> tuple[str, ...]:
        return tuple(self.swarm.docker_argv(self.node))

    @cached_property
    def container_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.swarm.service(SERVICE).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        return spec

    @property
    def image(self) -> str:
        return str(self.container_spec["Image"]).split("@", 1)[0]

    @property
    def where(self) -> str:
        return f"node {self.swarm.node_name(self.node)}"

    def _scale(self, replicas: int, *, check: bool = True) -> None:
        self.stack.target.run("docker", "service", "scale", "--detach", f"{self.service}={replicas}",
                              check=check, timeout=60)

    def stop(self, *, check: bool = True) -> None:
        """Scale the service to 0 and wait until its task's container is gone from the node."""
        self._scale(0, check=check)
        running: list[Any] = []
        for _attempt in polling.attempts(within=_STOP_TIMEOUT, every=0.5):
            running = self.engine.containers.list(filters={"label": f"{_SWARM_SERVICE_LABEL}={self.service}"})
            if not running and not self.swarm.tasks(SERVICE):
                return
        if check:
            raise HealthTimeout(f"{self.service} still runs on {self.where} {_STOP_TIMEOUT:.0f} s after it "
                                "was scaled to 0", service=SERVICE,
                                hint=f"see `docker service ps {self.service} --no-trunc`")

    def start(self) -> None:
        self._before = {t.id for t in self.swarm.tasks(SERVICE, desired=None)}
        self._scale(1)

    def wait_healthy(self, *, timeout: float, progress: Progress | None = None) -> None:
        """Until the task start() made runs (healthy); a failed one fails at once, with its log."""
        say = or_quiet(progress)
        said = ""
        for _attempt in polling.attempts(within=timeout, every=1):
            new = [t for t in self.swarm.tasks(SERVICE, desired=None) if t.id not in self._before]
            if any(t.state == "running" for t in new):
                return
            failed = [t for t in new if t.state in ("failed", "rejected")]
            if failed:
                raise HealthTimeout(f"{self.service} task {failed[0].state} on {self.where} instead of "
                                    f"becoming healthy: {failed[0].error or 'no error given'}",
                                    service=SERVICE, log_tail=self.logs(tail=15).strip(),
                                    hint=f"see `docker service ps {self.service} --no-trunc`")
            line = ", ".join(f"{t.name}: {t.state}" for t in new) or "no task yet"
            if line != said:
                say(f"{self.service} on {self.where}: {line}")
                said = line
        raise HealthTimeout(f"{self.service} not healthy on {self.where} after {timeout:.0f} s",
                            service=SERVICE, log_tail=self.logs(tail=15).strip())

    def run_once(self, entrypoint: str, args: Sequence[str], *, timeout: float, check: bool = True,
                 failure: str | None = None, hint: str | None = None) -> CommandResult:  # fmt: skip
        """`ENTRYPOINT ARGS` in a one-off container of the service's spec on the database node."""
        argv = one_off_argv(self.docker, self.container_spec, image=self.image, label=self.stack.name,
                            entrypoint=entrypoint, args=args)
        what = failure or f"a one-off {SERVICE} container failed on {self.where}"
        return self.stack.run_checked(argv, what=what, check=check, timeout=timeout, hint=hint)

    def end_one_offs(self) -> None:
        """A killed run's one-off container may still be writing: end it."""
        label = f"{ONE_OFF_LABEL}={self.stack.name}"
        for c in self.engine.containers.list(all=True, filters={"label": label}):
            c.remove(force=True)

    def logs(self, *, tail: int = 200) -> str:
        """The log of the service's newest container on the database node."""
        label = f"{_SWARM_SERVICE_LABEL}={self.service}"
        found = self.engine.containers.list(all=True, filters={"label": label})
        if not found:
            return ""
        newest = max(found, key=lambda c: str(c.attrs.get("Created", "")))
        raw: bytes = newest.logs(tail=tail, timestamps=False)
        return self.stack.redact(raw.decode(errors="replace"))


def db_node(labelled: Sequence[str], tasks: Sequence[Mapping[str, Any]], label: str) -> str:
    """The node that holds the database volumes: the one labelled `label`=true; of several
    labelled nodes, the one the service's newest task was placed on."""
    if len(labelled) == 1:
        return labelled[0]
    placed = sorted((t for t in tasks if t.get("NodeID") in labelled),
                    key=lambda t: str(t.get("CreatedAt", "")))
    if placed:
        return str(placed[-1]["NodeID"])
    raise UsageError(f"{len(labelled) or 'no'} nodes are labelled {label}=true and no task of the database "
                     "shows which one holds its volumes",
                     hint=f"label the database node alone: docker node update --label-rm {label} NODE")


def one_off_argv(docker: Sequence[str], spec: Mapping[str, Any], *, image: str, label: str, entrypoint: str,
                 args: Sequence[str]) -> list[str]:
    """`docker run` of a service's container spec once: its user, environment and volume mounts
    (a missing volume is made with the labels the stack gives it), no network, `entrypoint ARGS`,
    labelled ONE_OFF_LABEL=`label`, removed when it ends."""
    argv = [*docker, "run", "--rm", "--network", "none", "--label", f"{ONE_OFF_LABEL}={label}",
            "--entrypoint", entrypoint]
    if spec.get("User"):
        argv += ["--user", str(spec["User"])]
    for mount in spec.get("Mounts") or ():
        if mount.get("Type", "volume") != "volume":
            continue
        option = f"type=volume,source={mount['Source']},target={mount['Target']}"
        labels = (mount.get("VolumeOptions") or {}).get("Labels") or {}
        option += "".join(f",volume-label={k}={v}" for k, v in sorted(labels.items()))
        argv += ["--mount", option]
    for variable in spec.get("Env") or ():  # never a secret: a swarm's are files (NAME_FILE)
        argv += ["--env", str(variable)]
    return [*argv, image, *args]
