"""Rolling update and rollback of a compose service behind nginx, without a failed request.

    deploy(stack, "api", "finaiflow/api:1.1.0")    start-first, health-gated, drained
    rollback(stack, "api")                         the same path, back to the previous release
    plan(stack, "api", "finaiflow/api:1.1.0")      the steps a deploy would take, changing nothing

A deploy, under the stack's deploy lock (releases.py):
  1. reconcile: repair what an interrupted deploy left behind (containers nginx does not route
     to, stopped ones, a .env that does not name the running image), so that every command
     starts from "N containers of one release, nginx pointing at exactly them";
  2. record the running release if the history does not know it (the first deploy, or a change
     made by hand), so that there is always something to roll back to;
  3. a pre-deploy backup when `finaiflow_ops.backup` is installed, and the migrations in a
     one-off container of the new image, before anything else changes;
  4. N new containers beside the N old ones, created by compose (so compose still owns them),
     with the new image given in the environment of that one compose call;
  5. a health gate: Docker health and an HTTP probe from the proxy container, with a deadline.
     A container that exits, restarts, turns unhealthy or never answers 200 fails the deploy:
     the new containers are removed, traffic never left the old ones;
  6. nginx's upstream pointed at the new containers by name, `nginx -t`, graceful reload;
  7. the image set in .env, so that a later `stack up` keeps this release;
  8. drain: the old nginx workers, which finish their in-flight requests, are watched until they
     have exited; then the old containers get SIGTERM with their grace period, and are removed;
  9. the release recorded as current, one line in the audit log.
A rollback is the same path with the image of an earlier release, which is still on the host:
nothing is built or pulled, and no migration runs (an older release cannot downgrade a schema it
does not know: that case is detected, and needs a confirmation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import posixpath
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from finaiflow_ops import envfile, releases
from finaiflow_ops.errors import CommandFailed, DeployFailed, OpsError, UsageError
from finaiflow_ops.proxy import DEFAULT_PROXY, KEEPALIVE_LEAD, Proxy, Reload, Upstream
from finaiflow_ops.releases import Release
from finaiflow_ops.stack import ContainerInfo, Stack
from finaiflow_ops.target import CommandResult

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = [
    "DeployFailed",
    "DeployResult",
    "Phase",
    "Plan",
    "available_images",
    "compose_with",
    "deploy",
    "image_id",
    "image_variable",
    "parse_duration",
    "plan",
    "rollback",
    "rollback_plan",
    "sed_set_line",
    "set_env_value",
]

Progress = Callable[[str], None]
Confirm = Callable[[str], None]

HEALTH_TIMEOUT = 120.0
DRAIN_TIMEOUT = 75.0  # above nginx's worker_shutdown_timeout (60 s), which ends any drain first
HEALTH_PATH = "/health"
_POLL = 0.1
_IMAGE_VAR_RE = re.compile(r"^\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}$")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_REVISIONS_PY = (
    "from alembic.config import Config; from alembic.script import ScriptDirectory; "
    "s = ScriptDirectory.from_config(Config('alembic.ini')); "
    "print(' '.join(s.get_heads())); print(' '.join(r.revision for r in s.walk_revisions()))"
)


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass(frozen=True)
class DeployResult:
    """What a deploy or rollback did, and how long traffic took to move."""

    service: str
    kind: str  # deploy | rollback
    release: Release
    previous: Release | None
    containers: tuple[str, ...]  # the new containers, now serving
    retired: tuple[str, ...]  # the old ones, stopped and removed
    repaired: tuple[str, ...]  # what an interrupted deploy had left, and was fixed first
    switch_seconds: float  # from the start of the command until nginx served the new containers
    drain_seconds: float
    total_seconds: float
    phases: tuple[Phase, ...]
    ssh_connections: int = 0  # SSH connections the command opened to the target (one, on an ssh target)


@dataclass(frozen=True)
class Plan:
    """`deploy --plan`: the steps a deploy would take now, in order; nothing is changed."""

    service: str
    image: str
    replicas: int
    steps: tuple[str, ...]


@dataclass(frozen=True)
class _Service:
    """What the compose file says about the service being rolled."""

    name: str
    image_var: str  # the .env key its image comes from (image: ${API_IMAGE:-...})
    env_image: str  # the image compose would use now
    port: int
    grace: float  # stop_grace_period, in seconds
    config_hash: str


@dataclass(frozen=True)
class _State:
    """The service's containers, and which of them nginx routes to."""

    containers: tuple[ContainerInfo, ...]
    upstream: Upstream | None
    env_image_id: str
    # With `server S:PORT`, nginx resolved S when its current workers started: containers
    # created after that moment get no traffic. Epoch seconds; None when unknown.
    resolved_at: float | None = None
    created: Mapping[str, float] = field(default_factory=dict)  # container id -> creation (epoch)

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
    def extras(self) -> list[ContainerInfo]:
        serving = {c.id for c in self.serving}
        return [c for c in self.running if c.id not in serving]

    @property
    def never_served(self) -> list[ContainerInfo]:
        """Extras created after every serving container: started by a deploy that never switched.
        They get no grace period; one still starting has no SIGTERM handler yet (PID 1 ignores it)."""
        newest = max((self.created.get(c.id, 0.0) for c in self.serving), default=0.0)
        return [c for c in self.extras if self.created.get(c.id, 0.0) > newest]


# -- small primitives, usable on their own ------------------------------------------------------------


def parse_duration(text: str | float | int | None, default: float = 10.0) -> float:
    """A compose/Go duration ("35s", "1m30s", "500ms") in seconds; `default` when unset."""
    if text is None or text == "":
        return default
    if isinstance(text, int | float):
        return float(text)
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise UsageError(f"invalid duration {text!r}", hint="write it like 35s or 1m30s")
    return sum(float(n) * scale[u] for n, u in parts)


def sed_set_line(key: str, value: str, *, present: bool) -> str:
    """The sed program that sets KEY=value in a .env, touching that line only (appending it when
    absent). Values are image references: no character sed or the .env syntax would interpret."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not _IMAGE_RE.fullmatch(value):
        raise UsageError(f"refusing to write {key}={value!r} into .env", hint="give an image reference")
    if present:
        return rf"s|^\(export[ \t]\+\)\?{key}[ \t]*=.*$|{key}={value}|"
    return f"$a {key}={value}"


def set_env_value(stack: Stack, key: str, value: str) -> bool:
    """Set one non-secret key of the stack's .env on the target; True when the file changed.

    GNU sed edits the one line in place: it writes a new file and renames it over the old one
    (atomic; mode 0600 and owner kept), and no secret ever leaves the target or reaches a
    command line. The result is read back: every other key must be unchanged.
    """
    read = stack.target.read_text
    before = envfile.parse(read(stack.env_path))
    if before.get(key) == value:
        return False
    stack.target.run("sed", "-i", "--follow-symlinks", "-e", sed_set_line(key, value, present=key in before),
                     "--", stack.env_path)
    after = envfile.parse(read(stack.env_path))
    before.pop(key, None)
    if after.pop(key, None) != value or after != before:
        raise CommandFailed(f"setting {key} in {stack.env_path} on {stack.target} changed more than that "
                            "line", hint="check the file by hand (env check)")
    return True


def compose_with(stack: Stack, env: Mapping[str, str], *args: str,
                 timeout: float | None = None) -> CommandResult:
    """`docker compose` for the stack with extra environment variables (they win over .env)."""
    return stack.compose(*args, env=env, timeout=timeout)


def available_images(stack: Stack, service: str) -> list[str]:
    """The tags on the target of the repository `service` runs (its releases at hand), newest first."""
    running = [c.image for c in stack.containers(service) if c.state == "running"]
    ref = running[0] if running else str(stack.config["services"][service].get("image", ""))
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    images = sorted(stack.target.docker().images.list(name=repository),
                    key=lambda i: str(i.attrs.get("Created", "")), reverse=True)
    return [tag for i in images for tag in i.tags if tag.rsplit(":", 1)[0] == repository]


def image_variable(stack: Stack, service: str) -> str:
    """The .env key the service's image comes from (`image: ${API_IMAGE:-...}` gives API_IMAGE)."""
    return _image_variable(stack.raw_config(), service)


def _image_variable(raw_config: Mapping[str, Any], service: str) -> str:
    expr = str(raw_config.get("services", {}).get(service, {}).get("image", ""))
    match = _IMAGE_VAR_RE.match(expr)
    if not match:
        raise UsageError(f"the image of {service} is not taken from .env ({expr or 'none'})",
                         hint=f"write it as image: ${{{service.upper()}_IMAGE:-...}} in the compose file")
    return match["var"]


def image_id(stack: Stack, ref: str) -> str:
    """The id (content digest) of an image on the target; UsageError when the target lacks it."""
    import docker.errors

    if not _IMAGE_RE.fullmatch(ref):
        raise UsageError(f"invalid image reference {ref!r}", hint="e.g. finaiflow/api:1.1.0")
    try:
        return str(stack.target.docker().images.get(ref).id)
    except docker.errors.ImageNotFound:
        raise UsageError(f"image {ref} is not on {stack.target}",
                         hint="build or load it there first: a deploy never builds or pulls") from None


# -- the rollout ----------------------------------------------------------------------------------------


class _Rollout:
    """One deploy or rollback of one service: the steps, and what they measured."""

    def __init__(self, stack: Stack, service: str, *, proxy: str, progress: Progress | None,
                 health_timeout: float, drain_timeout: float, migrate: bool) -> None:
        self.stack = replace(stack)  # fresh caches: .env and the compose config change under us
        self.service = service
        self.proxy = Proxy(self.stack, proxy)
        self.say: Progress = progress or (lambda _msg: None)
        self.health_timeout = health_timeout
        self.drain_timeout = drain_timeout
        self.migrate = migrate
        self.started = time.monotonic()
        self.closing_since = self.started
        self.phases: list[Phase] = []
        self.spec = self._describe_service()

    # -- facts ------------------------------------------------------------------------------------

    def _describe_service(self) -> _Service:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the two compose calls side by side
            uninterpolated = pool.submit(self.stack.compose, "config", "--no-interpolate", "--format", "json")
            services = self.stack.config.get("services", {})
            raw = json.loads(uninterpolated.result().stdout)
        if self.service not in services:
            raise UsageError(f"no service {self.service!r} in {self.stack.compose_path}",
                             hint=f"services: {', '.join(services)}")
        svc = services[self.service]
        expose = [str(p).split("/")[0] for p in svc.get("expose") or ()]
        upstream = self.proxy.read_upstream(self.service)
        port = (upstream.port if upstream else None) or (int(expose[0]) if expose[:1] and expose[0].isdigit()
                                                          else 0)
        if not port:
            raise UsageError(f"no port known for {self.service}", hint="declare it with expose: in compose")
        return _Service(self.service, _image_variable(raw, self.service), str(svc.get("image", "")), port,
                        parse_duration(svc.get("stop_grace_period")), self._config_hash(svc))

    def _config_hash(self, svc: Mapping[str, Any]) -> str:
        # Without the image (that is the release itself) and the build section, and with secret
        # values replaced: the hash says whether configuration changed between two releases.
        config = {k: v for k, v in svc.items() if k not in ("image", "build")}
        text = envfile.redact(json.dumps(config, sort_keys=True), self.stack.env)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def observe(self) -> _State:
        containers = tuple(self.stack.containers(self.service))
        try:
            env_image_id = image_id(self.stack, self.spec.env_image)
        except UsageError:
            env_image_id = ""
        upstream = self.proxy.read_upstream(self.service)
        created = {c.id: _epoch(self.docker(c).attrs["Created"]) for c in containers if c.state == "running"}
        resolved_at = self.proxy.resolved_at() if upstream is None or upstream.by_service_name else None
        return _State(containers, upstream, env_image_id, resolved_at, created)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases.append(Phase(name, round(time.monotonic() - start, 2)))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def docker(self, c: ContainerInfo) -> Container:
        return self.stack.target.docker().containers.get(c.id)

    # -- reconcile ----------------------------------------------------------------------------------

    def repairs(self, state: _State) -> list[tuple[str, Callable[[], object]]]:
        """What an interrupted deploy left, as (description, fix) pairs; empty on a clean stack."""
        fixes: list[tuple[str, Callable[[], object]]] = []
        serving, extras, stopped = state.serving, state.extras, state.stopped
        if stopped:
            fixes.append((f"remove stopped container(s) {_names(stopped)}", lambda: self.discard(stopped)))
        # The entrypoint's `server S:PORT` may have resolved to the extras too (nginx restarted
        # after they started): name the serving containers before removing anything.
        exact = state.upstream is not None and set(state.upstream.hosts) == {c.name for c in serving}
        if serving and not exact and (extras or (state.upstream and not state.upstream.by_service_name)):
            fixes.append((f"point nginx upstream {self.service} at {_names(serving)} only",
                          lambda: self.switch_and_drain(serving)))
        fresh = state.never_served
        served = [c for c in extras if c not in fresh]
        if fresh:
            fixes.append((f"remove {_names(fresh)} (started by an interrupted deploy, never served)",
                          lambda: self.discard(fresh)))
        if served:
            fixes.append((f"stop and remove {_names(served)} (replaced by an interrupted deploy)",
                          lambda: self.drain_and_retire(served)))
        images = {c.image for c in serving}
        if len(images) == 1 and (image := images.pop()) != self.spec.env_image:
            fixes.append((f"set {self.spec.image_var}={image} in {self.stack.env_path} (it runs; .env said "
                          f"{self.spec.env_image})",
                          lambda: set_env_value(self.stack, self.spec.image_var, image)))
        return fixes

    def reconcile(self) -> tuple[list[str], list[ContainerInfo]]:
        """Run the repairs; returns what was repaired and the containers serving afterwards."""
        state = self.observe()
        done = []
        for description, fix in self.repairs(state):
            self.say(f"repairing: {description}")
            fix()
            done.append(description)
        return done, state.serving

    # -- history ----------------------------------------------------------------------------------

    def revisions(self, c: ContainerInfo) -> tuple[str, tuple[str, ...]]:
        """(head, every revision) of the Alembic scripts in a running container; empty without Alembic."""
        return image_revisions(self.docker(c), c.image, self.say) if self.migrate else ("", ())

    def current_release(self, serving: list[ContainerInfo]) -> Release | None:
        """The current release from the history, or a new "observed" record when what runs is
        not what the history says (first deploy, or a change made by hand)."""
        past = releases.history(self.stack, self.service)
        current = past.current_release
        if not serving or (current and {c.image_id for c in serving} == {current.image_id}):
            return current
        found = serving[0]
        head, known = self.revisions(found)
        self.say(f"recording the running {found.image} as a release (the history did not know it)")
        return releases.record(self.stack, Release(
            0, self.service, found.image, found.image_id, self.spec.config_hash, head, known,
            kind="observed", previous=current.id if current else None,
            note="found running, not deployed by finaiflow-ops"))

    # -- steps ------------------------------------------------------------------------------------------

    def backup(self) -> str | None:
        return pre_deploy_backup(self.stack, self.say)

    def run_migrations(self, image: str) -> None:
        self.say(f"running migrations (alembic upgrade head) in a one-off container of {image}")
        try:
            compose_with(self.stack, {self.spec.image_var: image}, "run", "--rm", "--no-deps", "-T",
                         self.service, "alembic", "upgrade", "head", timeout=900)
        except CommandFailed as exc:
            raise DeployFailed(f"the migrations of {image} failed: {exc.message}; nothing else was changed",
                               output_tail=exc.output_tail,
                               hint="fix the migration; PostgreSQL rolled the failed one back") from None

    def scale_up(self, image: str, old: list[ContainerInfo], replicas: int) -> list[ContainerInfo]:
        """Start `replicas` containers of `image` beside `old`; compose creates and owns them.

        No --no-deps: compose hashes a service's config without its depends_on under --no-deps,
        and a later plain `compose up` would then see the new containers as outdated and recreate
        them. --no-recreate keeps the old containers (and the dependencies) as they are.
        """
        total = len(old) + replicas
        self.say(f"starting {replicas} container(s) of {image} beside {_names(old) or 'none'}")
        before = {c.id for c in self.stack.containers(self.service)}
        try:
            compose_with(self.stack, {self.spec.image_var: image}, "up", "--detach", "--no-recreate",
                         "--no-build", "--pull", "never", "--scale", f"{self.service}={total}", self.service,
                         timeout=300)
        except CommandFailed as exc:
            self.discard([c for c in self.stack.containers(self.service) if c.id not in before])
            raise DeployFailed(f"starting {image} failed: {exc.message}; removed what it started, traffic "
                               "stayed where it was", output_tail=exc.output_tail) from None
        new = [c for c in self.stack.containers(self.service) if c.id not in before]
        if len(new) != replicas:
            self.discard(new)
            raise DeployFailed(f"compose started {len(new)} container(s) of {self.service}, expected "
                               f"{replicas}", hint="nothing was switched; check `docker compose ps`")
        return new

    def wait_ready(self, new: list[ContainerInfo], image: str, old_image: str) -> None:
        """Every new container running, Docker-healthy and answering 200 from inside the network."""
        deadline = time.monotonic() + self.health_timeout
        pending = {c.id: c for c in new}
        seen: dict[str, str] = {}
        while pending:
            now = {c.id: c for c in self.stack.containers(self.service)}
            for cid, c in list(pending.items()):
                info = now.get(cid)
                why = self._not_ready(info, c.name)
                if why is None:
                    self.say(f"{c.name}: healthy, {HEALTH_PATH} answered 200 from {self.proxy.service}")
                    pending.pop(cid)
                elif why.startswith("!"):
                    self._refuse(c, why[1:], new, image, old_image)
                elif seen.get(cid) != why:
                    self.say(f"{c.name}: {why}")
                    seen[cid] = why
            if pending and time.monotonic() > deadline:
                c = next(iter(pending.values()))
                waited = f"not ready within {self.health_timeout:.0f} s ({seen.get(c.id, 'starting')})"
                self._refuse(c, waited, new, image, old_image)
            if pending:
                time.sleep(_POLL)

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
        if info.health not in ("healthy", "none"):
            return f"Docker health {info.health}"
        status = self.proxy.probe(name, self.spec.port, HEALTH_PATH)
        return None if status == 200 else f"Docker {info.health}, {HEALTH_PATH} {status or 'no answer'}"

    def _exit_code(self, info: ContainerInfo) -> str:
        with contextlib.suppress(Exception):
            return str(self.docker(info).attrs["State"].get("ExitCode", "?"))
        return "?"

    def _health_output(self, info: ContainerInfo) -> str:
        with contextlib.suppress(Exception):
            log = self.docker(info).attrs["State"]["Health"]["Log"]
            return " ".join(str(log[-1]["Output"]).split())[:200] or f"exit {log[-1]['ExitCode']}"
        return "no health output"

    def _refuse(self, c: ContainerInfo, why: str, new: list[ContainerInfo], image: str,
                old_image: str) -> None:
        try:
            tail = self.stack.logs(c.id, tail=20)
        except Exception:  # the container may be gone already; the reason stands alone
            tail = ""
        self.discard(new)
        raise DeployFailed(
            f"{c.name} ({image}) {why}: removed the new container(s), traffic stayed on "
            f"{old_image or 'nothing'}",
            output_tail="\n".join(tail.strip().splitlines()[-20:]),
            hint=f"the log tail of {c.name} is above",
        )

    def switch_and_drain(self, serving: list[ContainerInfo]) -> float:
        upstream = Upstream.of(self.service, [c.name for c in serving], self.spec.port)
        return self.proxy.switch_gracefully(upstream, drain_timeout=self.drain_timeout).seconds

    @contextlib.contextmanager
    def connections_closing(self) -> Iterator[None]:
        self.proxy.set_switching(True)
        self.closing_since = time.monotonic()
        try:
            yield
        finally:
            with contextlib.suppress(OpsError):
                self.proxy.set_switching(False)

    def sleep_until_clients_reconnected(self) -> None:
        """The health gate usually took longer than KEEPALIVE_LEAD already; otherwise wait the rest."""
        time.sleep(max(0.0, KEEPALIVE_LEAD - (time.monotonic() - self.closing_since)))

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
        self.say(f"stopping {_names(old)} (up to {self.spec.grace:.0f} s each for in-flight requests)")

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

    # -- the whole -------------------------------------------------------------------------------------

    def roll(self, *, kind: str, image: str, image_id: str, serving: list[ContainerInfo],
             previous: Release | None, replicas: int | None, backup: bool, repaired: list[str],
             known: tuple[str, tuple[str, ...]] | None = None, note: str = "") -> DeployResult:
        """Steps 3 to 9: migrations, new containers, gate, switch, drain, retire, record."""
        n = replicas or len(serving) or 1
        old_image = previous.image if previous else (serving[0].image if serving else "")
        with self.phase("backup"):
            backup_id = self.backup() if backup else None
        if self.migrate and kind == "deploy":
            with self.phase("migrate"):
                self.run_migrations(image)
        with self.phase("scale-up"):
            new = self.scale_up(image, serving, n)
        # From here until the old nginx workers are gone, HTTP/1.1 clients reconnect after each
        # answer (proxy.SWITCHING_FLAG): the health gate gives them the time to do so.
        with self.connections_closing():
            with self.phase("health"):
                self.wait_ready(new, image, old_image)
            head, revisions = known if known is not None else self.revisions(new[0])
            with self.phase("switch"):
                reload = self.switch_to(new, serving, old_image)
            switched = self.elapsed()
            self.say(f"traffic on {image} after {switched:.1f} s")
            set_env_value(self.stack, self.spec.image_var, image)
            with self.phase("drain"):
                drain_seconds = self.drain(reload.old_workers)
        with self.phase("retire"):
            self.retire(serving)
        release = releases.record(self.stack, Release(
            0, self.service, image, image_id, self.spec.config_hash, head, revisions, backup_id, kind,
            previous.id if previous else None, note=note))
        result = DeployResult(self.service, kind, release, previous, tuple(c.name for c in new),
                              tuple(c.name for c in serving), tuple(repaired), switched,
                              round(drain_seconds, 2), self.elapsed(), tuple(self.phases),
                              self.stack.target.ssh_connections)
        releases.audit(self.stack, kind, service=self.service, image=image, release=release.id,
                       previous=previous.label if previous else None, switch_seconds=switched,
                       total_seconds=result.total_seconds, repaired=list(repaired),
                       phases={p.name: p.seconds for p in self.phases})
        self.say(f"{kind} of {self.service} to {release.label} done in {result.total_seconds:.1f} s")
        return result

    def switch_to(self, new: list[ContainerInfo], serving: list[ContainerInfo], old_image: str) -> Reload:
        """nginx to the new containers; when that fails, back to the serving ones, new ones removed."""
        self.say(f"switching nginx upstream {self.service} to {_names(new)}")
        self.sleep_until_clients_reconnected()
        try:
            return self.proxy.switch(Upstream.of(self.service, [c.name for c in new], self.spec.port))
        except OpsError as exc:
            self._switch_back(serving)
            self.discard(new)
            raise DeployFailed(f"switching nginx failed: {exc.message}; removed the new container(s), "
                               f"traffic stayed on {old_image}", hint=exc.hint) from None

    def _switch_back(self, serving: list[ContainerInfo]) -> None:
        if serving:
            with contextlib.suppress(OpsError):
                self.proxy.switch(Upstream.of(self.service, [c.name for c in serving], self.spec.port))


def pre_deploy_backup(stack: Stack, say: Progress) -> str | None:
    """A verified pre-deploy backup of the database (finaiflow_ops.backup), where the target keeps
    its backups; its file name. Both backends take it before anything changes; a failure stops the
    deploy with nothing changed."""
    try:
        from finaiflow_ops.backup import archive
    except ImportError:  # an installation without the backup primitives
        say("no backup module (finaiflow_ops.backup): no pre-deploy backup")
        return None
    say("taking a pre-deploy backup")
    try:
        path = archive.take(stack, reason="pre-deploy", progress=say)
    except OpsError as exc:
        raise DeployFailed(f"the pre-deploy backup failed: {exc.message}; nothing was changed",
                           hint=exc.hint or "fix it, or deploy with --no-backup") from None
    say(f"pre-deploy backup {path}")
    return posixpath.basename(path)


def _epoch(docker_time: str) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2026-11-24T03:06:27.017640131Z") as epoch seconds."""
    head, _, rest = docker_time.rstrip("Z").partition(".")
    fraction = float(f"0.{rest[:6]}") if rest else 0.0
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + fraction


def _names(containers: Sequence[ContainerInfo]) -> str:
    return ", ".join(c.name for c in containers)


def _fail_audited(rollout: _Rollout, kind: str, image: str, exc: OpsError) -> None:
    releases.audit(rollout.stack, f"{kind}-failed", service=rollout.service, image=image,
                   reason=exc.one_line(), seconds=rollout.elapsed())


# -- public entry points ----------------------------------------------------------------------------------


def deploy(
    stack: Stack,
    service: str,
    image: str,
    *,
    replicas: int | None = None,
    backup: bool = True,
    migrate: bool = True,
    proxy: str = DEFAULT_PROXY,
    health_timeout: float = HEALTH_TIMEOUT,
    drain_timeout: float = DRAIN_TIMEOUT,
    progress: Progress | None = None,
) -> DeployResult:
    """Roll `service` to `image` with zero failed requests (see the module docstring). On a swarm
    stack, through the engine's rolling update instead (finaiflow_ops.swarm.rollout)."""
    if replicas is not None and replicas < 1:
        raise UsageError(f"invalid replica count {replicas}", hint="give 1 or more")
    if stack.swarm is not None:
        from finaiflow_ops.swarm import rollout as swarm_rollout

        return swarm_rollout.deploy(stack, service, image, replicas=replicas, backup=backup, migrate=migrate,
                                    progress=progress)
    new_id = image_id(stack, image)
    r = _Rollout(stack, service, proxy=proxy, progress=progress, health_timeout=health_timeout,
                 drain_timeout=drain_timeout, migrate=migrate)
    with releases.deploy_lock(r.stack, f"deploy {service} {image}", progress=r.say):
        try:
            with r.phase("reconcile"):
                repaired, serving = r.reconcile()
                previous = r.current_release(serving)
            return r.roll(kind="deploy", image=image, image_id=new_id, serving=serving, previous=previous,
                          replicas=replicas, backup=backup, repaired=repaired)
        except OpsError as exc:
            _fail_audited(r, "deploy", image, exc)
            raise


def rollback(
    stack: Stack,
    service: str,
    *,
    to: str | None = None,
    confirm: Confirm | None = None,
    migrate: bool = True,
    proxy: str = DEFAULT_PROXY,
    health_timeout: float = HEALTH_TIMEOUT,
    drain_timeout: float = DRAIN_TIMEOUT,
    progress: Progress | None = None,
) -> DeployResult:
    """Back to the release before the current one (or `to`: an id or an image), through the same
    zero-downtime path, with the image still on the host. `confirm(question)` is asked (and must
    raise to refuse) when the database is at a revision the older release does not know. On a swarm
    stack, through the engine (finaiflow_ops.swarm.rollout)."""
    if stack.swarm is not None:
        from finaiflow_ops.swarm import rollout as swarm_rollout

        return swarm_rollout.rollback(stack, service, to=to, confirm=confirm, progress=progress)
    r = _Rollout(stack, service, proxy=proxy, progress=progress, health_timeout=health_timeout,
                 drain_timeout=drain_timeout, migrate=migrate)
    with releases.deploy_lock(r.stack, f"rollback {service}" + (f" to {to}" if to else ""), progress=r.say):
        try:
            with r.phase("reconcile"):
                repaired, serving = r.reconcile()
                current = r.current_release(serving)
                past = releases.history(r.stack, service)
                target = rollback_target(past, current, to)
                check_rollback(r.stack, target, confirm, r.say, schema=r.migrate)
            r.say(f"rolling {service} back from {current.label if current else '?'} to {target.label}")
            return r.roll(kind="rollback", image=target.image, image_id=target.image_id, serving=serving,
                          previous=current, replicas=None, backup=False, repaired=repaired,
                          known=(target.revision, target.revisions), note=f"rollback to #{target.id}")
        except OpsError as exc:
            _fail_audited(r, "rollback", to or "previous", exc)
            raise


def rollback_target(past: releases.History, current: Release | None, to: str | None) -> Release:
    """The release a rollback goes to: `to` (an id or an image), else the one before the current."""
    found = past.find(to) if to else _previous_other(past, current)
    if found is None:
        raise UsageError(f"{past.service} has no previous release to roll back to",
                         hint=f"see `finaiflow-ops releases {past.service}`; give one with --to")
    target = found
    if current and target.image_id == current.image_id:
        raise UsageError(f"{target.label} is what {past.service} runs already", hint="nothing to roll back")
    return target


def rollback_plan(stack: Stack, service: str, *, to: str | None = None) -> Release:
    """The release `rollback` would return to now, reading only (UsageError when there is none).

    As `rollback` does: when what runs is not what the history says (a change made by hand), the
    rollback records it first and returns to the history's current release; otherwise to the
    release before the current one, redeploys of the same image skipped."""
    past = releases.history(stack, service)
    current = past.current_release
    running = {c.image_id for c in stack.containers(service, all=False) if c.state == "running"}
    if current is not None and running and running != {current.image_id}:
        return rollback_target(past, None, to) if to else current
    return rollback_target(past, current, to)


def _previous_other(past: releases.History, current: Release | None) -> Release | None:
    """The release that ran before the current one, skipping redeploys of the same image."""
    seen: set[int] = set()
    release = past.get(current.previous) if current else None
    while release is not None and current is not None and release.image_id == current.image_id:
        seen.add(release.id)
        release = past.get(release.previous) if release.previous not in seen else None
    return release


def image_revisions(container: Container, image: str, say: Progress) -> tuple[str, tuple[str, ...]]:
    """(head, every revision) of the Alembic scripts in a running container of `image`; empty
    when they cannot be read (an image without Alembic)."""
    code, output = container.exec_run(["python", "-c", _REVISIONS_PY])
    out = output.decode(errors="replace").splitlines() if isinstance(output, bytes) else []
    if code != 0 or len(out) < 2:
        say(f"could not read the Alembic revisions of {image}; recorded without them")
        return "", ()
    return out[-2].strip(), tuple(out[-1].split())


def check_rollback(
    stack: Stack, target: Release, confirm: Confirm | None, say: Progress, *, schema: bool = True
) -> None:
    """Before going back to `target`, on either backend: its tag must still name the image it ran,
    and an older release cannot run on a schema its migrations do not know (ask first)."""
    now = image_id(stack, target.image)  # a clear error when the image is gone
    if target.image_id and now != target.image_id:
        raise UsageError(f"{target.image} now points at another image than release #{target.id} ran",
                         hint=f"tag the original again (docker tag {target.image_id} {target.image}) if it "
                              "still exists, or deploy the wanted image")
    if not schema or not target.revisions:
        return
    try:
        db = [row[0] for row in stack.psql("SELECT version_num FROM alembic_version")]
    except OpsError:
        say("could not read the database's Alembic revision; not checked")
        return
    unknown = [rev for rev in db if rev not in target.revisions]
    if not unknown:
        return
    question = (f"the database is at Alembic revision {', '.join(unknown)}, which {target.label} does not "
                f"know (its newest is {target.revision or '?'}): it may fail on this schema. "
                "Roll back anyway?")
    say(f"warning: {question}")
    if confirm is None:
        raise UsageError(f"{question.rstrip('?')}: needs confirmation",
                         hint="pass --yes if that release can run on the newer schema; otherwise restore "
                              "the pre-deploy backup")
    confirm(question)


def plan(
    stack: Stack,
    service: str,
    image: str,
    *,
    replicas: int | None = None,
    backup: bool = True,
    migrate: bool = True,
    proxy: str = DEFAULT_PROXY,
    health_timeout: float = HEALTH_TIMEOUT,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> Plan:
    """The steps `deploy` would take now, from the state of the target; changes nothing."""
    if stack.swarm is not None:
        from finaiflow_ops.swarm import rollout as swarm_rollout

        return swarm_rollout.plan(stack, service, image, replicas=replicas, backup=backup, migrate=migrate)
    image_id(stack, image)
    r = _Rollout(stack, service, proxy=proxy, progress=None, health_timeout=health_timeout,
                 drain_timeout=drain_timeout, migrate=migrate)
    state = r.observe()
    serving = state.serving
    n = replicas or len(serving) or 1
    lock = releases.lock_status(r.stack)
    steps = []
    if lock.lock:
        then = f"abandoned: {lock.stale}, would be taken over" if lock.stale else "would fail"
        steps.append(f"take the deploy lock (now held by {lock.lock.describe()}; {then})")
    else:
        steps.append("take the deploy lock")
    steps += [f"repair: {description}" for description, _ in r.repairs(state)]
    past = releases.history(r.stack, service).current_release
    if serving and not (past and {c.image_id for c in serving} == {past.image_id}):
        steps.append(f"record the running {serving[0].image} as a release")
    if backup:
        steps.append(f"take a verified pre-deploy backup of the database into {r.stack.project_dir}/backups")
    if migrate:
        steps.append(f"run `alembic upgrade head` in a one-off container of {image}")
    steps += [
        f"start {n} container(s) of {image} beside {_names(serving) or 'none'} "
        f"(compose up --no-recreate --scale {service}={len(serving) + n})",
        f"wait until they are Docker-healthy and answer {HEALTH_PATH} with 200 from {proxy} "
        f"(at most {health_timeout:.0f} s; otherwise remove them, traffic stays where it is)",
        f"point nginx upstream {service} at the new containers, nginx -t, graceful reload",
        f"set {r.spec.image_var}={image} in {r.stack.env_path}",
        f"wait until the old nginx workers have finished their requests (at most {drain_timeout:.0f} s)",
        f"stop {_names(serving) or 'nothing'} (SIGTERM, up to {r.spec.grace:.0f} s each) and remove them",
        "record the release as current and append to the audit log",
    ]
    return Plan(service, image, n, tuple(steps))
