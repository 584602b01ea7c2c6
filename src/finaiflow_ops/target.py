"""Where commands run, and the Docker engine that runs the stack there.

A Target is named by a testinfra host URL:

    local://                      this machine (commands through `sh`, engine from DOCKER_HOST or the socket)
    ssh://[user@]host[:port]      a remote host over OpenSSH (key auth, never a password prompt); host may
                                  be an alias of ~/.ssh/config; ?identity_file=PATH for a key outside the
                                  agent and ~/.ssh, ?ssh_config=FILE (or $FINAIFLOW_SSH_CONFIG) for
                                  another ssh config file. ONE connection (finaiflow_ops.ssh) carries the
                                  commands, file streams and the host's Docker engine.
    docker://container            a container seen as a host (for host facts, not for the stack)

There is one way to run a command, `Target.run(*argv)`: arguments are a list, quoted in one place.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from finaiflow_ops.errors import CommandFailed, TargetUnreachable, UsageError
from finaiflow_ops.ssh import SshConnection, ssh_error_line, ssh_failed

if TYPE_CHECKING:
    import docker

__all__ = ["CommandResult", "Target"]

Kind = Literal["local", "ssh", "docker"]
_OPTIONS = ("identity_file", "ssh_config")


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
    ssh_config: str = ""  # ssh://...?ssh_config=FILE, else $FINAIFLOW_SSH_CONFIG
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
        if set(query) - set(_OPTIONS):
            raise UsageError(f"unknown option in target {url!r}",
                             hint="accepted: ?identity_file=PATH, ?ssh_config=FILE")
        if parts.scheme in ("ssh", "docker") and parts.hostname:
            config = query.get("ssh_config", os.environ.get("FINAIFLOW_SSH_CONFIG", ""))
            return cls(parts.scheme, parts.hostname, parts.username or "", port,  # type: ignore[arg-type]
                       query.get("identity_file", ""), config if parts.scheme == "ssh" else "", url=url)
        raise UsageError(f"unsupported target {url!r}", hint=forms)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @cached_property
    def address(self) -> str:
        """The address to reach published ports at: the host ssh really connects to (an alias's
        HostName), or 127.0.0.1 for local and docker targets."""
        if self.kind != "ssh":
            return "127.0.0.1"
        return self._ssh.resolved().get("hostname", self.host)

    def __str__(self) -> str:
        return self.url

    # -- the connection -------------------------------------------------------------------------

    @cached_property
    def _ssh(self) -> SshConnection:
        return SshConnection(self.host, self.user, self.port, self.identity_file, self.ssh_config,
                             label=self.url)

    @property
    def ssh_connections(self) -> int:
        """How many SSH connections this target opened so far (0 on local and docker targets)."""
        return self._ssh.opened if self.kind == "ssh" and "_ssh" in self.__dict__ else 0

    @property
    def ssh_lost(self) -> bool:
        """Whether this target's SSH connection was open and is gone."""
        return self.kind == "ssh" and "_ssh" in self.__dict__ and self._ssh.lost

    def close(self) -> None:
        """End the SSH connection now (it also ends with the process)."""
        if self.kind == "ssh" and "_ssh" in self.__dict__:
            self._ssh.close()
            self.__dict__.pop("_docker", None)

    # -- commands ---------------------------------------------------------------------------------

    @cached_property
    def _testinfra(self) -> Any:
        import testinfra

        if self.kind == "ssh":
            return _testinfra_host(self)
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
            result = self._run_remote(argv, timeout=timeout, input=input)
        if check and not result.ok:
            raise CommandFailed(
                f"`{shlex.join(argv[:3])}{' ...' if len(argv) > 3 else ''}` failed on {self} "
                f"(exit {result.exit_status})",
                argv=argv,
                exit_status=result.exit_status,
                output_tail=_tail(result.stderr or result.stdout),
            )
        return result

    def _run_remote(self, argv: tuple[str, ...], *, timeout: float | None,
                    input: bytes | None) -> CommandResult:
        try:
            done = subprocess.run(self.command_argv(argv), input=input or b"", capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"`{shlex.join(argv[:3])}` timed out after {timeout} s on {self}",
                                argv=argv) from exc
        result = CommandResult(argv, done.returncode, done.stdout.decode(errors="replace"),
                               done.stderr.decode(errors="replace"))
        if self.kind == "ssh" and result.exit_status == 255 and ssh_failed(result.stderr):
            raise self.unreachable(result.stderr)
        gone = ("No such container", "is not running")
        if self.kind == "docker" and any(g in result.stderr for g in gone):
            raise TargetUnreachable(f"cannot reach {self.url}: {result.stderr.strip().splitlines()[0]}",
                                    hint="start the container, or check its name with `docker ps`")
        # Otherwise a 255 is the remote command's own (sshd -t, fail2ban-client): a normal result.
        return result

    def unreachable(self, stderr: str) -> TargetUnreachable:
        """The error for an ssh call that failed as ssh (not as the remote command)."""
        line = ssh_error_line(stderr)
        if line == "the connection was lost":
            return TargetUnreachable(f"the SSH connection to {self.url} was lost",
                                     hint="run the command again: it picks up what was left")
        return TargetUnreachable(
            f"cannot reach {self.url}: {line}",
            hint="check the host, port and that your SSH key is accepted (ssh -o BatchMode=yes)")

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
        """The local argv that runs `argv` on the target, for callers that stream through pipes:
        as is on local, over the shared SSH connection (one quoted string: the remote shell splits
        it), `docker exec -i` on a container."""
        if self.kind == "local":
            return list(argv)
        if self.kind == "docker":
            return ["docker", "exec", "-i", self.host, *argv]
        self._ssh.open()
        return self._ssh.client_argv(shlex.join(argv))

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).ok

    def read_text(self, path: str) -> str:
        return self.run("cat", "--", path).stdout

    # -- the Docker engine ----------------------------------------------------------------------

    @cached_property
    def _docker(self) -> docker.DockerClient:
        import docker
        import docker.errors
        import requests

        if self.kind == "docker":
            raise UsageError(
                f"{self.url} is a container, not a Docker host",
                hint="run stack commands against local:// or ssh://user@host",
            )
        try:
            if self.kind == "ssh":
                # The host's engine socket, forwarded over the shared connection.
                client = docker.DockerClient(base_url=f"unix://{self._ssh.engine_socket}", timeout=60)
            else:
                client = docker.from_env(timeout=60)
            client.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            hint = ("install and start it: finaiflow-ops --target URL host setup" if self.kind == "ssh"
                    else "start it (on this machine: sudo scripts/provision) or check DOCKER_HOST")
            raise TargetUnreachable(f"the Docker engine on {self.url} is not reachable", hint=hint) from exc
        return client

    def docker(self) -> docker.DockerClient:
        """The Docker engine of this target (checked with a ping on first use)."""
        return self._docker


def _testinfra_host(target: Target) -> Any:
    """testinfra's Host for an ssh target, whose commands go through Target.run over the shared
    connection (testinfra's own ssh backend would open a connection of its own)."""
    from testinfra.backend.base import BaseBackend
    from testinfra.host import Host

    class Backend(BaseBackend):  # type: ignore[misc]
        NAME = "finaiflow"

        def run(self, command: str, *args: str, **kwargs: Any) -> Any:
            line = self.get_command(command, *args)
            done = target.run("sh", "-c", line, check=False)
            return self.result(done.exit_status, self.encode(line), done.stdout.encode(),
                               done.stderr.encode())

    return Host(Backend(target.host))


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
