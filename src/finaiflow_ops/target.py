"""Where commands run, and the Docker engine that runs the stack there.

A Target is named by a testinfra host URL:

    local://                      this machine (commands through `sh`, engine from DOCKER_HOST or the socket)
    ssh://user@host[:port]        a remote host over OpenSSH (key auth, never a password prompt;
                                  ?identity_file=PATH for a key outside the agent and ~/.ssh);
                                  its engine through `docker` over the same SSH
    docker://container            a container seen as a host (for host facts, not for the stack)

There is one way to run a command, `Target.run(*argv)`: arguments are a list, quoted in one place.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from finaiflow_ops.errors import CommandFailed, TargetUnreachable, UsageError

if TYPE_CHECKING:
    import docker

__all__ = ["CommandResult", "Target"]

Kind = Literal["local", "ssh", "docker"]


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it ended."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Target:
    """A host to run commands on, with the Docker engine that runs the stack there."""

    kind: Kind
    host: str = ""
    user: str = ""
    port: int | None = None
    identity_file: str = ""  # ssh://...?identity_file=PATH
    url: str = field(default="local://", compare=False)

    @classmethod
    def parse(cls, url: str) -> Target:
        """Read a target URL; a bad one is a UsageError naming the accepted forms."""
        parts = urlsplit(url)
        forms = "use local://, ssh://user@host[:port] or docker://container"
        try:
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"bad port in target {url!r}", hint=forms) from exc
        if parts.scheme == "local" and not parts.netloc:
            return cls("local", url=url)
        query = dict(parse_qsl(parts.query))
        if set(query) - {"identity_file"}:
            raise UsageError(f"unknown option in target {url!r}", hint="accepted: ?identity_file=PATH")
        if parts.scheme in ("ssh", "docker") and parts.hostname:
            return cls(parts.scheme, parts.hostname, parts.username or "", port,  # type: ignore[arg-type]
                       query.get("identity_file", ""), url=url)
        raise UsageError(f"unsupported target {url!r}", hint=forms)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @property
    def address(self) -> str:
        """The host name to reach published ports at ("127.0.0.1" for local and docker targets)."""
        return self.host if self.kind == "ssh" else "127.0.0.1"

    def __str__(self) -> str:
        return self.url

    # -- commands ---------------------------------------------------------------------------------

    @cached_property
    def _testinfra(self) -> Any:
        import testinfra

        if self.kind == "ssh":
            netloc = f"{self.user}@{self.host}" if self.user else self.host
            netloc += f":{self.port}" if self.port else ""
            # BatchMode: fail instead of prompting for a password when no key works.
            return testinfra.get_host(
                f"ssh://{netloc}",
                ssh_extra_args="-o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                ssh_identity_file=self.identity_file or None,
                # One connection reused by every command of a run, instead of one each.
                # (testinfra %-formats the ssh command: %%C reaches ssh as its %C token.)
                controlpath=f"{_control_dir()}/%%C",
                timeout=15,
            )
        return testinfra.get_host(self.url)

    def host_facts(self) -> Any:
        """The testinfra Host of this target, for reading files, packages, sockets and the like."""
        return self._testinfra

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float | None = None,
        input: bytes | None = None,
    ) -> CommandResult:
        """Run a command on the target; `check` raises CommandFailed on a non-zero exit."""
        if self.kind == "local":
            result = self._run_local(argv, timeout=timeout, input=input)
        else:
            if input is not None:
                raise UsageError("standard input is only supported on local targets")
            try:
                out = self._testinfra.run(shlex.join(argv))
                result = CommandResult(tuple(argv), out.rc, out.stdout, out.stderr)
            except RuntimeError as exc:  # testinfra's ssh backend raises on any exit 255
                out = exc.args[0] if exc.args else None
                stderr = str(getattr(out, "stderr", "") or "")
                if _ssh_failed(stderr):
                    raise TargetUnreachable(
                        f"cannot reach {self.url}: {_ssh_error_line(stderr)}",
                        hint="check the host, port and that your SSH key is accepted (ssh -o BatchMode=yes)",
                    ) from None
                # The remote command itself exited 255 (sshd -t, fail2ban-client do): a normal result.
                result = CommandResult(tuple(argv), 255, str(getattr(out, "stdout", "") or ""), stderr)
            gone = ("No such container", "is not running")
            if self.kind == "docker" and any(g in result.stderr for g in gone):
                raise TargetUnreachable(f"cannot reach {self.url}: {result.stderr.strip().splitlines()[0]}",
                                        hint="start the container, or check its name with `docker ps`")
        if check and not result.ok:
            raise CommandFailed(
                f"`{shlex.join(argv[:3])}{' ...' if len(argv) > 3 else ''}` failed on {self} "
                f"(exit {result.exit_status})",
                argv=argv,
                exit_status=result.exit_status,
                output_tail=_tail(result.stderr or result.stdout),
            )
        return result

    @staticmethod
    def _run_local(argv: tuple[str, ...], *, timeout: float | None, input: bytes | None) -> CommandResult:
        import sh

        try:
            cmd = sh.Command(argv[0])
        except sh.CommandNotFound as exc:
            raise UsageError(f"{argv[0]} is not installed on this machine", hint="install it first") from exc
        try:
            done = cmd(*argv[1:], _return_cmd=True, _ok_code=list(range(256)), _in=input, _timeout=timeout)
        except sh.TimeoutException as exc:
            raise CommandFailed(f"`{shlex.join(argv[:3])}` timed out after {timeout} s", argv=argv) from exc
        return CommandResult(
            argv,
            done.exit_code,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def command_argv(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs `argv` on the target, for callers that stream through pipes
        (run() captures output): as is on local, through ssh with run()'s options and shared
        connection (one quoted string: the remote shell splits it), `docker exec -i` on a container."""
        if self.kind == "local":
            return list(argv)
        if self.kind == "docker":
            return ["docker", "exec", "-i", self.host, *argv]
        options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=15",
                   "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                   "-o", f"ControlPath={_control_dir()}/%C"]
        options += ["-o", f"User={self.user}"] if self.user else []
        options += ["-o", f"Port={self.port}"] if self.port else []
        options += ["-i", self.identity_file] if self.identity_file else []
        return ["ssh", *options, "--", self.host, shlex.join(argv)]

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).ok

    def read_text(self, path: str) -> str:
        return self.run("cat", "--", path).stdout

    # -- the Docker engine ----------------------------------------------------------------------

    @cached_property
    def _docker(self) -> docker.DockerClient:
        import docker
        import docker.errors

        if self.kind == "docker":
            raise UsageError(
                f"{self.url} is a container, not a Docker host",
                hint="run stack commands against local:// or ssh://user@host",
            )
        try:
            if self.kind == "ssh":
                netloc = f"{self.user}@{self.host}" if self.user else self.host
                netloc += f":{self.port}" if self.port else ""
                client = docker.DockerClient(base_url=f"ssh://{netloc}", use_ssh_client=True, timeout=60)
            else:
                client = docker.from_env(timeout=60)
            client.ping()
        except (docker.errors.DockerException, OSError, subprocess.SubprocessError) as exc:
            raise TargetUnreachable(
                f"the Docker engine on {self.url} is not reachable",
                hint="start it (on this machine: sudo scripts/provision) or check DOCKER_HOST",
            ) from exc
        return client

    def docker(self) -> docker.DockerClient:
        """The Docker engine of this target (checked with a ping on first use)."""
        return self._docker


def _control_dir() -> str:
    """A private directory for ssh's connection-sharing sockets."""
    path = Path(tempfile.gettempdir()) / f"finaiflow-ssh-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return str(path)


_SSH_FAILURES = ("ssh:", "Permission denied (", "Host key verification failed", "Connection closed by",
                 "kex_exchange_identification", "Connection reset by")


def _ssh_error_line(stderr: str) -> str:
    """ssh's own complaint, skipping warnings such as `Permanently added ... to known hosts`."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning:")]
    return lines[-1] if lines else "connection failed"


def _ssh_failed(stderr: str) -> bool:
    """Whether a 255 exit came from ssh failing to connect or log in, not from the remote command."""
    return any(line.lstrip().startswith(_SSH_FAILURES) or "Permission denied (" in line
               for line in stderr.splitlines())


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
