"""host setup and image push: the decisions they make from facts (no host, no engine needed).

The real runs against a VPS over SSH are in tests/integration/test_remote_operator_flow.py.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from finaiflow_ops import host
from finaiflow_ops.cli import cli
from finaiflow_ops.errors import UsageError
from finaiflow_ops.host import images, selfinstall, system
from finaiflow_ops.target import Target

REPO = Path(__file__).resolve().parents[2]
DEBIAN_12 = selfinstall.PythonFacts("3.11.2", "x86_64", "glibc", "2.36")


# -- wheels for the host's Python ---------------------------------------------------------------------

def test_platforms_run_from_the_hosts_glibc_down_to_the_first_manylinux() -> None:
    tags = selfinstall.manylinux_platforms("x86_64", "2.36")
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_37_x86_64" not in tags  # a wheel for a newer glibc would not load there
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux_2_5_x86_64"} <= set(tags)
    # pip does not expand a perennial tag to the legacy names wheels still carry: listed too.
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)


def test_an_arm_host_gets_arm_wheels_from_glibc_2_17_on() -> None:
    tags = selfinstall.manylinux_platforms("aarch64", "2.36")
    assert all(t.endswith("_aarch64") for t in tags)
    assert tags[-1] == "manylinux2014_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux_2_16_aarch64" not in tags and "manylinux1_aarch64" not in tags
    assert selfinstall.manylinux_platforms("arm64", "2.36") == tags  # the name some systems report


def test_pip_is_told_the_hosts_python_not_this_ones() -> None:
    args = selfinstall.pip_target_args(DEBIAN_12)
    assert args[:6] == ["--implementation", "cp", "--python-version", "3.11.2", "--abi", "cp311"]
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms == selfinstall.manylinux_platforms("x86_64", "2.36")
    newer = selfinstall.pip_target_args(selfinstall.PythonFacts("3.13.5", "x86_64", "glibc", "2.41"))
    assert "cp313" in newer and "manylinux_2_41_x86_64" in newer


@pytest.mark.parametrize(("facts", "says"), [
    (selfinstall.PythonFacts("3.12.3", "x86_64", "", ""), "not linked against glibc"),  # musl (Alpine)
    (selfinstall.PythonFacts("3.10.13", "x86_64", "glibc", "2.36", "pypy"), "pypy, not CPython"),
])
def test_a_host_python_without_manylinux_wheels_is_refused(facts: selfinstall.PythonFacts, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        selfinstall.pip_target_args(facts, where="ssh://vps")


def test_the_facts_script_reads_this_machines_python() -> None:
    out = subprocess.run([sys.executable, "-c", selfinstall._PYTHON_FACTS], capture_output=True, text=True,
                         check=True).stdout
    facts = selfinstall.PythonFacts.parse(out)
    assert facts.version == ".".join(map(str, sys.version_info[:3]))
    assert facts.libc == "glibc" and facts.libc_version.startswith("2.")


def _wheel(path: Path, files: dict[str, bytes], *, when: tuple[int, int, int, int, int, int]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return path


def test_the_wheel_digest_depends_on_contents_not_on_when_it_was_built(tmp_path: Path) -> None:
    files = {"finaiflow_ops/__init__.py": b"x = 1\n", "finaiflow_ops-0.1.0.dist-info/METADATA": b"Name: f\n"}
    first = _wheel(tmp_path / "a.whl", {**files, "finaiflow_ops-0.1.0.dist-info/RECORD": b"one"},
                   when=(2024, 1, 1, 0, 0, 0))
    rebuilt = _wheel(tmp_path / "b.whl", {**files, "finaiflow_ops-0.1.0.dist-info/RECORD": b"two"},
                     when=(2025, 6, 1, 12, 0, 0))
    changed = _wheel(tmp_path / "c.whl", {**files, "finaiflow_ops/__init__.py": b"x = 2\n"},
                     when=(2024, 1, 1, 0, 0, 0))
    assert selfinstall.wheel_digest(first) == selfinstall.wheel_digest(rebuilt)
    assert selfinstall.wheel_digest(first) != selfinstall.wheel_digest(changed)


def test_this_checkout_is_found_and_its_wheel_built_from_sources_only() -> None:
    assert selfinstall.checkout() == REPO
    sources = {p.as_posix() for p in selfinstall._build_sources(REPO)}
    assert {"pyproject.toml", "README.md", "src/finaiflow_ops/host/setup.sh"} <= sources
    assert not any("__pycache__" in s or ".egg-info" in s or s.startswith("tests/") for s in sources)


def test_the_setup_script_is_shipped_in_the_wheel() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = system.SCRIPT.relative_to(REPO / "src" / "finaiflow_ops").as_posix()
    assert shipped in package_data["finaiflow_ops"]


# -- the system part: facts before and after setup.sh ---------------------------------------------------

FRESH = system.SystemFacts.parse("docker_installed=\ndocker_running=\ncompose=\ncron_installed=\n"
                                 "cron_running=\nage=\npython_venv=\n")
READY = system.SystemFacts.parse("docker_installed=20.10.24+dfsg1\ndocker_running=20.10.24+dfsg1\n"
                                 "compose=2.26.1-4\ncron_installed=yes\ncron_running=yes\nage=1.1.1\n"
                                 "python_venv=yes\n")


def test_facts_are_read_from_the_scripts_lines() -> None:
    wanted = system.SystemFacts("20.10.24+dfsg1", "20.10.24+dfsg1", "2.26.1-4", True, True, "1.1.1", True)
    assert wanted == READY
    assert system.SystemFacts() == FRESH


def test_a_fresh_host_reports_everything_installed_and_started() -> None:
    assert system.changes(FRESH, READY) == [
        "installed the Docker engine 20.10.24+dfsg1", "started the Docker engine",
        "installed compose v2 2.26.1-4", "installed cron", "started cron", "installed age 1.1.1",
        "installed python3-venv"]


def test_a_second_run_reports_no_change() -> None:
    assert system.changes(READY, READY) == []


def test_an_engine_that_was_installed_but_stopped_is_reported_started_only() -> None:
    stopped = system.SystemFacts.parse("docker_installed=20.10.24+dfsg1\ncompose=2.26.1-4\n")
    assert system.changes(stopped, stopped.__class__("20.10.24+dfsg1", "20.10.24+dfsg1", "2.26.1-4")) == [
        "started the Docker engine"]


def test_root_needs_no_sudo_and_a_user_goes_through_sudo_n() -> None:
    assert system.Login("root", "root").as_root("bash", "-s") == ("bash", "-s")
    deploy = system.Login("deploy", "deploy", ("sudo", "-n"))
    assert deploy.as_root("bash", "-s") == ("sudo", "-n", "bash", "-s")


# -- image push: which images to send -----------------------------------------------------------------

def test_an_image_the_host_has_under_its_name_is_skipped() -> None:
    assert images.plan({"api:1": "sha256:a"}, {"api:1": "sha256:a"}, {"sha256:a"}) == [("api:1", "skipped")]


def test_an_image_the_host_has_under_another_name_is_tagged_not_sent() -> None:
    assert images.plan({"api:2": "sha256:a"}, {"api:2": None}, {"sha256:a"}) == [("api:2", "tagged")]


def test_a_name_pointing_to_another_image_on_the_host_is_pushed() -> None:
    assert images.plan({"api:1": "sha256:new"}, {"api:1": "sha256:old"}, set()) == [("api:1", "pushed")]


def test_an_id_is_sent_once_when_two_names_share_it() -> None:
    steps = images.plan({"api:1": "sha256:a", "api:latest": "sha256:a", "web:1": "sha256:b"},
                        {"api:1": None, "api:latest": None, "web:1": "sha256:b"}, set())
    assert steps == [("api:1", "pushed"), ("api:latest", "tagged"), ("web:1", "skipped")]


class _ClosedEarly(io.BytesIO):
    def write(self, data: object) -> int:
        raise BrokenPipeError


def test_the_relay_gzips_what_docker_load_reads_back() -> None:
    archive = b"layer " * 50_000
    sink = io.BytesIO()
    sink.close = lambda: None  # type: ignore[method-assign]  # keep it readable after the relay
    sent, size, cut = images._relay(io.BytesIO(archive), sink, compress=True)
    assert (size, cut) == (len(archive), False)
    assert sent == len(sink.getvalue()) < size
    assert gzip.decompress(sink.getvalue()) == archive


def test_the_relay_says_when_the_host_stopped_reading() -> None:
    assert images._relay(io.BytesIO(b"x" * 10), _ClosedEarly(), compress=False)[2] is True


# -- refusals before anything runs ----------------------------------------------------------------------

def test_host_setup_refuses_this_machine_and_points_to_provision() -> None:
    with pytest.raises(UsageError, match="not this machine") as raised:
        host.setup(Target.parse("local://"))
    assert "scripts/provision" in raised.value.one_line()


def test_host_setup_wants_an_absolute_project_directory() -> None:
    with pytest.raises(UsageError, match="not an absolute path"):
        host.setup(Target.parse("ssh://deploy@vps.example"), project_dir="finaiflow")


def test_image_push_refuses_this_machine() -> None:
    with pytest.raises(UsageError, match="another host"):
        host.push_images(Target.parse("local://"), ["finaiflow/api:1.1.0"])


def test_the_cli_exits_2_with_one_line_for_a_local_host_setup() -> None:
    done = subprocess.run([sys.executable, "-m", "finaiflow_ops.cli", "--yes", "host", "setup"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: host setup prepares another host")


def test_image_push_needs_at_least_one_image() -> None:
    result = CliRunner().invoke(cli, ["--target", "ssh://vps.example", "image", "push"])
    assert result.exit_code == 2 and "Missing argument 'IMAGES...'" in result.output


def test_json_of_a_setup_has_its_fields_and_whether_it_changed(capsys: pytest.CaptureFixture[str]) -> None:
    from finaiflow_ops.output import print_json

    print_json(host.HostSetup("ssh://vps", (), "20.10.24", "2.26.1", "0.1.0", "3.11.2", None, 0, 1.5))
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is False and data["finaiflow_ops"] == "0.1.0" and data["changes"] == []
