"""Deploy and rollback on a swarm: the engine's own rolling update, with our lock, pre-deploy
backup, migrations (a swarm job), health gate, release history and audit log around it.

The service's update_config (stack/swarm.yaml) does the rolling: one task at a time, the new task
started first and healthy before the old one is stopped, failure_action rollback. We start the
update, follow it to its end, then check through nginx that the release answers; when the engine
rolled back or paused, or our check fails, traffic is put back (`docker service rollback`) and
the command fails naming the task's error.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from finaiflow_ops import health, releases
from finaiflow_ops.errors import OpsError, UsageError
from finaiflow_ops.releases import Release
from finaiflow_ops.rollout import (
    Confirm,
    DeployFailed,
    DeployResult,
    Phase,
    Plan,
    check_rollback,
    image_id,
    image_revisions,
    image_variable,
    pre_deploy_backup,
    rollback_target,
    set_env_value,
)
from finaiflow_ops.stack import Progress, Stack
from finaiflow_ops.swarm.cluster import Swarm, Task, spec_image

__all__ = ["deploy", "plan", "rollback"]

UPDATE_TIMEOUT = 600.0
# A new task on a node that went down never starts, and engine 20.10's updater waits for it for
# ever (swarmkit's updater has no timeout there): after this long without progress, we roll back.
STALL_SECONDS = 30.0
_DONE = "completed"
_FAILED = ("paused", "rollback_started", "rollback_completed", "rollback_paused")
_NOT_STARTED = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")


def stalled_task(tasks: Iterable[Task], down_nodes: Collection[str], image: str) -> Task | None:
    """A task of `image` that was on its way up on a node now down: the updater waits on it."""
    return next(
        (t for t in tasks if t.node_id in down_nodes and t.image == image and t.state in _NOT_STARTED),
        None,
    )


@dataclass
class _Update:
    swarm: Swarm
    service: str
    say: Progress

    def run(self, argv: list[str], image: str, timeout: float) -> tuple[str, float]:
        """Start `docker service ARGV` on the service and follow it; (final state, seconds)."""
        start = time.monotonic()
        before = self.swarm.service(self.service).attrs.get("UpdateStatus") or {}
        self.swarm.stack.target.run(
            "docker", "service", *argv, "--detach", "--quiet", self.swarm.full_name(self.service), timeout=120
        )
        return self.follow(
            image, timeout, rollback=argv[0] == "rollback", before=before
        ), time.monotonic() - start

    def follow(
        self, image: str, timeout: float, *, rollback: bool = False, before: dict[str, Any] | None = None
    ) -> str:
        """Follow the update (or the engine's rollback) to its end: "completed", or what went wrong.
        A status equal to `before` is the previous update's, still shown until the engine starts."""
        done = "rollback_completed" if rollback else _DONE
        deadline = time.monotonic() + timeout
        said, moved = "", time.monotonic()
        while True:
            svc = self.swarm.service(self.service)
            status = svc.attrs.get("UpdateStatus") or {}
            if before and status == before:
                status = {}
            state = str(status.get("State", ""))
            tasks = [t for t in self.swarm.tasks(self.service) if t.state == "running"]
            line = (
                f"{state or 'updating'}: {sum(t.image == image for t in tasks)}/{len(tasks)} running {image}"
            )
            if line != said:
                self.say(f"{self.swarm.full_name(self.service)} {line}")
                said, moved = line, time.monotonic()
            if state == done or (not state and spec_image(svc.attrs) == image and self._settled(image)):
                return _DONE
            if state in _FAILED and state not in ("rollback_started", done):
                return f"{state}: {status.get('Message', '')}".strip()
            if time.monotonic() - moved >= STALL_SECONDS and (stuck := self._stalled(image)):
                return stuck
            if time.monotonic() >= deadline:
                return f"not finished after {timeout:.0f} s ({state or 'no status'})"
            time.sleep(1)

    def _stalled(self, image: str) -> str:
        down = self.swarm.down_nodes()
        task = stalled_task(self.swarm.tasks(self.service, desired=None), down, image) if down else None
        if task is None:
            return ""
        return (
            f"stalled: task {self.swarm.full_name(task.name)} of {image} was {task.state} on node "
            f"{self.swarm.node_name(task.node_id)}, which is down, and the engine waits on it"
        )

    def _settled(self, image: str) -> bool:
        tasks = self.swarm.tasks(self.service)
        return bool(tasks) and all(t.state == "running" and t.image == image for t in tasks)

    def put_back(self, image: str, timeout: float) -> str:
        """`docker service rollback` (to `image`), followed to its end: "completed" or what stopped it."""
        self.say(f"putting {self.service} back: docker service rollback")
        self.swarm.stack.target.run(
            "docker",
            "service",
            "rollback",
            "--detach",
            "--quiet",
            self.swarm.full_name(self.service),
            timeout=120,
        )
        return self.follow(image, timeout, rollback=True)

    def task_error(self) -> str:
        """The newest error of a failed task of the service (the engine's words)."""
        failed = [t for t in self.swarm.tasks(self.service, desired=None) if t.error]
        return failed[0].error if failed else ""


def _failed(swarm: Swarm, kind: str, service: str, image: str, why: str, back: str) -> DeployFailed:
    ps = f"docker service ps {swarm.full_name(service)} --no-trunc"
    if back == _DONE:
        return DeployFailed(
            f"the {kind} of {service} to {image} failed and was rolled back: {why}", hint=f"see `{ps}`"
        )
    return DeployFailed(
        f"the {kind} of {service} to {image} failed ({why}) and putting it back did not finish: {back}",
        hint=f"the service may run both releases: see `{ps}`, then `finaiflow-ops rollback {service}`",
    )


def _current(swarm: Swarm, service: str, past: releases.History) -> Release | None:
    image = spec_image(swarm.service(service).attrs)
    known = past.current_release
    if known is not None and known.image == image:
        return known
    return releases.record(
        swarm.stack,
        Release(
            id=0,
            service=service,
            image=image,
            image_id=_image_id_or_empty(swarm.stack, image),
            config_hash="",
            **_revisions(swarm, service, image, lambda _msg: None),
            kind="observed",
            previous=known.id if known else None,
            note="found running on the swarm, not deployed by finaiflow-ops",
        ),
    )


def _image_id_or_empty(stack: Stack, image: str) -> str:
    try:
        return image_id(stack, image)
    except UsageError:
        return ""


def _revisions(swarm: Swarm, service: str, image: str, say: Progress) -> dict[str, Any]:
    """The Alembic head and revisions of `image`, read in a running task of the service (for
    the schema check of a later rollback); none when that task cannot be reached."""
    import docker.errors

    try:
        head, known = image_revisions(swarm.container(service), image, say)
    except (OpsError, docker.errors.DockerException) as exc:
        say(f"could not read the Alembic revisions of {image} ({exc}); recorded without them")
        head, known = "", ()
    return {"revision": head, "revisions": known}


def _serving(swarm: Swarm, service: str, timeout: float) -> None:
    """Our gate after the engine's: every task on the new image, and /health answering via nginx."""
    swarm.wait_converged([service], timeout=timeout)
    health.wait_http(f"{swarm.stack.base_url()}/health", timeout=min(timeout, 60),
                     domain=swarm.stack.env.get("DOMAIN"))


def _roll(
    stack: Stack,
    service: str,
    *,
    kind: str,
    image: str,
    argv: list[str],
    previous: Release | None,
    backup: str | None,
    migrate: bool,
    timeout: float,
    say: Progress,
    note: str = "",
) -> DeployResult:
    swarm = Swarm(stack)
    phases: list[Phase] = []
    start = time.monotonic()
    new_id = image_id(stack, image)
    if migrate:
        t = time.monotonic()
        spec = swarm.spec().stack["services"][service]
        try:
            swarm.run_job(spec, ["alembic", "upgrade", "head"], image=image, timeout=timeout, progress=say)
        except OpsError as exc:
            raise DeployFailed(
                f"the migrations of {image} failed: {exc.message}; nothing else was changed",
                output_tail=getattr(exc, "output_tail", ""),
                hint="fix the migration; PostgreSQL rolled the failed one back",
            ) from None
        phases.append(Phase("migrate", round(time.monotonic() - t, 2)))
    update = _Update(swarm, service, say)
    state, seconds = update.run(argv, image, timeout)
    phases.append(Phase("rolling update", round(seconds, 2)))
    back_to = previous.image if previous else image
    if state != _DONE:
        why = state if state.startswith("stalled") else update.task_error() or state
        if state.startswith("rollback_completed"):
            back = _DONE  # the engine's own failure_action
        elif state.startswith("rollback"):
            back = state  # the engine's rollback stopped: a second one would go to the failed spec
        else:
            back = update.put_back(back_to, timeout)
        raise _failed(swarm, kind, service, image, why, back)
    try:
        _serving(swarm, service, timeout)
    except OpsError as exc:
        say(f"{image} does not serve ({exc.message})")
        raise _failed(swarm, kind, service, image, exc.message, update.put_back(back_to, timeout)) from None
    # The .env names the running image, as on compose: a later `stack up` keeps this release.
    set_env_value(stack, image_variable(stack, service), image)
    tasks: list[Task] = swarm.tasks(service)
    release = releases.record(
        stack,
        Release(
            id=0,
            service=service,
            image=image,
            image_id=new_id,
            config_hash="",
            **_revisions(swarm, service, image, say),
            backup=backup,
            kind=kind,
            previous=previous.id if previous else None,
            note=note,
        ),
    )
    total = time.monotonic() - start
    releases.audit(
        stack,
        kind,
        service=service,
        image=image,
        release=release.id,
        backend="swarm",
        seconds=round(total, 2),
    )
    return DeployResult(
        service=service,
        kind=kind,
        release=release,
        previous=previous,
        containers=tuple(t.name for t in tasks),
        retired=(),
        repaired=(),
        switch_seconds=round(seconds, 2),
        drain_seconds=0.0,
        total_seconds=round(total, 2),
        phases=tuple(phases),
        ssh_connections=stack.target.ssh_connections,
    )


def deploy(
    stack: Stack,
    service: str,
    image: str,
    *,
    replicas: int | None = None,
    backup: bool = True,
    migrate: bool = True,
    timeout: float = UPDATE_TIMEOUT,
    progress: Progress | None = None,
) -> DeployResult:
    """Roll `service` to `image` through the engine's rolling update (see the module docstring)."""
    say = progress or (lambda _msg: None)
    swarm = Swarm(stack)
    swarm.require_manager()
    image_id(stack, image)  # the image must be there: a clear error before anything changes
    with releases.deploy_lock(stack, f"deploy {service} {image}", progress=say):
        try:
            previous = _current(swarm, service, releases.history(stack, service))
            made = pre_deploy_backup(stack, say) if backup else None
            argv = ["update", "--image", image, *(["--replicas", str(replicas)] if replicas else [])]
            return _roll(
                stack,
                service,
                kind="deploy",
                image=image,
                argv=argv,
                previous=previous,
                backup=made,
                migrate=migrate,
                timeout=timeout,
                say=say,
            )
        except OpsError as exc:
            releases.audit(
                stack, "deploy-failed", service=service, image=image, backend="swarm", reason=exc.one_line()
            )
            raise


def rollback(
    stack: Stack,
    service: str,
    *,
    to: str | None = None,
    confirm: Confirm | None = None,
    timeout: float = UPDATE_TIMEOUT,
    progress: Progress | None = None,
) -> DeployResult:
    """Back to the previous (or the named) release: `docker service rollback` when the engine's
    previous spec is that release (the engine's own rollback), else a rolling update to its image.
    As on compose, `confirm(question)` is asked before going back to a release that does not know
    the database's schema (rollout.check_rollback)."""
    say = progress or (lambda _msg: None)
    swarm = Swarm(stack)
    swarm.require_manager()
    with releases.deploy_lock(stack, f"rollback {service}" + (f" to {to}" if to else ""), progress=say):
        try:
            past = releases.history(stack, service)
            current = _current(swarm, service, past)
            past = releases.history(stack, service)
            target = rollback_target(past, current, to)
            check_rollback(stack, target, confirm, say)
            attrs: dict[str, Any] = swarm.service(service).attrs
            previous_spec = attrs.get("PreviousSpec") or {}
            engine_previous = (
                previous_spec.get("TaskTemplate", {})
                .get("ContainerSpec", {})
                .get("Image", "")
                .split("@", 1)[0]
            )
            argv = ["rollback"] if engine_previous == target.image else ["update", "--image", target.image]
            say(
                f"rolling {service} back from {current.label if current else '?'} to {target.label} "
                f"(docker service {argv[0]})"
            )
            return _roll(
                stack,
                service,
                kind="rollback",
                image=target.image,
                argv=argv,
                previous=current,
                backup=None,
                migrate=False,
                timeout=timeout,
                say=say,
                note=f"rollback to #{target.id}",
            )
        except OpsError as exc:
            releases.audit(stack, "rollback-failed", service=service, backend="swarm", reason=exc.one_line())
            raise


def plan(
    stack: Stack,
    service: str,
    image: str,
    *,
    replicas: int | None = None,
    backup: bool = True,
    migrate: bool = True,
) -> Plan:
    """`deploy --plan` on a swarm: the steps `deploy` would take now, read from the service."""
    swarm = Swarm(stack)
    swarm.require_manager()
    image_id(stack, image)
    attrs: dict[str, Any] = swarm.service(service).attrs
    spec = attrs["Spec"]
    wanted = replicas or (spec.get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
    update = spec.get("UpdateConfig") or {}
    steps = [
        f"take the deploy lock of {stack.project} on {stack.target}",
        *(["take a verified pre-deploy backup of the database task"] if backup else []),
        *([f"run `alembic upgrade head` as a swarm job of {image}"] if migrate else []),
        f"docker service update --image {image} {swarm.full_name(service)}: {wanted} task(s), "
        f"{update.get('Parallelism', 1)} at a time, order {update.get('Order', 'stop-first')}, "
        f"on failure {update.get('FailureAction', 'pause')}",
        f"wait until every task runs {image}, then until /health answers 200 through nginx",
        "on any failure: docker service rollback, and exit 1 naming the engine's error",
        f"record the release, set {image_variable(stack, service)}={image} in .env, write the audit line",
    ]
    return Plan(service=service, image=image, replicas=wanted, steps=tuple(steps))
