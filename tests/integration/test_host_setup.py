"""`host setup` and `image push` against a really remote VPS (tests/remote_support.py), over SSH.

The VPS is Debian 12 with its own engine, cron and age, but no compose v2 and no finaiflow-ops, and
it cannot reach the package index: what `host setup` installs there comes through apt (compose v2,
from trixie) or over the SSH connection (finaiflow-ops's wheels). The second run must change
nothing; `image push` must send an image once, then skip it by id, and tag rather than re-send
an id the host has under another name.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.remote_support import RemoteVps, remote_vps

pytestmark = pytest.mark.integration
PROJECT_DIR = "/opt/finaiflow"


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    seconds: float

    def json(self) -> Any:
        assert self.result.returncode == 0, f"exit {self.result.returncode}: {self.result.stderr[-3000:]}"
        return json.loads(self.result.stdout)


def cli(vps: RemoteVps, *args: str) -> Run:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", "--target", vps.url, *args],
                            capture_output=True, text=True, timeout=1200, check=False)
    return Run(result, time.monotonic() - started)


@pytest.fixture(scope="module")
def vps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteVps]:
    with remote_vps(tmp_path_factory.mktemp("host-setup-vps")) as made:
        yield made


@pytest.fixture(scope="module")
def first_setup(vps: RemoteVps) -> Run:
    assert vps.ssh("docker", "compose", "version").returncode != 0, "the VPS should start without compose v2"
    assert vps.ssh("sh", "-c", "command -v finaiflow-ops").returncode != 0
    return cli(vps, "--yes", "--json", "host", "setup", "--project-dir", PROJECT_DIR)


def test_setup_installs_compose_v2_and_a_working_finaiflow_ops_on_the_host(
        vps: RemoteVps, first_setup: Run) -> None:
    print(f"host setup, first run: {first_setup.seconds:.1f} s")  # shown with pytest -s
    done = first_setup.json()
    compose = vps.ssh("docker", "compose", "version", "--short")
    assert compose.returncode == 0, f"no compose v2 on the VPS after setup: {compose.stderr}"
    assert done["compose"] == compose.stdout.strip() and done["compose"].startswith("2.")

    # finaiflow-ops runs ON the host, from PATH, as the daily backup's cron entry will run it.
    version = importlib.metadata.version("finaiflow-ops")
    there = vps.ssh("finaiflow-ops", "--version")
    assert there.stdout.strip() == f"finaiflow-ops, version {version}", there.stderr
    assert done["finaiflow_ops"] == version and done["sent_bytes"] > 0

    mode = vps.ssh("stat", "-c", "%a %U", PROJECT_DIR).stdout.split()
    assert mode == ["750", "root"], f"{PROJECT_DIR} on the VPS: {mode}"
    # Only that changed: the engine, cron and age were in place, and are not reported.
    changes = [re.sub(r" \([0-9a-f]{12}\)$", "", change) for change in done["changes"]]  # the wheel's digest
    assert changes == [f"installed compose v2 {done['compose']}", f"installed finaiflow-ops {version}",
                       f"created {PROJECT_DIR} (mode 0750, owner root)"]


def test_a_second_setup_changes_nothing_and_sends_nothing(
        vps: RemoteVps, first_setup: Run) -> None:
    first_setup.json()
    second = cli(vps, "--yes", "--json", "host", "setup", "--project-dir", PROJECT_DIR)
    print(f"host setup, second run: {second.seconds:.1f} s")
    done = second.json()
    assert done["changes"] == [] and done["changed"] is False, done["changes"]
    assert done["sent_bytes"] == 0
    assert "installing finaiflow-ops" not in second.result.stderr
    text = cli(vps, "--yes", "host", "setup").result
    assert text.returncode == 0 and "nothing changed" in text.stdout, text.stderr


# -- image push -------------------------------------------------------------------------------------

def _local_docker(*args: str, input: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *args], input=input, capture_output=True, check=True, timeout=120,
                          env=env).stdout.decode().strip()


@pytest.fixture
def small_image() -> Iterator[str]:
    """An image of this test's own on this machine (one small file, so a new id each run)."""
    token = secrets.token_hex(6)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = f"push test {token}\n".encode() * 1000
        info = tarfile.TarInfo("push-test.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    name = f"finaiflow/push-test:{token}"
    _local_docker("import", "-", name, input=archive.getvalue())
    try:
        yield name
    finally:
        _local_docker("image", "rm", "-f", name, f"{name}-again")


def test_push_sends_an_image_once_then_skips_it_and_tags_a_known_id(
        vps: RemoteVps, small_image: str) -> None:
    local_id = _local_docker("image", "inspect", "-f", "{{.Id}}", small_image)

    first = cli(vps, "--json", "image", "push", small_image).json()
    print(f"image push: {first['bytes']} bytes sent in {first['seconds']:.1f} s")
    pushed = [(i["image"], i["image_id"], i["action"]) for i in first["images"]]
    assert pushed == [(small_image, local_id, "pushed")]
    assert 0 < first["bytes"] < first["image_bytes"], first  # gzip on the way
    there = vps.ssh("docker", "image", "inspect", "-f", "{{.Id}}", small_image)
    assert there.stdout.strip() == local_id, there.stderr

    again = cli(vps, "--json", "image", "push", small_image).json()
    assert ([i["action"] for i in again["images"]], again["bytes"]) == (["skipped"], 0)

    # The same id under another name: tagged on the host, not sent again.
    _local_docker("tag", small_image, f"{small_image}-again")
    tagged = cli(vps, "--json", "image", "push", small_image, f"{small_image}-again").json()
    assert ([i["action"] for i in tagged["images"]], tagged["bytes"]) == (["skipped", "tagged"], 0)
    there = vps.ssh("docker", "image", "inspect", "-f", "{{.Id}}", f"{small_image}-again")
    assert there.stdout.strip() == local_id, there.stderr


def test_push_of_a_missing_local_image_is_a_usage_error_and_sends_nothing(
        vps: RemoteVps, small_image: str) -> None:
    missing = f"finaiflow/never-built:{secrets.token_hex(4)}"
    done = cli(vps, "image", "push", small_image, missing).result
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no image {missing} on this machine"), last
    assert vps.ssh("docker", "image", "inspect", small_image).returncode != 0, "the image present was sent"
