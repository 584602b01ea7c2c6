"""The reference stack on a real Docker engine, checked through nginx on 127.0.0.1 and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from finaiflow_ops.health import wait_healthy
from finaiflow_ops.stack import Stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False,
    )


def get(url: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(verify=False, timeout=10) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.5)


def test_health_over_https_reports_database_and_cache_ok(base_url: str) -> None:
    r = get(f"{base_url}/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["database"], body["cache"]) == ("ok", "ok", "ok"), body
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_plain_http_redirects_to_https(stack: Stack, base_url: str) -> None:
    http = next(u for u in stack.status().urls if u.startswith("http://") and ":9090" not in u)
    r = get(f"{http.rstrip('/')}/health?x=1", follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://") and r.headers["location"].endswith("/health?x=1")


def test_metrics_are_not_published_through_nginx(base_url: str) -> None:
    assert get(f"{base_url}/metrics").status_code == 404


def test_health_turns_503_when_redis_stops_and_recovers_when_it_starts(stack: Stack, base_url: str) -> None:
    stack.compose("stop", "redis")
    try:
        wait_for(lambda: get(f"{base_url}/health").status_code == 503, timeout=20, what="/health 503")
        body = get(f"{base_url}/health").json()
        assert body["database"] == "ok" and body["cache"] != "ok", body
    finally:
        stack.compose("start", "redis")
        wait_healthy(stack, services=["redis", "api"], timeout=90)
    wait_for(lambda: get(f"{base_url}/health").status_code == 200, timeout=60, what="/health back to 200")


def test_tenant_crud_round_trip_with_cache(base_url: str) -> None:
    api = f"{base_url}/api/v1/tenants"
    domain = f"t-{uuid.uuid4().hex[:10]}.example.com"
    with httpx.Client(verify=False, timeout=10) as client:
        created = client.post(api, json={"name": "Acme", "domain": domain})
        assert created.status_code == 201, created.text
        tid = created.json()["id"]
        first, second = client.get(f"{api}/{tid}"), client.get(f"{api}/{tid}")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert client.post(api, json={"name": "Again", "domain": domain}).status_code == 409
        assert client.put(f"{api}/{tid}", json={"name": "Acme 2", "domain": domain}).status_code == 200
        after = client.get(f"{api}/{tid}")
        assert (after.json()["name"], after.headers["x-cache"]) == ("Acme 2", "MISS")
        assert client.delete(f"{api}/{tid}").status_code == 204
        assert client.get(f"{api}/{tid}").status_code == 404


def test_status_json_matches_the_engine(stack: Stack, base_url: str) -> None:
    import docker

    result = cli("--project-dir", stack.project_dir, "--json", "stack", "status")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    engine = {
        c.name: c for c in docker.from_env().containers.list(
            filters={"label": f"com.docker.compose.project={stack.project}"})
        if c.labels.get("com.docker.compose.oneoff") == "False"
    }
    reported = {c["name"]: c for s in status["services"] for c in s["containers"]}
    assert set(reported) == set(engine)
    for name, c in reported.items():
        assert c["image"] == engine[name].attrs["Config"]["Image"]
        assert c["health"] == engine[name].attrs["State"]["Health"]["Status"]
    assert {s["name"] for s in status["services"]} == set(stack.services()) >= {"nginx", "api", "postgres"}
    assert status["healthy"] is True
    assert f"{base_url}/" in status["urls"]


def test_no_secret_appears_in_status_output(stack: Stack) -> None:
    result = cli("--project-dir", stack.project_dir, "--json", "stack", "status")
    secrets = [v for k, v in stack.env.items() if "PASSWORD" in k or "SECRET" in k]
    assert secrets
    for value in secrets:
        assert value not in result.stdout + result.stderr


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_compose_file_is_one_clear_error(tmp_path: Path) -> None:
    result = cli("--project-dir", str(tmp_path), "stack", "status")
    assert result.returncode == 2
    assert "no compose file" in _one_error_line(result)


def test_missing_env_file_is_one_clear_error(tmp_path: Path) -> None:
    shutil.copy(REPO / "stack" / "compose.yaml", tmp_path / "compose.yaml")
    result = cli("--project-dir", str(tmp_path), "stack", "status")
    assert result.returncode == 2
    assert "no .env" in _one_error_line(result)


def test_unreachable_ssh_target_exits_3(tmp_path: Path) -> None:
    result = cli("--target", "ssh://nobody@127.0.0.1:1", "--project-dir", "/srv/finaiflow", "stack", "status")
    assert result.returncode == 3
    assert "cannot reach ssh://nobody@127.0.0.1:1" in _one_error_line(result)


def test_stopped_docker_engine_exits_3(stack: Stack, tmp_path: Path) -> None:
    # A socket nobody listens on is what a stopped engine looks like to a client.
    dead = f"unix://{tmp_path}/docker.sock"
    result = cli("--project-dir", stack.project_dir, "stack", "status", env={"DOCKER_HOST": dead})
    assert result.returncode == 3
    assert "Docker engine on local:// is not reachable" in _one_error_line(result)
