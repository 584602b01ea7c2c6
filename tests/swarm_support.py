"""What the swarm tests share: swarms made of Docker engines in containers (stack/swarm-node), a
project directory for a swarm stack, and the CLI run against it.

The swarms are never this machine's own engine: leaving a swarm breaks Docker's embedded DNS on the
bridge networks that already exist (moby#45144), which would cut the session's compose stack off
its database. Each node gets every capability but CAP_SYS_RESOURCE, which this machine's own
bounding set lacks (so `--privileged` cannot start here), seccomp and AppArmor unconfined and the
cgroup tree mounted writable: enough for dockerd, VXLAN overlay networks and nested containers.
Every node's engine listens on TCP 2375 on the test's own network; finaiflow-ops reaches the
manager through DOCKER_HOST and the other nodes through their `finaiflow.docker-host` label.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

NODE_IMAGE = os.environ.get("FINAIFLOW_SWARM_NODE_IMAGE", "finaiflow/swarm-node:bookworm")
IMAGES = (
    "finaiflow/api:1.0.0",
    "finaiflow/api:1.1.0",
    "finaiflow/nginx:local",
    "finaiflow/postgres:15",
    "finaiflow/redis:7",
    "finaiflow/prometheus:local",
    "finaiflow/ops-exporter:local",
    "finaiflow/alertmanager:local",
)
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


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The docker CLI of this machine's engine (never DOCKER_HOST: the nodes run here)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, env=env
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # noqa: S104 - host-mode ports are bound on every interface
        return int(s.getsockname()[1])


def cli(
    project_dir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`finaiflow-ops --project-dir PROJECT ARGS` in a process of its own (env added to ours)."""
    return subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", "--project-dir", str(project_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def make_project(
    directory: Path,
    name: str,
    *,
    https_port: int,
    http_port: int,
    prometheus_port: int,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """A project directory like an operator's: the repository's compose.yaml and swarm.yaml, and
    a .env made by `env generate` (plus `extra` lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "stack" / "compose.yaml", directory / "compose.yaml")
    shutil.copy(REPO / "stack" / "swarm.yaml", directory / "swarm.yaml")
    made = cli(
        directory,
        "env",
        "generate",
        "--project-name",
        name,
        "--http-port",
        str(http_port),
        "--https-port",
        str(https_port),
        "--prometheus-port",
        str(prometheus_port),
        "--rate-limit",
        "2000",
    )
    assert made.returncode == 0, made.stderr
    if extra:  # replaces the generated lines of the same keys
        env = directory / ".env"
        lines = [ln for ln in env.read_text().splitlines() if ln.split("=", 1)[0] not in extra]
        env.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in extra.items())]) + "\n")
    return directory


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    return result.stdout


@dataclass(frozen=True)
class Cluster:
    network: str
    nodes: tuple[str, ...]  # container names; nodes[0] is the leader
    addresses: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"tcp://{self.addresses[self.nodes[0]]}:2375"}

    def on(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", node, "docker", *args, check=check)

    def tasks(self, project: str, service: str) -> list[dict[str, str]]:
        out = self.on(
            self.nodes[0],
            "service",
            "ps",
            f"{project}_{service}",
            "--filter",
            "desired-state=running",
            "--format",
            "{{json .}}",
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line]

    def base_url(self, project: str) -> str:
        port = self.on(
            self.nodes[0],
            "service",
            "inspect",
            f"{project}_nginx",
            "--format",
            "{{range .Endpoint.Ports}}{{if eq .TargetPort 443}}{{.PublishedPort}}{{end}}{{end}}",
        ).stdout
        # Host-mode port: on the node nginx runs on (any manager), not necessarily the leader.
        running = [t["Node"] for t in self.tasks(project, "nginx") if t["CurrentState"].startswith("Running")]
        assert running, f"{project}_nginx has no running task"
        return f"https://{self.addresses[running[0]]}:{port.strip()}"


def _start_node(name: str, network: str, shared: Path | None) -> str:
    # `shared`: a directory of this machine at the same path on the node, as an operator's project
    # directory is on the manager's disk (the ops exporter bind-mounts it).
    mount = ("-v", f"{shared}:{shared}") if shared else ()
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        network,
        *mount,
        *NODE_OPTIONS,
        NODE_IMAGE,
    )
    deadline = time.monotonic() + 60
    while docker("exec", name, "docker", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            logs = docker("exec", name, "tail", "-5", "/var/log/dockerd.log", check=False).stdout
            raise AssertionError(f"the engine in {name} did not start within 60 s: {logs}")
        time.sleep(0.5)
    return docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).stdout.strip()


# The stack images saved once per test process (the swarms of test_swarm and test_swarm_multinode load
# the same ones), by the ids they had: an image rebuilt in between is saved again.
_SAVED: dict[tuple[str, ...], Path] = {}


def _saved_images() -> Path:
    ids = tuple(docker("image", "inspect", "-f", "{{.Id}}", *IMAGES).stdout.split())
    saved = _SAVED.get(ids)
    if saved is None or not saved.exists():
        fd, name = tempfile.mkstemp(prefix="finaiflow-swarm-images-", suffix=".tar")
        os.close(fd)
        saved = Path(name)
        atexit.register(saved.unlink, missing_ok=True)
        docker("save", "-o", name, *IMAGES, timeout=300)
        _SAVED[ids] = saved
    return saved


def _load_images(nodes: tuple[str, ...]) -> None:
    """One `docker save` of every stack image (shared layers once), loaded into each node at once."""
    tar = _saved_images()
    errors: list[str] = []

    def load(node: str) -> None:
        with tar.open("rb") as source:
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


@contextmanager
def swarm_cluster(
    name: str, *, managers: int = 1, workers: int = 0, shared: Path | None = None
) -> Iterator[Cluster]:
    """A swarm of `managers` + `workers` engines in containers on a network of its own, every stack
    image loaded into every node, each node labelled with how to reach its engine, `shared`
    mounted at its own path in each; removed after."""
    subprocess.run(["bash", str(REPO / "stack" / "swarm-node" / "build")], check=True, timeout=900)
    network = f"{name}-{os.getpid()}"
    nodes = tuple(f"{network}-node{i}" for i in range(1, managers + workers + 1))
    docker("network", "create", network)
    try:
        addresses = {n: _start_node(n, network, shared) for n in nodes}
        _load_images(nodes)
        leader = nodes[0]
        docker("exec", leader, "docker", "swarm", "init", "--advertise-addr", addresses[leader])
        for i, node in enumerate(nodes[1:], start=1):
            role = "manager" if i < managers else "worker"
            token = docker("exec", leader, "docker", "swarm", "join-token", "-q", role).stdout.strip()
            docker("exec", node, "docker", "swarm", "join", "--token", token, f"{addresses[leader]}:2377")
        for node in nodes:
            docker(
                "exec",
                leader,
                "docker",
                "node",
                "update",
                "--label-add",
                f"finaiflow.docker-host=tcp://{addresses[node]}:2375",
                node,
            )
        yield Cluster(network, nodes, addresses)
    finally:
        for node in nodes:
            docker("rm", "-f", "-v", node, check=False)
        docker("network", "rm", network, check=False)
