"""Pure logic of the deploy workflow and its backends: the choice of backend, what counts as the
running release, where the .env edit goes among the roll's steps, and options a backend refuses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from finaiflow_ops.backends import select
from finaiflow_ops.backends.protocol import Running, Settings, Step
from finaiflow_ops.backends.swarm import SwarmRollout
from finaiflow_ops.backends.swarm.views import ServiceView
from finaiflow_ops.errors import UsageError
from finaiflow_ops.project import Project
from finaiflow_ops.releases import History, Release
from finaiflow_ops.rollout import around_roll
from finaiflow_ops.target import Target


def _step(name: str, *, switches: bool = False) -> Step:
    return Step(name, name, lambda: None, switches=switches)


def test_an_unknown_backend_is_refused_before_the_target_is_asked() -> None:
    with pytest.raises(UsageError, match="unknown backend 'kubernetes'"):
        select(Project(Target.parse("local://"), "/nonexistent"), "kubernetes")


def test_the_env_edit_follows_the_step_that_moves_traffic_and_the_record_comes_last() -> None:
    rolled = [_step("scale-up"), _step("health"), _step("switch", switches=True), _step("drain")]
    steps = around_roll(rolled, _step("env"), _step("record"))
    assert [s.phase for s in steps] == ["scale-up", "health", "switch", "env", "drain", "record"]
    env, record = _step("env"), _step("record")
    swarm = around_roll([_step("rolling update"), _step("health", switches=True)], env, record)
    assert [s.phase for s in swarm] == ["rolling update", "health", "env", "record"]
    assert [s.phase for s in around_roll([_step("a")], env, record)] == ["a", "env", "record"]


def test_the_running_release_is_told_by_image_ids_or_else_by_reference() -> None:
    compose = Running("finaiflow/api:1", "sha256:a", frozenset({"sha256:a"}))
    assert compose.is_release("finaiflow/api:other-tag", "sha256:a")
    assert not compose.is_release("finaiflow/api:1", "sha256:b")
    mixed = Running("finaiflow/api:1", "sha256:a", frozenset({"sha256:a", "sha256:b"}))
    assert not mixed.is_release("finaiflow/api:1", "sha256:a")
    swarm = Running("finaiflow/api:1", "", frozenset())
    assert swarm.is_release("finaiflow/api:1", "sha256:z") and not swarm.is_release("finaiflow/api:2", "")


def test_appending_to_a_history_gives_the_id_and_the_current_mark_record_would() -> None:
    first, second = Release(1, "api", "a:1", "sha256:a", "h"), Release(2, "api", "a:2", "sha256:b", "h")
    past = History("api", 2, (first, second))
    added = past.appended(Release(0, "api", "a:3", "sha256:c", "h", kind="observed", previous=2))
    assert added.current == 3 and added.current_release is not None
    assert (added.current_release.image, added.current_release.previous) == ("a:3", 2)
    assert past.current == 2 and len(past.releases) == 2  # the original is unchanged


@pytest.mark.parametrize(("settings", "option"), [
    (Settings(drain_timeout=30.0), "--drain-timeout"),
    (Settings(proxy="nginx"), "proxy"),
])
def test_swarm_refuses_the_options_it_has_no_meaning_for(settings: Settings, option: str) -> None:
    untouched: Any = SimpleNamespace()  # refused before the swarm is asked anything
    with pytest.raises(UsageError, match=f"{option} has no meaning on a swarm"):
        SwarmRollout(untouched, "api", settings, lambda _msg: None)


def test_the_service_view_reads_the_fields_the_deploy_uses() -> None:
    attrs = {
        "Spec": {
            "Name": "ff_api",
            "TaskTemplate": {"ContainerSpec": {"Image": "finaiflow/api:2@sha256:abc"}},
            "Mode": {"Replicated": {"Replicas": 3}},
            "UpdateConfig": {"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback"},
        },
        "PreviousSpec": {"TaskTemplate": {"ContainerSpec": {"Image": "finaiflow/api:1@sha256:def"}}},
        "UpdateStatus": {"State": "completed", "Message": "update completed"},
    }
    view = ServiceView.from_attrs(attrs)
    assert (view.image, view.previous_image, view.replicas) == ("finaiflow/api:2", "finaiflow/api:1", 3)
    assert (view.order, view.failure_action, view.update.state) == ("start-first", "rollback", "completed")
    bare = ServiceView.from_attrs({"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "x:1"}}}})
    assert (bare.previous_image, bare.replicas, bare.order, bare.update.state) == ("", 1, "stop-first", "")
