"""Preparing a remote host to run the stack, and putting local images on it: `host setup`, `image push`.

    system.py       the Docker engine, compose v2, cron, age, python3-venv: setup.sh (shared with
                    scripts/provision), streamed over the target's connection and run as root
    selfinstall.py  finaiflow-ops itself on the host (this checkout's wheel and a wheelhouse built
                    here for the host's Python, installed offline into /opt/finaiflow-ops)
    images.py       `docker save` here piped into `docker load` there, for the images the host
                    lacks (one archive: shared layers sent once)

    from finaiflow_ops import host
    done = host.setup(Target.parse("ssh://root@vps"), project_dir="/opt/finaiflow")
    done.changes          # () on a second run: everything was in place
    host.push_images(target, ["finaiflow/api:1.1.0"]).sent   # () when the host had it

Both are idempotent: setup reads the host's facts before and after, and reports what differs;
push compares image ids and sends only what the host does not have.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from pathlib import Path

from finaiflow_ops.errors import UsageError
from finaiflow_ops.host import selfinstall, system
from finaiflow_ops.host.images import ImagePush, PushReport, push_images
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.target import Target

__all__ = ["HostSetup", "ImagePush", "PushReport", "push_images", "setup"]



@dataclass(frozen=True)
class HostSetup:
    """What `host setup` found and did on a host."""

    target: str
    changes: tuple[str, ...]  # what was installed, started or created, in order; () when nothing
    docker: str  # the engine's version on the host
    compose: str
    finaiflow_ops: str  # the version installed on the host (/usr/local/bin/finaiflow-ops)
    python: str
    project_dir: str | None
    sent_bytes: int  # the wheels sent over the connection (0 when the host had this wheel)
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def setup(
    target: Target,
    *,
    project_dir: str | None = None,
    wheel: Path | None = None,
    progress: Progress | None = None,
) -> HostSetup:
    """Prepare a Debian host over SSH, idempotently: Docker engine, compose v2, cron, age, and
    finaiflow-ops (`wheel`, else this checkout's) under /opt/finaiflow-ops; the project directory
    (mode 0750, owned by the login user) when one is named."""
    started = time.monotonic()
    say = or_quiet(progress)
    if target.is_local:
        raise UsageError("host setup prepares another host over SSH, not this machine",
                         hint="here, run `sudo scripts/provision --no-images` (the same setup script)")
    if project_dir is not None and not posixpath.isabs(project_dir):
        raise UsageError(f"the project directory {project_dir!r} is not an absolute path",
                         hint="name it as on the host, e.g. /opt/finaiflow")
    # Everything that can be refused here is, before the host is touched.
    wheel = wheel or selfinstall.build_wheel(progress=progress)
    who = system.login(target)

    before = system.read_facts(target, who)
    say(f"checking the Docker engine, compose v2, cron, age and python3-venv on {target}")
    system.run_setup(target, who, progress=progress)
    after = system.read_facts(target, who)
    changes = system.changes(before, after)

    python = selfinstall.python_facts(target)
    digest = selfinstall.wheel_digest(wheel)
    sent = 0
    if selfinstall.installed_digest(target) != digest:
        house = selfinstall.wheelhouse(wheel, python, where=str(target), progress=progress)
        say(f"installing finaiflow-ops {selfinstall.wheel_version(wheel)} in {selfinstall.INSTALL_ROOT}")
        sent = selfinstall.send_and_install(target, who, wheel, house, digest)
        changes.append(f"installed finaiflow-ops {selfinstall.wheel_version(wheel)} ({digest[:12]})")

    if project_dir is not None and _make_directory(target, who, project_dir):
        changes.append(f"created {project_dir} (mode 0750, owner {who.user})")

    return HostSetup(
        target=str(target),
        changes=tuple(changes),
        docker=after.docker_running,
        compose=after.compose,
        finaiflow_ops=selfinstall.version_on(target),
        python=python.version,
        project_dir=project_dir,
        sent_bytes=sent,
        seconds=round(time.monotonic() - started, 1),
    )


def _make_directory(target: Target, who: system.Login, path: str) -> bool:
    """Create `path` (mode 0750, the login user's) unless it exists; whether it was created.
    An existing directory is left as it is: `harden` owns its permissions from then on."""
    if target.run(*who.as_root("test", "-d", path), check=False).ok:
        return False
    target.run(*who.as_root("mkdir", "-p", "--", path))
    target.run(*who.as_root("chown", f"{who.user}:{who.group}", "--", path))
    target.run(*who.as_root("chmod", "0750", "--", path))
    return True
