"""Pure logic of the rollout: upstream files, which containers serve, history, lock staleness,
durations, the .env edit, and the gate's windows. No Docker needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loadtests.gate import Sample, in_flight_at, percentile, window

from finaiflow_ops.backends.compose.state import ServiceState as _State
from finaiflow_ops.errors import UsageError
from finaiflow_ops.proxy import KEEPALIVE_LEAD, STATUS_URL, Proxy, Upstream, parse_upstream
from finaiflow_ops.releases import History, Lock, Release
from finaiflow_ops.rollout import _previous_other, parse_duration, sed_set_line
from finaiflow_ops.stack import ContainerInfo
from finaiflow_ops.target import CommandResult

# -- nginx upstream files ----------------------------------------------------------------------------


def test_upstream_renders_and_parses_back() -> None:
    up = Upstream.of("api", ["finaiflow-api-3", "finaiflow-api-4"], 8000)
    text = up.render()
    assert "upstream api {" in text and "server finaiflow-api-3:8000;" in text and "keepalive 32;" in text
    assert parse_upstream(text, "api") == up
    assert up.port == 8000 and up.hosts == ("finaiflow-api-3", "finaiflow-api-4")
    assert not up.by_service_name


def test_the_entrypoints_upstream_is_by_service_name() -> None:
    text = "upstream api {\n    server api:8000;\n    keepalive 32;\n}\n"
    up = parse_upstream(text, "api")
    assert up is not None and up.by_service_name and up.port == 8000


def test_parse_upstream_finds_the_named_block_only() -> None:
    text = "upstream web { server web:80; }\nupstream api {\n server a:8000 max_fails=1;\n server b:8000; }\n"
    assert parse_upstream(text, "api") == Upstream("api", ("a:8000", "b:8000"))
    assert parse_upstream(text, "other") is None
    assert parse_upstream("upstream api { keepalive 2; }", "api") is None


@pytest.mark.parametrize("bad", ["api;evil", "a b", "", "-x"])
def test_upstream_refuses_names_that_would_break_the_config(bad: str) -> None:
    with pytest.raises(UsageError):
        Upstream.of("api", [bad], 8000)


# -- which containers serve ------------------------------------------------------------------------------


def _c(name: str, image_id: str = "sha256:a", state: str = "running") -> ContainerInfo:
    return ContainerInfo(name, name, "api", f"img-{image_id}", image_id, state, "healthy", ())


class StubStatus:
    """nginx's stub_status through `docker exec`: the Waiting counts it answers, one per read."""

    def __init__(self, *waiting: int | None) -> None:
        self.env: dict[str, str] = {}
        self.waiting, self.reads = list(waiting), 0

    def exec(self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True) -> CommandResult:
        assert argv[0] == "curl" and argv[-1] == STATUS_URL
        self.reads += 1
        value = self.waiting.pop(0) if len(self.waiting) > 1 else self.waiting[0]
        if value is None:
            return CommandResult(tuple(argv), 7, "", "curl: (7) Failed to connect")
        page = (f"Active connections: {value + 1}\nserver accepts handled requests\n 9 9 42\n"
                f"Reading: 0 Writing: 1 Waiting: {value}\n")
        return CommandResult(tuple(argv), 0, page, "")


def test_the_switch_comes_once_no_client_holds_an_idle_keepalive_connection() -> None:
    nginx = StubStatus(3, 1, 0, 2)
    lead = Proxy(nginx).wait_clients_reconnected(time.monotonic())
    assert nginx.reads == 3 and lead >= 0


@pytest.mark.parametrize("waiting", [1, None], ids=["a-client-stays-idle", "no-stub-status"])
def test_the_lead_lasts_keepalive_lead_at_most(waiting: int | None) -> None:
    nginx = StubStatus(waiting)
    flagged = time.monotonic()
    lead = Proxy(nginx).wait_clients_reconnected(flagged)
    assert lead >= KEEPALIVE_LEAD and 2 <= nginx.reads <= KEEPALIVE_LEAD / 0.05 + 2


def test_a_lead_already_over_reads_nothing() -> None:
    nginx = StubStatus(5)
    assert Proxy(nginx).wait_clients_reconnected(time.monotonic() - 2 * KEEPALIVE_LEAD) >= KEEPALIVE_LEAD
    assert nginx.reads == 0


def test_serving_containers_are_those_the_upstream_names() -> None:
    old, new = _c("api-1", "sha256:a"), _c("api-2", "sha256:b")
    state = _State((old, new), Upstream.of("api", ["api-2"], 8000), "sha256:a")
    assert state.serving == [new] and state.extras == [old]


def test_with_the_service_name_upstream_the_env_image_decides() -> None:
    old, new = _c("api-1", "sha256:a"), _c("api-2", "sha256:b")
    state = _State((old, new), Upstream.of("api", ["api"], 8000), "sha256:a")
    assert state.serving == [old] and state.extras == [new]


def test_with_the_service_name_upstream_containers_created_after_nginx_resolved_it_get_no_traffic() -> None:
    old, new = _c("api-1", "sha256:a"), _c("api-2", "sha256:a")  # a redeploy of the same image
    state = _State((old, new), Upstream.of("api", ["api"], 8000), "sha256:a", resolved_at=1000.0,
                   created={"api-1": 900.0, "api-2": 1005.0})
    assert state.serving == [old] and state.extras == [new]


def test_extras_newer_than_the_serving_containers_never_served() -> None:
    old, serving_now, fresh = _c("api-1", "sha256:a"), _c("api-2", "sha256:b"), _c("api-3", "sha256:a")
    state = _State((old, serving_now, fresh), Upstream.of("api", ["api-2"], 8000), "sha256:b",
                   created={"api-1": 100.0, "api-2": 200.0, "api-3": 300.0})
    assert state.extras == [old, fresh] and state.never_served == [fresh]


def test_when_nothing_matches_every_running_container_serves() -> None:
    a, b, gone = _c("api-1", "sha256:b"), _c("api-2", "sha256:b"), _c("api-3", state="exited")
    state = _State((a, b, gone), Upstream.of("api", ["api-9"], 8000), "sha256:a")
    assert state.serving == [a, b] and state.extras == [] and state.stopped == [gone]


# -- history ---------------------------------------------------------------------------------------------


def _r(rid: int, image_id: str, previous: int | None) -> Release:
    return Release(rid, "api", f"finaiflow/api:{image_id}", image_id, "h", previous=previous)


def test_rollback_target_skips_redeploys_of_the_same_image() -> None:
    past = History("api", 4, (_r(1, "a", None), _r(2, "b", 1), _r(3, "a", 2), _r(4, "a", 3)))
    assert _previous_other(past, past.current_release) == past.get(2)


def test_rollback_target_is_none_without_an_earlier_release() -> None:
    past = History("api", 2, (_r(1, "a", None), _r(2, "a", 1)))
    assert _previous_other(past, past.current_release) is None


def test_find_a_release_by_id_or_image() -> None:
    past = History("api", 3, (_r(1, "a", None), _r(2, "b", 1), _r(3, "a", 2)))
    assert past.find("#2").id == 2 and past.find("2").id == 2
    assert past.find("finaiflow/api:a").id == 3  # the newest with that image
    with pytest.raises(UsageError, match="no release"):
        past.find("7")
    assert past.next_id() == 4


def test_release_records_survive_unknown_fields() -> None:
    data = {"id": 1, "service": "api", "image": "x:1", "image_id": "sha256:x", "config_hash": "h",
            "revisions": ["0001"], "added_later": True}
    assert Release.from_json(data).revisions == ("0001",)


# -- lock ------------------------------------------------------------------------------------------------


def _lock(pid: int, age: timedelta = timedelta(0), host: str | None = None) -> Lock:
    since = (datetime.now(UTC) - age).isoformat(timespec="seconds")
    return Lock("me@here", host or socket.gethostname(), pid, since, "deploy api x:1", "t")


def test_a_lock_held_by_a_live_process_is_not_stale() -> None:
    assert _lock(os.getpid()).stale_reason() == ""


def test_a_lock_whose_process_is_gone_is_stale() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    assert "is gone" in _lock(int(done.stdout)).stale_reason()


def test_a_lock_from_another_host_is_stale_only_when_old() -> None:
    assert _lock(1, host="elsewhere").stale_reason() == ""
    assert "min old" in _lock(1, age=timedelta(hours=2), host="elsewhere").stale_reason()


def test_the_lock_token_is_not_in_its_repr() -> None:
    token = "0f3c9a-lock-token-7e21"
    assert token not in repr(replace(_lock(1), token=token))


# -- small parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("35s", 35.0), ("1m30s", 90.0), ("500ms", 0.5), (None, 10.0),
                                               ("", 10.0), (12, 12.0)])
def test_parse_duration(text: str | int | None, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["35", "s", "1x", "3s 2m"])
def test_parse_duration_refuses_garbage(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(bad)


def test_sed_program_replaces_the_line_or_appends_it(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1\nexport API_IMAGE=old:1\nB='x|y'\n")
    for key, value, present in (("API_IMAGE", "new/img:2", True), ("NEW", "x:1", False)):
        subprocess.run(["sed", "-i", "-e", sed_set_line(key, value, present=present), str(env)], check=True)
    assert env.read_text() == "A=1\nAPI_IMAGE=new/img:2\nB='x|y'\nNEW=x:1\n"


@pytest.mark.parametrize("value", ["a|b", "a b", "a&b", "a\\b", "", "$(x)"])
def test_sed_program_refuses_values_that_are_not_image_references(value: str) -> None:
    with pytest.raises(UsageError):
        sed_set_line("API_IMAGE", value, present=True)


# -- the gate's numbers ----------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50, 95, 99)
    assert percentile([], 0.5) == 0.0


def test_window_counts_requests_by_start_time_and_names_failures() -> None:
    samples = [Sample(10.0, 5, "GET /a"), Sample(11.0, 7, "GET /a", "502"), Sample(12.5, 1, "GET /b"),
               Sample(20.0, 3, "GET /a")]
    w = window(samples, "update", "ours", 10.0, 13.0)
    assert (w.requests, w.failures, w.rps) == (3, 1, 1.0)
    assert w.errors == {"GET /a: 502": 1}


def test_in_flight_at_finds_requests_spanning_a_moment() -> None:
    slow = Sample(10.0, 2000, "GET /api/v1/reports/slow")
    assert in_flight_at([slow, Sample(10.0, 5, "GET /api/v1/reports/slow")], 11.0) == [slow]
    assert in_flight_at([slow], 12.5) == []
