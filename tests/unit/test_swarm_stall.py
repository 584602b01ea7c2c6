"""Which task a stalled swarm update waits on: a new task of the target image, not yet started,
on a node that went down (backends/swarm/update.stalled_task)."""

from __future__ import annotations

import pytest

from finaiflow_ops.backends.swarm.cluster import Task
from finaiflow_ops.backends.swarm.update import stalled_task

NEW, OLD = "finaiflow/api:1.1.0", "finaiflow/api:1.0.0"


def _task(id: str, node: str, image: str, state: str) -> Task:
    return Task(
        id=id,
        service="api",
        slot=1,
        node_id=node,
        image=image,
        state=state,
        desired="running",
        container_id="",
        error="",
        ports=(),
    )


@pytest.mark.parametrize("state", ["assigned", "preparing", "starting", "pending"])
def test_a_new_task_not_started_on_a_down_node_is_the_stall(state: str) -> None:
    tasks = [_task("a", "n1", NEW, "running"), _task("b", "n3", NEW, state)]
    assert stalled_task(tasks, {"n3"}, NEW) == tasks[1]


@pytest.mark.parametrize(
    ("task", "down"),
    [
        (_task("b", "n3", NEW, "starting"), set()),  # the node is up: it is only slow
        (_task("b", "n3", NEW, "starting"), {"n2"}),  # another node is down
        (_task("b", "n3", NEW, "running"), {"n3"}),  # it started: the updater moved on
        (_task("b", "n3", OLD, "starting"), {"n3"}),  # not the release being rolled out
        (_task("b", "n3", NEW, "shutdown"), {"n3"}),
    ],
)
def test_anything_else_is_not_a_stall(task: Task, down: set[str]) -> None:
    assert stalled_task([task], down, NEW) is None
