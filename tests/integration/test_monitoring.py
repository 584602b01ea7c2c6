"""Monitoring against the reference stack: Prometheus' targets, the ops exporter's facts, every
dashboard query, `check`, the Redis alert firing, and `logs`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from finaiflow_ops import backup, logs, monitoring, releases
from finaiflow_ops.backup.manifest import manifest_path
from finaiflow_ops.health import wait_healthy, wait_http
from finaiflow_ops.monitoring import Prometheus
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.check import served_certificate
from tests.integration.test_stack import cli

pytestmark = pytest.mark.integration
DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "stack" / "grafana" / "dashboards").glob("*.json"))


def ops(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--target", str(stack.target), "--project-dir", stack.project_dir, *args)


def exporter_value(prom: Prometheus, expr: str, *, timeout: float = 30.0) -> float:
    """The value of `expr` once Prometheus has it (the exporter is scraped every 10 s)."""
    deadline = time.monotonic() + timeout
    while (value := prom.value(expr)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus has no value for {expr} after {timeout} s")
        time.sleep(1)
    return value


# -- facts the dashboards need, real ones when the stack has them ----------------------------------------


@pytest.fixture
def fresh_backup(stack: Stack) -> Iterator[None]:
    """A verified backup younger than 26 h: the stack's own when it has one, else one made with
    `backup create` for this test and removed afterwards."""
    prom = Prometheus.of(stack)
    age = prom.value('max(time() - finaiflow_backup_last_verified_timestamp_seconds{job="ops"})')
    if age is not None and age < monitoring.BACKUP_MAX_AGE_HOURS * 3600:
        yield
        return
    if not stack.target.is_local:
        pytest.skip("makes a backup in the project directory: local targets only")
    directory = backup.default_directory(stack)
    created = not directory.exists()
    made = backup.create(backup.Database.of(stack), directory, reason="monitoring test")
    try:
        taken = made.manifest.started_at.timestamp()
        exporter_value(prom, f"finaiflow_backup_last_verified_timestamp_seconds >= {taken - 1:.0f}")
        yield
    finally:
        Path(made.path).unlink(missing_ok=True)
        manifest_path(Path(made.path)).unlink(missing_ok=True)
        if created:
            shutil.rmtree(directory)


@pytest.fixture
def release_history(stack: Stack) -> Iterator[None]:
    """A release history: the stack's own, else the running api recorded as `observed` (with the
    rollout module's own writer), removed afterwards."""
    if releases.read_state(stack, "releases.json") is not None:
        yield
        return
    state_dir = f"{stack.project_dir}/{releases.STATE_DIR}"
    created = not stack.target.exists(state_dir)
    api = stack.containers("api")[0]
    try:
        releases.record(stack, releases.Release(id=0, service="api", image=api.image, image_id=api.image_id,
                                                config_hash="", kind="observed", note="monitoring test"))
        exporter_value(Prometheus.of(stack), 'finaiflow_release_info{job="ops", service="api"}')
        yield
    finally:
        stack.target.run("rm", "-f", f"{state_dir}/releases.json")
        if created:
            stack.target.run("rmdir", state_dir, check=False)


def some_traffic(base_url: str) -> None:
    """User requests through nginx: tenant writes and cached reads, and a 404."""
    api = f"{base_url}/api/v1/tenants"
    with httpx.Client(verify=False, timeout=10) as client:
        domain = f"m-{uuid.uuid4().hex[:10]}.example.com"
        created = client.post(api, json={"name": "Monitoring", "domain": domain})
        assert created.status_code == 201, created.text
        tid = created.json()["id"]
        for _ in range(3):
            client.get(f"{api}/{tid}")
        client.get(api)
        client.get(f"{api}/00000000-0000-0000-0000-000000000000")
        client.delete(f"{api}/{tid}")


# -- Prometheus and the ops exporter ---------------------------------------------------------------------


def test_prometheus_scrapes_api_ops_exporter_nginx_and_itself_all_up(stack: Stack) -> None:
    prom = Prometheus.of(stack)
    targets = prom.wait_scraped(timeout=30)
    assert {t.job for t in targets} == {"api", "ops", "prometheus", "nginx", "alertmanager"}
    down = [f"{t.job} {t.instance}: {t.health} {t.last_error}" for t in targets if not t.up]
    assert not down, down
    # nginx's target is its upstream watcher's counters: running, and checking every 2 s.
    assert exporter_value(prom, 'nginx_upstream_watcher_enabled{job="nginx"}') == 1
    age = exporter_value(prom, 'time() - nginx_upstream_watcher_last_check_timestamp_seconds{job="nginx"}')
    assert age < 30, f"the watcher's last check was {age:.0f} s old when scraped"


def test_ops_exporter_reports_dependencies_nginx_disk_and_the_served_certificate(
        stack: Stack, base_url: str) -> None:
    prom = Prometheus.of(stack)
    for dependency in ("database", "cache"):
        assert exporter_value(prom, f'finaiflow_dependency_up{{job="ops", dependency="{dependency}"}}') == 1
    assert exporter_value(prom, 'nginx_up{job="ops"}') == 1
    assert exporter_value(prom, 'finaiflow_probe_success{job="ops", probe="nginx_https"}') == 1
    free = exporter_value(prom, 'finaiflow_filesystem_avail_bytes{job="ops", mount="database"}'
                                ' / finaiflow_filesystem_size_bytes{job="ops", mount="database"}')
    assert 0 < free < 1
    # The exporter reads what clients are served: the same certificate this test reads itself.
    host = base_url.split("://", 1)[1].split(":")[0]
    port = int(base_url.rsplit(":", 1)[1]) if base_url.count(":") == 2 else 443
    cert = served_certificate(host, port, servername=stack.env.get("DOMAIN") or "localhost")
    not_after = exporter_value(prom, 'finaiflow_tls_certificate_not_after_timestamp_seconds{job="ops"}')
    assert not_after == cert.not_valid_after_utc.timestamp()


@pytest.mark.destructive
def test_a_restarted_api_container_shows_a_new_start_under_the_same_name(stack: Stack) -> None:
    # What ContainerRestartLoop counts: starts per container name, which a restart keeps.
    prom = Prometheus.of(stack)
    api = stack.containers("api")[0]
    series = f'finaiflow_api_process_start_time_seconds{{job="ops", container="{api.name}"}}'
    before = exporter_value(prom, series)
    starts = exporter_value(prom, f"changes({series}[15m])")
    stack.target.docker().containers.get(api.id).restart(timeout=35)
    try:
        exporter_value(prom, f"{series} > {before}", timeout=45)
        assert exporter_value(prom, f"changes({series}[15m])") == starts + 1
    finally:
        wait_healthy(stack, services=["api"], timeout=90)
        # The restarted container may come back at another address: nginx's upstream watcher
        # reloads it by itself (docs/rollout.md), nobody else does here.
        wait_http(f"{stack.base_url()}/health", timeout=30)


def test_ops_exporter_has_no_capability_and_mounts_everything_read_only(stack: Stack) -> None:
    status = stack.exec("ops-exporter", ["cat", "/proc/self/status"]).stdout
    effective = re.search(r"^CapEff:\s*(\w+)", status, flags=re.M)
    assert effective and int(effective[1], 16) == 0, f"capabilities {effective and effective[1]}"
    mounts = {fields[1]: fields[3].split(",") for line in stack.exec("ops-exporter", ["cat", "/proc/mounts"])
              .stdout.splitlines() if len(fields := line.split()) > 3}
    for path in ("/", "/facts/project", "/facts/volumes/pg_data"):
        assert "ro" in mounts.get(path, []), f"{path} is mounted {mounts.get(path)}"


def test_every_required_alert_rule_is_loaded_and_evaluates(stack: Stack) -> None:
    rules = Prometheus.of(stack).rules()
    assert set(monitoring.REQUIRED_ALERTS) <= {r.name for r in rules}
    assert not [f"{r.name}: {r.last_error}" for r in rules if r.health == "err"]


# -- dashboards ------------------------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel or annotation, PromQL) for every query Grafana would send."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            found += [(path.stem, panel["title"], t["expr"]) for t in panel["targets"]]
        found += [(path.stem, f"annotation {a['name']}", a["expr"]) for a in board["annotations"]["list"]
                  if a.get("expr")]
    return found


def test_every_dashboard_query_returns_data(stack: Stack, base_url: str, fresh_backup: None,
                                            release_history: None) -> None:
    some_traffic(base_url)
    prom = Prometheus.of(stack)
    queries = dashboard_queries()
    assert len(queries) >= 30
    # Rates need two scrapes after the traffic; Grafana's $__rate_interval is at least 4 scrapes.
    deadline = time.monotonic() + 45
    while True:
        empty = [f"{board}: {title}: {expr}" for board, title, expr in queries
                 if not prom.query(expr.replace("$__rate_interval", "1m"))]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not empty, "queries without data:\n" + "\n".join(empty)


# -- check -----------------------------------------------------------------------------------------------


def check_items(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {item["name"]: item for item in report["items"]}


def test_check_passes_on_the_healthy_stack_with_a_fresh_backup(stack: Stack, base_url: str,
                                                               fresh_backup: None) -> None:
    result = ops(stack, "--json", "check", "--url", base_url)
    items = check_items(result)
    assert list(items) == ["services", "health", "metrics", "targets", "rules", "alerts", "alerting",
                           "backup", "archive", "certificate"]
    failing = {name: i["detail"] for name, i in items.items() if i["status"] == "fail"}
    assert result.returncode == 0 and not failing, failing


def test_check_and_logs_give_one_clear_error_for_bad_input_or_no_engine(stack: Stack, tmp_path: Path) -> None:
    no_engine = {"DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    dead = cli("--project-dir", stack.project_dir, "check", env=no_engine)
    assert dead.returncode == 3 and "Docker engine on local:// is not reachable" in dead.stderr
    unknown = ops(stack, "logs", "no-such-service")
    assert unknown.returncode == 2
    assert "no service 'no-such-service'" in unknown.stderr.strip().splitlines()[-1]
    since = ops(stack, "logs", "--since", "yesterday")
    assert since.returncode == 2 and "neither a duration nor a time" in since.stderr


# -- logs ------------------------------------------------------------------------------------------------


def _say_in_redis_log(stack: Stack, marker: str) -> None:
    # A line in the container's own log (PID 1's stdout), carrying the password from its environment.
    stack.exec("redis", ["sh", "-c", 'echo "$0 password=$REDIS_PASSWORD" > /proc/1/fd/1', marker])


def test_logs_are_timestamped_merged_and_redacted(stack: Stack) -> None:
    marker = f"monitoring-test-{uuid.uuid4().hex[:8]}"
    _say_in_redis_log(stack, marker)
    result = ops(stack, "logs", "redis", "--since", "2m")
    assert result.returncode == 0, result.stderr
    line = next((ln for ln in result.stdout.splitlines() if marker in ln), "")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \S+redis\S* \| ", line), line
    assert line.endswith("password=***"), line
    leaked = stack.env["REDIS_PASSWORD"] in result.stdout
    assert not leaked, "the Redis password appeared in `logs` output"
    every = json.loads(ops(stack, "--json", "logs", "--tail", "5").stdout)
    assert set(every["services"]) == set(stack.services())
    times = [ln["time"] for ln in every["lines"]]
    assert len(times) > 5 and times == sorted(times, key=logs.sort_key)


def test_logs_follow_prints_new_lines_as_they_come(stack: Stack) -> None:
    marker = f"monitoring-follow-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", str(stack.target), "--project-dir",
         stack.project_dir, "logs", "redis", "--follow", "--tail", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for ln in proc.stdout or ():
            lines.append(ln)
            if marker in ln:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        # The follower may not listen yet when the first line is written: say it until it is seen.
        for _ in range(20):
            _say_in_redis_log(stack, marker)
            if seen.wait(1):
                break
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert seen.is_set(), f"`logs --follow` never printed the new line; printed: {lines[-5:]}"
    assert any(ln.rstrip().endswith("password=***") for ln in lines if marker in ln)
