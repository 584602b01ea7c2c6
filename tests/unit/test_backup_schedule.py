"""The daily job's crontab entry and systemd units, rendered (installing them is an integration test)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from finaiflow_ops.backup.archive import backups_of, default_directory
from finaiflow_ops.backup.schedule import MARK, Job, daily_job, unit_name, without_block
from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

JOB = Job("/opt/ops/bin/finaiflow-ops", "/srv/finaiflow", "/srv/finaiflow/backups")


def test_cron_entry_runs_backup_then_prune_at_two_with_a_log() -> None:
    marker, line = JOB.cron_block().splitlines()
    assert marker == f"{MARK} /srv/finaiflow"
    assert line.startswith("0 2 * * * { ")
    command = line.removeprefix("0 2 * * * ")
    assert "backup create --dir /srv/finaiflow/backups && " in command
    assert command.index("backup create") < command.index("backup prune")  # prune only after a backup
    # the pgBackRest backup (full or differential) after the pg_dump one, before the prune
    physical = command.index(" backup physical && ")
    assert command.index("backup create") < physical < command.index("backup prune")
    assert "--yes" in command and "--keep-days 30" in command
    assert command.endswith("; } >>/srv/finaiflow/backups/schedule.log 2>&1")


def test_cron_entry_quotes_paths_and_escapes_percent_signs() -> None:
    job = Job("/opt/ops/bin/finaiflow-ops", "/srv/my stack", "/srv/100% backups", at="23:05", keep_days=7)
    line = job.cron_block().splitlines()[1]
    assert line.startswith("5 23 * * * ")
    assert "'/srv/my stack'" in line
    assert "'/srv/100\\% backups'" in line and "100% " not in line  # cron reads a bare % as a newline
    # The command itself (before cron's escaping) parses back to the same arguments.
    argv = shlex.split(job.command())
    assert argv[:3] == ["/opt/ops/bin/finaiflow-ops", "--project-dir", "/srv/my stack"]


def test_the_job_can_copy_each_backup_and_notify_on_failure() -> None:
    job = Job("/opt/ops/bin/finaiflow-ops", "/srv/f", "/srv/f/backups", copy_to="/mnt/offsite",
              notify='echo "$FINAIFLOW_BACKUP_ERROR" | mail -s backup ops@example.org')
    create, physical, prune = job.command().split(" && ")
    assert "--copy-to /mnt/offsite" in create and "--copy-to" not in prune and "--copy-to" not in physical
    hook = shlex.quote('echo "$FINAIFLOW_BACKUP_ERROR" | mail -s backup ops@example.org')
    assert create.endswith(f"--notify {hook}") and prune.endswith(f"--notify {hook}")
    assert physical.endswith(f"backup physical --notify {hook}")
    with pytest.raises(UsageError, match="copy directory"):
        Job("/usr/bin/finaiflow-ops", "/srv/f", "/srv/f/b", copy_to="offsite")


def test_removing_the_block_keeps_every_other_entry() -> None:
    other_stack = Job("/opt/ops/bin/finaiflow-ops", "/srv/other", "/srv/other/backups").cron_block()
    crontab = "MAILTO=ops@example.org\n15 * * * * /usr/local/bin/rotate\n" + JOB.cron_block() + other_stack
    assert without_block(crontab, "/srv/finaiflow") == (
        "MAILTO=ops@example.org\n15 * * * * /usr/local/bin/rotate\n" + other_stack)
    assert without_block(crontab, "/srv/nothing-here") == crontab


def test_systemd_units_are_a_persistent_daily_timer_and_a_oneshot_service() -> None:
    units = JOB.systemd_units()
    service, timer = units[f"{JOB.unit}.service"], units[f"{JOB.unit}.timer"]
    assert "OnCalendar=*-*-* 02:00:00" in timer and "Persistent=true" in timer
    assert "WantedBy=timers.target" in timer
    assert "Type=oneshot" in service and "After=docker.service" in service
    exec_start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    assert shlex.split(exec_start.removeprefix("ExecStart="))[:2] == ["/bin/sh", "-c"]
    assert shlex.split(exec_start.removeprefix("ExecStart="))[2] == JOB.command()
    assert "StandardOutput=append:/srv/finaiflow/backups/schedule.log" in service


def test_unit_names_are_stable_and_unique_per_project_directory() -> None:
    assert unit_name("/srv/finaiflow") == unit_name("/srv/finaiflow")
    assert unit_name("/srv/finaiflow") != unit_name("/opt/finaiflow")
    assert unit_name("/srv/finaiflow").startswith("finaiflow-backup-finaiflow-")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"at": "2am"}, "bad time"),
    ({"at": "24:00"}, "bad time"),
    ({"project_dir": "stack"}, "project dir 'stack' must be an absolute path"),
    ({"directory": "backups"}, "backup dir 'backups' must be an absolute path"),
])
def test_bad_jobs_are_usage_errors(kwargs: dict[str, str], message: str) -> None:
    fields = {"executable": "/usr/bin/finaiflow-ops", "project_dir": "/srv/f", "directory": "/srv/f/b",
              **kwargs}
    with pytest.raises(UsageError, match=message):
        Job(**fields)


# -- the job `backup schedule` installs, built by the library ------------------------------------------

AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


@pytest.fixture
def ops(tmp_path: Path) -> str:
    executable = tmp_path / "finaiflow-ops"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    return str(executable)


def test_backups_are_kept_in_the_project_directory_by_default() -> None:
    assert backups_of("/srv/finaiflow") == backups_of("/srv/finaiflow/") == "/srv/finaiflow/backups"
    local = Stack(Target.parse("local://"), "/srv/finaiflow")
    assert default_directory(local) == Path("/srv/finaiflow/backups")
    with pytest.raises(UsageError, match="must be named"):
        default_directory(Stack(Target.parse("ssh://vps"), "/srv/finaiflow"))


def test_the_daily_job_backs_up_into_the_project_directory_by_default(ops: str) -> None:
    job = daily_job(Target.parse("local://"), "/srv/finaiflow", executable=ops)
    assert job == Job(ops, "/srv/finaiflow", "/srv/finaiflow/backups")
    other = daily_job(Target.parse("local://"), "/srv/finaiflow", directory="/mnt/b", at="03:30", keep_days=7,
                      executable=ops, notify="true")
    assert (other.directory, other.at, other.keep_days, other.notify) == ("/mnt/b", "03:30", 7, "true")


def test_the_daily_job_hands_ssh_copies_and_keys_to_backup_create(ops: str) -> None:
    job = daily_job(Target.parse("local://"), "/srv/f", executable=ops, copy_to="ssh://vault/srv/b",
                    encrypt_to=[AGE_KEY])
    assert job.copy_to == ""
    assert job.create_options == ("--encrypt-to", AGE_KEY, "--copy-to", "ssh://vault/srv/b")
    create, physical, prune = job.command().split(" && ")
    assert f"--encrypt-to {AGE_KEY}" in create and "--copy-to ssh://vault/srv/b" in create
    assert "--encrypt-to" not in prune and "--encrypt-to" not in physical


def test_the_daily_job_copies_to_a_directory_itself(ops: str) -> None:
    job = daily_job(Target.parse("local://"), "/srv/f", executable=ops, copy_to="/mnt/offsite")
    assert job.copy_to == "/mnt/offsite" and job.create_options == ()


def test_the_daily_job_refuses_what_the_target_cannot_run(ops: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not installed"):
        daily_job(Target.parse("local://"), "/srv/f", executable=str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="neither a public key nor a file"):
        daily_job(Target.parse("local://"), "/srv/f", executable=ops, encrypt_to=["not-a-key"])
    with pytest.raises(UsageError, match="absolute"):
        daily_job(Target.parse("local://"), "srv/f", executable=ops)
