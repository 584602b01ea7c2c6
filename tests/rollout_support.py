"""What the rollout tests share (integration and acceptance): releases built for the test on the
target's engine, traffic through nginx, and the facts a finished rollout must leave behind.

Images are built FROM a release already on the target, from an in-memory build context (a
Dockerfile and a few files): a second or two, no registry, removed by the test afterwards.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress

import pytest
from loadtests.gate import Sample, traffic

from finaiflow_ops import envfile, http, releases, rollout, standby
from finaiflow_ops.proxy import Proxy
from finaiflow_ops.stack import ContainerInfo, Stack

SERVICE = "api"

# Broken releases, each a few Dockerfile lines on top of a working one.
BROKEN: Mapping[str, Sequence[str]] = {
    # The process exits at once (and compose's restart policy brings it back, again and again).
    "exits-at-start": ['CMD ["python", "-c", "import sys; print(\'boom: refusing to start\'); sys.exit(3)"]'],
    # The app serves, but Docker's health check never passes.
    "never-healthy": ['HEALTHCHECK --interval=1s --timeout=1s --start-period=1ms --retries=1 CMD ["false"]'],
    # Docker says healthy, but /health answers 503: the app cannot reach its Redis.
    "healthy-in-docker-but-503": [
        'HEALTHCHECK --interval=1s --timeout=1s --start-period=1ms --retries=1 CMD ["true"]',
        'CMD ["sh", "-c", "REDIS_URL=redis://no-such-redis:6379/0 exec uvicorn app.main:app --host 0.0.0.0 '
        '--port 8000"]',
    ],
}

FAILING_MIGRATION = '''"""A migration that fails (test fixture)."""
revision = "0002_fails"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    raise RuntimeError("migration boom: this release cannot migrate")


def downgrade() -> None:
    pass
'''

# A newer release with one more migration, which the older releases do not know.
NOTE_MIGRATION = '''"""Tenants get an optional note (test fixture for rollbacks across a migration)."""
import sqlalchemy as sa
from alembic import op

revision = "0002_tenant_note"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "note")
'''


def build_image(stack: Stack, tag: str, base: str, lines: Sequence[str],
                files: Mapping[str, str] | None = None) -> str:
    """Build `tag` FROM `base` on the stack's engine with extra Dockerfile lines and files."""
    dockerfile = "\n".join([f"FROM {base}", *(f"COPY {name} /app/{name}" for name in files or {}),
                            *lines]) + "\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    image, _ = stack.target.docker().images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True,
                                                  forcerm=True)
    return str(image.id)


def remove_image(stack: Stack, tag: str) -> None:
    import docker.errors

    with suppress(docker.errors.ImageNotFound):
        stack.target.docker().images.remove(tag, force=True)


@contextmanager
def built(stack: Stack, tag: str, base: str, lines: Sequence[str],
          files: Mapping[str, str] | None = None) -> Iterator[str]:
    """An image built for the block, removed after it."""
    build_image(stack, tag, base, lines, files)
    try:
        yield tag
    finally:
        remove_image(stack, tag)


@contextmanager
def put_back_afterwards(request: pytest.FixtureRequest, stack: Stack) -> Iterator[list[ContainerInfo]]:
    """For tests that deploy: skipped on a remote target without --allow-destructive; afterwards,
    whatever happened, the api runs the release and the number of containers it ran before (a
    deploy repairs any half-done state) and the lock is free. Yields the containers found."""
    if not stack.target.is_local and not request.config.getoption("--allow-destructive"):
        pytest.skip(f"deploys and rollbacks change {stack.target}: pass --allow-destructive")
    found = serving(stack)
    assert found, f"{SERVICE} does not run on {stack.target}"
    try:
        yield found
    finally:
        lock = releases.lock_status(stack)
        if lock.lock is not None and (lock.stale or lock.lock.pid == os.getpid()):
            releases.release_lock(stack)
        if standby.get(stack, SERVICE) is not None:  # the deploys' warm standby goes with the tests
            rollout.retire_standby(stack, SERVICE)
        now = stack.containers(SERVICE)
        if {c.image for c in now} != {found[0].image} or len(now) != len(found) or any(
                c.state != "running" for c in now):
            rollout.deploy(stack, SERVICE, found[0].image, replicas=len(found), backup=False)


def serving(stack: Stack) -> list[ContainerInfo]:
    """The running containers of the service, but for the warm standby (standby.json)."""
    kept = standby.get(stack, SERVICE)
    standing = set(kept.containers) if kept else set()
    return [c for c in stack.containers(SERVICE) if c.state == "running" and c.name not in standing]


def version(base_url: str, servername: str | None = None) -> str:
    """The release /version reports; `servername` is asked for (Host, SNI) when base_url is an address."""
    with http.client(base_url, servername=servername) as client:
        return str(client.get(f"{base_url}/version").json()["release"])


def image_version(stack: Stack, image: str) -> str:
    """The release an image says it is (its OCI version label)."""
    return str(stack.target.docker().images.get(image).labels.get("org.opencontainers.image.version", "?"))


def failures(samples: Sequence[Sample]) -> list[str]:
    return [f"{s.name}: {s.error}" for s in samples if s.error]


def assert_settled(stack: Stack, image: str, replicas: int, *, standby_of: str | None = None) -> None:
    """What every finished rollout leaves: `replicas` running containers of `image` and nothing
    else (but, with `standby_of`, the warm standby of that image, running, out of the upstream),
    nginx naming exactly them, .env naming the image, the lock free."""
    kept = standby.get(stack, SERVICE)
    if standby_of is None:
        assert kept is None, f"a standby is kept: {kept}"
    else:
        assert kept is not None and kept.image == standby_of, f"standby {kept}, expected one of {standby_of}"
        standing = [c for c in stack.containers(SERVICE) if c.name in kept.containers]
        assert standing and {(c.state, c.image) for c in standing} == {("running", standby_of)}, standing
        upstream = Proxy(stack).read_upstream(SERVICE)
        assert upstream is not None and not set(upstream.hosts) & set(kept.containers), upstream
    containers = [c for c in stack.containers(SERVICE) if kept is None or c.name not in kept.containers]
    assert [c.state for c in containers] == ["running"] * replicas, [(c.name, c.state) for c in containers]
    assert {c.image for c in containers} == {image}, [(c.name, c.image) for c in containers]
    upstream = Proxy(stack).read_upstream(SERVICE)
    assert upstream is not None, "nginx has no upstream for the api"
    assert upstream.by_service_name or set(upstream.hosts) == {c.name for c in containers}, upstream
    env = envfile.parse(stack.target.read_text(stack.env_path))
    key = rollout.image_variable(stack, SERVICE)
    assert env.get(key) == image, f"{key} in .env is {env.get(key)!r}, {image} runs"
    assert releases.lock_status(stack).lock is None, releases.lock_status(stack)


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


__all__ = [
    "BROKEN",
    "FAILING_MIGRATION",
    "NOTE_MIGRATION",
    "SERVICE",
    "Sample",
    "assert_settled",
    "build_image",
    "built",
    "failures",
    "image_version",
    "put_back_afterwards",
    "remove_image",
    "serving",
    "traffic",
    "version",
    "wait_until",
]
