"""The compose project on a target, as files: its directory, compose file, .env and state directory,
and the one place the `docker compose` command line is built and run.

    project = Project(target, "/srv/finaiflow")
    project.compose("ps")                                   docker compose ... -p NAME ps
    project.compose("run", ..., env={"API_IMAGE": image})   with extra variables (they win over .env)
    project.compose("config", files=("swarm.yaml",))        with more compose files

A failed compose call raises CommandFailed once, here, with its output redacted (the .env's secret
values replaced with ***): callers never rewrap it.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from finaiflow_ops import envfile
from finaiflow_ops.container_exec import exec_answered
from finaiflow_ops.errors import CommandFailed, EnvFileError, UsageError
from finaiflow_ops.target import CommandResult, Target

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["COMPOSE_FILES", "DEFAULT_PROJECT", "STATE_DIR", "Project"]

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
DEFAULT_PROJECT = "finaiflow"
STATE_DIR = ".finaiflow"  # releases, lock, audit log, deployed swarm stack file (releases.py)
_TAIL_LINES = 20


@dataclass(frozen=True)
class Project:
    """A compose project (directory, compose file, .env) on a target."""

    target: Target
    project_dir: str
    compose_file: str | None = None  # default: the first of COMPOSE_FILES present
    env_file: str | None = None  # default: PROJECT_DIR/.env

    # -- files ----------------------------------------------------------------------------------

    @cached_property
    def compose_path(self) -> str:
        if self.compose_file:
            path = posixpath.join(self.project_dir, self.compose_file)
            if not self.target.exists(path):
                raise UsageError(f"no compose file at {path} on {self.target}", hint="check --project-dir")
            return path
        for name in COMPOSE_FILES:
            path = posixpath.join(self.project_dir, name)
            if self.target.exists(path):
                return path
        raise UsageError(
            f"no compose file ({COMPOSE_FILES[0]}) in {self.project_dir} on {self.target}",
            hint="point --project-dir at the stack directory (the reference stack is stack/ in the repo)",
        )

    @property
    def env_path(self) -> str:
        return self.env_file or posixpath.join(self.project_dir, ".env")

    @property
    def state_dir(self) -> str:
        """Where the target keeps what it remembers of rollouts (releases.py)."""
        return posixpath.join(self.project_dir, STATE_DIR)

    def state_path(self, name: str) -> str:
        return posixpath.join(self.state_dir, name)

    def path(self, name: str) -> str:
        """A file of the project directory (swarm.yaml, backups/, ...)."""
        return posixpath.join(self.project_dir, name)

    @cached_property
    def env(self) -> dict[str, str]:
        """The project's .env, read from the target (values are secrets: never print them)."""
        if not self.target.exists(self.env_path):
            raise EnvFileError(
                f"no .env at {self.env_path} on {self.target}",
                hint=f"create one with: finaiflow-ops --project-dir {self.project_dir} env generate",
            )
        return envfile.parse(self.target.read_text(self.env_path))

    def load_env(self) -> envfile.EnvFile:
        """The .env with its permission bits, read through the target (for production checks)."""
        values = self.env
        mode = int(self.target.run("stat", "-c", "%a", "--", self.env_path).stdout.strip(), 8)
        return envfile.EnvFile(path=PurePosixPath(self.env_path), values=values, mode=mode)

    @property
    def name(self) -> str:
        """The compose project name: COMPOSE_PROJECT_NAME of the .env, else finaiflow."""
        return self.env.get("COMPOSE_PROJECT_NAME") or DEFAULT_PROJECT

    @property
    def project(self) -> str:
        """The compose project name (the older spelling of `name`)."""
        return self.name

    def redact(self, text: str) -> str:
        """`text` with every secret value of the .env replaced with ***."""
        return envfile.redact(text, self.env)

    # -- the compose command line -----------------------------------------------------------------

    def compose_argv(
        self, *args: str, files: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> tuple[str, ...]:
        """`docker compose` for this project (with `files` after the compose file, and `env` set in
        the command's environment, where it wins over the .env)."""
        extra = tuple(arg for f in files for arg in ("-f", self.path(f)))
        prefix = ("env", *(f"{k}={v}" for k, v in env.items())) if env else ()
        return (*prefix, "docker", "compose", "--project-directory", self.project_dir,
                "-f", self.compose_path, *extra, "--env-file", self.env_path, "-p", self.name,
                *args)  # fmt: skip

    def compose(
        self,
        *args: str,
        files: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
        failure: str | None = None,
        hint: str | None = None,
    ) -> CommandResult:
        """Run `docker compose ARGS` for this project on the target. With `check`, a failure raises
        CommandFailed: `failure` (default: which compose command failed where) and the last line of
        its output, the output's last lines as output_tail, secrets redacted."""
        argv = self.compose_argv(*args, files=files, env=env)
        what = failure or f"docker compose {args[0] if args else ''} failed on {self.target}"
        return self.run_checked(argv, what=what, check=check, timeout=timeout, hint=hint)

    def run_checked(
        self, argv: Sequence[str], *, what: str, check: bool = True, timeout: float | None = None,
        hint: str | None = None,
    ) -> CommandResult:  # fmt: skip
        """Run `argv` on the target. With `check`, a failure raises CommandFailed: `what` and the
        last line of its output, the output's last lines as output_tail, secrets redacted."""
        try:
            result = self.target.run(*argv, check=False, timeout=timeout)
        except CommandFailed as exc:  # it did not finish (a timeout)
            tail = self.redact(exc.output_tail).strip().splitlines()
            raise CommandFailed(
                f"{what}: {tail[-1] if tail else exc.message}",
                argv=argv,
                exit_status=exc.exit_status,
                output_tail="\n".join(tail[-_TAIL_LINES:]),
                hint=hint,
            ) from None
        if check and not result.ok:
            tail = self.redact(result.stderr or result.stdout).strip().splitlines()
            raise CommandFailed(
                f"{what} (exit {result.exit_status})" + (f": {tail[-1]}" if tail else ""),
                argv=argv,
                exit_status=result.exit_status,
                output_tail="\n".join(tail[-_TAIL_LINES:]),
                hint=hint,
            )
        return result

    @cached_property
    def config(self) -> dict[str, Any]:
        """The compose file as compose resolves it with this .env (contains secrets: never print)."""
        parsed: dict[str, Any] = json.loads(self.compose("config", "--format", "json").stdout)
        return parsed

    @cached_property
    def raw_config(self) -> dict[str, Any]:
        """The compose file without interpolation (`${API_IMAGE:-...}` as written)."""
        result = self.compose("config", "--no-interpolate", "--format", "json")
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def services(self) -> list[str]:
        """The services the compose file defines."""
        return list(self.config.get("services", {}))

    def images(self) -> dict[str, str]:
        """Service -> image reference."""
        return {name: svc.get("image", "") for name, svc in self.config.get("services", {}).items()}

    def dependencies(self, service: str) -> list[str]:
        """The services `service` depends on."""
        return sorted((self.config["services"].get(service, {}).get("depends_on") or {}).keys())

    # -- containers of the project, through the engine ---------------------------------------------

    def logs(self, container_id: str, *, tail: int = 30) -> str:
        """The last lines of a container's log, secrets redacted."""
        raw: Any = self.target.docker().containers.get(container_id).logs(tail=tail, timestamps=False)
        return self.redact(raw.decode(errors="replace"))

    def exec_in(
        self, container: Container, service: str, argv: Sequence[str], *, user: str = "", check: bool = True,
        expect_output: bool = False,
    ) -> CommandResult:
        """Run a command inside `container` (of `service`); with `check`, CommandFailed on failure.
        `expect_output`: a command that always prints (a `cat`) is run once more when it printed
        nothing (container_exec)."""
        done = exec_answered(container, argv, lambda r: bool(r.stdout.strip()), repeat=expect_output,
                             pause=0.5, user=user)
        result = CommandResult(tuple(argv), done.exit_code, done.text, done.error)
        if check and not result.ok:
            raise CommandFailed(
                f"`{' '.join(argv[:3])}` failed in {service} (exit {result.exit_status})",
                argv=argv,
                exit_status=result.exit_status,
                output_tail=self.redact(result.stderr or result.stdout),
                service=service,
            )
        return result
