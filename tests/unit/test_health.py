"""Health waits: what a timeout or a crash reports, as the error's fields (service, container, log
tail) rather than only its text. Fake containers in memory; a zero timeout is one look, no waiting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from finaiflow_ops import health
from finaiflow_ops.errors import HealthTimeout


@dataclass(frozen=True)
class Box:
    name: str
    service: str
    state: str = "running"
    health: str = "healthy"
    restarts: int = 0

    @property
    def id(self) -> str:
        return f"id-{self.name}"

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "none")


@dataclass
class Stack:
    boxes: list[Box]
    log: str = "starting\nlistening on :8000\nwaiting for postgres"
    logs_asked: list[str] = field(default_factory=list)

    def services(self) -> list[str]:
        return sorted({b.service for b in self.boxes})

    def containers(self) -> Sequence[Box]:
        return self.boxes

    def logs(self, container_id: str, *, tail: int = 30) -> str:
        self.logs_asked.append(container_id)
        return "\n".join(self.log.splitlines()[-tail:])


def test_healthy_containers_are_returned_at_the_first_look() -> None:
    stack = Stack([Box("api-1", "api"), Box("db-1", "postgres", health="none")])
    assert health.wait_healthy(stack, timeout=0) == stack.boxes


def test_a_crashed_container_fails_with_its_service_name_and_log_tail_as_fields() -> None:
    stack = Stack([Box("api-1", "api", state="exited"), Box("db-1", "postgres")])
    with pytest.raises(HealthTimeout) as caught:
        health.wait_healthy(stack, timeout=60)
    error = caught.value
    assert (error.service, error.container) == ("api", "api-1")
    assert error.log_tail == stack.log
    assert "waiting for postgres" in error.message  # the last log line, as before
    assert stack.logs_asked == ["id-api-1"]


def test_a_restart_loop_counts_as_a_crash() -> None:
    stack = Stack([Box("api-1", "api", health="starting", restarts=2)])
    with pytest.raises(HealthTimeout) as caught:
        health.wait_healthy(stack, timeout=60)
    assert caught.value.container == "api-1"


def test_one_container_not_healthy_at_the_deadline_is_named_in_the_fields() -> None:
    stack = Stack([Box("api-1", "api", health="starting"), Box("db-1", "postgres")])
    with pytest.raises(HealthTimeout, match=r"not healthy after 0 s: api-1 \(running, starting\)") as caught:
        health.wait_healthy(stack, timeout=0)
    error = caught.value
    assert (error.service, error.container, error.log_tail) == ("api", "api-1", stack.log)


def test_a_service_without_a_container_is_named_as_the_service() -> None:
    stack = Stack([Box("db-1", "postgres")])
    with pytest.raises(HealthTimeout, match=r"api \(no container\)") as caught:
        health.wait_healthy(stack, services=["api", "postgres"], timeout=0)
    assert (caught.value.service, caught.value.container, caught.value.log_tail) == ("api", None, "")


def test_several_waiting_name_no_single_one() -> None:
    stack = Stack([Box("api-1", "api", health="starting"), Box("api-2", "api", health="starting")])
    with pytest.raises(HealthTimeout, match=r"api-1.*api-2") as caught:
        health.wait_healthy(stack, timeout=0)
    assert (caught.value.service, caught.value.container) == (None, None)


def test_progress_says_each_state_once() -> None:
    said: list[str] = []
    stack = Stack([Box("api-1", "api"), Box("db-1", "postgres", health="none")])
    health.wait_healthy(stack, timeout=0, progress=said.append)
    assert said == ["api-1: running, healthy", "db-1: running"]


def test_wait_http_reports_the_last_answer_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def probe(url: str, **_options: object) -> health.Probe:
        asked.append(url)
        return health.Probe(url, 503, 1.0)

    monkeypatch.setattr(health, "probe", probe)
    with pytest.raises(HealthTimeout, match=r"did not answer 200 within 0 s \(last: HTTP 503\)"):
        health.wait_http("https://127.0.0.1/health", timeout=0)
    assert asked == ["https://127.0.0.1/health"]  # one look at the deadline


def test_wait_http_returns_the_first_good_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([health.Probe("u", None, 1.0, error="ConnectError: refused"), health.Probe("u", 200, 1.0)])
    monkeypatch.setattr(health, "probe", lambda url, **_options: next(answers))
    assert health.wait_http("u", timeout=60, interval=0.01).status == 200


def test_a_log_that_cannot_be_read_at_the_deadline_does_not_hide_the_timeout() -> None:
    class Gone(Stack):
        def logs(self, container_id: str, *, tail: int = 30) -> str:
            raise RuntimeError("No such container")

    with pytest.raises(HealthTimeout, match="not healthy after 0 s") as caught:
        health.wait_healthy(Gone([Box("api-1", "api", health="starting")]), timeout=0)
    assert (caught.value.container, caught.value.log_tail) == ("api-1", "")
