"""What the swarm tests share: a project directory for a swarm stack, the CLI run against it, and
free ports. Swarm publishes host-mode ports on every interface; the tests reach them on 127.0.0.1
(single node) or on the node container's address (multi-node, a network the test made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
