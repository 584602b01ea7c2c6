"""The operator's whole flow against a VPS that is really remote (tests/remote_support.py: its own
Docker engine, sshd and filesystem at 127.0.0.2), through the CLI as an operator types it, with
the host named by an alias of the test's own ssh config (Port 2222, not 22).

The tests run in order and build on each other, as an operator's session does: host setup, image
push, env generate, `stack up --staging`, deploys and rollbacks under load, backup, full restore
and undo, drill, check, the checklist and the load gate, then the faults.

The VPS is Debian 12 with its own engine, cron and age, but no compose v2 and no finaiflow-ops, and
it cannot reach the package index: what `host setup` installs there comes through apt (compose v2,
from trixie) or over the SSH connection (finaiflow-ops's wheels). The second run must change
nothing; `image push` must send an image once, then skip it by id, and tag rather than re-send
an id the host has under another name.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loadtests.gate import traffic

from finaiflow_ops.backup.database import Database
from finaiflow_ops.backup.manifest import read_manifest
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.integration.backups_support import commits_either_side
from tests.remote_support import RemoteVps, remote_vps
from tests.swarm_support import IMAGES, REPO

PROJECT = "/opt/finaiflow"
RELEASES = ("finaiflow/api:1.0.0", "finaiflow/api:1.1.0")
DOMAIN = "staging.finaiflow.test"
TIMES: dict[str, list[dict[str, float]]] = {}


@pytest.fixture(scope="module")
def vps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteVps]:
    with remote_vps(tmp_path_factory.mktemp("remote-vps")) as host:
        yield host


def ops(vps: RemoteVps, *args: str, timeout: float = 600, env: Mapping[str, str] | None = None,
        target: str | None = None) -> subprocess.CompletedProcess[str]:
    """`finaiflow-ops --target VPS --project-dir /opt/finaiflow ARGS`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", target or vps.url, "--project-dir", PROJECT,
         *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})})


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    return done


def remote_stack(vps: RemoteVps) -> Stack:
    return Stack(Target.parse(vps.url), PROJECT)


# -- setting the host up -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    seconds: float

    def json(self) -> Any:
        assert self.result.returncode == 0, f"exit {self.result.returncode}: {self.result.stderr[-3000:]}"
        return json.loads(self.result.stdout)


def timed(vps: RemoteVps, *args: str) -> Run:
    """`finaiflow-ops --target VPS ARGS` (no --project-dir: `host setup` is given its own), timed."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", "--target", vps.url, *args],
                            capture_output=True, text=True, timeout=1200, check=False)
    return Run(result, time.monotonic() - started)


@pytest.fixture(scope="module")
def first_setup(vps: RemoteVps) -> Run:
    assert vps.ssh("docker", "compose", "version").returncode != 0, "the VPS should start without compose v2"
    assert vps.ssh("sh", "-c", "command -v finaiflow-ops").returncode != 0
    # Without --dir a backup is the host's, taken by its own finaiflow-ops: none yet.
    on_host = ops(vps, "backup", "create")
    said = last_line(on_host)
    assert on_host.returncode == 2, said
    assert "finaiflow-ops is not installed on" in said and "host setup" in said, said
    return timed(vps, "--yes", "--json", "host", "setup", "--project-dir", PROJECT)


def test_setup_installs_compose_v2_and_a_working_finaiflow_ops_on_the_host(
        vps: RemoteVps, first_setup: Run) -> None:
    print(f"host setup, first run: {first_setup.seconds:.1f} s")  # shown with pytest -s
    done = first_setup.json()
    compose = vps.ssh("docker", "compose", "version", "--short")
    assert compose.returncode == 0, f"no compose v2 on the VPS after setup: {compose.stderr}"
    assert done["compose"] == compose.stdout.strip() and done["compose"].startswith("2.")

    # finaiflow-ops runs ON the host, from PATH, as the daily backup's cron entry will run it.
    version = importlib.metadata.version("finaiflow-ops")
    there = vps.ssh("finaiflow-ops", "--version")
    assert there.stdout.strip() == f"finaiflow-ops, version {version}", there.stderr
    assert done["finaiflow_ops"] == version and done["sent_bytes"] > 0

    mode = vps.ssh("stat", "-c", "%a %U", PROJECT).stdout.split()
    assert mode == ["750", "root"], f"{PROJECT} on the VPS: {mode}"
    # Only that changed: the engine, cron and age were in place, and are not reported.
    changes = [re.sub(r" \([0-9a-f]{12}\)$", "", change) for change in done["changes"]]  # the wheel's digest
    assert changes == [f"installed compose v2 {done['compose']}", f"installed finaiflow-ops {version}",
                       f"created {PROJECT} (mode 0750, owner root)"]


def test_a_second_setup_changes_nothing_and_sends_nothing(
        vps: RemoteVps, first_setup: Run) -> None:
    first_setup.json()
    # --project-dir before the command this time, as `ops` passes it: the same directory.
    second = timed(vps, "--project-dir", PROJECT, "--yes", "--json", "host", "setup")
    print(f"host setup, second run: {second.seconds:.1f} s")
    done = second.json()
    assert done["changes"] == [] and done["changed"] is False, done["changes"]
    assert done["sent_bytes"] == 0
    assert "installing finaiflow-ops" not in second.result.stderr
    text = timed(vps, "--yes", "host", "setup").result
    assert text.returncode == 0 and "nothing changed" in text.stdout, text.stderr


# -- image push ---------------------------------------------------------------------------------------

def test_image_push_sends_what_the_host_lacks_and_skips_the_rest(vps: RemoteVps) -> None:
    first = ok(ops(vps, "--json", "image", "push", *IMAGES, timeout=900))
    pushed = json.loads(first.stdout)
    sent = {i["image"] for i in pushed["images"] if i["action"] != "skipped"}
    assert sent == set(IMAGES), pushed
    again = json.loads(ok(ops(vps, "--json", "image", "push", *IMAGES)).stdout)
    assert {i["action"] for i in again["images"]} == {"skipped"}, again


def test_a_missing_local_image_is_refused_naming_it(vps: RemoteVps) -> None:
    done = ops(vps, "image", "push", "finaiflow/api:0.0.0-missing")
    assert done.returncode == 2 and "finaiflow/api:0.0.0-missing" in last_line(done), done.stderr


def _local_docker(*args: str, input: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *args], input=input, capture_output=True, check=True, timeout=120,
                          env=env).stdout.decode().strip()


@pytest.fixture
def small_image() -> Iterator[str]:
    """An image of this test's own on this machine (one small file, so a new id each run)."""
    token = secrets.token_hex(6)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = f"push test {token}\n".encode() * 1000
        info = tarfile.TarInfo("push-test.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    name = f"finaiflow/push-test:{token}"
    _local_docker("import", "-", name, input=archive.getvalue())
    try:
        yield name
    finally:
        _local_docker("image", "rm", "-f", name, f"{name}-again")


def test_push_sends_an_image_once_then_skips_it_and_tags_a_known_id(
        vps: RemoteVps, small_image: str) -> None:
    local_id = _local_docker("image", "inspect", "-f", "{{.Id}}", small_image)

    first = timed(vps, "--json", "image", "push", small_image).json()
    print(f"image push: {first['bytes']} bytes sent in {first['seconds']:.1f} s")
    pushed = [(i["image"], i["image_id"], i["action"]) for i in first["images"]]
    assert pushed == [(small_image, local_id, "pushed")]
    assert 0 < first["bytes"] < first["image_bytes"], first  # gzip on the way
    there = vps.ssh("docker", "image", "inspect", "-f", "{{.Id}}", small_image)
    assert there.stdout.strip() == local_id, there.stderr

    again = timed(vps, "--json", "image", "push", small_image).json()
    assert ([i["action"] for i in again["images"]], again["bytes"]) == (["skipped"], 0)

    # The same id under another name: tagged on the host, not sent again.
    _local_docker("tag", small_image, f"{small_image}-again")
    tagged = timed(vps, "--json", "image", "push", small_image, f"{small_image}-again").json()
    assert ([i["action"] for i in tagged["images"]], tagged["bytes"]) == (["skipped", "tagged"], 0)
    there = vps.ssh("docker", "image", "inspect", "-f", "{{.Id}}", f"{small_image}-again")
    assert there.stdout.strip() == local_id, there.stderr


def test_push_of_a_missing_local_image_is_a_usage_error_and_sends_nothing(
        vps: RemoteVps, small_image: str) -> None:
    missing = f"finaiflow/never-built:{secrets.token_hex(4)}"
    done = timed(vps, "image", "push", small_image, missing).result
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no image {missing} on this machine"), last
    assert vps.ssh("docker", "image", "inspect", small_image).returncode != 0, "the image present was sent"


def test_env_generate_writes_the_env_on_the_host_mode_0600(vps: RemoteVps) -> None:
    compose = (REPO / "stack" / "compose.yaml").read_text()
    assert vps.ssh("sh", "-c", f"cat >{PROJECT}/compose.yaml", input=compose).returncode == 0
    ok(ops(vps, "env", "generate", "--domain", DOMAIN, "--bind", "0.0.0.0",  # noqa: S104 - the VPS publishes it at its own address
           "--rate-limit", "2000"))
    mode = vps.ssh("stat", "-c", "%a", f"{PROJECT}/.env")
    assert mode.stdout.strip() == "600", mode
    assert not Path(PROJECT, ".env").exists(), "the .env landed on this machine"
    again = ops(vps, "env", "generate")
    assert again.returncode == 2 and "already exists" in last_line(again), again.stderr


def test_stack_up_staging_brings_the_stack_up_on_the_host(vps: RemoteVps) -> None:
    ok(ops(vps, "stack", "up", "--staging", timeout=900))
    status = json.loads(ok(ops(vps, "--json", "stack", "status")).stdout)
    assert all(c["health"] in ("healthy", "none") for s in status["services"] for c in s["containers"])
    assert any(url.startswith(f"https://{vps.address}") for url in status["urls"]), status["urls"]
    listing = json.loads(ok(ops(vps, "--json", "backup", "list")).stdout)
    assert listing["newest_verified"] and listing["directory"].startswith(PROJECT), listing
    assert "backup create" in vps.ssh("crontab", "-l").stdout


# -- deploys and rollbacks under load ------------------------------------------------------------------

def _timed(vps: RemoteVps, kind: str, *args: str, on_host: bool = False) -> dict[str, Any]:
    """A deploy or rollback with --json, over SSH from here, or (on_host) by the host's own
    finaiflow-ops on a local target: the same deploy without the network in between."""
    if on_host:
        done = ok(vps.ssh("finaiflow-ops", "--project-dir", PROJECT, "--json", *args, timeout=600))
    else:
        done = ok(ops(vps, "--json", *args, timeout=600))
    result: dict[str, Any] = json.loads(done.stdout)
    TIMES.setdefault(f"{kind} {'on the host' if on_host else 'over ssh'}", []).append(
        {"switch": result["switch_seconds"], "total": result["total_seconds"],
         "ssh_connections": result["ssh_connections"]})
    return result


def test_deploys_and_rollbacks_under_load_drop_no_request_over_one_connection(vps: RemoteVps) -> None:
    with traffic(f"https://{vps.address}", users=8, max_seconds=600, servername=DOMAIN) as samples:
        time.sleep(3)
        for on_host in (False, True):  # over ssh, then by the host's own finaiflow-ops
            deployed = _timed(vps, "deploy", "deploy", "api", "--image", RELEASES[1], "--no-backup",
                              on_host=on_host)
            rolled = _timed(vps, "rollback", "rollback", "api", on_host=on_host)
            assert deployed["ssh_connections"] == rolled["ssh_connections"] == (0 if on_host else 1)
            assert rolled["total_seconds"] < 10, rolled["total_seconds"]
        time.sleep(2)
    done = samples()
    failed = [s for s in done if s.error]
    assert len(done) > 200 and not failed, f"{len(failed)} of {len(done)} failed: {failed[:3]}"
    report = {"requests": len(done), "failed": len(failed), "runs": TIMES}
    out = REPO / "reports" / "remote-deploy.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nremote VPS, deploy and rollback (s): {json.dumps(TIMES)}; {len(done)} requests, 0 failed")


# -- backups -----------------------------------------------------------------------------------------------

def test_backup_restore_undo_and_drill_on_the_host(vps: RemoteVps) -> None:
    made = json.loads(ok(ops(vps, "--json", "backup", "create")).stdout)
    assert made["path"].startswith(f"{PROJECT}/backups/"), made["path"]
    assert vps.ssh("test", "-s", made["path"]).returncode == 0
    restored = json.loads(ok(ops(vps, "--json", "--yes", "restore", made["path"])).stdout)
    assert restored["tables"] and restored["previous"], restored
    ok(ops(vps, "--yes", "restore", "undo"))
    drill = json.loads(ok(ops(vps, "--json", "restore", "drill")).stdout)
    assert drill["tables"] == made["manifest"]["tables"], drill


def test_backup_drill_and_restore_keep_the_archive_on_this_machine(vps: RemoteVps, tmp_path: Path) -> None:
    """--dir here: pg_dump runs on the host and the archive streams to this machine; the drill and a
    full restore read it from here, and the data the restore replaces is kept here too."""
    st = remote_stack(vps)
    made = ok(ops(vps, "--json", "backup", "create", "--dir", str(tmp_path)))
    path = Path(json.loads(made.stdout)["path"])
    assert path.parent == tmp_path and f"on {vps.url}" in made.stderr, made.stderr  # dumped there, kept here
    assert read_manifest(path).tables == Database.of(st).table_counts()
    drill = json.loads(ok(ops(vps, "--json", "restore", "drill", "--dir", str(tmp_path))).stdout)
    assert drill["tables"] == dict(read_manifest(path).tables)
    assert Database.of(st).databases(f"{read_manifest(path).database}_drill_") == []

    st.psql("CREATE TABLE after_the_backup (x int)")
    set_aside: list[str] = []
    try:
        restored = ok(ops(vps, "--yes", "--json", "restore", str(path), "--dir", str(tmp_path)))
        result = json.loads(restored.stdout)
        assert st.psql("SELECT to_regclass('after_the_backup') IS NULL") == [["t"]]
        assert Path(result["safety_backup"]).parent == tmp_path  # the data it replaced, kept here
        assert result["tables"] == dict(read_manifest(path).tables)
        set_aside.append(json.loads(ok(ops(vps, "--yes", "--json", "restore", "undo")).stdout)["set_aside"])
        assert st.psql("SELECT to_regclass('after_the_backup') IS NULL") == [["f"]]
    finally:
        st.psql("DROP TABLE IF EXISTS after_the_backup")
        for name in set_aside:
            st.psql(f'DROP DATABASE IF EXISTS "{name}"')


def test_point_in_time_restore_on_the_host(vps: RemoteVps) -> None:
    """pgBackRest over SSH: a physical backup taken and listed, rows committed on either side of
    an instant, and `restore --to-time` that instant brings back exactly the rows before it."""
    made = ok(ops(vps, "backup", "physical", "--type", "full"))
    assert "pgBackRest full backup" in made.stdout, made.stdout
    listed = json.loads(ok(ops(vps, "--json", "backup", "archive")).stdout)
    assert listed["backups"], listed
    st = remote_stack(vps)
    table = "remote_pitr_probe"
    try:
        instant = commits_either_side(st.psql, table)
        restored = ok(ops(vps, "--yes", "restore", "--to-time", instant.isoformat()))
        print(f"\nremote restore --to-time: {restored.stdout.strip()[-400:]}")
        assert "downtime" in restored.stdout, restored.stdout
        assert [int(r[0]) for r in st.psql(f"SELECT id FROM {table} ORDER BY id")] == [1]  # noqa: S608
    finally:
        st.psql(f"DROP TABLE IF EXISTS {table}")


def test_check_passes_on_the_remote_stack(vps: RemoteVps) -> None:
    done = ops(vps, "check", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_releases_lock_logs_and_harden_audit_work_over_ssh(vps: RemoteVps) -> None:
    history = json.loads(ok(ops(vps, "--json", "releases", "api")).stdout)
    assert len(history["releases"]) >= 2, history
    lock = json.loads(ok(ops(vps, "--json", "lock", "status")).stdout)
    assert lock["lock"] is None, lock
    logs = ok(ops(vps, "logs", "api", "--since", "10m"))
    secret = vps.ssh("sh", "-c", f"grep ^POSTGRES_PASSWORD= {PROJECT}/.env | cut -d= -f2-").stdout.strip()
    assert logs.stdout.strip() and secret and secret not in logs.stdout + logs.stderr
    audit = ops(vps, "--json", "harden", "audit", timeout=300)
    assert audit.returncode in (0, 1), audit.stderr[-1500:]  # 1: high-severity rules fail (not hardened)
    report = json.loads(audit.stdout)
    assert report["findings"] and all(f["status"] != "error" for f in report["findings"]), report


def test_standby_schedule_installs_the_hosts_own_retirement_job_and_removes_it(vps: RemoteVps) -> None:
    # In the host's crontab, running the host's finaiflow-ops (as `host setup` installed it).
    installed = json.loads(ok(ops(vps, "--yes", "--json", "standby", "schedule", "api")).stdout)
    assert installed["scheduler"] == "cron" and installed["changed"] is True, installed
    there = vps.ssh("sh", "-c", "command -v finaiflow-ops").stdout.strip()
    crontab = vps.ssh("crontab", "-l").stdout
    assert f"{there} --project-dir {PROJECT} --yes standby retire api --expired" in crontab, crontab
    assert crontab.count("standby retire api") == 1 and "backup create" in crontab, crontab  # the rest kept
    # What cron will run, run there now: the standby's window has not ended, nothing to retire.
    command = installed["entry"].split(" ", 5)[5]
    assert vps.ssh("sh", "-c", command).returncode == 0
    ok(ops(vps, "--yes", "standby", "schedule", "api", "--remove"))
    crontab = vps.ssh("crontab", "-l").stdout
    assert "standby retire" not in crontab and "backup create" in crontab, crontab


def test_the_checklist_and_the_load_gate_pass_against_the_remote_staging(vps: RemoteVps) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "acceptance"),
         "--target", vps.url, "--project-dir", PROJECT, "--base-url", f"https://{vps.address}",
         "--allow-destructive", "--run-load"],
        capture_output=True, text=True, timeout=1200, check=False, cwd=REPO)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    assert done.returncode == 0, done.stdout[-4000:]
    assert " failed" not in summary and "passed" in summary and "deselected" not in summary, summary
    verdict = json.loads(remote_stack(vps).target.read_text(f"{PROJECT}/.finaiflow/loadgate.json"))
    assert verdict["passed"], verdict["problems"]
    # The whole gate and the whole checklist: the suite's local checklist runs the gate without the
    # runbook's baseline and leaves out the rollback drills (noxfile.py), which are proven here.
    phases = [w["phase"] for w in verdict["windows"]]
    assert {"update", "rollback", "runbook", "restore"} <= set(phases), phases


# -- TLS from an ACME server ------------------------------------------------------------------------

PEBBLE = """set -eu
command -v pebble >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \\
  apt-get install -y -qq --no-install-recommends pebble >/dev/null; }
cd /root/pebble
printf '%s' '{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "/root/pebble/cert.pem", "privateKey": "/root/pebble/key.pem", "httpPort": 80,
 "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}' >pebble.json
setsid nohup pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 127.0.0.1:8053 -http01 "" \\
  -https01 "" -tlsalpn01 "" -management 127.0.0.1:8055 >challtestsrv.log 2>&1 </dev/null &
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \\
  setsid nohup pebble -config pebble.json -dnsserver 127.0.0.1:8053 >pebble.log 2>&1 </dev/null &
for _ in $(seq 1 150); do
  curl -sf --cacert listener-ca.pem https://127.0.0.1:14000/dir >/dev/null && break; sleep 0.2
done
curl -sf --cacert listener-ca.pem https://127.0.0.1:15000/roots/0 >root.pem
"""


def test_tls_issue_runs_certbot_on_the_host_and_nginx_serves_the_certificate(vps: RemoteVps) -> None:
    """pebble (Let's Encrypt's test server) on the VPS itself, validating through the stack's nginx
    there; certbot is the one `host setup` installed beside finaiflow-ops."""
    import trustme

    listener = trustme.CA()
    cert = listener.issue_cert("127.0.0.1")
    files = {"cert.pem": cert.cert_chain_pems[0].bytes(), "key.pem": cert.private_key_pem.bytes(),
             "listener-ca.pem": listener.cert_pem.bytes()}
    assert vps.ssh("mkdir", "-p", "/root/pebble").returncode == 0
    for name, data in files.items():
        assert vps.ssh("sh", "-c", f"cat >/root/pebble/{name}", input=data.decode()).returncode == 0
    started = vps.ssh("sh", "-c", PEBBLE, timeout=300)
    assert started.returncode == 0, started.stderr + vps.ssh("cat", "/root/pebble/pebble.log").stdout
    try:
        done = ok(ops(vps, "--json", "--yes", "tls", "issue", "--server", "https://127.0.0.1:14000/dir",
                      "--ca-bundle", "/root/pebble/listener-ca.pem", "--ca-file", "/root/pebble/root.pem",
                      "--email", "ops@finaiflow.test", timeout=300))
        issued = json.loads(done.stdout)
        assert issued["method"] == "webroot" and issued["installed"], issued
        assert issued["certificate"]["issuer"].startswith("CN=Pebble Intermediate CA"), issued
    finally:
        vps.ssh("pkill", "-f", "pebble")


# -- faults ------------------------------------------------------------------------------------------------

def test_a_connection_killed_mid_deploy_is_exit_3_and_the_next_command_repairs(vps: RemoteVps) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", vps.url, "--project-dir", PROJECT,
         "deploy", "api", "--image", RELEASES[1], "--no-backup"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        # Once the new containers start, cut every ssh session the VPS serves (as a network loss would).
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if not line or "starting" in line or "waiting" in line:
                break
        vps.docker_exec("pkill", "-KILL", "-f", "sshd: root")
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    stderr = "".join(seen) + rest
    print(f"\nthe deploy cut short said: {stderr.strip()[-800:]}")
    assert proc.returncode == 3, f"exit {proc.returncode}: {stderr[-2000:]}"
    last = stderr.strip().splitlines()[-1]
    assert vps.url in last and "was lost" in last and "last step reached: " in last, last
    # A new connection reads the host as the cut left it: a container of the new release that the
    # host's own `compose up` still started after the cut is "starting" or "created" (exit 1 then).
    seen_after = ops(vps, "--json", "stack", "status")
    assert seen_after.returncode in (0, 1) and json.loads(seen_after.stdout)["services"], seen_after.stderr
    # The next deploy finds what was left and repairs it before doing its own work; all is healthy then.
    rolled = json.loads(ok(ops(vps, "--json", "deploy", "api", "--image", RELEASES[0], "--no-backup",
                               timeout=600)).stdout)
    assert rolled["release"]["image"] == RELEASES[0]
    assert json.loads(ok(ops(vps, "--json", "stack", "status")).stdout)["healthy"] is True


def test_a_wrong_key_is_a_one_line_error_exit_3(vps: RemoteVps, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    config = tmp_path / "ssh_config"  # the test's config, with a key the VPS does not know
    config.write_text(vps.ssh_config.read_text().replace(str(vps.key), str(other)))
    done = ops(vps, "stack", "status", target=f"ssh://vps?ssh_config={config}", env={"SSH_AUTH_SOCK": ""})
    assert done.returncode == 3 and "Permission denied" in last_line(done), done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_a_changed_host_key_is_refused_exit_3(vps: RemoteVps, tmp_path: Path) -> None:
    saved = vps.known_hosts.read_text()
    fake = tmp_path / "fake_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(fake)], check=True)
    kind, key = Path(f"{fake}.pub").read_text().split()[:2]
    try:  # known_hosts says the VPS has another key: a man in the middle, as far as ssh can tell
        vps.known_hosts.write_text(f"[{vps.address}]:{vps.ssh_port} {kind} {key}\n")
        done = ops(vps, "stack", "status")
        assert done.returncode == 3 and "host key" in last_line(done).lower(), done.stderr
    finally:
        vps.known_hosts.write_text(saved)
