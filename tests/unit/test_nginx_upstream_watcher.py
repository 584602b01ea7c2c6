"""The nginx upstream watcher's decisions (stack/nginx/upstream_watcher.py), against a fake world:
DNS, nginx's worker processes, the deploy's switching flag and a clock are plain values here.
The real watcher in the nginx container is tested in tests/integration/test_nginx_upstream_watcher.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests import stack_scripts

uw = stack_scripts.load("nginx/upstream_watcher.py")
API = "upstream api {\n    server api:8000;\n    keepalive 32;\n}\n"


@dataclass
class World:
    """What the watcher sees: upstream files, DNS, nginx's serving workers, health, the flag, time."""

    files: str = API
    dns: dict[str, set[str]] = field(default_factory=lambda: {"api": {"10.0.0.5"}})
    workers: frozenset[int] | None = frozenset({10, 11})
    healthy: set[str] = field(default_factory=set)
    flag_age: float | None = None
    now: float = 1000.0
    refuse: str = ""
    reloads: int = 0
    logs: list[str] = field(default_factory=list)

    def reload(self) -> str:
        """nginx -s reload: new workers, or nothing when nginx refuses the configuration."""
        if self.refuse:
            return self.refuse
        self.reloads += 1
        self.workers = frozenset({100 + 2 * self.reloads, 101 + 2 * self.reloads})
        return ""

    def watcher(self, **kwargs: Any) -> Any:
        return uw.Watcher(read_upstreams=lambda: self.files, resolve=lambda h: frozenset(self.dns.get(h, ())),
                          workers=lambda: self.workers, reload_nginx=self.reload,
                          answers=lambda addr, port, host: addr in self.healthy,
                          switching_age=lambda: self.flag_age, clock=lambda: self.now,
                          log=self.logs.append, **kwargs)

    def checks(self, watcher: Any, n: int = 1, step: float = 2.0) -> None:
        for _ in range(n):
            watcher.check()
            self.now += step


def started(world: World) -> Any:
    """A watcher that has seen nginx running with the world as it is (its reference)."""
    watcher = world.watcher()
    world.checks(watcher)
    assert world.reloads == 0
    return watcher


# -- the upstream files ----------------------------------------------------------------------------


def test_servers_are_the_named_hosts_of_every_upstream_block_with_their_ports() -> None:
    text = """
    # server commented:1;
    upstream api { server finaiflow-api-7:8000 max_fails=3; server finaiflow-api-8:8000;
                   keepalive 32; }
    upstream admin {
        server admin;            # port 80 by default
        server 10.0.0.9:9000;    # an address: nothing to resolve
        server [::1]:9000;
        server unix:/run/admin.sock;
    }
    server { listen 80; }
    """
    assert uw.parse_servers(text) == {uw.Server("finaiflow-api-7", 8000), uw.Server("finaiflow-api-8", 8000),
                                      uw.Server("admin", 80)}


# -- what makes it reload ----------------------------------------------------------------------------


def test_a_container_back_at_another_address_makes_one_reload_then_nothing() -> None:
    world = World()
    watcher = started(world)
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher, 5)
    assert world.reloads == 1
    assert watcher.reloads == {"gone": 1}
    assert any("reloading nginx: gone: api: 10.0.0.5 gone, now 10.0.0.8" in line for line in world.logs)


def test_a_name_that_resolves_to_nothing_waits_then_reloads_when_the_container_is_back() -> None:
    world = World()
    watcher = started(world)
    world.dns["api"] = set()  # the only container is down: nginx would refuse `server api:8000`
    world.checks(watcher, 3)
    assert world.reloads == 0
    assert [line for line in world.logs if "does not resolve" in line] == [
        "waiting: api does not resolve (nginx would refuse the configuration)"]  # once, not every check
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher)
    assert world.reloads == 1


def test_a_replica_that_went_away_is_reloaded_away_while_the_others_still_serve() -> None:
    world = World(dns={"api": {"10.0.0.5", "10.0.0.6"}})
    watcher = started(world)
    world.dns["api"] = {"10.0.0.5"}
    world.checks(watcher)
    assert world.reloads == 1


def test_a_new_address_is_admitted_only_once_it_answers_the_health_path() -> None:
    world = World()
    watcher = started(world)
    world.dns["api"] = {"10.0.0.5", "10.0.0.6"}  # a scale-up: the new container is still starting
    world.checks(watcher, 3)
    assert world.reloads == 0
    world.healthy.add("10.0.0.6")
    world.checks(watcher, 3)
    assert world.reloads == 1
    assert watcher.reloads == {"added": 1}


def test_a_stable_address_never_reloads() -> None:
    # Swarm's VIP for `api`, or a container that restarted at the same address.
    world = World()
    watcher = started(world)
    world.checks(watcher, 50)
    assert world.reloads == 0
    assert world.logs == []


def test_a_restarted_watcher_reloads_once_because_it_cannot_know_what_nginx_resolved() -> None:
    world = World()
    watcher = world.watcher(resync=True)
    world.checks(watcher, 5)
    assert world.reloads == 1
    assert watcher.reloads == {"resync": 1}


def test_nothing_happens_while_nginx_does_not_run() -> None:
    world = World(workers=None)
    watcher = world.watcher(resync=True)
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher, 3)
    assert world.reloads == 0


# -- what keeps it from reloading ---------------------------------------------------------------------


def test_during_a_deploy_switch_it_waits_and_the_deploys_own_reload_becomes_the_reference() -> None:
    world = World()
    watcher = started(world)
    world.flag_age = 3.0
    world.dns["api"] = {"10.0.0.8"}  # the old container restarts during the deploy's health gate
    world.dns["finaiflow-api-2"] = {"10.0.0.9"}
    world.checks(watcher, 3)
    assert world.reloads == 0
    assert any("a deploy is switching upstreams" in line for line in world.logs)
    # The deploy writes its upstream, reloads (new workers) and clears the flag.
    world.files = "upstream api {\n    server finaiflow-api-2:8000;\n}\n"
    world.workers = frozenset({50, 51})
    world.flag_age = None
    world.checks(watcher, 5)
    assert world.reloads == 0
    assert watcher.loaded == {"finaiflow-api-2": {"10.0.0.9"}}


def test_a_deploy_scale_up_beside_the_name_is_never_admitted_while_the_flag_exists_however_old() -> None:
    world = World()
    watcher = started(world)
    world.flag_age = 10 * uw.SWITCH_MAX_AGE  # left behind by a deploy killed after its scale-up
    world.dns["api"] = {"10.0.0.5", "10.0.0.6"}
    world.healthy.add("10.0.0.6")
    world.checks(watcher, 3)
    assert world.reloads == 0


def test_a_stale_flag_does_not_keep_a_moved_container_from_being_followed() -> None:
    world = World(flag_age=uw.SWITCH_MAX_AGE + 1)
    watcher = started(world)
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher)
    assert world.reloads == 1


def test_upstream_files_changed_without_a_reload_are_left_to_whoever_changes_them() -> None:
    world = World()
    watcher = started(world)
    world.files = "upstream api {\n    server api:8000;\n    server admin:8000;\n}\n"
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher, 3)
    assert world.reloads == 0
    assert [line for line in world.logs if "changed since nginx loaded them" in line] != []


def test_reloads_are_at_least_the_minimum_gap_apart() -> None:
    world = World()
    watcher = started(world)
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher, step=1.0)
    world.dns["api"] = {"10.0.0.9"}
    world.checks(watcher, step=1.0)
    assert world.reloads == 1
    world.checks(watcher, int(uw.MIN_GAP), step=1.0)
    assert world.reloads == 2


def test_a_refused_reload_is_retried_later_and_later() -> None:
    world = World(refuse="host not found in upstream")
    watcher = started(world)
    world.dns["api"] = {"10.0.0.8"}
    world.checks(watcher, 60, step=1.0)
    # 5 s, then 10, 20: four tries in a minute, not thirty.
    assert watcher.failures == 4
    assert any("nginx refused the reload" in line and "next try in 10 s" in line for line in world.logs)
    world.refuse = ""
    world.checks(watcher, 40, step=1.0)
    assert world.reloads == 1
    assert watcher.backoff == uw.MIN_GAP


def test_a_reload_by_someone_else_after_an_address_changed_is_followed_by_one_more_to_be_sure() -> None:
    # nginx reloaded (new workers) in the same interval as the address changed: it may have
    # resolved before or after the change; one extra reload is cheaper than a stale address.
    world = World()
    watcher = started(world)
    world.dns["api"] = {"10.0.0.8"}
    world.workers = frozenset({70, 71})
    world.checks(watcher, 5)
    assert world.reloads == 1


# -- what operators see ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["gone", "added", "resync"])
def test_the_metrics_count_reloads_by_reason_and_say_whether_one_waits(reason: str) -> None:
    world = World()
    watcher = started(world)
    watcher.reloads = {reason: 2}
    watcher.failures = 1
    watcher.waiting = "a deploy is switching"
    text = watcher.metrics()
    assert f'nginx_upstream_watcher_reloads_total{{reason="{reason}"}} 2\n' in text
    assert "nginx_upstream_watcher_reload_failures_total 1\n" in text
    assert "nginx_upstream_watcher_waiting 1\n" in text
    assert "nginx_upstream_watcher_enabled 1\n" in text
    assert 'nginx_upstream_watcher_addresses{host="api"} 1\n' in text
    assert "# TYPE nginx_upstream_watcher_reloads_total counter\n" in text
