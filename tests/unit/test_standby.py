"""The warm standby's pure parts: its record and window, the memory check, and how a compose
service's state tells the standby apart from what serves and from what an interrupted deploy left."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from finaiflow_ops.backends.compose.state import ServiceState
from finaiflow_ops.errors import UsageError
from finaiflow_ops.proxy import Upstream
from finaiflow_ops.standby import DEFAULT_WINDOW, Memory, Standby, parse_window
from finaiflow_ops.status import ContainerInfo


def _c(name: str, image_id: str = "sha256:a", state: str = "running") -> ContainerInfo:
    return ContainerInfo(name, name, "api", f"img-{image_id}", image_id, state, "healthy", ())


def _kept(window: float = 900.0) -> Standby:
    return Standby.kept("api", 4, "finaiflow/api:1.0.0", "sha256:a", ("api-1",), window)


def test_a_kept_standby_lasts_its_window_and_survives_its_json() -> None:
    kept = _kept(900.0)
    assert 890 < kept.remaining() <= 900 and not kept.expired
    assert Standby.from_json(kept.__dict__ | {"containers": list(kept.containers)}) == kept
    later = datetime.now(UTC) + timedelta(seconds=901)
    assert kept.remaining(later) < 0
    assert "min left" in kept.describe() and "#4 finaiflow/api:1.0.0 on api-1" in kept.describe()


def test_an_ended_or_unreadable_window_has_expired() -> None:
    assert replace(_kept(), until="2000-01-01T00:00:00+00:00").expired
    assert "expired at 2000" in replace(_kept(), until="2000-01-01T00:00:00+00:00").describe()
    assert replace(_kept(), until="not a time").expired


def test_the_window_defaults_to_15_minutes_and_0_turns_it_off() -> None:
    assert parse_window(None) == DEFAULT_WINDOW == 900.0
    assert parse_window(0) == 0
    with pytest.raises(UsageError):
        parse_window(-1)


MEMINFO = "MemTotal:        4000000 kB\nMemFree:          100000 kB\nMemAvailable:    {avail} kB\n"


def test_the_memory_check_refuses_a_standby_when_too_little_would_stay_free() -> None:
    roomy = Memory.parse(MEMINFO.format(avail=2_000_000))
    tight = Memory.parse(MEMINFO.format(avail=200_000))
    assert roomy is not None and roomy.refuses_standby() == ""
    assert tight is not None and "195 MiB of 3906 MiB available" in tight.refuses_standby()
    assert tight.reserve == 400_000 * 1024  # 10 % of the host, above the 256 MiB floor


def test_meminfo_without_the_fields_is_unknown() -> None:
    assert Memory.parse("MemTotal: 1 kB\n") is None
    assert Memory.parse("") is None


def test_the_standby_neither_serves_nor_counts_as_left_by_an_interrupted_deploy() -> None:
    kept, serving, fresh = _c("api-1", "sha256:a"), _c("api-2", "sha256:b"), _c("api-3", "sha256:b")
    state = ServiceState((kept, serving, fresh), Upstream.of("api", ["api-2"], 8000), "sha256:b",
                         created={"api-1": 100.0, "api-2": 200.0, "api-3": 300.0},
                         standby_names=frozenset({"api-1"}))
    assert state.serving == [serving] and state.standing_by == [kept]
    assert state.extras == [fresh] and state.never_served == [fresh] and not state.standby_serves


def test_with_the_service_name_upstream_the_standby_of_another_image_does_not_serve() -> None:
    kept, serving = _c("api-1", "sha256:a"), _c("api-2", "sha256:b")
    state = ServiceState((kept, serving), Upstream.of("api", ["api"], 8000), "sha256:b",
                         standby_names=frozenset({"api-1"}))
    assert state.serving == [serving] and state.standing_by == [kept] and state.extras == []


def test_a_standby_nginx_routes_to_serves_and_the_release_left_served_before() -> None:
    """A rollback killed after its switch to the standby: the newer containers it switched away
    from served until then, so they are drained and retired, never discarded."""
    kept, left = _c("api-1", "sha256:a"), _c("api-2", "sha256:b")
    state = ServiceState((kept, left), Upstream.of("api", ["api-1"], 8000), "sha256:b",
                         created={"api-1": 100.0, "api-2": 200.0}, standby_names=frozenset({"api-1"}))
    assert state.standby_serves and state.serving == [kept] and state.standing_by == []
    assert state.extras == [left] and state.never_served == []


# -- the scheduled retirement (standby_schedule) ------------------------------------------------------

def test_the_scheduled_job_retires_only_an_expired_standby_every_five_minutes_into_a_log() -> None:
    from finaiflow_ops.standby_schedule import MARK, Job

    job = Job("/usr/local/bin/finaiflow-ops", "/opt/finaiflow stack", "api")
    assert job.command() == ("/usr/local/bin/finaiflow-ops --project-dir '/opt/finaiflow stack' --yes "
                             "standby retire api --expired")
    log = "'/opt/finaiflow stack/.finaiflow/standby-retire.log'"
    assert job.cron_line() == f"*/5 * * * * {job.command()} >>{log} 2>&1"
    assert job.marker == f"{MARK} api in /opt/finaiflow stack"
    units = job.systemd_units()
    timer = next(text for name, text in units.items() if name.endswith(".timer"))
    assert "OnCalendar=*:0/5" in timer
    assert all(name.startswith("finaiflow-standby-retire-finaiflow-stack-api-") for name in units)
    units_of = {Job("/x", d, s).unit for d, s in (("/opt/a", "api"), ("/opt/b", "api"), ("/opt/a", "web"))}
    assert len(units_of) == 3, "one job per project directory and service"


@pytest.mark.parametrize(("executable", "project_dir", "said"), [
    ("finaiflow-ops", "/opt/finaiflow", "must be an absolute path"),
    ("/usr/bin/finaiflow-ops", "opt/finaiflow", "must be an absolute path"),
    ("/usr/bin/finaiflow-ops", "/opt/50%", "'%'"),
])
def test_a_job_cron_cannot_run_as_written_is_refused(executable: str, project_dir: str, said: str) -> None:
    from finaiflow_ops.standby_schedule import Job

    with pytest.raises(UsageError, match=said):
        Job(executable, project_dir, "api")
