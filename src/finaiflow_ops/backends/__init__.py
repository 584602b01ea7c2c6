"""The backends that run the project, compose and swarm, behind one protocol (protocol.py), and the
one place that picks between them (`select`).

    backends/protocol.py         Backend, ServiceRollout, Step: what the Stack and the workflow ask
    backends/compose/            docker compose: start-first roll behind nginx (rollout.py)
    backends/swarm/              docker stack: the engine's rolling update (update.py)
"""

from __future__ import annotations

from finaiflow_ops.backends.compose import ComposeBackend
from finaiflow_ops.backends.protocol import BACKENDS, Backend, BackendName, Kind, Requested, Settings, Step
from finaiflow_ops.backends.swarm import SwarmBackend
from finaiflow_ops.backends.swarm.cluster import SWARM_FILE, Swarm, engine_state
from finaiflow_ops.errors import UsageError
from finaiflow_ops.project import Project

__all__ = ["BACKENDS", "Backend", "BackendName", "Kind", "Requested", "Settings", "Step", "select"]


def select(project: Project, requested: Requested | str = "auto") -> Backend:
    """The backend that runs `project` on its target.

    compose or swarm when asked (swarm: the target's engine must be a swarm manager); auto: a swarm
    stack of this project on the target wins, then compose containers of it; with neither, a swarm
    manager engine with swarm.yaml in the project directory means swarm.
    """
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend {requested!r}", hint=f"use one of {', '.join(BACKENDS)}")
    compose = ComposeBackend(project)
    if requested == "compose":
        return compose
    project.compose_path  # noqa: B018 - both backends need it: say first when it is missing
    swarm = Swarm(project)
    if requested == "swarm":
        swarm.require_manager()
        return SwarmBackend(project, swarm)
    if not engine_state(project)[1]:
        return compose
    if swarm.services():
        return SwarmBackend(project, swarm)
    if compose.engine_containers(None, all=True):
        return compose
    return SwarmBackend(project, swarm) if project.target.exists(project.path(SWARM_FILE)) else compose
