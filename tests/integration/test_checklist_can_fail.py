"""The checklist must be able to fail: break one thing per item, and exactly that item fails.

Each break changes the session stack in one way, and its repair puts it back whatever happens.
Breaks of different checklist items are applied together in a batch (each batch holds at most one
break per item), the whole checklist (`tests/acceptance`) runs once per batch in a subprocess
against the broken stack, and every break is repaired, in reverse order, before anything is
asserted. Each test then asserts for its own break that its item fails with a message naming the
problem, and that no item outside the batch's breaks fails.
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
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
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
# The load item without --run-load only reads the gate's recorded verdict: cheap, so it runs here.
_WITH_LOAD = "not destructive"
_ALL = ""  # the rollback drills too (destructive: they run here, on the local stack)
_TAIL = 3000


@dataclass(frozen=True)
class Run:
    """One run of the checklist: {item: pass|FAIL}, what each failed item said, the whole output."""

    items: dict[str, str]
    said: dict[str, str]
    output: str


def run_checklist(stack: Stack, report: Path, *, markers: str = _FAST, extra: Sequence[str] = ()) -> Run:
    """Run the checklist against `stack`; what each item said when it failed is read from the
    run's JUnit report (`report`): its failures and errors with their captured output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/acceptance", *(["-m", markers] if markers else []),
         "-p", "no:cacheprovider", "-q", "--project-dir", stack.project_dir, "--target", str(stack.target),
         f"--junitxml={report}", "-o", "junit_logging=all", *extra],
        capture_output=True, text=True, timeout=900, cwd=REPO, check=False,
    )
    items = dict((f, m) for m, f in re.findall(r"^\[(pass|FAIL)\] (\w+):", result.stdout, flags=re.MULTILINE))
    said: dict[str, str] = {}
    if report.exists():
        for case in ET.parse(report).iter("testcase"):  # noqa: S314 (the run's own report)
            problems = [p for p in case if p.tag in ("failure", "error")]
            if problems:  # tests/acceptance/test_<item>.py holds the scenarios of features/<item>.feature
                item = case.get("classname", "").rpartition(".")[2].removeprefix("test_")
                texts = [f"{p.get('message', '')}\n{p.text or ''}" for p in problems]
                texts += [p.text or "" for p in case if p.tag in ("system-out", "system-err")]
                said[item] = said.get(item, "") + "\n".join(texts)
    return Run(items, said, result.stdout)


# -- breaks and batches ---------------------------------------------------------------------------------

# A break: breaks the stack on entry, repairs it on exit whatever happened, and yields the texts the
# failure of its items must name.
BreakFn = Callable[[Stack, str], AbstractContextManager[Sequence[str]]]


@dataclass(frozen=True)
class Break:
    items: frozenset[str]
    apply: BreakFn


@dataclass(frozen=True)
class Batch:
    """Breaks applied together (at most one per checklist item) and the checklist run that sees them."""

    name: str
    breaks: tuple[str, ...]
    markers: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchOutcome:
    run: Run
    named: dict[str, tuple[str, ...]]  # break -> the texts its failure must name

    def items(self, batch: Batch) -> frozenset[str]:
        return frozenset().union(*(BREAKS[name].items for name in batch.breaks))


@dataclass
class CanFail:
    """Runs each batch once, when a test first asks for one of its breaks, and keeps the outcome."""

    stack: Stack
    base_url: str
    reports: Path
    done: dict[str, BatchOutcome | BaseException] = field(default_factory=dict)

    def batch_of(self, name: str) -> Batch:
        return next(b for b in BATCHES if name in b.breaks)

    def outcome(self, batch: Batch) -> BatchOutcome:
        if batch.name not in self.done:
            try:
                self.done[batch.name] = self._run(batch)
            except BaseException as exc:
                self.done[batch.name] = exc
                raise
        found = self.done[batch.name]
        if isinstance(found, BaseException):
            raise RuntimeError(f"the {batch.name} batch did not run (see its first test): {found!r}")
        return found

    def _run(self, batch: Batch) -> BatchOutcome:
        with ExitStack() as repairs:  # each break's repair, in reverse order, whatever happens
            named = {name: tuple(repairs.enter_context(BREAKS[name].apply(self.stack, self.base_url)))
                     for name in batch.breaks}
            run = run_checklist(self.stack, self.reports / f"{batch.name}.xml", markers=batch.markers,
                                extra=batch.extra)
        return BatchOutcome(run, named)

    def assert_fails(self, name: str) -> Run:
        """Exactly the items of the batch's breaks fail; the items of `name` name its texts."""
        batch = self.batch_of(name)
        outcome = self.outcome(batch)
        run, features, batch_items = outcome.run, BREAKS[name].items, outcome.items(batch)
        tail = run.output[-_TAIL:]
        passed = sorted(f for f in features if run.items.get(f) != "FAIL")
        assert not passed, f"{passed} did not fail ({name}, batch {batch.name}):\n{tail}"
        others = sorted(f for f, m in run.items.items() if m == "FAIL" and f not in batch_items)
        assert not others, (f"breaking {sorted(batch_items)} (batch {batch.name}) also failed {others}:\n"
                            f"{tail}")
        said = "\n".join(run.said.get(f, "") for f in sorted(features))
        for text in outcome.named[name]:
            assert text in said, f"{sorted(features)} failed without naming {text!r} ({name}):\n{tail}"
        return run


@pytest.fixture(scope="module")
def can_fail(stack: Stack, base_url: str, tmp_path_factory: pytest.TempPathFactory) -> CanFail:
    return CanFail(stack, base_url, tmp_path_factory.mktemp("can-fail"))


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


def wait_until(done: Callable[[], bool], timeout: float) -> None:
    """Poll `done` every second until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(1)


# -- env, database, verification ---------------------------------------------------------------------

@contextmanager
def env_world_readable(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    path = Path(stack.env_path)
    path.chmod(0o644)
    try:
        yield "mode 0644", "expected 0600"
    finally:
        path.chmod(0o600)


@contextmanager
def migration_not_applied(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    revision = stack.psql("SELECT version_num FROM alembic_version")[0][0]
    with broken(["DELETE FROM alembic_version"],
                [f"INSERT INTO alembic_version (version_num) VALUES ('{revision}')"],  # noqa: S608 (read back)
                stack):
        yield ("database at Alembic revision none",)


@contextmanager
def index_missing(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    with broken(["DROP INDEX idx_sessions_user_id"],
                ["CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions (user_id)"], stack):
        yield ("index idx_sessions_user_id found on no table",)


@contextmanager
def prometheus_stopped(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    # Both items stand on Prometheus: the runbook's verification reads its metrics, and
    # monitoring is Prometheus. Nothing else may fail.
    stack.compose("stop", "prometheus")
    try:
        yield ("not healthy: prometheus",)
    finally:
        stack.compose("start", "prometheus")
        wait_healthy(stack, services=["prometheus"], timeout=90)


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


# -- ssl, monitoring ------------------------------------------------------------------------------------

@contextmanager
def certificate_expiring_in_5_days(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    from finaiflow_ops import tls
    from finaiflow_ops.tls.devca import ensure_dev_ca, issue_from_dev_ca

    # A 90-day certificate whose renewal failed: 5 days left, under its 14-day margin (a 5-day
    # certificate would not be expiring: its margin is a sixth of its lifetime). `tls install`
    # refuses such a certificate, as it should: put it in place behind its back.
    cert, key = issue_from_dev_ca(tls.configured_domains(stack.env), ca=ensure_dev_ca(), days=5,
                                  issued_days_ago=85)
    try:
        _put_files(stack, "nginx", "/etc/nginx/ssl", {"cert.pem": (cert, 0o644), "key.pem": (key, 0o600)})
        stack.exec("nginx", ["nginx", "-s", "reload"])
        yield ("days left",)
    finally:
        tls.install_dev_certificate(stack)


def exporter_health(stack: Stack) -> str:
    """The health Prometheus reports for the ops exporter's target (absent when it has none)."""
    raw = stack.exec("prometheus", ["curl", "-fsS", "http://127.0.0.1:9090/api/v1/targets?state=active"])
    targets = json.loads(raw.stdout)["data"]["activeTargets"]
    return next((t["health"] for t in targets if t["labels"]["job"] == "ops"), "absent")


@contextmanager
def exporter_cut_off(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    exporter = stack.container("ops-exporter")
    network = stack.target.docker().networks.get(f"{stack.project}_default")
    # Cut off from the network, the exporter still runs and is healthy: only Prometheus sees it down.
    network.disconnect(exporter)
    try:
        wait_until(lambda: exporter_health(stack) == "down", 60)
        yield ("ops ops-exporter:9188 (down",)
    finally:
        network.connect(exporter, aliases=["ops-exporter"])
        wait_until(lambda: exporter_health(stack) == "up", 60)


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


@contextmanager
def newest_verified_backup_30_hours_old(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    with newest_backup_taken_hours_ago(stack, 30) as name:
        yield (f"({name}) is 30.0 h old (limit 26 h)",)


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


@contextmanager
def daily_job_not_installed(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    with daily_job(stack, None):
        yield (f"no daily backup of {stack.project_dir} in its ",)


# -- load ------------------------------------------------------------------------------------------------

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
    try:
        _put_state(stack, name, text)
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


@contextmanager
def gate_never_ran(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    with state_file(stack, "loadgate.json", None):
        yield ("the zero-downtime gate never ran here",)


@contextmanager
def gate_saw_failed_requests(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    with state_file(stack, "loadgate.json", gate_verdict(stack, base_url, failures=3)):
        yield ("did not pass: update: 3 failed request(s)",)


@contextmanager
def gate_records_nothing(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    # A passing verdict on record, and another deploy holding the lock: the gate stops at its
    # update without a verdict, and the item must say so instead of reading the old one.
    from finaiflow_ops import releases

    with state_file(stack, "loadgate.json", gate_verdict(stack, base_url, failures=0)):
        lock = releases.acquire(stack, "a deploy in progress (can-fail test)")
        try:
            yield "the gate run by --run-load recorded no verdict", "is locked by"
        finally:
            releases.release(stack, lock)


# -- rollback -----------------------------------------------------------------------------------------------

@contextmanager
def release_history_unreadable(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
    # Cut off mid-write by a hand edit: no deploy or rollback may guess what ran before. The drill
    # (destructive, so it runs here on the local stack) stops before it changes anything.
    with state_file(stack, "releases.json", '{"services": {"api": {"current": 3, "releases": ['):
        yield "releases.json on", "is not valid JSON"


@contextmanager
def release_to_return_to_pruned(stack: Stack, base_url: str) -> Iterator[Sequence[str]]:
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
        yield (f"{pruned}, whose image is no longer on the target",)


BREAKS: dict[str, Break] = {
    "env world-readable": Break(frozenset({"env"}), env_world_readable),
    "migration not applied": Break(frozenset({"database"}), migration_not_applied),
    "index missing": Break(frozenset({"database"}), index_missing),
    "prometheus stopped": Break(frozenset({"verification", "monitoring"}), prometheus_stopped),
    "certificate expiring": Break(frozenset({"ssl"}), certificate_expiring_in_5_days),
    "exporter cut off": Break(frozenset({"monitoring"}), exporter_cut_off),
    "backup 30 h old": Break(frozenset({"backups"}), newest_verified_backup_30_hours_old),
    "daily job not installed": Break(frozenset({"backups"}), daily_job_not_installed),
    "gate never ran": Break(frozenset({"load"}), gate_never_ran),
    "gate saw failed requests": Break(frozenset({"load"}), gate_saw_failed_requests),
    "gate records nothing": Break(frozenset({"load"}), gate_records_nothing),
    "history unreadable": Break(frozenset({"rollback"}), release_history_unreadable),
    "release pruned": Break(frozenset({"rollback"}), release_to_return_to_pruned),
}

# Applied in this order, repaired in the reverse one. Breaks that need what others leave alone come
# first (the api serving, for a verdict or a history); the slow ones last (a network cut waits until
# Prometheus sees it, a stopped Prometheus until it is healthy again).
BATCHES = (
    Batch("first", ("release pruned", "gate never ran", "backup 30 h old", "migration not applied",
                    "env world-readable", "prometheus stopped"), markers=_WITH_LOAD),
    # The rollback drills stop at the unreadable history before they change anything.
    Batch("second", ("gate saw failed requests", "history unreadable", "daily job not installed",
                     "index missing", "certificate expiring", "exporter cut off"), markers=_ALL),
    # The gate run by --run-load is the load item's alone. It stops at its update (the lock), after
    # its rest at steady load: one second of it, not fifteen (the rest proves nothing here).
    Batch("run-load", ("gate records nothing",), markers="load",
          extra=("--run-load", "--gate-option=--rest=1")),
)


def test_batches_break_each_item_once() -> None:
    assert sorted(n for b in BATCHES for n in b.breaks) == sorted(BREAKS), "every break in one batch"
    for batch in BATCHES:
        items = [item for name in batch.breaks for item in BREAKS[name].items]
        assert len(items) == len(set(items)), f"batch {batch.name} breaks an item twice: {sorted(items)}"


# -- the tests: one per break ---------------------------------------------------------------------------

def test_env_item_fails_when_the_env_is_world_readable(can_fail: CanFail) -> None:
    can_fail.assert_fails("env world-readable")


def test_database_item_fails_when_a_migration_is_not_applied(can_fail: CanFail) -> None:
    can_fail.assert_fails("migration not applied")


def test_database_item_fails_when_an_index_is_missing(can_fail: CanFail) -> None:
    can_fail.assert_fails("index missing")


def test_verification_and_monitoring_fail_when_prometheus_is_stopped(can_fail: CanFail) -> None:
    can_fail.assert_fails("prometheus stopped")


def test_documentation_step_fails_on_a_command_that_does_not_exist() -> None:
    from tests.acceptance.test_documentation import commands_answer_help

    staging = type("S", (), {"name": "local://"})()
    with pytest.raises(AssertionError, match="stack teleport"):
        commands_answer_help(staging, ["finaiflow-ops --project-dir /srv stack teleport --now"])  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="No such option"):
        commands_answer_help(staging, ["finaiflow-ops stack up --bogus"])  # type: ignore[arg-type]


def test_ssl_item_fails_when_the_certificate_expires_within_14_days(can_fail: CanFail) -> None:
    can_fail.assert_fails("certificate expiring")


def test_monitoring_item_fails_when_a_prometheus_target_is_down(can_fail: CanFail) -> None:
    can_fail.assert_fails("exporter cut off")


def test_backups_item_fails_when_the_newest_verified_backup_is_30_hours_old(can_fail: CanFail) -> None:
    can_fail.assert_fails("backup 30 h old")


def test_backups_item_fails_when_the_daily_job_is_not_installed(can_fail: CanFail) -> None:
    can_fail.assert_fails("daily job not installed")


def test_backups_step_fails_when_the_daily_job_runs_a_finaiflow_ops_that_is_gone(stack: Stack) -> None:
    from tests.acceptance.conftest import Staging
    from tests.acceptance.test_backups import Backups, scheduled

    gone = "/nonexistent/bin/finaiflow-ops"
    job = Job(gone, stack.project_dir, str(Path(stack.project_dir) / "backups"))
    backups = Backups(Staging(stack, ""), gone, stack.env.get("POSTGRES_DB", "finaiflow_db"))
    with daily_job(stack, job), pytest.raises(AssertionError, match=gone):
        scheduled(backups)


def test_load_item_fails_when_the_gate_never_ran_on_the_target(can_fail: CanFail) -> None:
    can_fail.assert_fails("gate never ran")


def test_load_item_fails_when_requests_failed_during_the_gates_update(can_fail: CanFail) -> None:
    can_fail.assert_fails("gate saw failed requests")


def test_load_item_with_run_load_fails_when_the_gate_records_nothing(can_fail: CanFail) -> None:
    run = can_fail.assert_fails("gate records nothing")
    assert run.items == {"load": "FAIL"}, run.output[-_TAIL:]


def test_rollback_item_fails_when_the_release_history_is_unreadable(can_fail: CanFail) -> None:
    can_fail.assert_fails("history unreadable")


def test_rollback_item_fails_when_the_release_to_return_to_was_pruned(can_fail: CanFail) -> None:
    can_fail.assert_fails("release pruned")
