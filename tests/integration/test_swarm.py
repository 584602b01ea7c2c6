"""The stack on a single-node Docker Swarm: `stack up` with Docker secrets, a broken release refused
and rolled back by the engine, a rollback across a migration, backups and a restore drill against
the database task, `check`, secret rotation, and `stack down`. The rolling update and rollback
through the engine under locust traffic, with every fact it leaves (release, .env, history, no
migration job left), is test_swarm_multinode's: the same CLI and engine update, on three nodes.

The swarm is one Docker engine in a container on this machine (tests/swarm_support.py), reached
through DOCKER_HOST for the whole module, as an operator reaches a remote manager; this machine's
own engine never joins a swarm (leaving one breaks its DNS on existing networks, moby#45144).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from finaiflow_ops import envfile, polling
from finaiflow_ops.backends.swarm.cluster import Swarm
from finaiflow_ops.monitoring import Prometheus
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.rollout_support import BROKEN, NOTE_MIGRATION, build_image, built, remove_image
from tests.swarm_support import Cluster, cli, free_port, make_project, ok, swarm_cluster

pytestmark = [pytest.mark.integration, pytest.mark.destructive]

PROJECT = "ffswarm"
OLD, NEW = "finaiflow/api:1.0.0", "finaiflow/api:1.1.0"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI of the swarm's engine (DOCKER_HOST is set for the module)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the project directory lives: on this machine and, at the same path, on the node."""
    return tmp_path_factory.mktemp("swarm")


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest, shared: Path) -> Iterator[Cluster]:
    if not Target.parse(request.config.getoption("--target")).is_local:
        pytest.skip("the swarm tests make a swarm of containers on this machine")
    with (
        swarm_cluster("ffswarm", managers=1, shared=shared) as cluster,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("DOCKER_HOST", cluster.env["DOCKER_HOST"])
        yield cluster


@pytest.fixture(scope="module")
def project(node: Cluster, shared: Path) -> Iterator[Path]:
    address = node.addresses[node.nodes[0]]
    directory = make_project(
        shared / "stack",
        PROJECT,
        https_port=free_port(),
        http_port=free_port(),
        prometheus_port=free_port(),
        extra={"ALLOWED_HOSTS": f"staging.finaiflow.test,{address}"},
    )
    try:
        up = cli(directory, "stack", "up", timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        yield directory
    finally:
        down = cli(directory, "--yes", "stack", "down", "--volumes", timeout=300)
    # `stack down --volumes` leaves nothing of the stack on the engine (checked after the tests).
    label = f"label=com.docker.stack.namespace={PROJECT}"
    left = {
        what: _docker(what, "ls", "-q", "--filter", label).stdout.split()
        for what in ("service", "secret", "network", "volume")
    }
    assert down.returncode == 0 and not any(left.values()), (down.stderr[-1000:], left)


@pytest.fixture(scope="module")
def swarm(project: Path) -> Swarm:
    return Swarm(Stack(Target.parse("local://"), str(project)))


@pytest.fixture(scope="module")
def base_url(swarm: Swarm) -> str:
    return swarm.stack.base_url()


def _version(base_url: str) -> str:
    with httpx.Client(verify=False, timeout=10) as client:
        return str(client.get(f"{base_url}/version").json()["release"])


def test_stack_up_deploys_every_service_as_a_swarm_service_and_serves_https(
    swarm: Swarm, base_url: str
) -> None:
    status = swarm.stack.status()
    assert status.healthy, [(s.name, [(c.name, c.state) for c in s.containers]) for s in status.services]
    assert {s.name for s in status.services} == set(swarm.stack.services())
    assert [len(s.containers) for s in status.services if s.name == "api"] == [2]
    services = _docker(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={PROJECT}", "--format", "{{.Name}}"
    ).stdout.split()
    assert f"{PROJECT}_api" in services and f"{PROJECT}_postgres" in services, services
    with httpx.Client(verify=False, timeout=10) as client:
        health = client.get(f"{base_url}/health").json()
    assert health["database"] == "ok" and health["cache"] == "ok", health


def test_env_secrets_are_docker_secrets_and_appear_nowhere_in_the_deployed_specs(swarm: Swarm) -> None:
    env = swarm.stack.env
    secrets = {k: v for k, v in env.items() if envfile.is_secret(k, v)}
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "DATABASE_URL"} <= set(secrets)
    names = _docker(
        "secret", "ls", "--filter", f"label=com.docker.stack.namespace={PROJECT}", "--format", "{{.Name}}"
    ).stdout.split()
    assert len(names) == len(secrets), names
    inspected = _docker("service", "inspect", *(f"{PROJECT}_{s}" for s in swarm.stack.services())).stdout
    stack_file = (Path(swarm.stack.project_dir) / ".finaiflow" / "swarm-stack.json").read_text()
    for key, value in secrets.items():
        assert value not in inspected, f"{key}'s value is in `docker service inspect`"
        assert value not in stack_file, f"{key}'s value is in the stack file"
    api_env = next(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] for s in json.loads(inspected)
                   if s["Spec"]["Name"] == f"{PROJECT}_api")
    assert any(e.startswith("SECRET_KEY_FILE=/run/secrets/") for e in api_env), api_env


def _revision(swarm: Swarm) -> list[list[str]]:
    return swarm.stack.psql("SELECT version_num FROM alembic_version", expect_rows=True)


def test_rolling_back_across_a_migration_the_older_release_does_not_know_needs_yes(
    swarm: Swarm, base_url: str
) -> None:
    # The module's first deploy: it records the release running since `stack up` with the Alembic
    # revisions it knows, which the rollback then checks.
    directory = Path(swarm.stack.project_dir)
    newer = "finaiflow/api:1.2.0-swarm"
    lines = ["ENV RELEASE=1.2.0-swarm", "LABEL org.opencontainers.image.version=1.2.0-swarm"]
    with built(swarm.stack, newer, OLD, lines, {"migrations/versions/0002_tenant_note.py": NOTE_MIGRATION}):
        try:
            ok(cli(directory, "deploy", "api", "--image", newer, "--no-backup"))
            assert _revision(swarm) == [["0002_tenant_note"]]
            history = json.loads(ok(cli(directory, "--json", "releases", "api")))["releases"]
            assert history[-1]["revision"] == "0002_tenant_note", history[-1]
            refused = cli(directory, "rollback", "api")
            last = refused.stderr.strip().splitlines()[-1]
            assert refused.returncode == 2 and "0002_tenant_note" in last and "pass --yes" in last, last
            assert {t.image for t in swarm.tasks("api")} == {newer}
            ok(cli(directory, "--yes", "rollback", "api"))
            assert _version(base_url) == "1.0.0"  # the older release runs on the newer schema
        finally:
            # The schema back with the release that knows the migration, before its image goes.
            spec = swarm.spec().stack["services"]["api"]
            swarm.run_job(spec, ["alembic", "downgrade", "0001_initial"], image=newer, timeout=300)
            if {t.image for t in swarm.tasks("api")} != {OLD}:
                ok(cli(directory, "deploy", "api", "--image", OLD, "--no-backup", "--no-migrate"))
    assert _revision(swarm) == [["0001_initial"]]


def test_a_release_that_never_gets_healthy_is_rolled_back_by_the_engine(swarm: Swarm, base_url: str) -> None:
    tag = "finaiflow/api:broken-swarm"
    build_image(swarm.stack, tag, OLD, BROKEN["never-healthy"])
    try:
        refused = cli(
            Path(swarm.stack.project_dir),
            "deploy",
            "api",
            "--image",
            tag,
            "--no-backup",
            "--no-migrate",
            timeout=400,
        )
    finally:
        remove_image(swarm.stack, tag)
    assert refused.returncode == 1, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "rolled back" in last and tag in last, last
    assert {t.image for t in swarm.tasks("api") if t.state == "running"} == {OLD}
    assert _version(base_url) == "1.0.0"


def test_backup_and_restore_drill_run_against_the_database_task(swarm: Swarm) -> None:
    directory = Path(swarm.stack.project_dir)
    made = json.loads(ok(cli(directory, "--json", "backup", "create")))
    assert Path(made["path"]).exists() and made["manifest"]["tables"], made
    drill = json.loads(ok(cli(directory, "--json", "restore", "drill")))
    assert drill["tables"] == made["manifest"]["tables"], (drill, made["manifest"]["tables"])
    databases = [row[0] for row in swarm.stack.psql("SELECT datname FROM pg_database")]
    assert swarm.stack.env["POSTGRES_DB"] in databases and drill["scratch_database"] not in databases


def test_check_verifies_the_swarm_stack_as_it_does_a_compose_one(swarm: Swarm) -> None:
    """`check` on the swarm: services and their tasks, /health through nginx, every Prometheus
    target up (the api tasks found through dnsrr DNS), rules, alerts, the newest backup (the one
    the test above made, read by the ops exporter from the manager's project directory) and the
    certificate; then one broken thing (redis scaled to 0) fails it naming Redis."""
    directory = Path(swarm.stack.project_dir)
    # The backup made above is seen once Prometheus scrapes the exporter again (every 10 s).
    prom = Prometheus.of(swarm.stack)
    deadline = time.monotonic() + 30
    while prom.value('finaiflow_backup_last_verified_timestamp_seconds{job="ops"}') is None:
        assert time.monotonic() < deadline, "Prometheus never got the backup facts from the exporter"
        time.sleep(1)
    report = cli(directory, "--json", "check", timeout=300)
    items = {i["name"]: i for i in json.loads(report.stdout)["items"]}
    failing = [i for i in items.values() if i["status"] == "fail"]
    assert report.returncode == 0 and not failing, (failing, report.stderr[-1000:])
    assert list(items) == ["services", "health", "metrics", "targets", "rules", "alerts", "alerting",
                           "backup", "archive", "certificate"], list(items)
    _docker("service", "scale", "--detach", f"{PROJECT}_redis=0")
    try:
        broken = cli(directory, "--json", "check", timeout=300)
        items = {i["name"]: i for i in json.loads(broken.stdout)["items"]}
        assert broken.returncode == 1 and items["services"]["status"] == "fail", items
        assert "Redis" in items["services"]["detail"] or "Redis" in items["health"]["detail"], items
    finally:
        _docker("service", "scale", f"{PROJECT}_redis=1")
    # While Redis was away the api's health checks failed: the engine may have replaced api tasks.
    swarm.wait_converged(["redis", "api"], timeout=120)
    status, text = 0, ""
    for attempt in polling.attempts(within=90, every=1):
        health = httpx.get(f"{swarm.stack.base_url()}/health", verify=False, timeout=10)
        status, text = health.status_code, health.text
        if status == 200 or attempt.last:
            break
    assert status == 200, text


def test_a_missing_image_is_refused_before_anything_changes(swarm: Swarm) -> None:
    before = swarm.service("api").attrs["Version"]["Index"]
    refused = cli(Path(swarm.stack.project_dir), "deploy", "api", "--image", "finaiflow/api:9.9.9")
    assert refused.returncode == 2, refused.stderr
    assert "finaiflow/api:9.9.9" in refused.stderr.strip().splitlines()[-1]
    assert swarm.service("api").attrs["Version"]["Index"] == before


def test_plan_describes_the_engines_rolling_update_and_changes_nothing(swarm: Swarm) -> None:
    before = swarm.service("api").attrs["Version"]["Index"]
    planned = json.loads(
        ok(cli(Path(swarm.stack.project_dir), "--json", "deploy", "api", "--image", NEW, "--plan"))
    )
    steps = "\n".join(planned["steps"])
    assert f"docker service update --image {NEW} {PROJECT}_api" in steps and "order start-first" in steps, (
        steps
    )
    assert "on failure rollback" in steps, steps
    assert swarm.service("api").attrs["Version"]["Index"] == before


def test_a_changed_env_secret_becomes_a_new_docker_secret_and_the_old_one_goes(
    swarm: Swarm, base_url: str
) -> None:
    directory = Path(swarm.stack.project_dir)
    env_path = directory / ".env"
    before = _docker(
        "secret", "ls", "--filter", f"label=com.docker.stack.namespace={PROJECT}", "--format", "{{.Name}}"
    ).stdout.split()
    new_key = secrets.token_urlsafe(48)
    lines = [
        f"SECRET_KEY={new_key}" if ln.startswith("SECRET_KEY=") else ln
        for ln in env_path.read_text().splitlines()
    ]
    env_path.write_text("\n".join(lines) + "\n")
    up = cli(directory, "stack", "up", timeout=600)
    assert up.returncode == 0, up.stderr[-2000:]
    assert new_key not in up.stdout + up.stderr
    after = _docker(
        "secret", "ls", "--filter", f"label=com.docker.stack.namespace={PROJECT}", "--format", "{{.Name}}"
    ).stdout.split()
    gone, made = set(before) - set(after), set(after) - set(before)
    assert len(gone) == len(made) == 1 and "secret_key" in next(iter(made)), (before, after)
    mounted = _docker(
        "service",
        "inspect",
        f"{PROJECT}_api",
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
    ).stdout.split()
    assert next(iter(made)) in mounted, mounted
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(f"{base_url}/health").status_code == 200
