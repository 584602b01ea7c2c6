"""A real multi-node swarm: three Docker engines in containers (docker-in-docker, from
stack/swarm-node), two managers and a worker on a network the test makes, the stack deployed with
3 api replicas spread over the nodes and the database on a labelled node; a rolling update and a
rollback under locust traffic (the swarm's one: test_swarm's single node has none of its own), a
backup taken from the database task on another node, point-in-time recovery on that node, and a
worker killed in the middle of an update.

How the nodes run without --privileged: tests/swarm_support.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from loadtests.gate import Sample, traffic

from finaiflow_ops import envfile
from tests.integration.backups_support import commits_either_side
from tests.rollout_support import failures
from tests.swarm_support import Cluster, cli, docker, free_port, make_project, ok, swarm_cluster

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

OLD, NEW = "finaiflow/api:1.0.0", "finaiflow/api:1.1.0"
PROJECT = "ffmulti"


@dataclass(frozen=True)
class Deployed:
    """The stack deployed on the cluster, from a project directory on this machine."""

    cluster: Cluster
    project: Path

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.cluster.nodes

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return cli(self.project, *args, env=self.cluster.env, timeout=timeout)

    def tasks(self, service: str) -> list[dict[str, str]]:
        return self.cluster.tasks(PROJECT, service)

    def base_url(self) -> str:
        return self.cluster.base_url(PROJECT)

    def on(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.on(node, *args)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if not request.config.getoption("--target").startswith("local"):
        pytest.skip("the multi-node swarm is made of containers on this machine's engine")
    with swarm_cluster("ffmulti", managers=2, workers=1) as c:
        leader, manager, _worker = c.nodes
        # The database lives on the second manager.
        docker("exec", leader, "docker", "node", "update", "--label-add", "finaiflow.db=true", manager)
        project = make_project(
            tmp_path_factory.mktemp("multinode") / "stack",
            PROJECT,
            https_port=free_port(),
            http_port=free_port(),
            prometheus_port=free_port(),
            extra={
                "API_REPLICAS": "3",
                "ALLOWED_HOSTS": ",".join(["staging.finaiflow.test", *c.addresses.values()]),
            },
        )
        # The ops exporter bind-mounts the project directory of the manager it runs on.
        docker("exec", leader, "mkdir", "-p", str(project))
        deployed = Deployed(c, project)
        started = time.monotonic()
        ok(deployed.cli("stack", "up", timeout=900))
        print(f"[multinode] stack up on 3 nodes: {time.monotonic() - started:.0f} s")
        yield deployed


def _nodes_of(c: Deployed, service: str) -> list[str]:
    return sorted(t["Node"] for t in c.tasks(service) if t["CurrentState"].startswith("Running"))


def test_api_replicas_spread_over_the_nodes_and_the_database_stays_on_its_node(cluster: Deployed) -> None:
    leader, manager, worker = cluster.nodes
    assert _nodes_of(cluster, "api") == sorted(cluster.nodes), cluster.tasks("api")
    assert _nodes_of(cluster, "postgres") == [manager]
    nodes = cluster.on(leader, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}").stdout
    roles = {line.partition(" ")[0]: line.partition(" ")[2] for line in nodes.splitlines()}
    assert roles[leader] == "Leader" and roles[manager] == "Reachable" and roles[worker] == "", roles
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{cluster.base_url()}/health").json()["database"] == "ok"


def _psql(c: Deployed, sql: str) -> str:
    """psql in the postgres task, on the node that runs it (the test's own way, not the library's)."""
    node = c.nodes[1]
    container = c.on(
        node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={PROJECT}_postgres"
    ).stdout
    return c.on(
        node,
        "exec",
        container.strip(),
        "psql",
        "-U",
        "finaiflow_user",
        "-d",
        "finaiflow_db",
        "-AtXq",
        "-c",
        sql,
    ).stdout.strip()


def test_backup_drill_and_restore_work_on_the_database_task_on_another_node(cluster: Deployed) -> None:
    made = json.loads(ok(cluster.cli("--json", "backup", "create")))
    assert Path(made["path"]).exists() and made["manifest"]["tables"], made
    drill = json.loads(ok(cluster.cli("--json", "restore", "drill")))
    assert drill["tables"] == made["manifest"]["tables"]
    _psql(cluster, "CREATE TABLE after_the_backup (x int)")
    ok(cluster.cli("--yes", "restore", made["path"]))
    assert _psql(cluster, "SELECT to_regclass('after_the_backup') IS NULL") == "t"
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{cluster.base_url()}/health").json()["database"] == "ok"


def _rows(c: Deployed, sql: str) -> list[list[str]]:
    return [line.split("|") for line in _psql(c, sql).splitlines() if line]


def test_point_in_time_restore_on_the_database_node(cluster: Deployed) -> None:
    """pgBackRest on the swarm, its database task and volumes on another node than the manager
    finaiflow-ops talks to: WAL archived and a full backup from the task, a point-in-time drill
    into a scratch container on that node, and `restore --to-time` between two commits (the
    service scaled to 0, the volume copied and restored in one-off containers on that node, then
    scaled back): exactly the first row, the api serving, the safety copy beside the data."""
    started = time.monotonic()
    _leader, manager, _worker = cluster.nodes
    made = ok(cluster.cli("backup", "physical", "--type", "full"))
    assert "pgBackRest full backup" in made, made
    listed = json.loads(ok(cluster.cli("--json", "backup", "archive")))
    assert listed["backups"] and listed["wal"], listed  # archived from the task on the other node
    table = "swarm_pitr_probe"
    try:
        instant = commits_either_side(lambda sql: _rows(cluster, sql), table)
        drill = json.loads(ok(cluster.cli("--json", "restore", "drill", "--pitr")))
        assert drill["heartbeats"] > 0, drill
        restored = ok(cluster.cli("--yes", "restore", "--to-time", instant.isoformat()))
        print(f"\n[multinode] restore --to-time: {restored.strip()[-600:]}")
        assert "downtime" in restored, restored
        replaced = cluster.on(cluster.nodes[0], "service", "ps", f"{PROJECT}_api", "--filter",
                              "desired-state=shutdown", "--format", "{{.Name}} {{.CurrentState}} {{.Error}}")
        replaced_tasks = replaced.stdout.strip().replace("\n", "; ")
        print(f"[multinode] api tasks the engine replaced: {replaced_tasks or 'none'}")
        assert _rows(cluster, f"SELECT id FROM {table} ORDER BY id") == [["1"]]  # noqa: S608
        assert _nodes_of(cluster, "postgres") == [manager]
        with httpx.Client(verify=False, timeout=10) as client:
            assert client.get(f"{cluster.base_url()}/health").json()["database"] == "ok"
    finally:
        _psql(cluster, f"DROP TABLE IF EXISTS {table}")
        kept = cluster.on(manager, "volume", "ls", "-q", "--filter", "label=finaiflow.safety-copy")
        copies = kept.stdout.split()
        for copy in copies:
            cluster.on(manager, "volume", "rm", copy)
    assert [c.startswith(f"{PROJECT}_pg_data_before_") for c in copies] == [True], copies
    print(f"[multinode] point-in-time backup, drill and restore: {time.monotonic() - started:.0f} s")


def _version(base_url: str) -> str:
    with httpx.Client(verify=False, timeout=10) as client:
        return str(client.get(f"{base_url}/version").json()["release"])


def test_rolling_update_and_rollback_across_nodes_drop_no_request(cluster: Deployed) -> None:
    """Also the swarm's rolling update and rollback as test_swarm would prove them on its single
    node (the same CLI, the same engine update; here with tasks on every node): the release each
    records, the .env and the history they leave, and no migration job container on any node."""
    base = cluster.base_url()
    assert _version(base) == "1.0.0"
    with traffic(base, users=6, max_seconds=600) as samples:
        time.sleep(3)
        deployed = cluster.cli("--json", "deploy", "api", "--image", NEW, "--no-backup")
        after = _version(base)
        rolled = cluster.cli("--json", "rollback", "api")
        back = _version(base)
        time.sleep(3)
    result, undone = json.loads(ok(deployed)), json.loads(ok(rolled))
    assert (after, back) == ("1.1.0", "1.0.0")
    assert result["release"]["image"] == NEW and undone["release"]["kind"] == "rollback", (result, undone)
    done = samples()
    assert len(done) > 100, f"only {len(done)} requests: the load did not run"
    assert failures(done) == [], failures(done)[:10]
    # Three tasks of the old release; where start-first put them is the scheduler's choice.
    running = [t for t in cluster.tasks("api") if t["CurrentState"].startswith("Running")]
    assert len(running) == 3 and {t["Image"] for t in running} == {OLD}, running
    assert {t["Image"] for t in cluster.tasks("api")} == {OLD}, cluster.tasks("api")
    assert envfile.parse((cluster.project / ".env").read_text())["API_IMAGE"] == OLD
    history = json.loads(ok(cluster.cli("--json", "releases", "api")))
    assert [r["kind"] for r in history["releases"]][-2:] == ["deploy", "rollback"], history
    for node in cluster.nodes:  # the migration job ran as a swarm task, on whichever node
        jobs = cluster.on(node, "ps", "-a", "--filter", f"label=com.docker.swarm.service.name={PROJECT}_job",
                          "--format", "{{.Names}}").stdout.split()
        leftovers = [n for n in cluster.on(node, "ps", "-a", "--format", "{{.Names}}").stdout.split()
                     if n.startswith(f"{PROJECT}_job")]
        assert jobs == leftovers == [], f"migration job containers left behind on {node}: {leftovers}"


def test_a_worker_killed_during_an_update_leaves_the_service_serving(cluster: Deployed) -> None:
    """The worker is killed while a task of the new release is still coming up on it (the
    scheduler puts the first new task on the least busy node, the worker): engine 20.10's updater
    then waits for that task for ever, so deploy notices the stall (the node is down, nothing moves
    for STALL_SECONDS) and rolls back. Should the new task start elsewhere first, the worker is
    killed then: the update completes or the engine rolls back. Either way service continues."""
    *_, worker = cluster.nodes
    base = cluster.base_url()
    with traffic(base, users=6, max_seconds=600) as samples:
        deploy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "finaiflow_ops.cli",
                "--project-dir",
                str(cluster.project),
                "deploy",
                "api",
                "--image",
                NEW,
                "--no-backup",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **cluster.cluster.env},
        )
        deadline = time.monotonic() + 120
        while True:
            new = [t for t in cluster.tasks("api") if t["Image"] == NEW]
            coming = [t for t in new if t["Node"] == worker and not t["CurrentState"].startswith("Running")]
            if coming or any(t["CurrentState"].startswith("Running") for t in new):
                break
            assert time.monotonic() < deadline, "the update never started a new task"
            time.sleep(0.2)
        first = (coming or new)[0]
        print(f"[multinode] killing {worker}: a new task is {first['CurrentState']} on {first['Node']}")
        killed_at = time.time()
        docker("kill", worker)
        try:
            # Node down after ~15 s of missed heartbeats, a stall seen 30 s later, then the rollback.
            _, stderr = deploy.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            deploy.kill()
            _, stderr = deploy.communicate()
            pytest.fail(f"deploy still running 240 s after the worker was killed: {stderr[-2000:]}")
        print(f"[multinode] deploy: exit {deploy.returncode}, {stderr.strip().splitlines()[-1:]}")
        # Swarm marks the node down after its heartbeats stop, then starts its tasks elsewhere.
        deadline = time.monotonic() + 120
        while len([t for t in cluster.tasks("api") if t["CurrentState"].startswith("Running")]) < 3:
            assert time.monotonic() < deadline, (
                f"api did not get 3 running tasks back: {cluster.tasks('api')}"
            )
            time.sleep(1)
        settled_at = time.time()
        time.sleep(10)
    done: list[Sample] = samples()
    print(
        f"[multinode] deploy with a worker killed: exit {deploy.returncode}; "
        f"{len(failures([s for s in done if killed_at <= s.start < settled_at]))} failed of "
        f"{len([s for s in done if killed_at <= s.start < settled_at])} while the node was lost"
    )
    assert deploy.returncode in (0, 1), stderr[-2000:]
    if deploy.returncode == 1:
        assert "rolled back" in stderr.strip().splitlines()[-1], stderr[-2000:]
    after = [s for s in done if s.start >= settled_at]
    assert len(after) > 20 and failures(after) == [], failures(after)[:10]
    assert worker not in _nodes_of(cluster, "api")
