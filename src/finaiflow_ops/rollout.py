"""Deploy and rollback of one service, written once above the backends (compose or swarm).

    deploy(stack, "api", "finaiflow/api:1.1.0")    health-gated, zero failed requests
    rollback(stack, "api")                         the same path, back to the previous release
    plan(stack, "api", "finaiflow/api:1.1.0")      the steps a deploy would take, changing nothing

A deploy, under the stack's deploy lock (releases.py), is a list of steps (backends.protocol.Step:
a description and an action); `plan` prints the descriptions of the very steps `deploy` runs:
  1. reconcile: the backend's repairs of what an interrupted deploy left behind (compose: extra
     or stopped containers, nginx or .env out of step; swarm: none, the engine reconciles);
  2. record the running release if the history does not know it (the first deploy, or a change
     made by hand), so that there is always something to roll back to;
  3. a pre-deploy backup when `finaiflow_ops.backup` is installed, and the migrations in a
     one-off container (compose) or a swarm job of the new image, before anything else changes;
  4. the backend's roll: compose starts new containers beside the old, gates them on health,
     switches nginx, drains and retires the old (backends/compose/rollout.py); swarm runs the
     engine's rolling update and gates the result through nginx (backends/swarm/update.py);
  5. the image set in .env as soon as traffic is on it, so that a later `stack up` keeps it;
  6. the release recorded as current (with its config hash and Alembic revisions), one line in
     the audit log with the same fields on both backends.
A rollback is the same path with the image of an earlier release, which is still on the host:
nothing is built or pulled, and no migration runs (an older release cannot downgrade a schema it
does not know: that case is detected, and needs a confirmation).
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from finaiflow_ops import releases
from finaiflow_ops.backends.protocol import (
    MIGRATE,
    BackendName,
    Kind,
    Roll,
    Running,
    ServiceRollout,
    Settings,
    Step,
)
from finaiflow_ops.errors import (
    CommandFailed,
    DeployFailed,
    DeployLocked,
    OpsError,
    TargetUnreachable,
    UsageError,
)
from finaiflow_ops.images import (
    image_id,
    image_revisions,
    image_variable,
    parse_duration,
    sed_set_line,
    set_env_value,
)
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.releases import Release
from finaiflow_ops.stack import Stack

__all__ = [
    "DeployFailed",
    "DeployResult",
    "Phase",
    "Plan",
    "available_images",
    "check_rollback",
    "deploy",
    "image_id",
    "image_revisions",
    "image_variable",
    "parse_duration",
    "plan",
    "retire_standby",
    "rollback",
    "rollback_plan",
    "rollback_target",
    "sed_set_line",
    "set_env_value",
]

Confirm = Callable[[str], None]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass(frozen=True)
class DeployResult:
    """What a deploy or rollback did, and how long traffic took to move."""

    service: str
    kind: Kind
    release: Release
    previous: Release | None
    containers: tuple[str, ...]  # the new containers (swarm: tasks), now serving
    retired: tuple[str, ...]  # the old ones, stopped and removed (swarm: by the engine, not listed)
    repaired: tuple[str, ...]  # what an interrupted deploy had left, and was fixed first
    switch_seconds: float  # from the start of the command until the new release served
    drain_seconds: float
    total_seconds: float
    phases: tuple[Phase, ...]
    ssh_connections: int = 0  # SSH connections the command opened to the target (one, on an ssh target)
    backend: BackendName = "compose"
    standby: str = ""  # deploy: the warm standby kept (or why not); rollback: used, or why not


@dataclass(frozen=True)
class Plan:
    """`deploy --plan`: the steps a deploy would take now, in order; nothing is changed."""

    service: str
    image: str
    replicas: int
    steps: tuple[str, ...]


# -- small primitives, usable on their own ------------------------------------------------------------


def available_images(stack: Stack, service: str) -> list[str]:
    """The tags on the target of the repository `service` runs (its releases at hand), newest first."""
    running = [c.image for c in stack.containers(service) if c.state == "running"]
    ref = running[0] if running else str(stack.config["services"][service].get("image", ""))
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    images = sorted(
        stack.target.docker().images.list(name=repository),
        key=lambda i: str(i.attrs.get("Created", "")),
        reverse=True,
    )
    return [tag for i in images for tag in i.tags if tag.rsplit(":", 1)[0] == repository]


def restore_point(stack: Stack, service: str, say: Progress) -> tuple[str, str]:
    """A PostgreSQL restore point just before the migrations (pg_create_restore_point), recorded
    with the release: `restore --before-release N` brings the cluster back to it (docs/backups.md).
    ("", "") when the database cannot make one (no WAL archiving); the deploy goes on."""
    from finaiflow_ops.backup.database import Database

    name = f"finaiflow-before-{service}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    try:
        db = Database.of(stack)
        row = db.psql(f"SELECT pg_create_restore_point('{name}'), "
                      "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                      database="postgres")
    except TargetUnreachable:
        raise
    except OpsError as exc:
        say(f"no restore point before the migrations: {exc.message}")
        return "", ""
    say(f"restore point {name} (restore --before-release reaches it)")
    return name, row[0][1]


def pre_deploy_backup(stack: Stack, say: Progress) -> str | None:
    """A verified pre-deploy backup of the database (finaiflow_ops.backup), where the target keeps
    its backups; its file name. A failure stops the deploy with nothing changed."""
    try:
        from finaiflow_ops.backup import archive
    except ImportError:  # an installation without the backup primitives
        say("no backup module (finaiflow_ops.backup): no pre-deploy backup")
        return None
    say("taking a pre-deploy backup")
    try:
        path = archive.take(stack, reason="pre-deploy", progress=say)
    except OpsError as exc:
        raise DeployFailed(
            f"the pre-deploy backup failed: {exc.message}; nothing was changed",
            hint=exc.hint or "fix it, or deploy with --no-backup",
        ) from None
    say(f"pre-deploy backup {path}")
    return posixpath.basename(path)


# -- the release to go back to ---------------------------------------------------------------------------


def rollback_target(past: releases.History, current: Release | None, to: str | None) -> Release:
    """The release a rollback goes to: `to` (an id or an image), else the one before the current."""
    found = past.find(to) if to else _previous_other(past, current)
    if found is None:
        raise UsageError(
            f"{past.service} has no previous release to roll back to",
            hint=f"see `finaiflow-ops releases {past.service}`; give one with --to",
        )
    target = found
    if current and target.image_id == current.image_id:
        raise UsageError(f"{target.label} is what {past.service} runs already", hint="nothing to roll back")
    return target


def _previous_other(past: releases.History, current: Release | None) -> Release | None:
    """The release that ran before the current one, skipping redeploys of the same image."""
    seen: set[int] = set()
    release = past.get(current.previous) if current else None
    while release is not None and current is not None and release.image_id == current.image_id:
        seen.add(release.id)
        release = past.get(release.previous) if release.previous not in seen else None
    return release


def check_rollback(
    stack: Stack, target: Release, confirm: Confirm | None, say: Progress, *, schema: bool = True
) -> None:
    """Before going back to `target`: its tag must still name the image it ran, and an older
    release cannot run on a schema its migrations do not know (ask first)."""
    now = image_id(stack, target.image)  # a clear error when the image is gone
    if target.image_id and now != target.image_id:
        raise UsageError(
            f"{target.image} now points at another image than release #{target.id} ran",
            hint=f"tag the original again (docker tag {target.image_id} {target.image}) if it "
            "still exists, or deploy the wanted image",
        )
    if not schema or not target.revisions:
        return
    try:
        db = [row[0] for row in stack.psql("SELECT version_num FROM alembic_version", expect_rows=True)]
    except OpsError:
        say("could not read the database's Alembic revision; not checked")
        return
    unknown = [rev for rev in db if rev not in target.revisions]
    if not unknown:
        return
    question = (
        f"the database is at Alembic revision {', '.join(unknown)}, which {target.label} does not "
        f"know (its newest is {target.revision or '?'}): it may fail on this schema. "
        "Roll back anyway?"
    )
    say(f"warning: {question}")
    if confirm is None:
        raise UsageError(
            f"{question.rstrip('?')}: needs confirmation",
            hint="pass --yes if that release can run on the newer schema; otherwise restore "
            "the pre-deploy backup",
        )
    confirm(question)


def around_roll(rolled: Sequence[Step], env: Step, record: Step) -> list[Step]:
    """The backend's roll with the .env edit right after the step that moves traffic (at the end
    when none says it does), and the release record last."""
    at = next((i + 1 for i, step in enumerate(rolled) if step.switches), len(rolled))
    return [*rolled[:at], env, *rolled[at:], record]


# -- the workflow ------------------------------------------------------------------------------------------


@dataclass
class _Rollout:
    """One deploy or rollback of one service: its steps, and what they measured."""

    stack: Stack
    service: str
    settings: Settings
    say: Progress
    started: float = field(default_factory=time.monotonic)
    phases: list[Phase] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    switched: float | None = None
    previous: Release | None = None
    backup_id: str | None = None
    restore_point: tuple[str, str] = ("", "")  # name, time: made just before the migrations
    release: Release | None = None
    background: list[Callable[[], None]] = field(default_factory=list)  # waits for work started beside

    def __post_init__(self) -> None:
        self.stack = replace(self.stack)  # fresh caches: .env and the compose config change under us
        self.backend = self.stack.runtime
        self.service_rollout: ServiceRollout = self.backend.rollout(self.service, self.settings, self.say)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    # -- the steps ------------------------------------------------------------------------------------

    def reconcile(self) -> tuple[list[Step], Release | None, releases.History]:
        """The repairs, the recording of what runs when the history does not know it, and the
        history and current release as they will be once those steps ran."""
        ro = self.service_rollout
        steps = [self._repair(step) for step in ro.repairs()]
        past = releases.history(self.stack, self.service)
        current = past.current_release
        running = ro.running()
        if running is not None and not (current and running.is_release(current.image, current.image_id)):
            observed = Release(
                0,
                self.service,
                running.image,
                running.image_id,
                ro.config_hash,
                kind="observed",
                previous=current.id if current else None,
                note="found running, not deployed by finaiflow-ops",
            )
            steps.append(
                Step(
                    "reconcile",
                    f"record the running {running.image} as a release",
                    lambda: self._record_observed(observed, running),
                )
            )
            past = past.appended(observed)
            current = past.current_release
        self.previous = current
        return steps, current, past

    def _repair(self, step: Step) -> Step:
        def run() -> None:
            step.action()
            self.repaired.append(step.description.removeprefix("repair: "))

        return replace(step, action=run)

    def _record_observed(self, observed: Release, running: Running) -> None:
        self.say(f"recording the running {running.image} as a release (the history did not know it)")
        head, known = self._revisions(running.image)
        self.previous = releases.record(self.stack, replace(observed, revision=head, revisions=known))

    def _revisions(self, image: str) -> tuple[str, tuple[str, ...]]:
        # Read with or without --no-migrate: a release recorded without them could later be rolled
        # back to across a migration it does not know, unchecked.
        return self.service_rollout.revisions(image)

    def backup(self) -> Step:
        return Step(
            "backup",
            f"take a verified pre-deploy backup of the database into {self.stack.project_dir}/backups",
            self._backup,
        )

    def _backup(self) -> None:
        self.backup_id = pre_deploy_backup(self.stack, self.say)

    def migrations(self, image: str) -> Step:
        return Step(
            "migrate",
            f"run `{' '.join(MIGRATE)}` {self.backend.one_off_where(image)}",
            lambda: self._migrate(image),
        )

    def migrations_beside(self, image: str, head: str) -> tuple[Step, Callable[[], None]]:
        """The migrations started in the background, beside the new containers' start: only when
        they are a no-op (the database is at the head this image migrated it to before). The
        callable waits for them (the roll calls it before its health gate)."""
        pool = ThreadPoolExecutor(max_workers=1)
        running: list[Future[None]] = []

        def start() -> None:
            running.append(pool.submit(self._migrate, image))

        def wait() -> None:
            try:
                for future in running:
                    future.result()
            finally:
                pool.shutdown(wait=True)

        self.background.append(wait)
        where = self.backend.one_off_where(image)
        return Step("migrate", f"run `{' '.join(MIGRATE)}` {where}, beside the start of the new containers "
                    f"(the database is at {head}, the head {image} migrated it to: a no-op)", start), wait

    def known_head(self, past: releases.History, new_id: str) -> str:
        """The Alembic head the database is at, when a release of this very image migrated it
        there (its migrations are then a no-op); "" otherwise."""
        heads = [r.revision for r in past.releases if r.image_id == new_id and r.revision]
        if not heads or self.backend.name != "compose":
            return ""
        try:
            rows = self.stack.psql("SELECT version_num FROM alembic_version", expect_rows=True)
            db = [row[0] for row in rows]
        except OpsError:
            return ""
        return heads[-1] if db == [heads[-1]] else ""

    def _migrate(self, image: str) -> None:
        self.restore_point = restore_point(self.stack, self.service, self.say)
        self.say(f"running migrations ({' '.join(MIGRATE)}) {self.backend.one_off_where(image)}")
        try:
            self.backend.run_once(self.service, image, MIGRATE)
        except CommandFailed as exc:
            raise DeployFailed(
                f"the migrations of {image} failed: {exc.message}; nothing else was changed",
                output_tail=exc.output_tail,
                service=self.service,
                image=image,
                hint="fix the migration; PostgreSQL rolled the failed one back",
            ) from None

    def roll(
        self,
        kind: Kind,
        image: str,
        new_id: str,
        replicas: int | None,
        known: tuple[str, tuple[str, ...]] | None,
        note: str,
        before_gate: Callable[[], None] | None = None,
    ) -> list[Step]:
        """The backend's roll, the .env as soon as traffic is on the new release, the record."""
        roll = replace(self.rolling(kind, image, new_id, replicas), before_gate=before_gate)
        return self.around(self.service_rollout.steps(roll), kind, image, new_id, known, note)

    def rolling(self, kind: Kind, image: str, new_id: str, replicas: int | None) -> Roll:
        previous = self.previous
        return Roll(kind, image, new_id, replicas, previous.image if previous else "",
                    previous.id if previous else None)

    def around(self, rolled: list[Step], kind: Kind, image: str, new_id: str,
               known: tuple[str, tuple[str, ...]] | None, note: str) -> list[Step]:
        var = image_variable(self.stack, self.service)
        env = Step(
            "", f"set {var}={image} in {self.stack.env_path}", lambda: set_env_value(self.stack, var, image)
        )
        record = Step(
            "",
            "record the release as current and append to the audit log",
            lambda: self._record(kind, image, new_id, known, note),
        )
        return around_roll(rolled, env, record)

    def _record(
        self, kind: Kind, image: str, new_id: str, known: tuple[str, tuple[str, ...]] | None, note: str
    ) -> None:
        head, revisions = known if known is not None else self._revisions(image)
        self.release = releases.record(
            self.stack,
            Release(
                0,
                self.service,
                image,
                new_id,
                self.service_rollout.config_hash,
                head,
                revisions,
                self.backup_id,
                kind,
                self.previous.id if self.previous else None,
                note=note,
                restore_point=self.restore_point[0],
                restore_point_at=self.restore_point[1],
            ),
        )

    # -- running them ---------------------------------------------------------------------------------

    def run(self, steps: Sequence[Step], image: str) -> None:
        try:
            for step in steps:
                start = time.monotonic()
                try:
                    step.action()
                finally:
                    self._count(step.phase, time.monotonic() - start)
                if step.switches:
                    self.switched = self.elapsed()
                    self.say(f"traffic on {image} after {self.switched:.1f} s")
        except BaseException:
            self._settle_background()
            raise
        finally:
            self.service_rollout.close()

    def _settle_background(self) -> None:
        """A step failed: what ran beside it ends before the failure is reported (its own error,
        if any, is secondary: the step's is the one the operator acts on)."""
        for wait in self.background:
            with contextlib.suppress(Exception):
                wait()

    def _count(self, phase: str, seconds: float) -> None:
        if not phase:
            return
        if self.phases and self.phases[-1].name == phase:
            seconds += self.phases.pop().seconds
        self.phases.append(Phase(phase, round(seconds, 2)))

    def result(self, kind: Kind) -> DeployResult:
        assert self.release is not None
        outcome = self.service_rollout.outcome()
        switched = self.switched if self.switched is not None else self.elapsed()
        result = DeployResult(
            self.service,
            kind,
            self.release,
            self.previous,
            outcome.containers,
            outcome.retired,
            tuple(self.repaired),
            switched,
            outcome.drain_seconds,
            self.elapsed(),
            tuple(self.phases),
            self.stack.target.ssh_connections,
            self.backend.name,
            outcome.standby,
        )
        releases.audit(
            self.stack,
            kind,
            service=self.service,
            image=self.release.image,
            release=self.release.id,
            previous=self.previous.label if self.previous else None,
            backend=self.backend.name,
            switch_seconds=switched,
            drain_seconds=result.drain_seconds,
            total_seconds=result.total_seconds,
            repaired=list(self.repaired),
            phases={p.name: p.seconds for p in self.phases},
            standby=outcome.standby,
        )
        self.say(f"{kind} of {self.service} to {self.release.label} done in {result.total_seconds:.1f} s")
        return result

    def failed(self, kind: Kind, image: str, exc: OpsError) -> None:
        releases.audit(
            self.stack,
            f"{kind}-failed",
            service=self.service,
            image=image,
            backend=self.backend.name,
            reason=exc.one_line(),
            seconds=self.elapsed(),
        )


def _deploy_steps(r: _Rollout, image: str, new_id: str, replicas: int | None, backup: bool) -> list[Step]:
    steps, _current, past = r.reconcile()
    if backup:
        steps.append(r.backup())
    head = r.known_head(past, new_id) if r.settings.migrate else ""
    if head:
        step, wait = r.migrations_beside(image, head)
        return [*steps, step, *r.roll("deploy", image, new_id, replicas, None, "", before_gate=wait)]
    if r.settings.migrate:
        steps.append(r.migrations(image))
    return [*steps, *r.roll("deploy", image, new_id, replicas, None, "")]


def _lock_step(stack: Stack) -> str:
    lock = releases.lock_status(stack)
    if not lock.lock:
        return "take the deploy lock"
    then = f"abandoned: {lock.stale}, would be taken over" if lock.stale else "would fail"
    return f"take the deploy lock (now held by {lock.lock.describe()}; {then})"


# -- public entry points ----------------------------------------------------------------------------------


def _prepare(stack: Stack, service: str, image: str, replicas: int | None, settings: Settings,
             progress: Progress | None) -> tuple[_Rollout, str]:
    """What deploy and plan check before anything else: the replica count, the image on the target,
    the service on the backend (and the options it refuses)."""
    if replicas is not None and replicas < 1:
        raise UsageError(f"invalid replica count {replicas}", hint="give 1 or more")
    new_id = image_id(stack, image)
    return _Rollout(stack, service, settings, or_quiet(progress)), new_id


def deploy(stack: Stack, service: str, image: str, *, replicas: int | None = None, backup: bool = True,
           migrate: bool = True, proxy: str | None = None, health_timeout: float | None = None,
           drain_timeout: float | None = None, standby: float | None = None,
           progress: Progress | None = None) -> DeployResult:  # fmt: skip
    """Roll `service` to `image` with zero failed requests (see the module docstring). None for an
    option: the backend's default; an option the backend has no meaning for is refused. `standby`:
    seconds the previous release is kept warm for a rollback (compose: 15 min; 0: off)."""
    settings = Settings(health_timeout, drain_timeout, proxy, migrate, standby)
    r, new_id = _prepare(stack, service, image, replicas, settings, progress)
    with releases.deploy_lock(r.stack, f"deploy {service} {image}", progress=r.say):
        try:
            r.run(_deploy_steps(r, image, new_id, replicas, backup), image)
            return r.result("deploy")
        except OpsError as exc:
            r.failed("deploy", image, exc)
            raise


def plan(stack: Stack, service: str, image: str, *, replicas: int | None = None, backup: bool = True,
         migrate: bool = True, proxy: str | None = None, health_timeout: float | None = None,
         drain_timeout: float | None = None, standby: float | None = None) -> Plan:  # fmt: skip
    """The steps `deploy` would take now, from the state of the target; changes nothing: the
    descriptions of the steps deploy runs, after the deploy lock."""
    settings = Settings(health_timeout, drain_timeout, proxy, migrate, standby)
    r, new_id = _prepare(stack, service, image, replicas, settings, None)
    steps = _deploy_steps(r, image, new_id, replicas, backup)
    return Plan(service, image, r.service_rollout.replicas(replicas),
                (_lock_step(r.stack), *(s.description for s in steps)))


def rollback(stack: Stack, service: str, *, to: str | None = None, confirm: Confirm | None = None,
             migrate: bool = True, proxy: str | None = None, health_timeout: float | None = None,
             drain_timeout: float | None = None,
             progress: Progress | None = None) -> DeployResult:  # fmt: skip
    """Back to the release before the current one (or `to`: an id or an image), through the same
    path, with the image still on the host. `confirm(question)` is asked (and must raise to refuse)
    when the database is at a revision the older release does not know (unless migrate=False: a
    service without migrations)."""
    r = _Rollout(stack, service, Settings(health_timeout, drain_timeout, proxy, migrate), or_quiet(progress))
    with releases.deploy_lock(r.stack, f"rollback {service}" + (f" to {to}" if to else ""), progress=r.say):
        try:
            r.service_rollout.lead_for_standby()  # first: the reads and checks run during the lead
            steps, current, past = r.reconcile()
            target = rollback_target(past, current, to)
            steps.append(
                Step(
                    "reconcile",
                    f"check that {target.label} can run: its image, and the database schema it knows",
                    lambda: check_rollback(r.stack, target, confirm, r.say, schema=migrate),
                )
            )
            steps.append(
                Step(
                    "",
                    f"roll back from {current.label if current else '?'} to {target.label}",
                    lambda: r.say(
                        f"rolling {service} back from {current.label if current else '?'} to {target.label}"
                    ),
                )
            )
            known = (target.revision, target.revisions)
            warm = r.service_rollout.from_standby(r.rolling("rollback", target.image, target.image_id, None),
                                                  target.id)
            if warm:
                steps += r.around(warm, "rollback", target.image, target.image_id, known,
                                  f"rollback to #{target.id} (from the warm standby)")
            else:
                steps += r.roll("rollback", target.image, target.image_id, None, known,
                                f"rollback to #{target.id}")
            r.run(steps, target.image)
            return r.result("rollback")
        except OpsError as exc:
            r.failed("rollback", to or "previous", exc)
            raise
        finally:
            r.service_rollout.close()  # the early lead's flag, when no step ran


def retire_standby(stack: Stack, service: str, *, expired_only: bool = False,
                   progress: Progress | None = None) -> tuple[str, ...]:
    """Retire the service's warm standby (with `expired_only`, only once its window has ended: the
    scheduled job), under the deploy lock, with the repairs of anything an interrupted deploy left;
    returns what was done. Deploys and rollbacks do the same first, so nothing depends on this.
    With `expired_only` (the scheduled job, every few minutes), a command holding the lock is left
    to do it (it retires an expired standby and repairs first, too)."""
    r = _Rollout(stack, service, Settings(standby=None if expired_only else 0.0), or_quiet(progress))
    try:
        with releases.deploy_lock(r.stack, f"standby retire {service}", progress=r.say):
            steps, _current, _past = r.reconcile()
            r.run([s for s in steps if s.description.startswith("repair: ")], "")
    except DeployLocked as exc:
        if not expired_only:
            raise
        return (f"left to the command holding the deploy lock: {exc.message}",)
    if r.repaired:
        releases.audit(r.stack, "standby-retire", service=service, repaired=list(r.repaired))
    return tuple(r.repaired)


def rollback_plan(stack: Stack, service: str, *, to: str | None = None) -> Release:
    """The release `rollback` would return to now, reading only (UsageError when there is none):
    the target of the same steps `rollback` takes. When what runs is not what the history says (a
    change made by hand), the rollback records it first and returns to the history's current
    release; otherwise to the release before the current one, redeploys of the same image skipped."""
    r = _Rollout(stack, service, Settings(), or_quiet(None))
    _steps, current, past = r.reconcile()
    return rollback_target(past, current, to)
