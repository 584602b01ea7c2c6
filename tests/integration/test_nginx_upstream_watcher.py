"""nginx follows an api container that comes back at another address, without being restarted.

nginx 1.22 resolves upstream names only when it (re)loads; the upstream watcher in the nginx
container (stack/nginx/upstream_watcher.py) reloads it when an address changes. These tests make
the api container come back at a new address the way Docker's restart of a crashed container
can (stopped, its address taken meanwhile by another container, started again: checked to be a
new address), then require HTTPS /health through nginx to answer 200 within HEAL_SECONDS with the
same nginx master process. The stack is left as found: the api runs again, nginx serves it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from finaiflow_ops.health import wait_healthy
from finaiflow_ops.proxy import Proxy, Upstream
from finaiflow_ops.stack import Stack
from tests.rollout_support import serving

if TYPE_CHECKING:
    from docker.models.containers import Container

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

SERVICE = "api"
HEAL_SECONDS = 15.0
MAX_TAKERS = 16  # containers started to take the free addresses up to the api's
METRICS_URL = "http://127.0.0.1:8080/upstream-watcher/metrics"
WATCHER = "/usr/local/bin/nginx-upstream-watcher"


def address(container: Container, network: str) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def health_status(base_url: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError), httpx.Client(verify=False, timeout=3) as client:
        return client.get(f"{base_url}/health").status_code
    return None


def wait_for_200(base_url: str, seconds: float) -> tuple[float | None, list[int | None]]:
    """Poll /health until 200: (seconds it took or None, the statuses seen)."""
    start = time.monotonic()
    seen: list[int | None] = []
    while time.monotonic() - start < seconds:
        seen.append(health_status(base_url))
        if seen[-1] == 200:
            return time.monotonic() - start, seen
        time.sleep(0.5)
    return None, seen


def nginx_process(stack: Stack) -> tuple[int, str, int]:
    """What changes when nginx restarts: the master's pid on the host, the start time, the restarts."""
    attrs = stack.container("nginx").attrs
    return attrs["State"]["Pid"], attrs["State"]["StartedAt"], attrs["RestartCount"]


def watcher_metric(stack: Stack, series: str) -> float:
    text = stack.exec("nginx", ["curl", "-fsS", METRICS_URL]).stdout
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"no {series} in the watcher's metrics:\n{text}"
    return float(found[1])


def watcher_reloads(stack: Stack, reason: str) -> int:
    return int(watcher_metric(stack, f'nginx_upstream_watcher_reloads_total{{reason="{reason}"}}'))


def wait_for_a_watcher_check(stack: Stack) -> None:
    """Until the watcher has checked once more from now: it has then seen nginx's last reload."""
    now = time.time()
    deadline = time.monotonic() + 15
    while watcher_metric(stack, "nginx_upstream_watcher_last_check_timestamp_seconds") <= now:
        assert time.monotonic() < deadline, "the upstream watcher has not checked for 15 s"
        time.sleep(0.2)


def watcher_pid(stack: Stack) -> int | None:
    out = stack.exec("nginx", ["ps", "-eo", "pid=,args="]).stdout
    pids = [int(pid) for pid, _, args in (line.strip().partition(" ") for line in out.splitlines())
            if WATCHER in args and "python" in args]
    return pids[0] if len(pids) == 1 else None


@contextlib.contextmanager
def api_served_again_afterwards(stack: Stack, base_url: str) -> Iterator[None]:
    """Whatever happens: the api runs and is healthy, and nginx serves it (reloaded if it must)."""
    try:
        yield
    finally:
        for c in stack.containers(SERVICE):
            if c.state != "running":
                stack.target.docker().containers.get(c.id).start()
        wait_healthy(stack, services=[SERVICE], timeout=120)
        if wait_for_200(base_url, 5)[0] is None:
            Proxy(stack).reload()


@pytest.fixture(params=["service", "container"])
def upstream_by(request: pytest.FixtureRequest, stack: Stack) -> Iterator[str]:
    """nginx's upstream names the service (`server api:8000`: a fresh or restarted nginx) or the
    container (what a deploy writes); put back as found afterwards."""
    proxy = Proxy(stack)
    found = proxy.read_upstream(SERVICE)
    assert found is not None and found.port, f"nginx has no upstream {SERVICE}"
    name = SERVICE if request.param == "service" else serving(stack)[0].name
    wanted = Upstream.of(SERVICE, [name], found.port)
    if wanted != found:
        proxy.switch_gracefully(wanted)
        wait_for_a_watcher_check(stack)  # else it could first see the name while the api is stopped
    try:
        yield request.param
    finally:
        if wanted != found:
            proxy.switch_gracefully(found)


def test_an_api_container_back_at_another_address_is_served_again_without_restarting_nginx(
        stack: Stack, base_url: str, upstream_by: str) -> None:
    docker = stack.target.docker()
    api = docker.containers.get(serving(stack)[0].id)
    nginx = stack.container("nginx")
    network = next(n for n in api.attrs["NetworkSettings"]["Networks"]
                   if n in nginx.attrs["NetworkSettings"]["Networks"])
    assert health_status(base_url) == 200, f"{base_url}/health does not answer 200 before the test"
    nginx_before = nginx_process(stack)
    # Two ways to heal: the old address seen gone while the new one resolves ("gone"), or, when the
    # name resolved to nothing meanwhile (the container was down between two checks), the new
    # address admitted once it answers /health ("added"). Either is one reload by the watcher.
    reloads_before = watcher_reloads(stack, "gone") + watcher_reloads(stack, "added")
    old = address(api, network)
    takers: list[Container] = []
    with api_served_again_afterwards(stack, base_url):
        try:
            api.stop(timeout=10)
            # Docker gives a new container the lowest free address: fill the free ones up to the
            # api's, so that it has to come back elsewhere.
            while len(takers) < MAX_TAKERS and (not takers or address(takers[-1], network) != old):
                takers.append(docker.containers.run(
                    api.image.id, entrypoint=["sleep", "300"], network=network, detach=True,
                    labels={"finaiflow.test": "address-taker"}))
            assert address(takers[-1], network) == old, f"{len(takers)} containers did not get {old}"
            api.start()
            new = address(api, network)
            assert new != old, f"{api.name} came back at the same address {old}"
            healed, seen = wait_for_200(base_url, HEAL_SECONDS)
        finally:
            for taker in takers:
                taker.remove(force=True)
        assert healed is not None, (f"{api.name} moved {old} -> {new}; {base_url}/health did not answer 200 "
                                    f"within {HEAL_SECONDS:.0f} s (seen: {seen[-8:]})")
        assert nginx_process(stack) == nginx_before, "nginx was restarted instead of reloaded"
        log = stack.logs(nginx.id, tail=200)
        moved = rf"gone: .*{re.escape(old)} gone, now [^ ]*{re.escape(new)}"
        line = rf"upstream-watcher: reloading nginx: ({moved}|added: .*{re.escape(new)} answers /health)"
        assert re.search(line, log), f"no reload line of the watcher in nginx's log:\n{log[-2000:]}"
        assert watcher_reloads(stack, "gone") + watcher_reloads(stack, "added") >= reloads_before + 1
    print(f"\nupstream by {upstream_by}: {api.name} {old} -> {new}; /health 200 again {healed:.1f} s after "
          "its start")


def test_a_killed_watcher_is_restarted_and_resynchronises_nginx_once(stack: Stack, base_url: str) -> None:
    before = watcher_pid(stack)
    assert before is not None, "no upstream watcher runs in the nginx container"
    nginx_before = nginx_process(stack)
    stack.exec("nginx", ["kill", "-KILL", str(before)])
    deadline = time.monotonic() + 20
    after = None
    while time.monotonic() < deadline and (after is None or after == before):
        time.sleep(0.5)
        after = watcher_pid(stack)
    assert after is not None and after != before, "the upstream watcher was not restarted within 20 s"
    # The new watcher cannot know what nginx resolved meanwhile: it reloads once, then checks.
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            if watcher_reloads(stack, "resync") == 1:
                break
        time.sleep(0.5)
    assert watcher_reloads(stack, "resync") == 1, "the restarted watcher did not reload nginx once"
    assert nginx_process(stack) == nginx_before, "nginx was restarted"
    assert health_status(base_url) == 200
    log = stack.logs(stack.container("nginx").id, tail=50)
    assert re.search(r"upstream-watcher: exited \(status 137\); restarting it in \d+ s", log), log[-2000:]
