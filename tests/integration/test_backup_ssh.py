"""Copies of encrypted backups to an ssh destination, through a real OpenSSH server on this machine
(tests/integration/local_sshd.py), checked on the remote side, including a link that corrupts a
byte in transit and a host that cannot be reached. A backup, drill and restore of a stack reached
over ssh, with the archive kept on this machine, run against the remote VPS
(test_remote_operator_flow.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from finaiflow_ops.backup import list_backups
from finaiflow_ops.backup.manifest import manifest_path, read_manifest
from finaiflow_ops.stack import Stack
from tests.integration.backups_support import backups_in, error_line
from tests.integration.local_sshd import LocalSshd, free_port, local_sshd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    if not stack.target.is_local:
        pytest.skip("the local sshd reaches this machine's engine; the stack runs elsewhere")
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def ops(sshd: LocalSshd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", *args], capture_output=True, text=True,
                          timeout=300, env=sshd.env, check=False)


@pytest.fixture(scope="module")
def recipient(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A public key to encrypt to: the copies are of encrypted backups (no key is needed to copy)."""
    identity = tmp_path_factory.mktemp("age") / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    return subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def local_backup(stack: Stack, sshd: LocalSshd, recipient: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = ops(sshd, "--project-dir", stack.project_dir, "--json", "backup", "create",
               "--dir", str(tmp_path_factory.mktemp("local")), "--encrypt-to", recipient)
    assert made.returncode == 0, made.stderr
    return Path(json.loads(made.stdout)["path"])


def copy_to(sshd: LocalSshd, stack: Stack, backup: Path, url: str) -> subprocess.CompletedProcess[str]:
    """A new backup, encrypted like `backup` and in its directory, copied to `url`."""
    keys = read_manifest(backup).encryption.recipients  # type: ignore[union-attr]
    return ops(sshd, "--project-dir", stack.project_dir, "backup", "create", "--dir", str(backup.parent),
               "--encrypt-to", keys[0], "--copy-to", url)


def test_copy_to_ssh_lands_a_verified_copy_checked_on_the_remote_side(
        sshd: LocalSshd, stack: Stack, local_backup: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "backups"  # created by the copy, mode 0700
    result = copy_to(sshd, stack, local_backup, sshd.url(str(remote)))
    assert result.returncode == 0, result.stderr
    assert "sha256 computed on the remote host matches the manifest" in result.stderr
    newest = list_backups(local_backup.parent).newest_verified
    assert newest is not None
    assert newest.encrypted and backups_in(remote) == [newest.name, newest.name + ".json"]
    assert (remote / newest.name).read_bytes() == Path(newest.path).read_bytes()
    assert manifest_path(remote / newest.name).read_text() == manifest_path(Path(newest.path)).read_text()
    assert oct(remote.stat().st_mode & 0o777) == "0o700"
    assert oct((remote / newest.name).stat().st_mode & 0o777) == "0o600"


def test_a_byte_flipped_in_transit_is_refused_and_leaves_no_remote_file(
        sshd: LocalSshd, stack: Stack, local_backup: Path, tmp_path: Path) -> None:
    before = set(backups_in(local_backup.parent))
    result = copy_to(sshd, stack, local_backup, sshd.url(str(tmp_path), port=sshd.flipping_port))
    assert result.returncode == 1
    line = error_line(result)
    assert "reads back differently on the remote host" in line and "the local backup is kept" in line, line
    assert list(tmp_path.iterdir()) == []  # neither the archive nor its temporary file
    new = set(backups_in(local_backup.parent)) - before
    assert len(new) == 2 and list_backups(local_backup.parent).newest_verified.name in new  # type: ignore[union-attr]


def test_an_unreachable_copy_host_exits_3_and_keeps_the_local_backup(
        sshd: LocalSshd, stack: Stack, local_backup: Path) -> None:
    before = set(backups_in(local_backup.parent))
    closed = free_port()
    result = copy_to(sshd, stack, local_backup, f"ssh://root@127.0.0.1:{closed}/srv/backups")
    assert result.returncode == 3
    assert f"cannot reach ssh://root@127.0.0.1:{closed}" in error_line(result)
    new = set(backups_in(local_backup.parent)) - before
    newest = list_backups(local_backup.parent).newest_verified
    assert newest is not None and newest.name in new


def test_copy_to_refuses_a_destination_without_a_remote_path(sshd: LocalSshd, stack: Stack,
                                                             local_backup: Path) -> None:
    before = backups_in(local_backup.parent)
    result = copy_to(sshd, stack, local_backup, "ssh://root@127.0.0.1")
    assert result.returncode == 2 and "no remote directory" in error_line(result)
    assert backups_in(local_backup.parent) == before  # refused before any dump
