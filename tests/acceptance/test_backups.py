"""Checklist: backups configured (features/backups.feature).

Backup files live on the target, so the facts are read by running finaiflow-ops there (through
Target.run: the same code for local and ssh targets), and the schedule through the library.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pytest_bdd import given, scenarios, then, when

from finaiflow_ops.backup import schedule
from finaiflow_ops.backup.manifest import Manifest
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import CommandResult
from tests.acceptance.conftest import Staging

scenarios("backups.feature")

MAX_AGE_HOURS = 26


@dataclass(frozen=True)
class Backups:
    """The backups of the staging database, seen through finaiflow-ops on the target."""

    staging: Staging
    executable: str
    database: str

    def ops(self, *args: str) -> CommandResult:
        stack = self.staging.stack
        return stack.target.run(self.executable, "--project-dir", stack.project_dir, "--json", *args,
                                check=False, timeout=600)


@given("the backups of its database", target_fixture="backups")
def the_backups(staging: Staging) -> Backups:
    stack = staging.stack
    return Backups(staging, schedule.resolve_executable(stack.target, None),
                   stack.env.get("POSTGRES_DB", "finaiflow_db"))


@then("the daily backup and prune are installed in the target's scheduler, which is running")
def scheduled(backups: Backups) -> None:
    stack = backups.staging.stack
    seen = schedule.status(stack.target, stack.project_dir)
    problem = ("it has neither cron nor systemd" if seen.scheduler == "none"
               else f"no daily backup of {stack.project_dir} in its {seen.scheduler}" if not seen.installed
               else f"{seen.scheduler} is not running" if not seen.running else "")
    assert not problem, f"{backups.staging.name}: {problem}"
    if seen.scheduler == "cron":
        assert "backup create" in seen.entry and "backup prune" in seen.entry, (
            f"{backups.staging.name}: the daily job does not back up then prune: {seen.entry}")
    # An entry that runs a finaiflow-ops which is no longer there (a venv rebuilt elsewhere, an
    # uninstall) is installed and its scheduler runs, yet no backup is ever taken.
    executable = job_executable(stack, seen)
    assert stack.target.run("test", "-x", executable, check=False).ok, (
        f"{backups.staging.name}: the daily job runs {executable}, which is not an executable there")


def job_executable(stack: Stack, seen: schedule.ScheduleStatus) -> str:
    """The program the installed daily job runs: the first word of its command."""
    if seen.scheduler == "cron":
        command = seen.entry.splitlines()[-1].split(None, 5)[5].replace(r"\%", "%")
    else:
        unit_file = f"{schedule.SYSTEMD_DIR}/{schedule.unit_name(stack.project_dir)}.service"
        unit = stack.target.read_text(unit_file)
        exec_start = next((ln for ln in unit.splitlines() if ln.startswith("ExecStart=")), "ExecStart=")
        command = (shlex.split(exec_start.removeprefix("ExecStart=")) or ["", "", ""])[-1]  # /bin/sh -c CMD
    return next((word for word in shlex.split(command) if word != "{"), "(none)")


@then(f"the newest verified backup is younger than {MAX_AGE_HOURS} hours")
def newest_is_recent(backups: Backups) -> None:
    result = backups.ops("backup", "list", "--database", backups.database)
    assert result.ok, f"{backups.staging.name}: backup list failed: {result.stderr.strip()[-300:]}"
    listing = json.loads(result.stdout)
    newest = listing["newest_verified"]
    assert newest, (f"{backups.staging.name}: no verified backup of {backups.database} in "
                    f"{listing['directory']} ({len(listing['backups'])} file(s), none verified)")
    hours = newest["age_seconds"] / 3600
    assert hours < MAX_AGE_HOURS, (
        f"{backups.staging.name}: the newest verified backup of {backups.database} ({newest['name']}) is "
        f"{hours:.1f} h old (limit {MAX_AGE_HOURS} h)")


@when("I run a restore drill of the newest verified backup", target_fixture="drill")
def run_drill(backups: Backups) -> dict[str, Any]:
    result = backups.ops("restore", "drill")
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    assert result.ok, f"{backups.staging.name}: the restore drill failed: {last}"
    drill: dict[str, Any] = json.loads(result.stdout)
    return drill


@then("the drill restored every table with the row count of the backup's manifest")
def drill_matches(backups: Backups, drill: dict[str, Any]) -> None:
    target = backups.staging.stack.target
    manifest = Manifest.from_json(target.read_text(f"{drill['file']}.json"))
    assert drill["tables"] == dict(manifest.tables) and manifest.tables, (
        f"{backups.staging.name}: the drill of {drill['file']} restored {drill['tables']}, "
        f"its manifest says {dict(manifest.tables)}")


@when("I run a point-in-time drill of a random instant of the last 24 hours", target_fixture="pitr_drill")
def run_pitr_drill(backups: Backups) -> dict[str, Any]:
    result = backups.ops("restore", "drill", "--pitr")
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    assert result.ok, f"{backups.staging.name}: the point-in-time drill failed: {last}"
    drill: dict[str, Any] = json.loads(result.stdout)
    return drill


@then("the restored cluster held the same heartbeat rows as the database at that instant")
def pitr_drill_matches(backups: Backups, pitr_drill: dict[str, Any]) -> None:
    # The drill compares them itself and fails otherwise; a drill that compared nothing proves nothing.
    assert pitr_drill["heartbeats"] > 0, (
        f"{backups.staging.name}: no heartbeat row before {pitr_drill['target']}")
