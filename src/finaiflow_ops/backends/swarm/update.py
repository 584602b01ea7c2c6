"""The engine's rolling update of one swarm service, followed to its end.

The service's update_config (stack/swarm.yaml) does the rolling: one task at a time, the new task
started first and healthy before the old one is stopped, failure_action rollback. We start the
update (or `docker service rollback`), follow it to its end, and, when the engine rolled back or
paused, or our own check fails afterwards, put traffic back (`docker service rollback`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from finaiflow_ops import polling
from finaiflow_ops.backends.swarm.cluster import Swarm, Task
from finaiflow_ops.backends.swarm.views import UpdateStatus
from finaiflow_ops.errors import DeployFailed
from finaiflow_ops.progress import Progress

__all__ = ["DONE", "UPDATE_TIMEOUT", "Update", "stalled_task"]

UPDATE_TIMEOUT = 600.0
# A new task on a node that went down never starts, and engine 20.10's updater waits for it for
# ever (swarmkit's updater has no timeout there): after this long without progress, we roll back.
STALL_SECONDS = 30.0
DONE = "completed"
_FAILED = ("paused", "rollback_started", "rollback_completed", "rollback_paused")
_NOT_STARTED = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")
_NO_STATUS = UpdateStatus("", "", "", "")


def stalled_task(tasks: Iterable[Task], down_nodes: Collection[str], image: str) -> Task | None:
    """A task of `image` that was on its way up on a node now down: the updater waits on it."""
    return next(
        (t for t in tasks if t.node_id in down_nodes and t.image == image and t.state in _NOT_STARTED),
        None,
    )


@dataclass
class Update:
    swarm: Swarm
    service: str
    say: Progress

    def run(self, argv: list[str], image: str, timeout: float) -> tuple[str, float]:
        """Start `docker service ARGV` on the service and follow it; (final state, seconds)."""
        start = time.monotonic()
        before = self.swarm.view(self.service).update
        self._service(*argv)
        return self.follow(
            image, timeout, rollback=argv[0] == "rollback", before=before
        ), time.monotonic() - start

    def _service(self, *argv: str) -> None:
        self.swarm.stack.target.run(
            "docker", "service", *argv, "--detach", "--quiet", self.swarm.full_name(self.service), timeout=120
        )

    def follow(
        self, image: str, timeout: float, *, rollback: bool = False, before: UpdateStatus | None = None
    ) -> str:
        """Follow the update (or the engine's rollback) to its end: "completed", or what went wrong.
        A status equal to `before` is the previous update's, still shown until the engine starts."""
        done = "rollback_completed" if rollback else DONE
        said, moved = "", time.monotonic()
        for _attempt in polling.attempts(within=timeout, every=1):
            view = self.swarm.view(self.service)
            status = _NO_STATUS if before and view.update == before else view.update
            state = status.state
            tasks = [t for t in self.swarm.tasks(self.service) if t.state == "running"]
            line = (
                f"{state or 'updating'}: {sum(t.image == image for t in tasks)}/{len(tasks)} running {image}"
            )
            if line != said:
                self.say(f"{self.swarm.full_name(self.service)} {line}")
                said, moved = line, time.monotonic()
            if state == done or (not state and view.image == image and self._settled(image)):
                return DONE
            if state in _FAILED and state not in ("rollback_started", done):
                return f"{state}: {status.message}".strip()
            if time.monotonic() - moved >= STALL_SECONDS and (stuck := self._stalled(image)):
                return stuck
        return f"not finished after {timeout:.0f} s ({state or 'no status'})"

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
        self._service("rollback")
        return self.follow(image, timeout, rollback=True)

    def task_error(self) -> str:
        """The newest error of a failed task of the service (the engine's words)."""
        failed = [t for t in self.swarm.tasks(self.service, desired=None) if t.error]
        return failed[0].error if failed else ""

    def failed(self, kind: str, image: str, why: str, back: str) -> DeployFailed:
        """The error of a failed update: `back` is how putting it back ended."""
        ps = f"docker service ps {self.swarm.full_name(self.service)} --no-trunc"
        if back == DONE:
            return DeployFailed(
                f"the {kind} of {self.service} to {image} failed and was rolled back: {why}",
                hint=f"see `{ps}`",
                service=self.service,
                image=image,
            )
        return DeployFailed(
            f"the {kind} of {self.service} to {image} failed ({why}) and putting it back did not finish: "
            f"{back}",
            hint=f"the service may run both releases: see `{ps}`, then "
            f"`finaiflow-ops rollback {self.service}`",
            service=self.service,
            image=image,
        )
