"""Debian packages a test needs on the machine running it (pebble, cron, ssh-audit), installed
when their command is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

__all__ = ["ensure_package"]


def ensure_package(command: str, package: str) -> None:
    """Install a Debian package the test needs when its command is missing (idempotent, quick)."""
    if shutil.which(command):
        return
    if os.geteuid() != 0:
        pytest.fail(f"{command} is missing and installing {package} needs root: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=300, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=True)
        subprocess.run(install, env=env, capture_output=True, timeout=300, check=True)
