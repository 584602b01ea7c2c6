"""What the tests that reach this machine or a container over real SSH share: an ssh-agent
holding the test's key, and ~/.ssh/known_hosts left as the run found it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


def start_agent(keydir: Path) -> tuple[int, dict[str, str]]:
    """An ssh-agent on a socket in keydir holding keydir/id; (its pid, the environment to use it)."""
    sock = keydir / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True,
                         check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))  # type: ignore[union-attr]
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    subprocess.run(["ssh-add", "-q", str(keydir / "id")], env=env, check=True, capture_output=True)
    return pid, env


KNOWN_HOSTS = Path.home() / ".ssh" / "known_hosts"


def forget_host_key(port: int) -> None:
    """accept-new records the VPS's host key in ~/.ssh/known_hosts; a later VPS on the same port
    has another key, so the entry is removed before and after."""
    if KNOWN_HOSTS.exists():
        subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{port}"], capture_output=True, check=False)
        Path(f"{KNOWN_HOSTS}.old").unlink(missing_ok=True)


def restore_ssh_dir(had_dir: bool, had_file: bool) -> None:
    """Leave ~/.ssh as the run found it: ssh creates the directory and the file when missing."""
    if not had_file and KNOWN_HOSTS.exists() and not KNOWN_HOSTS.read_text().strip():
        KNOWN_HOSTS.unlink()
    if not had_dir and KNOWN_HOSTS.parent.exists() and not any(KNOWN_HOSTS.parent.iterdir()):
        KNOWN_HOSTS.parent.rmdir()
