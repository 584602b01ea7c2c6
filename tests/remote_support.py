"""A "really remote" VPS for the ssh:// tests: a Debian 12 container (stack/remote-vps) with its own
Docker engine, sshd and filesystem, published at a loopback alias of its own, 127.0.0.2: SSH on
port 2222, HTTP and HTTPS on 80 and 443. Nothing the tool does to it can land on this machine's
engine or disk, which a target on 127.0.0.1 (the local sshd, this machine's engine) cannot prove.

The VPS runs with the swarm nodes' options (tests/swarm_support.py): every capability but
SYS_RESOURCE, seccomp/AppArmor unconfined, the cgroup tree writable and /var/lib/docker on a tmpfs,
enough for dockerd and nested containers. The ports are fixed (the address is the VPS's own, as a
server's is), so one remote VPS runs on a machine at a time.

The tests reach it only through their own files: a key, an ssh client config and a known_hosts in
the directory they pass in, used with `ssh -F` (which also keeps ssh from reading or creating
~/.ssh). The config names the VPS `vps` and `127.0.0.2`, so both `ssh://vps` and
`ssh://root@127.0.0.2:2222` resolve through it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.swarm_support import NODE_OPTIONS, REPO

IMAGE_ENV = "FINAIFLOW_REMOTE_VPS_IMAGE"
ADDRESS = "127.0.0.2"
SSH_PORT = 2222
HOST_ALIAS = "vps"
LABEL = "finaiflow.test=remote-vps"
READY_TIMEOUT = 60.0


def docker(
    *args: str, input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The docker CLI of this machine's engine, which runs the VPS (never DOCKER_HOST)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *args], input=input, capture_output=True, text=True,
                          timeout=timeout, check=check, env=env)


@dataclass(frozen=True)
class RemoteVps:
    container: str  # the container's name on this machine's engine
    address: str
    ssh_port: int
    key: Path  # the client's private key (ed25519, no passphrase)
    ssh_config: Path
    known_hosts: Path

    @property
    def url(self) -> str:
        """The target URL for finaiflow-ops: the `vps` host of the test's own ssh client config."""
        return f"ssh://{HOST_ALIAS}?ssh_config={self.ssh_config}"

    def ssh(
        self, *argv: str, input: str | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """ARGV run on the VPS over plain ssh (for assertions). ssh hands the remote shell one
        string, so the arguments are quoted: each arrives as one argument, as with subprocess.
        Each call is a connection of its own (no ControlMaster): nothing of it outlives the VPS."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), HOST_ALIAS, shlex.join(argv)],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def docker_exec(
        self, *argv: str, input: str | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """ARGV run in the VPS container through this machine's engine: the VPS's console, for
        set-up and for checking what ssh did without going through ssh."""
        return docker("exec", *(("-i",) if input is not None else ()), self.container, *argv,
                      input=input, timeout=timeout, check=check)


def ssh_config_text(key: Path, known_hosts: Path) -> str:
    settings = (
        f"HostName {ADDRESS}",
        f"Port {SSH_PORT}",
        "User root",
        f"IdentityFile {key}",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {known_hosts}",
        # Each VPS makes its own host key; the known_hosts is the test's own, new with each VPS.
        "StrictHostKeyChecking accept-new",
        # Never the machine's own list, nor a password prompt that would hang a test.
        "GlobalKnownHostsFile /dev/null",
        "BatchMode yes",
        "ConnectTimeout 10",
        # Keeps "Permanently added ... to the list of known hosts" out of the stderr tests assert on.
        "LogLevel ERROR",
    )
    body = "".join(f"    {line}\n" for line in settings)
    return f"Host {HOST_ALIAS}\n{body}\nHost {ADDRESS}\n{body}"


def _diagnostics(name: str) -> str:
    logs = docker("logs", "--tail", "20", name, check=False, timeout=30)
    engine = docker("exec", name, "tail", "-20", "/var/log/dockerd.log", check=False, timeout=30)
    return f"container log:\n{logs.stdout}{logs.stderr}\ndockerd.log:\n{engine.stdout}{engine.stderr}"


def _wait_ready(vps: RemoteVps) -> None:
    """Until ssh with the key reaches the VPS and its engine answers there: bounded by READY_TIMEOUT
    and by a count of attempts (each attempt itself bounded by ssh's ConnectTimeout and a timeout)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    for _ in range(240):
        try:
            done = vps.ssh("docker", "info", "-f", "{{.ID}}", timeout=15)
            if done.returncode == 0 and done.stdout.strip():
                return
            last = f"exit {done.returncode}: {done.stderr.strip()}"
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(
        f"the remote VPS {vps.container} was not ready (ssh + docker info) within {READY_TIMEOUT:g} s;"
        f" last attempt: {last}\n{_diagnostics(vps.container)}"
    )


@contextmanager
def remote_vps(directory: Path) -> Iterator[RemoteVps]:
    """A remote VPS, ready (ssh with the key works and its engine answers), its client files in
    DIRECTORY; removed afterwards with its anonymous volumes."""
    image = os.environ.get(IMAGE_ENV, "finaiflow/remote-vps:bookworm")
    # Idempotent: does nothing while the image matches stack/remote-vps.
    subprocess.run(["bash", str(REPO / "stack" / "remote-vps" / "build")], check=True, timeout=900)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    for stale in (key, Path(f"{key}.pub")):
        stale.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "finaiflow-remote-vps-test",
                    "-f", str(key)], check=True, timeout=30, capture_output=True)
    known_hosts = directory / "known_hosts"
    known_hosts.unlink(missing_ok=True)  # a previous VPS's host key
    config = directory / "ssh_config"
    config.write_text(ssh_config_text(key, known_hosts))
    name = f"finaiflow-remote-vps-{secrets.token_hex(4)}"
    vps = RemoteVps(name, ADDRESS, SSH_PORT, key, config, known_hosts)
    try:
        # A failed `docker run` (a port already taken) can leave the container created: the
        # finally removes it either way.
        started = docker(
            "run", "-d", "--name", name, "--hostname", name, "--label", LABEL,
            "-p", f"{ADDRESS}:{SSH_PORT}:22", "-p", f"{ADDRESS}:80:80", "-p", f"{ADDRESS}:443:443",
            *NODE_OPTIONS, image,
            check=False, timeout=60,
        )
        # Most likely a port of 127.0.0.2 taken by another remote VPS (another test run).
        assert started.returncode == 0, f"the remote VPS did not start: {started.stderr.strip()}"
        # Usually before sshd listens (the init waits for dockerd first); were it after, the first
        # readiness attempts would fail authentication and be retried.
        installed = vps.docker_exec(
            "sh", "-c",
            "umask 077 && mkdir -p /root/.ssh && cat >/root/.ssh/authorized_keys",
            input=Path(f"{key}.pub").read_text(),
            timeout=30,
        )
        assert installed.returncode == 0, f"installing the key failed: {installed.stderr}"
        _wait_ready(vps)
        yield vps
    finally:
        docker("rm", "-f", "-v", name, check=False, timeout=60)
