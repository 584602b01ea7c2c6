"""The checklist must be able to fail: break one thing per item, and exactly that item fails.

Each test breaks the session stack in one way, runs the whole checklist (`tests/acceptance`) in a
subprocess against it, asserts that the matching feature, and only it, fails with a message naming
the problem, and repairs the stack whatever happens.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from finaiflow_ops import rollout
from finaiflow_ops.backup.schedule import Job
from finaiflow_ops.health import wait_healthy
from finaiflow_ops.stack import Stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# Scenarios that deploy or run load are slow and prove other things; the rest run every time.
_FAST = "not destructive and not load"


def run_checklist(stack: Stack, *, markers: str = _FAST,
                  extra: Sequence[str] = ()) -> tuple[dict[str, str], str]:
    """Run the checklist against `stack`; return {feature: pass|FAIL} and the whole output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/acceptance", "-m", markers, "-p", "no:cacheprovider",
         "-q", "--project-dir", stack.project_dir, "--target", str(stack.target), *extra],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )
    items = dict((f, m) for m, f in re.findall(r"^\[(pass|FAIL)\] (\w+):", result.stdout, flags=re.MULTILINE))
    return items, result.stdout


def assert_only_failing(stack: Stack, feature: str | set[str], *expected: str, markers: str = _FAST) -> None:
    """Exactly `feature` (or the set of features the break belongs to) fails, naming `expected`."""
    features = {feature} if isinstance(feature, str) else feature
    items, output = run_checklist(stack, markers=markers)
    passed = sorted(f for f in features if items.get(f) != "FAIL")
    assert not passed, f"{passed} did not fail:\n{output[-3000:]}"
    others = sorted(f for f, m in items.items() if m == "FAIL" and f not in features)
    assert not others, f"breaking {sorted(features)} also failed {others}:\n{output[-3000:]}"
    for text in expected:
        assert text in output, f"{sorted(features)} failed without naming {text!r}:\n{output[-3000:]}"


@contextmanager
def broken(break_it: list[str], repair: list[str], stack: Stack) -> Iterator[None]:
    """Run SQL that breaks the database, and always the SQL that repairs it."""
    for sql in break_it:
        stack.psql(sql)
    try:
        yield
    finally:
        for sql in repair:
            stack.psql(sql)


def test_env_item_fails_when_the_env_is_world_readable(stack: Stack) -> None:
    path = Path(stack.env_path)
    path.chmod(0o644)
    try:
        assert_only_failing(stack, "env", "mode 0644", "expected 0600")
    finally:
        path.chmod(0o600)


def test_database_item_fails_when_a_migration_is_not_applied(stack: Stack) -> None:
    revision = stack.psql("SELECT version_num FROM alembic_version")[0][0]
    with broken(["DELETE FROM alembic_version"],
                [f"INSERT INTO alembic_version (version_num) VALUES ('{revision}')"],  # noqa: S608 (read back)
                stack):
        assert_only_failing(stack, "database", "database at Alembic revision none")


def test_database_item_fails_when_an_index_is_missing(stack: Stack) -> None:
    with broken(["DROP INDEX idx_sessions_user_id"],
                ["CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions (user_id)"], stack):
        assert_only_failing(stack, "database", "index idx_sessions_user_id found on no table")


def test_verification_and_monitoring_fail_when_prometheus_is_stopped(stack: Stack) -> None:
    # Both items stand on Prometheus: the runbook's verification reads its metrics, and
    # monitoring is Prometheus. Nothing else may fail.
    stack.compose("stop", "prometheus")
    try:
        assert_only_failing(stack, {"verification", "monitoring"}, "not healthy: prometheus")
    finally:
        stack.compose("start", "prometheus")
        wait_healthy(stack, services=["prometheus"], timeout=90)


def test_documentation_step_fails_on_a_command_that_does_not_exist() -> None:
    from tests.acceptance.test_documentation import commands_answer_help

    staging = type("S", (), {"name": "local://"})()
    with pytest.raises(AssertionError, match="stack teleport"):
        commands_answer_help(staging, ["finaiflow-ops --project-dir /srv stack teleport --now"])  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="No such option"):
        commands_answer_help(staging, ["finaiflow-ops stack up --bogus"])  # type: ignore[arg-type]


def _put_files(stack: Stack, service: str, directory: str, files: dict[str, tuple[bytes, int]]) -> None:
    """Write files into a service's container as one tar archive (no shell, no temp files)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    stack.container(service).put_archive(directory, buffer.getvalue())


def test_ssl_item_fails_when_the_certificate_expires_within_14_days(stack: Stack) -> None:
    from finaiflow_ops import tls
    from finaiflow_ops.tls.devca import ensure_dev_ca, issue_from_dev_ca

    # `tls install` refuses such a certificate, as it should: put it in place behind its back.
    cert, key = issue_from_dev_ca(tls.configured_domains(stack.env), ca=ensure_dev_ca(), days=5)
    _put_files(stack, "nginx", "/etc/nginx/ssl", {"cert.pem": (cert, 0o644), "key.pem": (key, 0o600)})
    stack.exec("nginx", ["nginx", "-s", "reload"])
    try:
        assert_only_failing(stack, "ssl", "days left")
    finally:
        tls.install_dev_certificate(stack)


def test_monitoring_item_fails_when_a_prometheus_target_is_down(stack: Stack) -> None:
    import json
    import time

    exporter = stack.container("ops-exporter")
    network = stack.target.docker().networks.get(f"{stack.project}_default")

    def exporter_health() -> str:
        raw = stack.exec("prometheus", ["curl", "-fsS", "http://127.0.0.1:9090/api/v1/targets?state=active"])
        targets = json.loads(raw.stdout)["data"]["activeTargets"]
        return next((t["health"] for t in targets if t["labels"]["job"] == "ops"), "absent")

    # Cut off from the network, the exporter still runs and is healthy: only Prometheus sees it down.
    network.disconnect(exporter)
    try:
        deadline = time.monotonic() + 60
        while exporter_health() != "down" and time.monotonic() < deadline:
            time.sleep(1)
        assert_only_failing(stack, "monitoring", "ops")
    finally:
        network.connect(exporter, aliases=["ops-exporter"])
        deadline = time.monotonic() + 60
        while exporter_health() != "up" and time.monotonic() < deadline:
            time.sleep(1)


# -- backups ------------------------------------------------------------------------------------------

@contextmanager
def newest_backup_taken_hours_ago(stack: Stack, hours: float) -> Iterator[str]:
    """The target's backups as if the last daily job had run `hours` ago; yields the stale one's name.

    The backups younger than that are set aside (outside the backup directory), and the newest
    verified one comes back as a backup started `hours` earlier: the same archive bytes under the
    name of that time, its manifest naming that file with every time moved back by the same amount.
    Checksum, size and tables stay true, so its age is the only fault. Everything is put back after.
    """
    from datetime import UTC, datetime, timedelta

    from finaiflow_ops.backup import archive
    from finaiflow_ops.backup.inventory import COMPANIONS, list_backups
    from finaiflow_ops.backup.manifest import atomic_write, backup_name, manifest_path, read_manifest

    directory = archive.default_directory(stack)
    database = stack.env.get("POSTGRES_DB", "finaiflow_db")
    listing = list_backups(directory, database=database)
    newest = listing.newest_verified
    assert newest, f"no verified backup of {database} in {directory} to age"
    aside = Path(tempfile.mkdtemp(prefix=".can-fail-backups-", dir=stack.project_dir))
    moved = [path for entry in listing.backups if entry.age_seconds < hours * 3600
             for path in (Path(entry.path), *(Path(entry.path + s) for s in COMPANIONS)) if path.exists()]
    for path in moved:
        path.rename(aside / path.name)
    stale = directory / backup_name(database, datetime.now(UTC) - timedelta(hours=hours))
    try:
        source = aside / newest.name
        manifest = read_manifest(source)
        shift = manifest.started_at - (datetime.now(UTC) - timedelta(hours=hours))
        shutil.copyfile(source, stale)
        stale.chmod(0o600)
        aged = dataclasses.replace(manifest, file=stale.name, started_at=manifest.started_at - shift,
                                   finished_at=manifest.finished_at - shift,
                                   verified_at=manifest.verified_at - shift)
        atomic_write(manifest_path(stale), aged.to_json().encode())
        yield stale.name
    finally:
        for path in (stale, *(Path(f"{stale}{s}") for s in COMPANIONS)):
            path.unlink(missing_ok=True)
        for path in moved:
            (aside / path.name).rename(path)
        aside.rmdir()


def test_backups_item_fails_when_the_newest_verified_backup_is_30_hours_old(stack: Stack) -> None:
    with newest_backup_taken_hours_ago(stack, 30) as name:
        assert_only_failing(stack, "backups", f"({name}) is 30.0 h old (limit 26 h)")


@contextmanager
def daily_job(stack: Stack, job: Job | None) -> Iterator[None]:
    """The stack's daily backup job on the target replaced by `job` (taken out when None), and
    put back as it was afterwards; other crontab entries and units are left alone."""
    from finaiflow_ops import schedule as scheduling
    from finaiflow_ops.backup import schedule

    target = stack.target
    kind = scheduling.scheduler(target)
    assert schedule.status(target, stack.project_dir).installed, (
        f"no daily backup of {stack.project_dir} on {target} to break")
    marker = schedule.marker(stack.project_dir)
    units = [f"{schedule.unit_name(stack.project_dir)}.{suffix}" for suffix in ("service", "timer")]
    if kind == "cron":
        saved = scheduling.find_block(scheduling.read_crontab(target), marker).splitlines()[1]
        scheduling.set_cron_entry(target, marker, job.cron_line() if job else None)
    else:
        texts = {name: target.read_text(f"{scheduling.SYSTEMD_DIR}/{name}") for name in units}
        if job:
            scheduling.install_units(target, job.systemd_units())
        else:
            scheduling.remove_units(target, units)
    try:
        yield
    finally:
        if kind == "cron":
            scheduling.set_cron_entry(target, marker, saved)
        else:
            scheduling.install_units(target, texts)


def test_backups_item_fails_when_the_daily_job_is_not_installed(stack: Stack) -> None:
    with daily_job(stack, None):
        assert_only_failing(stack, "backups", f"no daily backup of {stack.project_dir} in its ")


def test_backups_step_fails_when_the_daily_job_runs_a_finaiflow_ops_that_is_gone(stack: Stack) -> None:
    from tests.acceptance.conftest import Staging
    from tests.acceptance.test_backups import Backups, scheduled

    gone = "/nonexistent/bin/finaiflow-ops"
    job = Job(gone, stack.project_dir, str(Path(stack.project_dir) / "backups"))
    backups = Backups(Staging(stack, ""), gone, stack.env.get("POSTGRES_DB", "finaiflow_db"))
    with daily_job(stack, job), pytest.raises(AssertionError, match=gone):
        scheduled(backups)


# -- load ------------------------------------------------------------------------------------------------

# The load item without --run-load only reads the gate's recorded verdict: cheap, so it runs here.
_WITH_LOAD = "not destructive"


def _put_state(stack: Stack, name: str, text: str | None) -> None:
    """Write a state file of the target (releases.py), or remove it when `text` is None."""
    from finaiflow_ops import releases

    if text is None:
        stack.target.run("rm", "-f", posixpath.join(stack.project_dir, releases.STATE_DIR, name))
    else:
        releases.write_state(stack, name, text)


@contextmanager
def state_file(stack: Stack, name: str, text: str | None) -> Iterator[None]:
    """A state file of the target replaced by `text` (removed when None), put back afterwards."""
    from finaiflow_ops import releases

    state_dir = posixpath.join(stack.project_dir, releases.STATE_DIR)
    had_state_dir = stack.target.exists(state_dir)
    before = releases.read_state(stack, name)
    _put_state(stack, name, text)
    try:
        yield
    finally:
        _put_state(stack, name, before)
        if not had_state_dir:  # as found: a stack nothing was ever deployed to has none
            stack.target.run("rmdir", state_dir, check=False)


def gate_verdict(stack: Stack, base_url: str, *, failures: int) -> str:
    """loadgate.json as loadtests/gate.py writes it, from its own window() and verdict(), for an
    update (of the release running now to another one) during which `failures` requests failed."""
    from loadtests.gate import Sample, verdict, window

    from tests.rollout_support import SERVICE, image_version, serving, version

    running = serving(stack)[0].image
    other = next(i for i in rollout.available_images(stack, SERVICE) if i != running)
    before, after = version(base_url), image_version(stack, other)
    t0 = time.time() - 60
    samples = [Sample(t0 + i * 0.1, 12.0, "/health") for i in range(450)]
    samples += [Sample(t0 + 20 + i, 3.0, "/api/v1/tenants", "HTTPError('502 Server Error: Bad Gateway')")
                for i in range(failures)]
    windows = [
        window(samples, "rest", "rest", t0, t0 + 15, release_after=before),
        window(samples, "update", "ours", t0 + 15, t0 + 30, command_seconds=9.0, switch_seconds=6.0,
               release_after=after),
        window(samples, "rollback", "ours", t0 + 30, t0 + 45, command_seconds=8.0, switch_seconds=5.0,
               release_after=before),
    ]
    report = verdict(windows, before=before, original=running, other=other, users=4, max_rollback=10,
                     stack=stack)
    return json.dumps(report, indent=2) + "\n"


def test_load_item_fails_when_the_gate_never_ran_on_the_target(stack: Stack) -> None:
    with state_file(stack, "loadgate.json", None):
        assert_only_failing(stack, "load", "the zero-downtime gate never ran here", markers=_WITH_LOAD)


def test_load_item_fails_when_requests_failed_during_the_gates_update(stack: Stack, base_url: str) -> None:
    with state_file(stack, "loadgate.json", gate_verdict(stack, base_url, failures=3)):
        assert_only_failing(stack, "load", "did not pass: update: 3 failed request(s)", markers=_WITH_LOAD)


def test_load_item_with_run_load_fails_when_the_gate_records_nothing(stack: Stack, base_url: str) -> None:
    # A passing verdict on record, and another deploy holding the lock: the gate stops at its
    # update without a verdict, and the item must say so instead of reading the old one.
    from finaiflow_ops import releases

    with state_file(stack, "loadgate.json", gate_verdict(stack, base_url, failures=0)):
        lock = releases.acquire(stack, "a deploy in progress (can-fail test)")
        try:
            items, output = run_checklist(stack, markers="load", extra=["--run-load"])
        finally:
            releases.release(stack, lock)
    assert items == {"load": "FAIL"}, output[-3000:]
    for text in ("the gate run by --run-load recorded no verdict", "is locked by"):
        assert text in output, output[-3000:]


# -- rollback -----------------------------------------------------------------------------------------------

def test_rollback_item_fails_when_the_release_history_is_unreadable(stack: Stack) -> None:
    # Cut off mid-write by a hand edit: no deploy or rollback may guess what ran before. The drill
    # (destructive, so it runs here on the local stack) stops before it changes anything.
    with state_file(stack, "releases.json", '{"services": {"api": {"current": 3, "releases": ['):
        assert_only_failing(stack, "rollback", "releases.json on", "is not valid JSON", markers="not load")


def test_rollback_item_fails_when_the_release_to_return_to_was_pruned(stack: Stack) -> None:
    # The history two deploys leave (recorded by the library's own writer, the one deploys use):
    # from a release whose image has since been pruned to the one running now. The drill would
    # still pass (it rolls back to what runs); a real rollback could not.
    from finaiflow_ops import releases
    from finaiflow_ops.releases import Release
    from tests.rollout_support import SERVICE, serving

    running, pruned = serving(stack)[0], "finaiflow/api:can-fail-pruned"
    assert pruned not in rollout.available_images(stack, SERVICE)
    with state_file(stack, "releases.json", None):
        before = releases.record(stack, Release(0, SERVICE, pruned, "sha256:" + "0" * 64, "", kind="deploy"))
        releases.record(stack, Release(0, SERVICE, running.image, running.image_id, "", kind="deploy",
                                       previous=before.id))
        assert_only_failing(stack, "rollback", f"{pruned}, whose image is no longer on the target")
