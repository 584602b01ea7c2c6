"""A start-first, health-gated, drained roll of one compose service behind nginx: the compose
backend's part of a deploy or rollback (the workflow around it is finaiflow_ops.rollout).

  repairs   what an interrupted deploy left behind (containers nginx does not route to, stopped
            ones, a .env that does not name the running image), so that every roll starts from
            "N containers of one release, nginx pointing at exactly them";
  scale-up  N new containers beside the N old ones, created by compose (so compose still owns
            them), with the new image given in the environment of that one compose call;
  health    Docker health and an HTTP probe from the proxy container, with a deadline. A container
            that exits, restarts, turns unhealthy or never answers 200 fails the roll: the new
            containers are removed, traffic never left the old ones;
  switch    nginx's upstream pointed at the new containers by name, `nginx -t`, graceful reload;
  drain     the old nginx workers, which finish their in-flight requests, are watched until they
            have exited;
  retire    the old containers get SIGTERM with their grace period, and are removed; or, after a
            deploy, they stay running out of the upstream as the warm standby (finaiflow_ops.standby)
            for a window, and a rollback within it is a switch back to them (`from_standby`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from finaiflow_ops import polling
from finaiflow_ops import standby as standbys
from finaiflow_ops.backends.compose.state import ServiceState, names
from finaiflow_ops.backends.protocol import Outcome, Roll, Running, Settings, Step
from finaiflow_ops.docker_inspect import Inspect
from finaiflow_ops.errors import CommandFailed, DeployFailed, OpsError, UsageError
from finaiflow_ops.images import image_id, image_revisions, image_variable_in, parse_duration, set_env_value
from finaiflow_ops.progress import Progress
from finaiflow_ops.project import Project
from finaiflow_ops.proxy import DEFAULT_PROXY, Proxy, Reload, Upstream
from finaiflow_ops.releases import config_hash
from finaiflow_ops.status import ContainerInfo
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["DRAIN_TIMEOUT", "HEALTH_PATH", "HEALTH_TIMEOUT", "ComposeRollout"]

HEALTH_TIMEOUT = 120.0
DRAIN_TIMEOUT = 75.0  # above nginx's worker_shutdown_timeout (60 s), which ends any drain first
HEALTH_PATH = "/health"
_POLL = 0.1


class Containers(Protocol):
    """What the roll needs of the compose backend."""

    @property
    def project(self) -> Project: ...
    @property
    def env(self) -> dict[str, str]: ...
    def containers(self, service: str | None = None, *, all: bool = True) -> list[ContainerInfo]: ...
    def exec(
        self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True
    ) -> CommandResult: ...
    def logs(self, container_id: str, *, tail: int = 30) -> str: ...


@dataclass(frozen=True)
class _Service:
    """What the compose file says about the service being rolled."""

    name: str
    image_var: str  # the .env key its image comes from (image: ${API_IMAGE:-...})
    env_image: str  # the image compose would use now
    port: int
    grace: float  # stop_grace_period, in seconds
    config_hash: str


class ComposeRollout:
    """One compose service, read when built; its repairs and its roll as steps."""

    def __init__(self, backend: Containers, service: str, settings: Settings, say: Progress) -> None:
        self.backend = backend
        self.project = backend.project
        self.service = service
        self.proxy = Proxy(backend, settings.proxy or DEFAULT_PROXY)
        self.say = say
        self.health_timeout = (
            settings.health_timeout if settings.health_timeout is not None else HEALTH_TIMEOUT
        )
        self.drain_timeout = settings.drain_timeout if settings.drain_timeout is not None else DRAIN_TIMEOUT
        self.closing_since = time.monotonic()
        self._closing = contextlib.ExitStack()
        self._leading = False  # the switching flag is raised (connections_closing)
        self.spec = self._describe_service()
        self._new: list[ContainerInfo] = []
        self._reload: Reload | None = None
        self._drain_seconds = 0.0
        self.standby_window = standbys.parse_window(settings.standby)
        self._retired: list[ContainerInfo] | None = None  # None: the serving ones
        self._standby_note = ""
        self._standby_repaired = False  # a repair retires or forgets the standby already
        self._standby_broken = False  # found unhealthy or unreachable: removed without grace

    # -- facts ------------------------------------------------------------------------------------

    def _describe_service(self) -> _Service:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the two compose calls side by side
            uninterpolated = pool.submit(lambda: self.project.raw_config)
            services = self.project.config.get("services", {})
            raw = uninterpolated.result()
        if self.service not in services:
            raise UsageError(
                f"no service {self.service!r} in {self.project.compose_path}",
                hint=f"services: {', '.join(services)}",
            )
        svc = services[self.service]
        expose = [str(p).split("/")[0] for p in svc.get("expose") or ()]
        upstream = self.proxy.read_upstream(self.service)
        port = (upstream.port if upstream else None) or (
            int(expose[0]) if expose[:1] and expose[0].isdigit() else 0
        )
        if not port:
            raise UsageError(f"no port known for {self.service}", hint="declare it with expose: in compose")
        return _Service(
            self.service,
            image_variable_in(raw, self.service),
            str(svc.get("image", "")),
            port,
            parse_duration(svc.get("stop_grace_period")),
            config_hash(svc, self.project.env),
        )

    @property
    def config_hash(self) -> str:
        return self.spec.config_hash

    @cached_property
    def state(self) -> ServiceState:
        """The service's containers and what nginx routes to, read once (under the deploy lock)."""
        return self.observe()

    def observe(self) -> ServiceState:
        # The independent reads side by side: each is a round trip to the engine or the target, and
        # they all lie on a rollback's way to its switch.
        with ThreadPoolExecutor(max_workers=4) as pool:
            upstream_read = pool.submit(self.proxy.read_upstream, self.service)
            switching = pool.submit(self.proxy.switching)
            kept = pool.submit(lambda: self.kept)
            env_image_id = pool.submit(self._env_image_id)
            containers = tuple(self.backend.containers(self.service))
            created = dict(pool.map(lambda c: (c.id, Inspect.from_attrs(self.docker(c).attrs).created),
                                    [c for c in containers if c.state == "running"]))
            upstream = upstream_read.result()
            resolved_at = self.proxy.resolved_at() if upstream is None or upstream.by_service_name else None
            standby = kept.result()
            return ServiceState(containers, upstream, env_image_id.result(), resolved_at, created,
                                frozenset(standby.containers) if standby else frozenset(), switching.result())

    def _env_image_id(self) -> str:
        try:
            return image_id(self.project, self.spec.env_image)
        except UsageError:
            return ""

    @cached_property
    def kept(self) -> standbys.Standby | None:
        """The standby standby.json records for the service (read once, under the deploy lock)."""
        return standbys.get(self.project, self.service)

    def docker(self, c: ContainerInfo) -> Container:
        return self.project.target.docker().containers.get(c.id)

    def running(self) -> Running | None:
        serving = self.state.serving
        if not serving:
            return None
        return Running(serving[0].image, serving[0].image_id, frozenset(c.image_id for c in serving))

    def replicas(self, wanted: int | None) -> int:
        return wanted or len(self.state.serving) or 1

    def revisions(self, image: str) -> tuple[str, tuple[str, ...]]:
        """(head, every revision) of the Alembic scripts in a running container of `image`."""
        running = [
            c
            for c in self.backend.containers(self.service, all=False)
            if c.state == "running" and c.image == image
        ] or self.state.serving[:1]
        if not running:
            return "", ()
        return image_revisions(self.docker(running[0]), image, self.say)

    # -- reconcile ----------------------------------------------------------------------------------

    def repairs(self) -> list[Step]:
        """What an interrupted deploy left, as steps that fix it; none on a clean stack."""
        state = self.state
        fixes: list[tuple[str, Callable[[], object]]] = []
        serving, extras, stopped = state.serving, state.extras, state.stopped
        if stopped:
            fixes.append((f"remove stopped container(s) {names(stopped)}", lambda: self.discard(stopped)))
        # The entrypoint's `server S:PORT` may have resolved to the extras too (nginx restarted
        # after they started): name the serving containers before removing anything.
        exact = state.upstream is not None and set(state.upstream.hosts) == {c.name for c in serving}
        others = extras or state.standing_by  # `server S:PORT` resolves to the standby too
        if serving and not exact and (others or (state.upstream and not state.upstream.by_service_name)):
            fixes.append(
                (
                    f"point nginx upstream {self.service} at {names(serving)} only",
                    lambda: self.switch_and_drain(serving),
                )
            )
        fixes += self._standby_repairs(state)
        fresh = state.never_served
        served = [c for c in extras if c not in fresh]
        if fresh:
            fixes.append(
                (
                    f"remove {names(fresh)} (started by an interrupted deploy, never served)",
                    lambda: self.discard(fresh),
                )
            )
        if served:
            fixes.append(
                (
                    f"stop and remove {names(served)} (replaced by an interrupted deploy)",
                    lambda: self.drain_and_retire(served),
                )
            )
        images = {c.image for c in serving}
        if len(images) == 1 and (image := images.pop()) != self.spec.env_image:
            fixes.append(
                (
                    f"set {self.spec.image_var}={image} in {self.project.env_path} (it runs; .env said "
                    f"{self.spec.env_image})",
                    lambda: set_env_value(self.project, self.spec.image_var, image),
                )
            )
        if state.switching and not self._leading:  # a rollback's own lead (lead_for_standby) is no leftover
            fixes.append(("clear the switching flag an interrupted command left in nginx",
                          lambda: self.proxy.set_switching(False)))
        return [
            Step("reconcile", f"repair: {description}", self._repairing(description, fix))
            for description, fix in fixes
        ]

    def _standby_repairs(self, state: ServiceState) -> list[tuple[str, Callable[[], object]]]:
        """A standby that serves (its switch was interrupted), whose window has ended, or that is
        no longer whole: forget it, retiring what runs of it."""
        kept = self.kept
        if kept is None:
            return []
        if state.standby_serves:
            self._standby_repaired = True
            return [(f"forget the standby {kept.label}: nginx routes to it (an interrupted rollback)",
                     lambda: standbys.drop(self.project, self.service))]
        standing = state.standing_by
        why = ""
        if kept.expired:
            why = f"its window ended at {kept.until}"
        elif not self.standby_window:
            why = "no standby wanted"
        elif len(standing) != len(kept.containers):
            up = {c.name for c in standing}
            why = f"{', '.join(n for n in kept.containers if n not in up)} no longer run(s)"
        if not why:
            return []
        self._standby_repaired = True
        return [(f"retire the standby {kept.label} ({why})", lambda: self.retire_standby(standing))]

    def retire_standby(self, standing: list[ContainerInfo], *, graceful: bool = True) -> None:
        """Stop the standby's containers gracefully (no nginx worker routes to them) and forget it.
        A broken one (unhealthy, unreachable) is removed at once: its shutdown may hang on what it
        cannot reach, and it serves nobody."""
        if graceful:
            self.retire(standing)
        else:
            self.discard(standing)
        standbys.drop(self.project, self.service)

    def _repairing(self, description: str, fix: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            self.say(f"repairing: {description}")
            return fix()

        return run

    # -- the roll -----------------------------------------------------------------------------------

    def steps(self, roll: Roll) -> list[Step]:
        serving = self.state.serving
        n = self.replicas(roll.replicas)
        old_image = roll.previous_image or (serving[0].image if serving else "")
        whole = self.kept is not None and len(self.state.standing_by) == len(self.kept.containers)
        standing = self.state.standing_by if whole and not self._standby_repaired else []
        first = [Step(
            "standby",
            f"retire the standby {self.kept.label if self.kept else ''} ({names(standing)}): "
            "a newer one takes its place",
            lambda: self.retire_standby(standing, graceful=not self._standby_broken),
        )] if standing else []
        return [
            *first,
            Step(
                "scale-up",
                f"start {n} container(s) of {roll.image} beside {names(serving) or 'none'} "
                f"(compose up --no-recreate --scale {self.service}={len(serving) + n})",
                lambda: self.scale_up(roll.image, serving, n),
            ),
            Step(
                "health",
                f"wait until they are Docker-healthy and answer {HEALTH_PATH} with 200 from "
                f"{self.proxy.service} (at most {self.health_timeout:.0f} s; otherwise remove them, "
                "traffic stays where it is)",
                lambda: self.gate(roll.image, old_image, roll.before_gate),
            ),
            Step(
                "switch",
                f"point nginx upstream {self.service} at the new containers, nginx -t, graceful reload",
                lambda: self.switch_to(serving, old_image),
                switches=True,
            ),
            self._drain_step(),
            self._retire_or_keep(roll, serving),
        ]

    def _retire_or_keep(self, roll: Roll, serving: list[ContainerInfo]) -> Step:
        stop = (f"stop {names(serving) or 'nothing'} (SIGTERM, up to {self.spec.grace:.0f} s each) and "
                "remove them")
        if roll.kind != "deploy" or not serving or not self.standby_window or roll.previous is None:
            return Step("retire", stop, lambda: self.retire(serving))
        return Step(
            "retire",
            f"keep {names(serving)} ({roll.previous_image}) running out of the upstream as the warm "
            f"standby for {self.standby_window / 60:g} min, if the host's memory holds both releases; "
            f"otherwise {stop}",
            lambda: self.keep_or_retire(roll, serving),
        )

    def keep_or_retire(self, roll: Roll, serving: list[ContainerInfo]) -> None:
        """The old containers as the standby, or retired when the host cannot hold both releases."""
        memory = standbys.memory(self.project)
        refused = memory.refuses_standby() if memory else ""
        if refused or roll.previous is None:
            self._standby_note = f"refused: {refused}"
            self.say(f"no warm standby: {refused}")
            self.retire(serving)
            return
        record = standbys.Standby.kept(self.service, roll.previous, roll.previous_image, serving[0].image_id,
                                       tuple(c.name for c in serving), self.standby_window)
        standbys.keep(self.project, record)
        self._retired = []
        self._standby_note = f"kept: {record.describe()}"
        self.say(f"keeping {names(serving)} as the warm standby {record.describe()}")

    # -- rollback from the standby ------------------------------------------------------------------

    def usable_standby(self, roll: Roll, release: int) -> tuple[list[ContainerInfo], str]:
        """The standby's containers when a rollback to `release` can switch to them, or why not."""
        kept, state = self.kept, self.state
        if kept is None:
            return [], "no standby is kept"
        standing = state.standing_by
        if kept.release != release or kept.image_id != roll.image_id:
            return [], f"the standby is {kept.label}, not the release rolled back to"
        if kept.expired:
            return [], f"its window ended at {kept.until}"
        if state.standby_serves or len(standing) != len(kept.containers):
            return [], "its containers do not all run"
        for c in standing:
            if c.health not in ("healthy", "none"):
                self._standby_broken = True
                return [], f"{c.name} is {c.health} for Docker"
        return standing, ""

    def from_standby(self, roll: Roll, release: int) -> list[Step]:
        """A rollback to the standby: checked (Docker health, then /health from nginx, while
        HTTP/1.1 clients are already told to reconnect), upstream switched, graceful reload; then
        the release left is drained and retired. [] when no usable standby is there (said why)."""
        standing, why = self.usable_standby(roll, release)
        if standing:
            self._lead()  # the lead runs during the checks
            self.say(f"checking the warm standby {names(standing)}: {HEALTH_PATH} from {self.proxy.service}")
            for c in standing:
                status = self.proxy.probe(c.name, self.spec.port, HEALTH_PATH)
                if status != 200:
                    self._standby_broken = True
                    why = f"{c.name} answered {HEALTH_PATH} with {status or 'nothing'} from nginx"
                    self._closing.close()
                    break
        if why:
            self._closing.close()  # a lead raised early (lead_for_standby) ends: the usual path has its own
            if self.kept is not None:
                self._standby_note = f"not used: {why}"
                self.say(f"the warm standby {self.kept.label} is not used ({why}): "
                         "rolling back the usual way")
            return []
        serving = self.state.serving
        self._new = standing
        self._standby_note = f"used: {names(standing)}"
        return [
            Step(
                "switch",
                f"point nginx upstream {self.service} at the warm standby {names(standing)}, nginx -t, "
                "graceful reload",
                lambda: self.switch_to(serving, serving[0].image if serving else ""),
                switches=True,
            ),
            self._drain_step(),
            Step(
                "retire",
                f"stop {names(serving) or 'nothing'} (SIGTERM, up to {self.spec.grace:.0f} s each), remove "
                "them, and forget the standby",
                lambda: self.retire_standby(serving),
            ),
        ]

    def outcome(self) -> Outcome:
        retired = self.state.serving if self._retired is None else self._retired
        return Outcome(
            tuple(c.name for c in self._new),
            tuple(c.name for c in retired),
            round(self._drain_seconds, 2),
            self._standby_note,
        )

    def close(self) -> None:
        """Clear the switching flag if a failed roll left it raised."""
        self._closing.close()

    def scale_up(self, image: str, old: list[ContainerInfo], replicas: int) -> None:
        """Start `replicas` containers of `image` beside `old`; compose creates and owns them.

        No --no-deps: compose hashes a service's config without its depends_on under --no-deps,
        and a later plain `compose up` would then see the new containers as outdated and recreate
        them. --no-recreate keeps the old containers (and the dependencies) as they are.
        """
        total = len(old) + replicas
        self.say(f"starting {replicas} container(s) of {image} beside {names(old) or 'none'}")
        before = {c.id for c in self.backend.containers(self.service)}
        try:
            self.project.compose(
                "up",
                "--detach",
                "--no-recreate",
                "--no-build",
                "--pull",
                "never",
                "--scale",
                f"{self.service}={total}",
                self.service,
                env={self.spec.image_var: image},
                timeout=300,
            )
        except CommandFailed as exc:
            self.discard([c for c in self.backend.containers(self.service) if c.id not in before])
            raise DeployFailed(
                f"starting {image} failed: {exc.message}; removed what it started, traffic "
                "stayed where it was",
                output_tail=exc.output_tail,
                service=self.service,
                image=image,
            ) from None
        new = [c for c in self.backend.containers(self.service) if c.id not in before]
        if len(new) != replicas:
            self.discard(new)
            raise DeployFailed(
                f"compose started {len(new)} container(s) of {self.service}, expected {replicas}",
                hint="nothing was switched; check `docker compose ps`",
                service=self.service,
                image=image,
            )
        self._new = new

    def gate(self, image: str, old_image: str, before: Callable[[], None] | None = None) -> None:
        """From here until the old nginx workers are gone, HTTP/1.1 clients reconnect after each
        answer (proxy.SWITCHING_FLAG): the health gate gives them the time to do so. `before`
        (the migrations running beside the start) must succeed first."""
        if before is not None:
            try:
                before()
            except OpsError:
                self.discard(self._new)
                raise
        self._lead()
        self.wait_ready(self._new, image, old_image)

    def wait_ready(self, new: list[ContainerInfo], image: str, old_image: str) -> None:
        """Every new container running, Docker-healthy and answering 200 from inside the network."""
        pending = {c.id: c for c in new}
        seen: dict[str, str] = {}
        for attempt in polling.attempts(within=self.health_timeout, every=_POLL):
            now = {c.id: c for c in self.backend.containers(self.service)}
            for cid, c in list(pending.items()):
                why = self._not_ready(now.get(cid), c.name)
                if why is None:
                    self.say(f"{c.name}: healthy, {HEALTH_PATH} answered 200 from {self.proxy.service}")
                    pending.pop(cid)
                elif why.startswith("!"):
                    self._refuse(c, why[1:], new, image, old_image)
                elif seen.get(cid) != why:
                    self.say(f"{c.name}: {why}")
                    seen[cid] = why
            if not pending:
                return
            if attempt.last:
                break
        c = next(iter(pending.values()))
        waited = f"not ready within {self.health_timeout:.0f} s ({seen.get(c.id, 'starting')})"
        self._refuse(c, waited, new, image, old_image)

    def _not_ready(self, info: ContainerInfo | None, name: str) -> str | None:
        """None when ready; why not otherwise ("!..." when it never will be)."""
        if info is None:
            return "!disappeared"
        if info.state in ("exited", "dead", "restarting"):
            return f"!{info.state} (exit code {self._exit_code(info)}, restarted {info.restarts}x)"
        if info.restarts:  # running again: Docker has reset its exit code
            return f"!exited and was restarted {info.restarts}x by its restart policy"
        if info.health == "unhealthy":
            return f"!reported unhealthy by Docker: {self._health_output(info)}"
        if info.health not in ("healthy", "none", "starting"):
            return f"Docker health {info.health}"
        status = self.proxy.probe(name, self.spec.port, HEALTH_PATH)
        if status != 200:
            return f"Docker health {info.health}, {HEALTH_PATH} {status or 'no answer'}"
        if info.health == "starting" and not self._own_check_passes(info):
            return "Docker health starting"
        return None

    def _own_check_passes(self, info: ContainerInfo) -> bool:
        """Docker runs a container's first health check one interval after its start: rather than
        wait for it, the gate runs the image's own check in the container itself, once /health
        answers 200 from nginx (Docker's own verdict still counts: an unhealthy one fails the roll)."""
        found = self.inspect(info)
        if found is None or not found.health_test:
            return False
        try:
            code, _output = self.docker(info).exec_run(list(found.health_test))
        except Exception:  # gone or stopping: the next look at its state says why
            return False
        return code == 0

    def inspect(self, info: ContainerInfo) -> Inspect | None:
        """The container's inspect fields; None when it is gone."""
        with contextlib.suppress(Exception):
            return Inspect.from_attrs(self.docker(info).attrs)
        return None

    def _exit_code(self, info: ContainerInfo) -> str:
        found = self.inspect(info)
        return found.exit_code if found else "?"

    def _health_output(self, info: ContainerInfo) -> str:
        found = self.inspect(info)
        return found.health_output if found else "no health output"

    def _refuse(
        self, c: ContainerInfo, why: str, new: list[ContainerInfo], image: str, old_image: str
    ) -> None:
        try:
            tail = self.backend.logs(c.id, tail=20)
        except Exception:  # the container may be gone already; the reason stands alone
            tail = ""
        self.discard(new)
        raise DeployFailed(
            f"{c.name} ({image}) {why}: removed the new container(s), traffic stayed on "
            f"{old_image or 'nothing'}",
            output_tail="\n".join(tail.strip().splitlines()[-20:]),
            hint=f"the log tail of {c.name} is above",
            service=self.service,
            image=image,
            container=c.name,
        )

    def switch_to(self, serving: list[ContainerInfo], old_image: str) -> None:
        """nginx to the new containers; when that fails, back to the serving ones, new ones removed."""
        new = self._new
        self.say(f"switching nginx upstream {self.service} to {names(new)}")
        self.wait_clients_reconnected()
        try:
            self._reload = self.proxy.switch(Upstream.of(self.service, [c.name for c in new], self.spec.port))
        except OpsError as exc:
            self._switch_back(serving)
            self.discard(new)
            raise DeployFailed(
                f"switching nginx failed: {exc.message}; removed the new container(s), "
                f"traffic stayed on {old_image}",
                hint=exc.hint,
                service=self.service,
            ) from None

    def _switch_back(self, serving: list[ContainerInfo]) -> None:
        if serving:
            with contextlib.suppress(OpsError):
                self.proxy.switch(Upstream.of(self.service, [c.name for c in serving], self.spec.port))

    def switch_and_drain(self, serving: list[ContainerInfo]) -> float:
        upstream = Upstream.of(self.service, [c.name for c in serving], self.spec.port)
        return self.proxy.switch_gracefully(upstream, drain_timeout=self.drain_timeout).seconds

    @contextlib.contextmanager
    def connections_closing(self) -> Iterator[None]:
        self.proxy.set_switching(True)
        self.closing_since = time.monotonic()
        self._leading = True
        try:
            yield
        finally:
            self._leading = False
            with contextlib.suppress(OpsError):
                self.proxy.set_switching(False)

    def _lead(self) -> None:
        """Raise the switching flag (HTTP/1.1 clients reconnect from now on), unless it is up."""
        if not self._leading:
            self._closing.enter_context(self.connections_closing())

    def lead_for_standby(self) -> None:
        """A rollback that may switch to the warm standby: the clients' lead starts now, while
        the rollback reads and checks (the switch then waits only for what is left of it)."""
        kept = self.kept
        if kept is not None and not kept.expired:
            self._lead()
            self.say(f"warm standby {kept.label}: HTTP/1.1 clients are told to reconnect while the "
                     "rollback reads and checks")

    def wait_clients_reconnected(self) -> None:
        """Usually at once: the clients reconnected during the health gate or the standby's checks."""
        lead = self.proxy.wait_clients_reconnected(self.closing_since)
        self.say(f"switching {lead:.2f} s after HTTP/1.1 clients were told to reconnect")

    def _drain_step(self) -> Step:
        return Step(
            "drain",
            f"wait until the old nginx workers have finished their requests (at most "
            f"{self.drain_timeout:.0f} s)",
            self.drain_switched,
        )

    def drain_switched(self) -> None:
        """The drain after the switch; then clients may keep their connections again."""
        try:
            self._drain_seconds = self.drain(self._reload.old_workers if self._reload else ())
        finally:
            self._closing.close()

    def drain_and_retire(self, extras: list[ContainerInfo]) -> None:
        # A deploy killed just after its reload leaves old workers finishing requests to them.
        stopping = tuple(pid for pid, shutting_down in self.proxy.workers().items() if shutting_down)
        if stopping:
            self.drain(stopping)
        self.retire(extras)

    def drain(self, old_workers: tuple[int, ...]) -> float:
        self.say(f"draining: waiting for {len(old_workers)} old nginx worker(s) to finish their requests")
        drained = self.proxy.wait_drained(old_workers, timeout=self.drain_timeout)
        if not drained.complete:
            self.say(f"old nginx workers {drained.left} still alive after {drained.seconds:.0f} s; going on")
        return drained.seconds

    def retire(self, old: list[ContainerInfo]) -> None:
        """SIGTERM (the image's stop signal) with the grace period, then remove; all at once."""
        if not old:
            return
        self.say(f"stopping {names(old)} (up to {self.spec.grace:.0f} s each for in-flight requests)")

        def stop(c: ContainerInfo) -> None:
            import docker.errors

            with contextlib.suppress(docker.errors.NotFound):
                container = self.docker(c)
                container.stop(timeout=math.ceil(self.spec.grace))
                container.remove()

        with ThreadPoolExecutor(max_workers=len(old)) as pool:
            list(pool.map(stop, old))

    def discard(self, containers: list[ContainerInfo]) -> None:
        """Remove containers that never got traffic (or are already stopped): no grace needed."""
        import docker.errors

        for c in containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.docker(c).remove(force=True)
