"""One OpenSSH connection to a host, shared by everything a command does there.

The connection is an OpenSSH master (ControlMaster) that this process opens on first use and
closes when it ends. Commands and file streams are sessions multiplexed over it, and the host's
Docker engine socket is forwarded over it to a private unix socket here, so the Docker SDK talks
to `unix://` and never uses docker-py's own ssh transport (one ssh process per HTTP connection,
outside any shared connection, port forced to 22, and a BrokenPipeError on close:
docker/docker-py#2966 and #3218).

Everything `ssh` itself honours applies, because `ssh` makes the connection: ~/.ssh/config (or
the file named by `ssh_config`) with its aliases, HostName, Port, User, IdentityFile and
ProxyJump, the agent and known_hosts.

Lifetime: the master runs a remote `cat` whose standard input is a pipe from this process. When
this process ends, even by SIGKILL, the pipe closes, the remote `cat` ends and so does the master:
nothing lingers. A client session never opens a connection of its own when the master is gone:
its fallback ProxyCommand only prints why and fails, so a lost connection is an error (exit 3)
instead of a silent second login.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from finaiflow_ops import polling
from finaiflow_ops.errors import TargetUnreachable

__all__ = ["CONNECTION_LOST", "SshConnection", "ssh_error_line", "ssh_failed"]

REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"
CONNECT_TIMEOUT = 15  # seconds for the TCP connection and the login
# What a client prints when the shared connection is gone (see the module docstring).
CONNECTION_LOST = "finaiflow-ops: the shared SSH connection is closed"
_FALLBACK = f"ProxyCommand=sh -c 'echo \"{CONNECTION_LOST}\" >&2; exit 1'"

_SSH_FAILURES = ("ssh:", "Permission denied (", "Host key verification failed", "Connection closed by",
                 "kex_exchange_identification", "Connection reset by", "Connection to ", "client_loop:",
                 "mux_client", "Control socket", "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED",
                 CONNECTION_LOST)


def ssh_failed(stderr: str) -> bool:
    """Whether a 255 exit came from ssh (connecting, logging in, or losing the connection), not
    from the remote command."""
    return any(line.lstrip().startswith(_SSH_FAILURES) or "Permission denied (" in line
               or CONNECTION_LOST in line for line in stderr.splitlines())


def ssh_error_line(stderr: str) -> str:
    """ssh's own complaint: our lost-connection line first, else the last line that is not a warning
    (`Permanently added ... to known hosts`) or the host key banner's decoration."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if any(CONNECTION_LOST in ln for ln in lines):
        return "the connection was lost"
    if any("REMOTE HOST IDENTIFICATION HAS CHANGED" in ln for ln in lines):
        return "its host key has changed (Host key verification failed)"
    useful = [ln for ln in lines if not ln.startswith(("Warning:", "@"))]
    return useful[-1] if useful else "connection failed"


@dataclass
class SshConnection:
    """The shared connection to `destination` (a host name or an ~/.ssh/config alias)."""

    destination: str
    user: str = ""
    port: int | None = None
    identity_file: str = ""
    config_file: str = ""
    label: str = ""  # how errors name the target (its URL)
    opened: int = 0  # masters opened by this object: 1 for a command that kept its connection
    _directory: Path | None = field(default=None, repr=False)
    _master: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- options ----------------------------------------------------------------------------------

    def _options(self) -> list[str]:
        """What every ssh call here shares: the config file, key, user and port when named (else
        ssh's config decides), no password prompt, and new host keys accepted once but a changed
        one refused."""
        options = ["-F", self.config_file] if self.config_file else []
        options += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                    "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
        options += ["-o", f"User={self.user}"] if self.user else []
        options += ["-o", f"Port={self.port}"] if self.port else []
        options += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"] if self.identity_file else []
        return options

    @property
    def control_path(self) -> Path:
        if self._directory is None:
            # Private (0700) and short: a unix socket path is limited to 108 bytes.
            self._directory = Path(tempfile.mkdtemp(prefix="ffops-ssh-"))
        return self._directory / "master"

    @property
    def engine_socket(self) -> Path:
        """The local end of the forwarded Docker engine socket (opens the connection)."""
        self.open()
        return self.control_path.parent / "docker.sock"

    def client_argv(self, remote_command: str) -> list[str]:
        """The local argv running one shell command line on the host over the shared connection
        (open it first: `open()`)."""
        return ["ssh", *self._options(), "-o", f"ControlPath={self.control_path}", "-o", "ControlMaster=no",
                "-o", _FALLBACK, "-T", "--", self.destination, remote_command]

    def resolved(self) -> dict[str, str]:
        """ssh's effective settings for the destination (`ssh -G`: no connection is made)."""
        done = subprocess.run(["ssh", *self._options(), "-G", "--", self.destination],
                              capture_output=True, text=True, timeout=10, check=False)
        if done.returncode != 0:
            raise TargetUnreachable(f"cannot read the SSH settings of {self.label}: "
                                    f"{ssh_error_line(done.stderr)}", hint="check the ssh config file")
        return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)

    # -- the master -------------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """Whether the connection was opened and has ended without close()."""
        return self._master is not None and self._master.poll() is not None

    def open(self) -> None:
        """Open the connection unless it is open; a lost one is an error, never silently replaced
        (a command half-way through must stop and say so)."""
        with self._lock:
            if self._master is not None:
                if self._master.poll() is not None:
                    raise TargetUnreachable(f"the SSH connection to {self.label} was lost",
                                            hint="run the command again: it picks up what was left")
                return
            self._start()

    def _start(self) -> None:
        control = self.control_path
        socket = control.parent / "docker.sock"
        log = control.parent / "master.log"
        argv = ["ssh", *self._options(), "-M", "-o", f"ControlPath={control}", "-o", "ControlPersist=no",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                "-L", f"{socket}:{REMOTE_DOCKER_SOCKET}", "-T", "--", self.destination, "exec cat >/dev/null"]
        with log.open("wb") as errors:
            self._master = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=errors)
        self.opened += 1
        atexit.register(self.close)
        for _attempt in polling.attempts(within=CONNECT_TIMEOUT + 10, every=0.05):
            if self._master.poll() is not None:
                stderr = log.read_text(errors="replace")
                self._master = None
                raise TargetUnreachable(
                    f"cannot reach {self.label}: {ssh_error_line(stderr)}",
                    hint="check the host, port and that your SSH key is accepted (ssh -o BatchMode=yes)")
            if control.exists() and self._check(control):
                return
        self.close()
        raise TargetUnreachable(f"cannot reach {self.label}: no SSH connection after "
                                f"{CONNECT_TIMEOUT + 10} s", hint="check the host and the network to it")

    def _check(self, control: Path) -> bool:
        done = subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "check", "--", self.destination],
                              capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    def close(self) -> None:
        """End the connection (sessions still running on it are cut) and remove its sockets."""
        master, self._master = self._master, None
        if master is not None:
            if master.stdin:
                master.stdin.close()
            if master.poll() is None:
                subprocess.run(["ssh", "-o", f"ControlPath={self.control_path}", "-O", "exit", "--",
                                self.destination], capture_output=True, timeout=10, check=False)
            try:
                master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(timeout=10)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
