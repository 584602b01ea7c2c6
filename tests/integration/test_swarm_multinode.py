"""A real multi-node swarm: three Docker engines in containers (docker-in-docker, from
stack/swarm-node), two managers and a worker on a network the test makes, the stack deployed with
3 api replicas spread over the nodes and the database on a labelled node; a rolling update and a
rollback under locust traffic, a backup taken from the database task on another node, and a
worker killed in the middle of an update.

The node containers get every capability but CAP_SYS_RESOURCE, which this machine's own bounding
set lacks (so `--privileged` cannot start here), with seccomp and AppArmor unconfined and the
cgroup tree mounted writable: enough for dockerd, overlay networks (VXLAN) and nested containers.
Every engine listens on TCP 2375 on the test's network only; finaiflow-ops reaches the manager
through DOCKER_HOST, and the other nodes through their `finaiflow.docker-host` label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from loadtests.gate import Sample, traffic

from tests.rollout_support import failures
from tests.swarm_support import REPO, cli, free_port, make_project, ok

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

NODE_IMAGE = os.environ.get("FINAIFLOW_SWARM_NODE_IMAGE", "finaiflow/swarm-node:bookworm")
IMAGES = (
    "finaiflow/api:1.0.0",
    "finaiflow/api:1.1.0",
    "finaiflow/nginx:local",
    "finaiflow/postgres:15",
    "finaiflow/redis:7",
    "finaiflow/prometheus:local",
    "finaiflow/ops-exporter:local",
)
OLD, NEW = "finaiflow/api:1.0.0", "finaiflow/api:1.1.0"
PROJECT = "ffmulti"
NODE_OPTIONS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/var/lib/docker:exec",
)


def _docker(
    *args: str, check: bool = True, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, **kwargs
    )  # type: ignore[call-overload]


@dataclass(frozen=True)
class Cluster:
    network: str
    nodes: tuple[str, ...]  # container names; nodes[0] is the leader
    addresses: dict[str, str]
    project: Path

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"tcp://{self.addresses[self.nodes[0]]}:2375"}

    def on(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _docker("exec", node, "docker", *args, check=check)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return cli(self.project, *args, env=self.env, timeout=timeout)

    def tasks(self, service: str) -> list[dict[str, str]]:
        out = self.on(
            self.nodes[0],
            "service",
            "ps",
            f"{PROJECT}_{service}",
            "--filter",
            "desired-state=running",
            "--format",
            "{{json .}}",
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line]

    def base_url(self) -> str:
        port = self.on(
            self.nodes[0],
            "service",
            "inspect",
            f"{PROJECT}_nginx",
            "--format",
            "{{range .Endpoint.Ports}}{{if eq .TargetPort 443}}{{.PublishedPort}}{{end}}{{end}}",
        ).stdout
        return f"https://{self.addresses[self.nodes[0]]}:{port.strip()}"


def _start_node(name: str, network: str) -> str:
    _docker("run", "-d", "--name", name, "--hostname", name, "--network", network, *NODE_OPTIONS, NODE_IMAGE)
    deadline = time.monotonic() + 60
    while _docker("exec", name, "docker", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            logs = _docker("exec", name, "tail", "-5", "/var/log/dockerd.log", check=False).stdout
            raise AssertionError(f"the engine in {name} did not start within 60 s: {logs}")
        time.sleep(0.5)
    return _docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).stdout.strip()


def _load_images(nodes: tuple[str, ...]) -> None:
    """One `docker save` of every stack image (shared layers once), loaded into each node at once."""
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        _docker("save", "-o", tar.name, *IMAGES, timeout=300)
        errors: list[str] = []

        def load(node: str) -> None:
            with Path(tar.name).open("rb") as source:
                done = subprocess.run(
                    ["docker", "exec", "-i", node, "docker", "load", "-q"],
                    stdin=source,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
            if done.returncode:
                errors.append(f"{node}: {done.stderr.strip()}")

        threads = [threading.Thread(target=load, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=700)
        assert not errors, errors


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not request.config.getoption("--target").startswith("local"):
        pytest.skip("the multi-node swarm is made of containers on this machine's engine")
    subprocess.run(["bash", str(REPO / "stack" / "swarm-node" / "build")], check=True, timeout=900)
    network = f"ffswarm-{os.getpid()}"
    nodes = tuple(f"{network}-node{i}" for i in (1, 2, 3))
    _docker("network", "create", network)
    try:
        addresses = {n: _start_node(n, network) for n in nodes}
        _load_images(nodes)
        leader, manager, worker = nodes
        _docker("exec", leader, "docker", "swarm", "init", "--advertise-addr", addresses[leader])
        for node, role in ((manager, "manager"), (worker, "worker")):
            token = _docker("exec", leader, "docker", "swarm", "join-token", "-q", role).stdout.strip()
            _docker("exec", node, "docker", "swarm", "join", "--token", token, f"{addresses[leader]}:2377")
        # The database lives on the second manager; every node says how to reach its engine.
        for node in nodes:
            labels = ["--label-add", f"finaiflow.docker-host=tcp://{addresses[node]}:2375"]
            labels += ["--label-add", "finaiflow.db=true"] if node == manager else []
            _docker("exec", leader, "docker", "node", "update", *labels, node)
        project = make_project(
            tmp_path_factory.mktemp("multinode") / "stack",
            PROJECT,
            https_port=free_port(),
            http_port=free_port(),
            prometheus_port=free_port(),
            extra={"API_REPLICAS": "3", "ALLOWED_HOSTS": f"staging.finaiflow.test,{addresses[leader]}"},
        )
        # The ops exporter bind-mounts the project directory of the manager it runs on.
        _docker("exec", leader, "mkdir", "-p", str(project))
        c = Cluster(network, nodes, addresses, project)
        started = time.monotonic()
        ok(c.cli("stack", "up", timeout=900))
        print(f"[multinode] stack up on 3 nodes: {time.monotonic() - started:.0f} s")
        yield c
    finally:
        for node in nodes:
            _docker("rm", "-f", "-v", node, check=False)
        _docker("network", "rm", network, check=False)


def _nodes_of(c: Cluster, service: str) -> list[str]:
    return sorted(t["Node"] for t in c.tasks(service) if t["CurrentState"].startswith("Running"))


def test_api_replicas_spread_over_the_nodes_and_the_database_stays_on_its_node(cluster: Cluster) -> None:
    leader, manager, worker = cluster.nodes
    assert _nodes_of(cluster, "api") == sorted(cluster.nodes), cluster.tasks("api")
    assert _nodes_of(cluster, "postgres") == [manager]
    nodes = cluster.on(leader, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}").stdout
    roles = dict(line.split(" ", 1) if " " in line else (line, "") for line in nodes.splitlines())
    assert roles[leader] == "Leader" and roles[manager] == "Reachable" and roles[worker] == "", roles
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{cluster.base_url()}/health").json()["database"] == "ok"


def _psql(c: Cluster, sql: str) -> str:
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


def test_backup_drill_and_restore_work_on_the_database_task_on_another_node(cluster: Cluster) -> None:
    made = json.loads(ok(cluster.cli("--json", "backup", "create")))
    assert Path(made["path"]).exists() and made["manifest"]["tables"], made
    drill = json.loads(ok(cluster.cli("--json", "restore", "drill")))
    assert drill["tables"] == made["manifest"]["tables"]
    _psql(cluster, "CREATE TABLE after_the_backup (x int)")
    ok(cluster.cli("--yes", "restore", made["path"]))
    assert _psql(cluster, "SELECT to_regclass('after_the_backup') IS NULL") == "t"
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{cluster.base_url()}/health").json()["database"] == "ok"


def _version(base_url: str) -> str:
    with httpx.Client(verify=False, timeout=10) as client:
        return str(client.get(f"{base_url}/version").json()["release"])


def test_rolling_update_and_rollback_across_nodes_drop_no_request(cluster: Cluster) -> None:
    base = cluster.base_url()
    with traffic(base, users=6, max_seconds=600) as samples:
        time.sleep(3)
        deployed = cluster.cli("--json", "deploy", "api", "--image", NEW, "--no-backup")
        after = _version(base)
        rolled = cluster.cli("--json", "rollback", "api")
        back = _version(base)
        time.sleep(3)
    ok(deployed)
    ok(rolled)
    assert (after, back) == ("1.1.0", "1.0.0")
    done = samples()
    assert len(done) > 100, f"only {len(done)} requests: the load did not run"
    assert failures(done) == [], failures(done)[:10]
    assert _nodes_of(cluster, "api") == sorted(cluster.nodes)


def test_a_worker_killed_during_an_update_leaves_the_service_serving(cluster: Cluster) -> None:
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
            env={**os.environ, **cluster.env},
        )
        deadline = time.monotonic() + 120
        while not any(
            t["Image"] == NEW and t["CurrentState"].startswith("Running") for t in cluster.tasks("api")
        ):
            assert time.monotonic() < deadline, "the update never started a new task"
            time.sleep(0.5)
        killed_at = time.time()
        _docker("kill", worker)
        _, stderr = deploy.communicate(timeout=600)
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
