"""backup schedule for real: Debian's cron in a throwaway container, and the job's command run here.

The container is the base image with Debian's `cron` package added (downloaded with this host's
apt, installed with dpkg: containers cannot reach the archive), reached as a docker:// target.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finaiflow_ops.backup import list_backups
from finaiflow_ops.backup.schedule import MARK, Job, resolve_executable
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.integration.backups_support import cli, error_line

pytestmark = pytest.mark.integration
BASE_IMAGE = "finaiflow/base:bookworm"
STAND_IN = "/usr/local/bin/finaiflow-ops"  # the target's installation; the job itself is run below
USER_ENTRY = "*/5 * * * * /usr/bin/true # someone else's job\n"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def cron_debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("debs")
    got = subprocess.run(["apt-get", "download", "-q", "cron-daemon-common", "cron"], cwd=where,
                         capture_output=True, text=True, timeout=120, check=False)
    assert got.returncode == 0, f"apt-get download cron failed: {got.stderr[-500:]}"
    return where


def start_container(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    # tini as PID 1 reaps exited daemons, as an init does on a real host.
    docker("run", "-d", "--rm", "--name", name, "--label", "finaiflow-ops.test=backup-schedule", BASE_IMAGE,
           "tini", "--", "sleep", "900")
    return name


@pytest.fixture(scope="module")
def cron_host(cron_debs: Path) -> Iterator[str]:
    """A Debian host with cron running, a crontab holding someone else's entry, finaiflow-ops installed."""
    name = start_container("finaiflow-ops-cron")
    try:
        docker("cp", f"{cron_debs}/.", f"{name}:/tmp/debs")
        # cron pre-depends on cron-daemon-common: one dpkg call each, in that order.
        setup = ("dpkg -i /tmp/debs/cron-daemon-common_*.deb >/dev/null"
                 " && dpkg -i /tmp/debs/cron_*.deb >/dev/null 2>&1 && cron"
                 """ && printf '#!/bin/sh\\nexit 0\\n' >"$2" && chmod +x "$2" """
                 """&& printf '%s' "$1" | crontab -""")
        done = docker("exec", name, "sh", "-c", setup, "setup", USER_ENTRY, STAND_IN, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def crontab(host: str) -> str:
    return docker("exec", host, "crontab", "-l").stdout


def schedule(host: str, project_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--target", f"docker://{host}", "--project-dir", project_dir, "--yes", *args)


def test_schedule_installs_one_entry_idempotently_and_remove_takes_out_only_ours(cron_host: str) -> None:
    first = schedule(cron_host, "/srv/finaiflow", "backup", "schedule", "--executable", STAND_IN)
    assert first.returncode == 0, first.stderr
    assert "installed (changed), scheduler cron" in first.stdout
    installed = crontab(cron_host)
    assert installed.startswith(USER_ENTRY)
    entry = f"0 2 * * * {{ {STAND_IN} --project-dir /srv/finaiflow --yes backup create"
    assert f"{MARK} /srv/finaiflow\n{entry}" in installed

    again = schedule(cron_host, "/srv/finaiflow", "backup", "schedule", "--executable", STAND_IN)
    assert again.returncode == 0 and "(already so)" in again.stdout
    assert crontab(cron_host) == installed

    other = schedule(cron_host, "/srv/other", "backup", "schedule", "--executable", STAND_IN, "--at", "03:30")
    assert other.returncode == 0, other.stderr
    status = schedule(cron_host, "/srv/finaiflow", "--json", "backup", "schedule", "--status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) | {"entry": ""} == {
        "target": f"docker://{cron_host}", "project_dir": "/srv/finaiflow", "scheduler": "cron",
        "installed": True, "running": True, "entry": "", "changed": False, "ok": True}

    removed = schedule(cron_host, "/srv/finaiflow", "backup", "schedule", "--remove")
    assert removed.returncode == 0, removed.stderr
    left = crontab(cron_host)
    assert left.startswith(USER_ENTRY) and "/srv/finaiflow" not in left
    assert f"{MARK} /srv/other\n30 3 * * * " in left
    gone = schedule(cron_host, "/srv/finaiflow", "backup", "schedule", "--status")
    assert gone.returncode == 1
    assert "will not run: it is not installed" in error_line(gone)


def test_status_fails_when_cron_is_not_running(cron_host: str) -> None:
    assert schedule(cron_host, "/srv/x", "backup", "schedule", "--executable", STAND_IN).returncode == 0
    docker("exec", cron_host, "sh", "-c", 'kill "$(cat /run/crond.pid)"')
    try:
        result = schedule(cron_host, "/srv/x", "backup", "schedule", "--status")
        assert result.returncode == 1
        assert "will not run: cron is not running" in error_line(result)
    finally:
        docker("exec", cron_host, "cron")


def test_schedule_refuses_when_the_executable_is_missing(cron_host: str) -> None:
    result = schedule(cron_host, "/srv/finaiflow", "backup", "schedule", "--executable", "/no/finaiflow-ops")
    assert result.returncode == 2
    assert "finaiflow-ops is not installed on docker://" in error_line(result)


def test_schedule_refuses_a_host_with_neither_cron_nor_systemd() -> None:
    name = start_container("finaiflow-ops-nocron")
    try:
        result = schedule(name, "/srv/finaiflow", "backup", "schedule", "--executable", "/bin/true")
        assert result.returncode == 2
        assert "has neither systemd nor cron" in error_line(result)
    finally:
        docker("rm", "-f", name, check=False)


def test_the_scheduled_line_runs_here_in_crons_environment(stack: Stack, tmp_path: Path) -> None:
    job = Job(resolve_executable(Target.parse("local://"), None), stack.project_dir, str(tmp_path))
    line = job.cron_block().splitlines()[1]
    command = line.split(" ", 5)[5].replace(r"\%", "%")  # what cron hands to /bin/sh
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh",
                "LOGNAME": "root"}
    done = subprocess.run(["/bin/sh", "-c", command], env=cron_env, capture_output=True, text=True,
                          timeout=180, check=False)
    log = Path(job.log).read_text()
    assert done.returncode == 0, log
    newest = list_backups(tmp_path).newest_verified
    assert newest is not None, log
    assert "verified" in log and "kept" in log  # the create, then the prune, wrote to the log
