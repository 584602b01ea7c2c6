"""Alertmanager's configuration without a stack: rendered from a sample .env in throwaway
containers of the Alertmanager image, every route of stack/alertmanager/tests/routes.txt checked
with `amtool config routes test`, and the gate before Alertmanager starts shown to bite."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.integration

ALERTMANAGER_DIR = Path(__file__).resolve().parents[2] / "stack" / "alertmanager"
IMAGE = "finaiflow/alertmanager:local"
LIB = "/usr/local/lib/finaiflow/alertmanager"
SAMPLE_ENV = {"ALERT_WEBHOOK_URL": "https://hooks.example.org/page/T0K3N",
              "ALERT_WARNING_WEBHOOK_URL": "https://hooks.example.org/ticket/T0K3N",
              "ALERT_HEARTBEAT_URL": "https://hc-ping.example.org/uuid",
              "ALERT_SMTP_HOST": "smtp.example.org:587", "ALERT_SMTP_FROM": "am@example.org",
              "ALERT_SMTP_TO": "ops@example.org"}


def in_image(script: str, *, env: dict[str, str], mount: Path | None = None) -> tuple[int, str]:
    """Run `sh -c script` in a throwaway container of the image; its exit status and output."""
    client = docker.from_env()
    volumes = {str(mount): {"bind": LIB, "mode": "ro"}} if mount else {}
    container = client.containers.run(IMAGE, ["-c", script], entrypoint=["sh"], detach=True, environment=env,
                                      volumes=volumes, labels={"finaiflow.test": "amtool"})
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def route_tests() -> list[tuple[str, str]]:
    lines = (ALERTMANAGER_DIR / "tests" / "routes.txt").read_text().splitlines()
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(receiver, labels) for receiver, labels in pairs]


def test_every_route_reaches_its_receiver() -> None:
    tests = route_tests()
    assert {receiver for receiver, _ in tests} == {"paging", "ticket", "heartbeat"}
    script = f"python3 {LIB}/render.py --check-only --out /tmp/am.yml && " + " && ".join(
        f"amtool config routes test --config.file=/tmp/am.yml --verify.receivers={receiver} {labels}"
        for receiver, labels in tests)
    status, output = in_image(script, env=SAMPLE_ENV)
    assert status == 0, output
    assert "/tmp/am.yml is valid" in output
    assert "T0K3N" not in output  # the webhooks' tokens are never printed


def test_a_route_test_fails_for_the_wrong_receiver() -> None:
    script = (f"python3 {LIB}/render.py --check-only --out /tmp/am.yml && amtool config routes test "
              "--config.file=/tmp/am.yml --verify.receivers=ticket "
              "alertname=RedisUnreachable severity=critical")
    status, output = in_image(script, env=SAMPLE_ENV)
    assert status != 0 and "paging" in output, output


def test_alertmanager_does_not_start_with_a_configuration_amtool_refuses(tmp_path: Path) -> None:
    # A template routing to a receiver that does not exist: rendered, refused, never used.
    broken = tmp_path / "alertmanager"
    shutil.copytree(ALERTMANAGER_DIR, broken, ignore=shutil.ignore_patterns("Dockerfile", "tests"))
    template = broken / "alertmanager.yml.in"
    template.write_text(template.read_text().replace("- receiver: paging", "- receiver: nobody", 1))
    broken.chmod(0o755)
    status, output = in_image(f"python3 {LIB}/render.py", env=SAMPLE_ENV, mount=broken)
    assert status == 2, output
    assert "amtool check-config refused it" in output and 'undefined receiver "nobody"' in output, output
    assert "T0K3N" not in output
    status, output = in_image(f"python3 {LIB}/render.py", env={"ALERT_WEBHOOK_URL": "ftp://hooks.example.org/T0K3N"})
    assert status == 2 and "not http(s)" in output and "T0K3N" not in output, output
