"""nginx in front of a service: the upstream file, `nginx -t`, graceful reload, drain confirmation.

The upstream of service S is the file /etc/nginx/upstreams/S.conf inside the proxy container
(nginx.conf includes that directory) and is named S, so the site's `proxy_pass http://S;` follows
it. At start the nginx entrypoint writes `server S:PORT`, which Docker DNS resolves to every
container of the service; a rolling update replaces it with the new containers by name. Everything
goes through `docker exec` in the proxy container, so a local engine and one over SSH work alike.

A reload is graceful: the master starts new workers with the new upstream and asks the old ones
to finish their in-flight requests and exit. `wait_drained` watches those old worker processes
disappear (bounded by nginx's worker_shutdown_timeout) instead of sleeping for a guessed time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from finaiflow_ops import envfile, polling
from finaiflow_ops.errors import CheckFailed, CommandFailed, UsageError
from finaiflow_ops.target import CommandResult

__all__ = ["DEFAULT_PROXY", "SWITCHING_FLAG", "Drain", "Proxy", "Reload", "Upstream", "parse_upstream"]

DEFAULT_PROXY = "nginx"
UPSTREAMS_DIR = "/etc/nginx/upstreams"
KEEPALIVE = 32
# While this file exists, the site answers HTTP/1.1 clients with `Connection: close` (see the
# template): a reload closes idle keep-alive connections, and a request a client sends on one at
# that very instant is lost. The switch waits until nginx holds no idle keep-alive connection
# (stub_status' "Waiting", on the stack's internal status port): every HTTP/1.1 client has had its
# `Connection: close` answer or gone. At most KEEPALIVE_LEAD: by then every client that talks at
# least once a second has reconnected (HTTP/2 connections idle too, and get a GOAWAY).
SWITCHING_FLAG = f"{UPSTREAMS_DIR}/switching"
KEEPALIVE_LEAD = 1.0
STATUS_URL = "http://127.0.0.1:8080/stub_status"
_WAITING_RE = re.compile(r"\bWaiting:\s*(\d+)")
_UPSTREAM_RE = re.compile(r"upstream\s+(?P<name>[\w.-]+)\s*\{(?P<body>[^}]*)\}", re.DOTALL)
_SERVER_RE = re.compile(r"^\s*server\s+(?P<addr>[^\s;]+)[^;]*;", re.MULTILINE)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WORKER = "nginx: worker process"
# In the proxy container, with the text and the path as $1 and $2: keep the previous file, put the
# new one in place by a rename, test the whole configuration, and put the previous file back (or
# remove the new one) when nginx -t fails. One exec: the switch is on a rollback's critical path.
_WRITE_AND_TEST = (
    'p="$2.prev"; if [ -e "$2" ]; then cp -p "$2" "$p"; fi; '
    'printf "%s" "$1" >"$2.tmp" && mv -f "$2.tmp" "$2" || exit 1; '
    'if nginx -t -q; then rm -f "$p"; exit 0; fi; '
    'if [ -e "$p" ]; then mv -f "$p" "$2"; else rm -f "$2"; fi; exit 1'
)


@dataclass(frozen=True)
class Upstream:
    """An nginx upstream block: its name (the service) and its servers ("host:port")."""

    name: str
    servers: tuple[str, ...]

    def __post_init__(self) -> None:
        for value in (self.name, *self.hosts):
            if not _NAME_RE.fullmatch(value):
                raise UsageError(f"invalid upstream name or host {value!r}")
        if not self.servers:
            raise UsageError(f"upstream {self.name} needs at least one server")

    @classmethod
    def of(cls, name: str, hosts: list[str] | tuple[str, ...], port: int) -> Upstream:
        return cls(name, tuple(f"{host}:{port}" for host in hosts))

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(server.rpartition(":")[0] or server for server in self.servers)

    @property
    def port(self) -> int | None:
        ports = {s.rpartition(":")[2] for s in self.servers if ":" in s}
        return int(ports.pop()) if len(ports) == 1 and next(iter(ports)).isdigit() else None

    @property
    def by_service_name(self) -> bool:
        """True for the entrypoint's `server S:PORT`: every container of the service, via Docker DNS."""
        return self.hosts == (self.name,)

    def render(self) -> str:
        servers = "".join(f"    server {server};\n" for server in self.servers)
        return f"upstream {self.name} {{\n{servers}    keepalive {KEEPALIVE};\n}}\n"


def _workers(ps_output: str) -> dict[int, bool]:
    found: dict[int, bool] = {}
    for line in ps_output.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.strip().startswith(_WORKER) and pid.isdigit():
            found[int(pid)] = "shutting down" in args
    return found


def parse_upstream(text: str, name: str) -> Upstream | None:
    """The upstream called `name` in an nginx config text, or None when there is none."""
    for match in _UPSTREAM_RE.finditer(text):
        if match["name"] == name:
            servers = tuple(m["addr"] for m in _SERVER_RE.finditer(match["body"]))
            return Upstream(name, servers) if servers else None
    return None


@dataclass(frozen=True)
class Reload:
    """A graceful reload: the workers that were serving before it, and the ones it started."""

    old_workers: tuple[int, ...]
    new_workers: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class Drain:
    """Waiting for the old workers to finish their in-flight requests and exit."""

    seconds: float
    left: tuple[int, ...]  # old workers still alive at the deadline (empty: fully drained)

    @property
    def complete(self) -> bool:
        return not self.left


class Execs(Protocol):
    """What the proxy needs of a stack: a command in a service's container, and the .env (to
    redact). A Stack is one, and so is the compose backend."""

    @property
    def env(self) -> Mapping[str, str]: ...
    def exec(
        self, service: str, argv: Sequence[str], *, user: str = "", check: bool = True
    ) -> CommandResult: ...


@dataclass(frozen=True)
class Proxy:
    """The nginx service of a stack, driven through `docker exec` in its container."""

    stack: Execs
    service: str = DEFAULT_PROXY

    def path(self, upstream: str) -> str:
        return f"{UPSTREAMS_DIR}/{upstream}.conf"

    def _exec(self, *argv: str, check: bool = True) -> CommandResult:
        return self.stack.exec(self.service, argv, check=check)

    def read_upstream(self, name: str) -> Upstream | None:
        """The upstream nginx has on disk for `name` (what the last reload loaded, if it succeeded)."""
        result = self._exec("cat", self.path(name), check=False)
        return parse_upstream(result.stdout, name) if result.ok else None

    def workers(self) -> dict[int, bool]:
        """Worker pid -> True when it is shutting down (an old worker finishing its requests)."""
        return _workers(self._exec("ps", "-eo", "pid=,args=").stdout)

    def resolved_at(self) -> float | None:
        """When the serving workers started (epoch seconds, to the second): the moment nginx last
        resolved the host names in its upstreams. None when no worker is found."""
        result = self._exec("sh", "-c", "date +%s && ps -eo etimes=,args=", check=False)
        lines = result.stdout.splitlines()
        if not result.ok or not lines or not lines[0].strip().isdigit():
            return None
        ages = [int(age) for age, _, args in (line.strip().partition(" ") for line in lines[1:])
                if age.isdigit() and args.strip() == _WORKER]
        return float(int(lines[0]) - min(ages)) if ages else None

    def reload(self, *, timeout: float = 15.0) -> Reload:
        """`nginx -s reload`, confirmed by new worker processes appearing (nginx keeps the old
        configuration, silently, when the new one fails to load)."""
        old = tuple(sorted(_workers(self._exec("sh", "-c", "ps -eo pid=,args= && nginx -s reload").stdout)))
        for attempt in polling.attempts(within=timeout, every=0.05):
            current = self.workers()
            new = tuple(sorted(pid for pid, stopping in current.items() if pid not in old and not stopping))
            if new:
                return Reload(old, new, attempt.elapsed)
        raise CommandFailed(
            f"nginx started no new workers within {timeout:.0f} s of a reload: it kept its old "
            "configuration", hint=f"see `docker logs` of the {self.service} container")

    def switch(self, upstream: Upstream) -> Reload:
        """Point `upstream` at new servers: write, `nginx -t`, graceful reload. When the test
        fails the previous file is put back and nothing is reloaded."""
        tested = self._exec("sh", "-c", _WRITE_AND_TEST, "sh", upstream.render(), self.path(upstream.name),
                            check=False)
        if not tested.ok:
            detail = envfile.redact(tested.stderr or tested.stdout, self.stack.env).strip()
            last = detail.splitlines()[-1] if detail else f"exit {tested.exit_status}"
            raise CheckFailed(f"nginx -t rejected the new upstream {upstream.name}: {last}",
                              problems=detail.splitlines(), hint="the previous configuration was kept")
        return self.reload()

    def switching(self) -> bool:
        """Whether the flag is raised (by a deploy now, or left by one that was killed)."""
        return self._exec("test", "-e", SWITCHING_FLAG, check=False).ok

    def set_switching(self, on: bool) -> None:
        """Raise or clear the flag that makes nginx close HTTP/1.1 connections after each answer."""
        self._exec(*(("touch", SWITCHING_FLAG) if on else ("rm", "-f", SWITCHING_FLAG)))

    def idle_connections(self) -> int | None:
        """Client connections nginx keeps idle (stub_status' Waiting); None when it does not say."""
        result = self._exec("curl", "-sS", "--max-time", "1", STATUS_URL, check=False)
        found = _WAITING_RE.search(result.stdout) if result.ok else None
        return int(found.group(1)) if found else None

    def wait_clients_reconnected(self, flagged_at: float) -> float:
        """After the switching flag went up (time.monotonic() `flagged_at`): until nginx holds no
        idle keep-alive connection, KEEPALIVE_LEAD after the flag at most. The seconds since the flag."""
        deadline = flagged_at + KEEPALIVE_LEAD
        while time.monotonic() < deadline:
            if self.idle_connections() == 0:
                break
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return time.monotonic() - flagged_at

    def switch_gracefully(self, upstream: Upstream, *, drain_timeout: float = 75.0) -> Drain:
        """The whole switch: flag, clients reconnected (wait_clients_reconnected), switch, drain, unflag."""
        self.set_switching(True)
        try:
            self.wait_clients_reconnected(time.monotonic())
            return self.wait_drained(self.switch(upstream).old_workers, timeout=drain_timeout)
        finally:
            self.set_switching(False)

    def wait_drained(self, old_workers: tuple[int, ...], *, timeout: float = 75.0) -> Drain:
        """Wait until the workers of before a reload have all exited, or the deadline.

        A worker exits once its in-flight requests are answered (nginx closes idle keep-alive
        connections at once), so its exit is the proof that nobody still talks to the old servers
        through nginx. worker_shutdown_timeout (60 s in the stack's nginx.conf) bounds it.
        """
        left: tuple[int, ...] = ()
        for attempt in polling.attempts(within=timeout, every=0.25):
            left = tuple(pid for pid in self.workers() if pid in old_workers)
            if not left:
                return Drain(attempt.elapsed, left)
        return Drain(timeout, left)

    def probe(self, host: str, port: int, path: str = "/health", *, timeout: float = 3.0) -> int | None:
        """GET http://host:port/path from inside the proxy container: the HTTP status, None when
        no answer came (refused, reset, timeout). This is the path nginx's own traffic takes."""
        result = self._exec("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                            f"{timeout:g}", f"http://{host}:{port}{path}", check=False)
        code = result.stdout.strip()
        return int(code) if code.isdigit() and code != "000" else None
