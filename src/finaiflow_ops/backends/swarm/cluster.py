"""The stack on a Docker Swarm: deployed with `docker stack deploy` from the same compose file
(plus stack/swarm.yaml), observed through the manager's engine, its tasks found on any node.

The target is a swarm manager (local://, ssh://, or any engine DOCKER_HOST points at). Tasks on
other nodes are reached through the Docker engine of their node: a node labelled
`finaiflow.docker-host=ssh://user@host` (or any DOCKER_HOST URL) is reached with `docker -H` that
URL; the manager's own tasks need no label.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from finaiflow_ops import polling, releases
from finaiflow_ops.backends.swarm.spec import SwarmSpec, convert
from finaiflow_ops.backends.swarm.views import ServiceView
from finaiflow_ops.errors import CommandFailed, HealthTimeout, UsageError
from finaiflow_ops.images import require_images
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.project import Project
from finaiflow_ops.status import ContainerInfo, ServiceStatus, StackStatus

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.services import Service

__all__ = ["DB_LABEL", "HOST_LABEL", "Swarm", "Task", "engine_state", "settled"]

SWARM_FILE = "swarm.yaml"
STACK_FILE = "swarm-stack.json"  # in PROJECT_DIR/.finaiflow: the deployed file, no secret in it
NAMESPACE_LABEL = "com.docker.stack.namespace"
DB_LABEL = "finaiflow.db"
HOST_LABEL = "finaiflow.docker-host"
_DATA_SERVICES = ("postgres", "redis")


def engine_state(stack: Project) -> tuple[bool, bool]:
    """(in a swarm, a manager) for the target's engine; (False, False) when `docker info` fails
    (the engine's own error then comes from whatever needs it). The CLI through Target.run: an
    unreachable ssh target fails as every other command does, in one line."""
    result = stack.target.run("docker", "info", "--format", "{{json .Swarm}}", check=False, timeout=60)
    try:
        info = json.loads(result.stdout) if result.ok else {}
    except json.JSONDecodeError:
        info = {}
    return info.get("LocalNodeState") == "active", bool(info.get("ControlAvailable"))


@dataclass(frozen=True)
class Task:
    """One task of a service: where it runs and in which state (running = started and healthy)."""

    id: str
    service: str
    slot: int
    node_id: str
    image: str
    state: str
    desired: str
    container_id: str
    error: str
    ports: tuple[tuple[int, int], ...]  # (published, target), host mode

    @property
    def name(self) -> str:
        return f"{self.service}.{self.slot or self.node_id[:12]}"


class Swarm:
    """The project `stack` (same directory, .env and name) as a swarm stack on its target's swarm."""

    def __init__(self, stack: Project) -> None:
        self.stack = stack
        self._node_clients: dict[str, Any] = {}

    @property
    def project(self) -> str:
        return self.stack.project

    def full_name(self, service: str) -> str:
        return f"{self.project}_{service}"

    @cached_property
    def client(self) -> Any:
        return self.stack.target.docker()

    def require_manager(self) -> None:
        active, manager = engine_state(self.stack)
        if not manager:
            what = "a swarm worker" if active else "not in a swarm"
            raise UsageError(
                f"the Docker engine of {self.stack.target} is {what}",
                hint="run against a manager (docker swarm init, or --target ssh://manager)",
            )

    # -- what is deployed ------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        found: list[Service] = self.client.services.list(
            filters={"label": f"{NAMESPACE_LABEL}={self.project}"}
        )
        return sorted(found, key=lambda s: s.name)

    def service(self, name: str) -> Service:
        import docker.errors

        try:
            found: Service = self.client.services.get(self.full_name(name))
        except docker.errors.NotFound:
            raise UsageError(
                f"service {name} is not deployed in stack {self.project} on {self.stack.target}",
                hint="deploy it: finaiflow-ops stack up",
            ) from None
        return found

    def view(self, name: str) -> ServiceView:
        """The service's spec and update status, typed."""
        return ServiceView.from_attrs(self.service(name).attrs)

    def tasks(self, service: str, *, desired: str | None = "running") -> list[Task]:
        svc = self.service(service)
        found = svc.tasks(filters={"desired-state": desired} if desired else None)  # type: ignore[no-untyped-call]
        return sorted((_task(service, t) for t in found), key=lambda t: (t.slot, t.id))

    def node_id(self) -> str:
        return str((self.client.info().get("Swarm") or {}).get("NodeID", ""))

    @cached_property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n.id: n.attrs for n in self.client.nodes.list()}

    def down_nodes(self) -> set[str]:
        """The nodes the managers see as down or disconnected now (not cached)."""
        return {
            n.id
            for n in self.client.nodes.list()
            if (n.attrs.get("Status") or {}).get("State") in ("down", "disconnected")
        }

    def node_name(self, node_id: str) -> str:
        return str(self.nodes.get(node_id, {}).get("Description", {}).get("Hostname", node_id[:12]))

    def node_address(self, node_id: str) -> str:
        return str(self.nodes.get(node_id, {}).get("Status", {}).get("Addr") or self.stack.target.address)

    def docker_argv(self, node_id: str) -> list[str]:
        """The `docker` command line that reaches the engine of `node_id` from here."""
        if node_id == self.node_id():
            return ["docker"]
        labels = self.nodes.get(node_id, {}).get("Spec", {}).get("Labels") or {}
        url = labels.get(HOST_LABEL)
        if not url:
            raise UsageError(
                f"the task runs on node {self.node_name(node_id)}, which has no {HOST_LABEL} label",
                hint=f"docker node update --label-add {HOST_LABEL}=ssh://user@host {self.node_name(node_id)}",
            )
        return ["docker", "-H", url]

    def running_container(self, service: str) -> tuple[list[str], str, Task]:
        """(docker argv for its node, container id, task) of the running task of `service`."""
        running = [t for t in self.tasks(service) if t.state == "running" and t.container_id]
        if not running:
            raise UsageError(
                f"service {service} has no running task in stack {self.project}",
                hint="see `finaiflow-ops stack status`",
            )
        task = running[0]
        return self.docker_argv(task.node_id), task.container_id, task

    def node_client(self, node_id: str) -> Any:
        """The Docker SDK client of the engine of `node_id` (see docker_argv)."""
        import docker

        argv = self.docker_argv(node_id)
        if len(argv) == 1:
            return self.client
        url = argv[2]  # ["docker", "-H", URL]
        if url not in self._node_clients:
            self._node_clients[url] = docker.DockerClient(
                base_url=url, use_ssh_client=url.startswith("ssh://"), timeout=60
            )
        return self._node_clients[url]

    def container(self, service: str) -> Container:
        """The container of the running task of `service`, through its node's engine."""
        _argv, container_id, task = self.running_container(service)
        found: Container = self.node_client(task.node_id).containers.get(container_id)
        return found

    # -- the stack file --------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """compose.yaml + swarm.yaml as `docker compose config` resolves them with the .env."""
        swarm_file = self.stack.path(SWARM_FILE)
        if not self.stack.target.exists(swarm_file):
            raise UsageError(
                f"no {SWARM_FILE} in {self.stack.project_dir} on {self.stack.target}",
                hint=f"copy stack/{SWARM_FILE} of the repository beside the compose file",
            )
        result = self.stack.compose(
            "config",
            "--format",
            "json",
            files=(SWARM_FILE,),
            failure="the compose and swarm files do not resolve",
            hint="check compose.yaml, swarm.yaml and .env",
        )
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def spec(self) -> SwarmSpec:
        return convert(self.config(), self.project)

    def write_stack_file(self, stack: dict[str, Any]) -> str:
        releases.write_state(self.stack, STACK_FILE, json.dumps(stack, indent=2) + "\n")
        return self.stack.state_path(STACK_FILE)

    def ensure_secrets(self, spec: SwarmSpec) -> list[str]:
        """Create the secrets the spec needs and the engine does not have yet; their names."""
        have = {
            s.name for s in self.client.secrets.list(filters={"label": f"{NAMESPACE_LABEL}={self.project}"})
        }
        made = []
        for name, (secret, value) in sorted(spec.secrets.items()):
            if name not in have:
                self.client.secrets.create(
                    name=name,
                    data=value.encode(),
                    labels={NAMESPACE_LABEL: self.project, "finaiflow.variable": secret.variable},
                )
                made.append(name)
        return made

    def prune_secrets(self, keep: Iterable[str]) -> list[str]:
        """Remove this stack's secrets no service uses any more (older .env values)."""
        import docker.errors

        kept, removed = set(keep), []
        for s in self.client.secrets.list(filters={"label": f"{NAMESPACE_LABEL}={self.project}"}):
            if s.name not in kept:
                try:
                    s.remove()
                    removed.append(s.name)
                except docker.errors.APIError:  # still used by a task being replaced: next time
                    pass
        return removed

    def ensure_db_node(self, progress: Progress) -> str:
        """The node labelled for the database; on a single-node swarm, this node is labelled."""
        labelled = [
            n
            for n, a in self.nodes.items()
            if (a.get("Spec", {}).get("Labels") or {}).get(DB_LABEL) == "true"
        ]
        if labelled:
            return labelled[0]
        if len(self.nodes) > 1:
            raise UsageError(
                f"no node is labelled {DB_LABEL}=true: the database would have no home",
                hint=f"docker node update --label-add {DB_LABEL}=true NODE (the node that keeps the data)",
            )
        node = self.client.nodes.get(self.node_id())
        spec = node.attrs["Spec"]
        spec.setdefault("Labels", {})[DB_LABEL] = "true"
        node.update(spec)
        self.__dict__.pop("nodes", None)
        progress(f"single-node swarm: labelled {self.node_name(node.id)} {DB_LABEL}=true")
        return str(node.id)

    def deploy_file(self, path: str) -> None:
        self.stack.target.run(
            "docker",
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "--prune",
            "-c",
            path,
            self.project,
            timeout=300,
        )

    # -- lifecycle --------------------------------------------------------------------------------------

    def up(self, *, migrate_service: str = "api", migrate: Sequence[str] = ("alembic", "upgrade", "head"),
           timeout: float = 300.0, progress: Progress | None = None) -> StackStatus:  # fmt: skip
        """Deploy the stack: data services first, the migrations of `migrate_service` as a swarm
        job, then everything."""
        say = or_quiet(progress)
        self.require_manager()
        require_images(
            self.stack, hint="build them (on this machine: sudo scripts/provision); every node needs them"
        )
        self.ensure_db_node(say)
        spec = self.spec()
        made = self.ensure_secrets(spec)
        if made:
            say(f"created {len(made)} Docker secret(s) from the .env")
        data = [s for s in _DATA_SERVICES if s in spec.stack["services"]]
        if not self.services():
            first = dict(spec.stack, services={s: spec.stack["services"][s] for s in data})
            say(f"deploying {', '.join(data)}")
            self.deploy_file(self.write_stack_file(first))
            self.wait_converged(data, timeout=timeout, progress=say)
        if migrate and migrate_service in spec.stack["services"]:
            service = spec.stack["services"][migrate_service]
            self.run_job(service, migrate, timeout=timeout, progress=say)
        say(f"deploying stack {self.project} (docker stack deploy)")
        before = {
            svc.name: (svc.attrs["Version"]["Index"], svc.attrs.get("UpdateStatus"))
            for svc in self.services()
        }
        self.deploy_file(self.write_stack_file(spec.stack))
        self.wait_updates(before, timeout=timeout, progress=say)
        self.wait_converged(list(spec.stack["services"]), timeout=timeout, progress=say)
        self.prune_secrets(spec.secrets)
        return self.status()

    def run_job(
        self,
        service_spec: dict[str, Any],
        argv: Sequence[str],
        *,
        image: str | None = None,
        timeout: float = 600.0,
        progress: Progress | None = None,
    ) -> str:
        """Run `argv` once as a swarm job with the service's image, environment and secrets, on the
        stack's network; its output, or CommandFailed with its last lines."""
        say = or_quiet(progress)
        image = image or service_spec["image"]
        name = f"{self.project}_job_{int(time.time())}"
        args = [
            "docker",
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            name,
            "--mode",
            "replicated-job",
            "--restart-condition",
            "none",
            "--label",
            f"{NAMESPACE_LABEL}={self.project}",
            "--network",
            f"{self.project}_default",
        ]
        for key, value in (service_spec.get("environment") or {}).items():
            args += ["--env", f"{key}={value}"]  # no secret here: those are NAME_FILE paths
        for secret in service_spec.get("secrets") or ():
            args += ["--secret", f"source={secret['source']},target={secret['target']}"]
        say(f"running `{' '.join(argv)}` as a swarm job of {image}")
        self.stack.target.run(*args, image, *argv, timeout=120)
        try:
            state = self._wait_job(name, timeout)
            output = self.stack.target.run(
                "docker", "service", "logs", "--raw", name, check=False, timeout=60
            )
            text = self.stack.redact(output.stdout + output.stderr)
            if state != "complete":
                lines = text.strip().splitlines()
                raise CommandFailed(
                    f"`{' '.join(argv)}` failed in a job of {image} ({state})"
                    + (f": {lines[-1]}" if lines else ""),
                    output_tail="\n".join(lines[-20:]),
                )
            return text
        finally:
            self._remove_job(name)

    def _remove_job(self, name: str) -> None:
        """Remove the job service, and its finished containers: engine 20.10 leaves a job's
        containers behind when the service goes (they would pile up, one per deploy)."""
        import docker.errors

        try:
            nodes = {t.get("NodeID", "") for t in self.client.services.get(name).tasks()} - {""}
        except docker.errors.NotFound:
            nodes = set()
        self.stack.target.run("docker", "service", "rm", name, check=False, timeout=60)
        for node in nodes:
            try:
                client = self.node_client(node)
            except UsageError:  # a node we cannot reach: its engine keeps the exited container
                continue
            label = {"label": f"com.docker.swarm.service.name={name}"}
            for c in client.containers.list(all=True, filters=label):
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True)

    def _wait_job(self, name: str, timeout: float) -> str:
        for _attempt in polling.attempts(within=timeout, every=1):
            tasks = [_task(name, t) for t in self.client.services.get(name).tasks()]
            states = [t.state for t in tasks]
            if "complete" in states:
                return "complete"
            if tasks and all(s in ("failed", "rejected", "shutdown") for s in states):
                errors = {t.error for t in tasks} - {""}
                return f"{states[-1]}: {', '.join(sorted(errors))}" if errors else states[-1]
        return f"not finished after {timeout:.0f} s"

    def wait_updates(
        self, before: dict[str, tuple[int, Any]], *, timeout: float = 300.0, progress: Progress | None = None
    ) -> None:
        """Wait for the rolling updates a `docker stack deploy` started (services whose spec
        changed: a new image, a new secret) to finish; the engine starts them a moment later."""
        pending = dict(before)
        for attempt in polling.attempts(within=timeout, every=1):
            if not pending:
                return
            for svc in self.services():
                if svc.name not in pending:
                    continue
                index, status = pending[svc.name]
                current = svc.attrs.get("UpdateStatus")
                spec, previous = svc.attrs["Spec"], svc.attrs.get("PreviousSpec") or {}
                if svc.attrs["Version"]["Index"] == index or spec.get("TaskTemplate") == previous.get(
                    "TaskTemplate"
                ):
                    del pending[svc.name]  # no change its tasks see: nothing rolls
                elif (
                    current
                    and current != status
                    and current.get("State") not in ("updating", "rollback_started")
                ):
                    if progress:
                        progress(f"{svc.name}: update {current.get('State')}")
                    del pending[svc.name]
            if pending and attempt.last:
                raise HealthTimeout(
                    f"updates not finished after {timeout:.0f} s: {', '.join(sorted(pending))}",
                    hint=f"see `docker service ps {self.project}_SERVICE --no-trunc`",
                )

    def wait_converged(
        self, services: Sequence[str], *, timeout: float = 300.0, progress: Progress | None = None
    ) -> None:
        """Wait until each service runs its wanted number of tasks, all on its current image."""
        said: dict[str, str] = {}
        for attempt in polling.attempts(within=timeout, every=1):
            waiting = []
            for name in services:
                svc = self.service(name)
                view = ServiceView.from_attrs(svc.attrs)
                wanted, image = view.replicas, view.image
                tasks = self.tasks(name)
                running = [t for t in tasks if t.state == "running" and t.image == image]
                line = f"{len(running)}/{wanted} running"
                if progress and said.get(name) != line:
                    progress(f"{self.full_name(name)}: {line}")
                said[name] = line
                failed = [t for t in tasks if t.error and t.state in ("failed", "rejected")]
                if failed and attempt.elapsed > timeout / 2:
                    waiting.append(f"{name} ({line}; {failed[-1].error})")
                elif len(running) < wanted or len(tasks) > wanted:
                    waiting.append(f"{name} ({line})")
            if not waiting:
                return
            if attempt.last:
                raise HealthTimeout(
                    f"not converged after {timeout:.0f} s: {', '.join(waiting)}",
                    hint=f"see `docker service ps {self.project}_SERVICE --no-trunc`",
                )

    def unsettled(self, services: Sequence[str]) -> list[str]:
        """The running tasks of `services` whose container's health check fails now, or failed
        last (swarm replaces a task once its container turns unhealthy: say, every api task after
        the database was down for a while); those on a node finaiflow-ops cannot reach are not seen."""
        import docker.errors

        found = []
        for name in services:
            for t in self.tasks(name):
                if t.state != "running" or not t.container_id:
                    continue
                try:
                    state = self.node_client(t.node_id).containers.get(t.container_id).attrs["State"]
                except UsageError:
                    continue
                except docker.errors.NotFound:
                    state = {"Status": "gone"}
                if not settled(state):
                    found.append(f"{t.name}@{self.node_name(t.node_id)}")
        return found

    def status(self) -> StackStatus:
        by_service: dict[str, list[ContainerInfo]] = {}
        urls: set[str] = set()
        for svc in self.services():
            name = svc.name.removeprefix(f"{self.project}_")
            tasks = self.tasks(name)
            by_service[name] = [
                ContainerInfo(
                    name=f"{self.full_name(name)}.{t.slot or t.node_id[:12]}@{self.node_name(t.node_id)}",
                    id=t.container_id[:12] or t.id[:12],
                    service=name,
                    image=t.image,
                    image_id="",
                    state=t.state,
                    health="none",
                    ports=tuple(f"{self.node_address(t.node_id)}:{p}->{c}/tcp" for p, c in t.ports),
                )
                for t in tasks
            ]
            for t in tasks:
                for published, target in t.ports if t.state == "running" else ():
                    scheme = {443: "https", 80: "http", 9090: "http"}.get(target)
                    if scheme:
                        default = {"https": 443, "http": 80}[scheme]
                        port = "" if published == default else f":{published}"
                        urls.add(f"{scheme}://{self.node_address(t.node_id)}{port}/")
        services = tuple(ServiceStatus(n, tuple(cs)) for n, cs in sorted(by_service.items()))
        return StackStatus(
            target=f"{self.stack.target} (swarm)",
            project=self.project,
            project_dir=self.stack.project_dir,
            services=services,
            urls=tuple(sorted(urls)),
        )

    def down(self, *, volumes: bool = False, timeout: float = 120.0) -> None:
        """`docker stack rm`, wait until its tasks and network are gone; `volumes`: this node's too."""
        self.stack.target.run("docker", "stack", "rm", self.project, timeout=120)
        label = {"label": f"{NAMESPACE_LABEL}={self.project}"}
        for attempt in polling.attempts(within=timeout, every=1):
            if not (
                self.client.containers.list(all=True, filters=label)
                or self.client.networks.list(filters=label)
            ):
                break
            if attempt.last:
                raise HealthTimeout(
                    f"stack {self.project} still has containers or networks after {timeout:.0f} s"
                )
        self.prune_secrets(())
        if volumes:
            for volume in self.client.volumes.list(filters=label):
                volume.remove(force=True)


def settled(state: dict[str, Any]) -> bool:
    """A container's State: running, and healthy with its last check passed (or without a check)."""
    check = state.get("Health")
    if state.get("Status") != "running":
        return False
    return not check or (check.get("Status") == "healthy" and not check.get("FailingStreak"))


def _task(service: str, t: dict[str, Any]) -> Task:
    status = t.get("Status") or {}
    # dict.fromkeys: the engine lists a host-mode port once per address family.
    ports = tuple(
        dict.fromkeys(
            (p.get("PublishedPort", 0), p.get("TargetPort", 0))
            for p in (status.get("PortStatus") or {}).get("Ports") or ()
        )
    )
    return Task(
        id=t["ID"],
        service=service,
        slot=t.get("Slot", 0),
        node_id=t.get("NodeID", ""),
        image=t["Spec"]["ContainerSpec"]["Image"].split("@", 1)[0],
        state=status.get("State", ""),
        desired=t.get("DesiredState", ""),
        container_id=(status.get("ContainerStatus") or {}).get("ContainerID", ""),
        error=status.get("Err", ""),
        ports=ports,
    )
