"""The remote VPS of tests/remote_support.py is really remote: reached by its own address over SSH,
with its own hostname, Docker engine, engine socket and filesystem, and its own published ports.

Each test would fail against a "remote" that is this machine in disguise (the local sshd on
127.0.0.1, or a container sharing this machine's engine socket or disk). The VPS starts once for
the module (a few seconds).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote_support import ADDRESS, SSH_PORT, RemoteVps, docker, remote_vps

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteVps]:
    with remote_vps(tmp_path_factory.mktemp("remote-vps")) as made:
        yield made


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


def ssh_with_config(vps: RemoteVps, destination: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(vps.ssh_config), destination, *argv], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("destination", ["vps", ADDRESS, f"ssh://root@{ADDRESS}:{SSH_PORT}"])
def test_ssh_reaches_the_vps_by_its_alias_and_address(vps: RemoteVps, destination: str) -> None:
    # The sshd answering is the one in the VPS container: it names the container's hostname.
    assert ok(ssh_with_config(vps, destination, "hostname")).strip() == vps.container
    # The one host key accepted is the VPS's, recorded in the test's own known_hosts.
    recorded = vps.known_hosts.read_text().split()
    assert recorded[0] == f"[{ADDRESS}]:{SSH_PORT}"
    served = ok(vps.docker_exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub")).split()
    assert recorded[1:3] == served[0:2]


def test_the_vps_has_its_own_hostname(vps: RemoteVps) -> None:
    theirs = ok(vps.ssh("hostname")).strip()
    assert theirs
    assert theirs != socket.gethostname()


def local_engine_id() -> str:
    return ok(docker("info", "-f", "{{.ID}}")).strip()


def test_the_vps_has_its_own_docker_engine(vps: RemoteVps) -> None:
    theirs = ok(vps.ssh("docker", "info", "-f", "{{.ID}}")).strip()
    assert theirs
    assert theirs != local_engine_id()
    # This machine's engine runs the VPS container; the VPS's engine has never heard of it.
    assert ok(docker("ps", "-q", "--filter", f"name=^{vps.container}$")).strip()
    assert ok(vps.ssh("docker", "ps", "-aq")).strip() == ""


def test_a_file_written_on_the_vps_is_not_on_this_machine(vps: RemoteVps) -> None:
    token = secrets.token_hex(8)
    path = f"/tmp/finaiflow-remote-vps-{token}"
    ok(vps.ssh("sh", "-c", f"printf %s {token} >{path}"))
    assert not Path(path).exists()
    # ...and it is in the VPS container's own filesystem, as its console shows.
    assert ok(vps.docker_exec("cat", path)) == token


def test_the_docker_socket_forwarded_over_ssh_is_the_vps_engine(vps: RemoteVps) -> None:
    # As finaiflow-ops reaches a remote engine: the remote /var/run/docker.sock forwarded over the
    # SSH connection (StreamLocal forwarding, which the VPS's sshd must allow) to a local socket.
    local = vps.ssh_config.parent / f"docker-{secrets.token_hex(4)}.sock"
    forward = subprocess.Popen(
        ["ssh", "-F", str(vps.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"{local}:/var/run/docker.sock", "vps"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not local.exists() and forward.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local.exists(), f"no forwarded socket: {forward.poll() is None or forward.communicate()[1]}"
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        through_ssh = ok(subprocess.run(["docker", "-H", f"unix://{local}", "info", "-f", "{{.ID}}"],
                                        capture_output=True, text=True, timeout=30, check=False, env=env))
    finally:
        forward.terminate()
        forward.wait(timeout=10)
        local.unlink(missing_ok=True)
    assert through_ssh.strip() == ok(vps.ssh("docker", "info", "-f", "{{.ID}}")).strip()
    assert through_ssh.strip() != local_engine_id()


@pytest.mark.parametrize("port", [80, 443])
def test_a_port_the_vps_listens_on_is_reached_at_its_address(vps: RemoteVps, port: int) -> None:
    token = secrets.token_hex(8)
    directory = f"/srv/www-{port}"
    ok(vps.ssh("sh", "-c", f"mkdir -p {directory} && printf %s {token} >{directory}/token"))
    # Plain HTTP on both ports: this checks the address and ports the VPS is published on.
    pid = ok(vps.ssh("sh", "-c", f"python3 -m http.server {port} --directory {directory} "
                                 ">/dev/null 2>&1 </dev/null & echo $!")).strip()
    try:
        body, last = "", ""
        deadline = time.monotonic() + 15
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://{ADDRESS}:{port}/token", timeout=5) as answer:
                    body = answer.read().decode()
                break
            except OSError as error:  # refused or reset until the server listens
                last = repr(error)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body == token, f"{ADDRESS}:{port} did not serve the VPS's file: {last}"
    finally:
        vps.ssh("kill", pid)
