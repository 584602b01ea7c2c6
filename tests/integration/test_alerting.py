"""Alerts that reach a person, end to end: the stack's real Prometheus and Alertmanager, and a real
HTTP receiver on the stack's network (tests/alerting_support.py; the session's .env sends every
alert there, with Alertmanager's group wait and interval shortened through the .env settings an
operator has too). The production rules keep their `for:` windows: a stopped Redis pages after
a minute and a scrape or two, not in seconds.

The slow waits are shared: while RedisUnreachable waits out its minute, `check` is seen naming
Redis, `alert test` is run against the receiver (ok) and against a throwaway Alertmanager whose
receivers answer 500 or refuse the connection (exit 1) -- a failed notification in the session's
Alertmanager would fail `check` for an hour -- and the Watchdog's heartbeat is looked for.
(Redis and the api cannot be stopped together: RedisUnreachable is what the api's /health says.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finaiflow_ops import envfile
from finaiflow_ops.alerting import Alertmanager
from finaiflow_ops.health import wait_healthy, wait_http
from finaiflow_ops.stack import Stack
from tests.alerting_support import PORT, RECEIVER_ALIAS, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

SCRATCH_PROJECT = "finaiflow-alerttest"


def ops(stack: Stack | str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    project_dir = stack.project_dir if isinstance(stack, Stack) else stack
    return subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", "--project-dir", project_dir, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- on the session's second stack ---------------------------------------------------------------------
# These tests stop Redis and the api for minutes each: on the second stack (tests/conftest.py), beside
# the session's stack tests in another worker.


@pytest.fixture(scope="module")
def stack(second_stack: tuple[Stack, Receiver]) -> Stack:
    return second_stack[0]


@pytest.fixture(scope="module")
def receiver(second_stack: tuple[Stack, Receiver]) -> Receiver:
    return second_stack[1]


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    return stack.base_url()


# -- a throwaway Alertmanager whose receivers fail -------------------------------------------------------


@contextmanager
def failing_alertmanager(stack: Stack, directory: Path) -> Iterator[str]:
    """A project with only the stack's own alertmanager service (as `docker compose config`
    resolves it), whose paging webhook answers 500 and whose ticket webhook refuses connections."""
    resolved = subprocess.run(["docker", "compose", "-f", f"{stack.project_dir}/compose.yaml", "--env-file",
                               f"{stack.project_dir}/.env", "config", "--format", "json"],
                              capture_output=True, text=True, check=True, timeout=60)
    service = json.loads(resolved.stdout)["services"]["alertmanager"]
    for key in ("ports", "volumes", "build", "networks"):  # no state, on its own default network
        service.pop(key, None)
    env = dict(stack.env) | {
        "COMPOSE_PROJECT_NAME": SCRATCH_PROJECT,
        "ALERT_WEBHOOK_URL": f"http://{RECEIVER_ALIAS}:{PORT}/status/500/page",
        "ALERT_WARNING_WEBHOOK_URL": f"http://{RECEIVER_ALIAS}:9/ticket",  # nothing listens on 9
        "ALERT_HEARTBEAT_URL": "", "ALERT_GROUP_WAIT": "1s"}
    service["environment"] = {k: v for k, v in env.items() if k.startswith("ALERT_")}
    (directory / "compose.yaml").write_text(json.dumps({"name": SCRATCH_PROJECT,
                                                        "services": {"alertmanager": service}}))
    envfile.write(directory / ".env", env)
    compose = ["docker", "compose", "-f", str(directory / "compose.yaml"),
               "--env-file", str(directory / ".env"), "-p", SCRATCH_PROJECT]
    failing: Receiver | None = None
    try:
        subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, check=True, timeout=120)
        failing = Receiver.start(f"{SCRATCH_PROJECT}_default", name=f"{SCRATCH_PROJECT}-receiver")
        am = Alertmanager.of(Stack(stack.target, str(directory)))
        deadline = time.monotonic() + 30
        while am.container.exec_run(["curl", "-fs", "http://127.0.0.1:9093/-/ready"]).exit_code != 0:
            assert time.monotonic() < deadline, "the throwaway Alertmanager did not get ready"
            time.sleep(0.3)
        yield str(directory)
    finally:
        if failing is not None:
            failing.remove()
        subprocess.run([*compose, "down", "--volumes"], capture_output=True, check=False, timeout=120)


def alert_test_succeeds(stack: Stack, receiver: Receiver) -> None:
    for severity, path in (("critical", "/page"), ("warning", "/ticket")):
        result = ops(stack, "--json", "alert", "test", "--severity", severity)
        assert result.returncode == 0, result.stderr
        delivery = json.loads(result.stdout)
        assert delivery["delivered"], delivery
        assert delivery["receiver"] == {"/page": "paging", "/ticket": "ticket"}[path]
        assert delivery["notifications"].get("webhook", 0) >= 1, delivery
        got = [n for n in receiver.notifications(path, "FinaiflowAlertTest")
               if any(a["labels"].get("test_id") == delivery["test_id"] for a in n["body"]["alerts"])]
        assert got, f"the receiver did not get test alert {delivery['test_id']} on {path}"
        print(f"alert test {severity}: delivered to {delivery['receiver']} in {delivery['seconds']:.1f} s")


def alert_test_fails_naming_the_receiver(project_dir: str) -> None:
    refused = ops(project_dir, "alert", "test", "--severity", "critical", "--timeout", "30")
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1, refused.stderr
    assert "receiver paging" in last and "unexpected status code 500" in last, last
    unreachable = ops(project_dir, "alert", "test", "--severity", "warning", "--timeout", "30")
    last = unreachable.stderr.strip().splitlines()[-1]
    assert unreachable.returncode == 1, unreachable.stderr
    assert "receiver ticket" in last and "connection refused" in last, last
    env = envfile.load(Path(project_dir) / ".env").values
    assert env["ALERT_WEBHOOK_URL"] not in refused.stdout + refused.stderr  # a webhook URL is a secret


def diagnose(stack: Stack, receiver: Receiver) -> str:
    """What the receiver got and what Alertmanager said about it, for a failure message."""
    got = [(n["path"], n["body"].get("status") if isinstance(n["body"], dict) else None)
           for n in receiver.received()]
    lines = Alertmanager.of(stack).container.logs(tail=400).decode(errors="replace").splitlines()
    interesting = [line for line in lines
                   if any(word in line for word in ("heartbeat", "Watchdog", "level=warn", "level=error"))]
    return f"received {got[-20:]}; alertmanager: " + envfile.redact("\n".join(interesting[-15:]), stack.env)


# -- the tests -------------------------------------------------------------------------------------------


def check_names_redis(stack: Stack, base_url: str) -> None:
    """`check` with Redis stopped: exit 1, the services and health items name Redis, so does the
    last line."""
    result = ops(stack, "--json", "check", "--url", base_url)
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert result.returncode == 1, result.stderr
    assert items["services"]["status"] == "fail" and "redis (Redis)" in items["services"]["detail"], items
    assert items["health"]["status"] == "fail" and "cache (Redis) error" in items["health"]["detail"], items
    assert "Redis" in result.stderr.strip().splitlines()[-1]


def test_redis_stopped_pages_within_two_minutes_and_its_return_resolves(
        stack: Stack, receiver: Receiver, tmp_path: Path, base_url: str) -> None:
    stopped = time.time()
    stack.compose("stop", "redis")
    try:
        check_names_redis(stack, base_url)
        # RedisUnreachable's minute: the other deliveries are checked meanwhile.
        heartbeat = receiver.wait(lambda: receiver.notifications("/heartbeat", "Watchdog"), timeout=30,
                                  what="the Watchdog's heartbeat", context=lambda: diagnose(stack, receiver))
        assert heartbeat["body"]["receiver"] == "heartbeat"
        alert_test_succeeds(stack, receiver)
        with failing_alertmanager(stack, tmp_path) as project_dir:
            alert_test_fails_naming_the_receiver(project_dir)
        fired = receiver.wait(lambda: receiver.notifications("/page", "RedisUnreachable", since=stopped,
                                                             status="firing"),
                              timeout=150, what="RedisUnreachable (firing) on the paging webhook")
        fired_after = fired["at"] - stopped
        print(f"RedisUnreachable notification received {fired_after:.1f} s after Redis was stopped")
        assert fired_after < 120
        assert fired["body"]["receiver"] == "paging"
        assert not receiver.notifications("/page", "DatabaseUnreachable", since=stopped)
    finally:
        stack.compose("start", "redis")
        back = time.time()
        wait_healthy(stack, services=["redis", "api"], timeout=90)
    resolved = receiver.wait(lambda: receiver.notifications("/page", "RedisUnreachable", since=back,
                                                            status="resolved"),
                             timeout=120, what="RedisUnreachable (resolved) on the paging webhook")
    print(f"RedisUnreachable resolved notification received {resolved['at'] - back:.1f} s "
          "after Redis was started")


def test_api_stopped_pages_api_down_and_inhibits_its_latency_alert(stack: Stack, receiver: Receiver,
                                                                   base_url: str) -> None:
    am = Alertmanager.of(stack)
    stopped = time.time()
    # ApiLatencyHigh needs 10 minutes of slow requests: it is sent to Alertmanager as Prometheus
    # would, with a control alert beside it that nothing inhibits.
    latency = {"labels": {"alertname": "ApiLatencyHigh", "severity": "warning"},
               "annotations": {"summary": "sent by the inhibition test"}}
    control = {"labels": {"alertname": "InhibitionControl", "severity": "warning"}}
    stack.compose("stop", "api")
    try:
        down = receiver.wait(lambda: receiver.notifications("/page", "ApiDown", since=stopped,
                                                            status="firing"),
                             timeout=150, what="ApiDown (firing) on the paging webhook")
        print(f"ApiDown notification received {down['at'] - stopped:.1f} s after the api was stopped")
        assert down["at"] - stopped < 120
        sent = time.time()
        am.post([latency | {"startsAt": stamp(sent)}, control | {"startsAt": stamp(sent)}])
        receiver.wait(lambda: receiver.notifications("/ticket", "InhibitionControl", since=sent),
                      timeout=30, what="the control alert on the ticket webhook")
        assert not receiver.notifications("/ticket", "ApiLatencyHigh", since=sent)
        listed = json.loads(ops(stack, "--json", "alert", "list").stdout)["alerts"]
        held = {a["name"]: a for a in listed}
        latency_held = held["ApiLatencyHigh"]
        assert latency_held["inhibited_by"] and latency_held["state"] == "suppressed", held
        assert held["ApiDown"]["state"] == "active" and held["ApiDown"]["receivers"] == ["paging"], held
    finally:
        ended = stamp(time.time())
        am.post([latency | {"endsAt": ended}, control | {"endsAt": ended}])
        stack.compose("start", "api")
        wait_healthy(stack, services=["api", "nginx"], timeout=120)
        wait_http(f"{base_url}/health", timeout=60, domain=stack.env.get("DOMAIN"))  # nginx follows it


def test_deploy_with_silence_suppresses_alerts_during_the_deploy_only(stack: Stack,
                                                                     receiver: Receiver) -> None:
    am = Alertmanager.of(stack)
    running = sorted({c.image for c in stack.containers() if c.service == "api"})
    assert len(running) == 1, running
    probe = {"labels": {"alertname": "DeploySilenceProbe", "severity": "critical"},
             "annotations": {"summary": "sent by the deploy --silence test"}}
    before = {s.id for s in am.silences()}
    deploy = subprocess.Popen([sys.executable, "-m", "finaiflow_ops.cli", "--project-dir", stack.project_dir,
                               "deploy", "api", "--image", running[0], "--no-backup", "--silence",
                               # no warm standby left behind for the session's later tests
                               "--standby", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not (made := [s for s in am.silences() if s.id not in before and s.state == "active"]):
            assert deploy.poll() is None and time.monotonic() < deadline, "no silence while deploying"
            time.sleep(0.2)
        sent = time.time()
        am.post([probe | {"startsAt": stamp(sent)}])
        deadline = time.monotonic() + 20
        while not any(a.name == "DeploySilenceProbe" and made[0].id in a.silenced_by for a in am.alerts()):
            assert time.monotonic() < deadline, "the probe alert was not silenced"
            time.sleep(0.2)
        assert deploy.poll() is None, "the deploy ended before the silence could be seen"
        _, err = deploy.communicate(timeout=300)
        assert deploy.returncode == 0, err
        ended = next(s for s in am.silences() if s.id == made[0].id)
        assert ended.state == "expired", ended
        ended_at = datetime.fromisoformat(ended.ends_at).timestamp()  # when the deploy ended it
        after = receiver.wait(lambda: receiver.notifications("/page", "DeploySilenceProbe", since=sent),
                              timeout=30, what="the probe alert after the deploy")
        assert after["at"] >= ended_at, "paged while the deploy's silence was active"
        print(f"deploy --silence: probe silenced for {ended_at - sent:.1f} s during the deploy, "
              f"paged {after['at'] - ended_at:.1f} s after the silence ended")
    finally:
        if deploy.poll() is None:
            deploy.kill()
        am.post([probe | {"endsAt": stamp(time.time())}])
