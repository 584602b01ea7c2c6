"""A real OpenSSH server on this machine, so that an ssh:// target reaches this host's Docker engine.

The host's own /usr/sbin/sshd runs in the foreground with a throwaway configuration, host key and
authorized key in a temporary directory, on 127.0.0.1 and two free ports, and is stopped by its
pid at the end. On the second port every session's command runs behind a forced command that
flips one byte of whatever is streamed into `cat >FILE`: a link that corrupts data in transit.
The key is also in an ssh agent (CLI subprocesses find it there);
~/.ssh/known_hosts is left as it was found.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from finaiflow_ops.errors import TargetUnreachable
from finaiflow_ops.target import Target
from tests.ssh_support import KNOWN_HOSTS, forget_host_key, restore_ssh_dir, start_agent

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; normally made by its init script

# Flips the byte at offset 4096 (or the last one of a shorter stream) of what it relays.
_FLIPPER = """
import subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)
data = sys.stdin.buffer.read()
if data:
    at = min(4096, len(data) - 1)
    data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
proc.stdin.write(data)
proc.stdin.close()
sys.exit(proc.wait())
"""
_FORCED = """#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
  *"cat >"*) exec {python} {flipper} /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
  *) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""


@dataclass(frozen=True)
class LocalSshd:
    port: int
    flipping_port: int  # sessions here corrupt one byte streamed into `cat >FILE`
    key: Path
    env: dict[str, str]  # for CLI subprocesses: SSH_AUTH_SOCK of the agent holding the key

    def url(self, path: str = "", *, port: int | None = None) -> str:
        return f"ssh://root@127.0.0.1:{port or self.port}{path}?identity_file={self.key}"

    @property
    def target(self) -> Target:
        return Target.parse(self.url())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(directory: Path, port: int, flipping_port: int) -> Path:
    forced = directory / "forced.sh"
    (directory / "flipper.py").write_text(_FLIPPER)
    forced.write_text(_FORCED.format(python=sys.executable, flipper=directory / "flipper.py"))
    forced.chmod(0o755)
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nListenAddress 127.0.0.1:{flipping_port}\n"
        f"HostKey {directory / 'host_key'}\nPidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel ERROR\n"
        f"Match LocalPort {flipping_port}\n  ForceCommand {forced}\n")
    return config


def _reachable(target: Target) -> bool:
    try:
        return target.run("true", check=False).ok
    except TargetUnreachable:
        return False


@contextmanager
def local_sshd(directory: Path) -> Iterator[LocalSshd]:
    if not Path(SSHD).exists():
        pytest.fail(f"{SSHD} is missing: scripts/provision installs openssh-server")
    for key in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", directory / key], check=True)
    (directory / "authorized_keys").write_text((directory / "id.pub").read_text())
    port, flipping_port = free_port(), free_port()
    config = _config(directory, port, flipping_port)
    made_privsep = not PRIVSEP_DIR.exists()
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    had_dir, had_file = KNOWN_HOSTS.parent.exists(), KNOWN_HOSTS.exists()
    agent_pid, env = start_agent(directory)
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=(directory / "sshd.log").open("wb"))
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])  # in-process ssh finds the key in the agent too
        server = LocalSshd(port, flipping_port, directory / "id", env)
        deadline = time.monotonic() + 20
        while not _reachable(server.target):
            assert sshd.poll() is None, f"sshd exited: {(directory / 'sshd.log').read_text()}"
            assert time.monotonic() < deadline, "sshd did not answer within 20 s"
            time.sleep(0.2)
        yield server
    finally:
        sshd.terminate()  # the connections still open end with it
        sshd.wait(timeout=10)
        monkey.undo()
        os.kill(agent_pid, signal.SIGTERM)
        for p in (port, flipping_port):
            forget_host_key(p)
        restore_ssh_dir(had_dir, had_file)
        if made_privsep:
            PRIVSEP_DIR.rmdir()
