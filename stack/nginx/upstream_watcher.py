#!/usr/bin/python3
"""Reloads nginx when a container behind one of its upstreams comes back at another address.

nginx 1.22 resolves the server names of an `upstream` block when it starts or reloads, never
again. When Docker restarts a container (a crash under `restart: unless-stopped`, the OOM killer,
the engine itself) it may get another address on the project network, and nginx goes on sending
to the old one: 502/504 until someone reloads it. Every INTERVAL seconds this watcher resolves the
names in /etc/nginx/upstreams/*.conf the way nginx does (getaddrinfo, through Docker's DNS) and
compares them with what nginx resolved at its last (re)load:

- an address nginx uses has gone (its container stopped, or came back at another address) while
  every name still resolves: graceful reload (`nginx -s reload`);
- a new address beside the ones nginx uses (another replica, a Swarm task): reload once it
  answers GET HEALTH_PATH with 200. A rolling update's new containers are not admitted this
  way: the deploy switches to them itself after its own health gate (finaiflow_ops.proxy);
- a name that resolves to nothing (the only container is down): wait, nginx would refuse the
  configuration;
- while a deploy switches (/etc/nginx/upstreams/switching exists and is younger than
  SWITCH_MAX_AGE): no reload at all, the deploy reloads and drains by itself; and no new address
  is admitted while the flag exists, however old;
- the upstream files differ from what nginx loaded (someone is changing them): wait for their
  reload. A reload by anyone else (a deploy, a certificate install, an operator) is noticed by its
  new worker processes and becomes the new reference.

Reloads are at least MIN_GAP seconds apart, backing off after a reload nginx refused. Each
reload is one line on stderr (the container's log). Counters and the time of the last check are
written to METRICS (served by nginx on its private port 8080 at /upstream-watcher/metrics); the
container's health check fails when that file stops being refreshed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAMS = Path("/etc/nginx/upstreams")
SWITCHING_FLAG = UPSTREAMS / "switching"  # finaiflow_ops.proxy.SWITCHING_FLAG
PID_FILE = Path("/run/nginx.pid")
METRICS = Path("/run/nginx-upstream-watcher/metrics")
HEALTH_PATH = os.environ.get("NGINX_UPSTREAM_HEALTH_PATH", "/health")
MIN_GAP = 5.0  # seconds between two reloads of the watcher
MAX_BACKOFF = 300.0  # after refused reloads: 5, 10, 20 ... seconds, at most this
SWITCH_MAX_AGE = 600.0  # a switching flag older than this was left by an interrupted deploy
PROBE_TIMEOUT = 1.0
RELOAD_TIMEOUT = 10.0

_UPSTREAM_RE = re.compile(r"upstream\s+[\w.-]+\s*\{(?P<body>[^}]*)\}", re.DOTALL)
_SERVER_RE = re.compile(r"(?:^|;)\s*server\s+(?P<addr>[^\s;]+)", re.MULTILINE)
_WORKER = "nginx: worker process"

@dataclass(frozen=True)
class Server:
    """A `server host:port` line of an upstream block, by name (addresses never change)."""

    host: str
    port: int


def parse_servers(text: str) -> frozenset[Server]:
    """The named servers of every upstream block in an nginx config text. IP literals and unix
    sockets are left out: there is nothing to re-resolve."""
    text = re.sub(r"#[^\n]*", "", text)
    found: set[Server] = set()
    for block in _UPSTREAM_RE.finditer(text):
        for match in _SERVER_RE.finditer(block["body"]):
            addr = match["addr"]
            if addr.startswith(("unix:", "[")):
                continue
            host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", "80")
            if not host or not port.isdigit() or _is_ip(host):
                continue
            found.add(Server(host, int(port)))
    return frozenset(found)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Decision:
    """What one check concluded: why to reload now (`reload`), or why a wanted reload waits."""

    reload: str = ""
    wait: str = ""


@dataclass
class Watcher:
    """The comparison and its state; every effect goes through the callables, so that the logic
    can be exercised without nginx or Docker (tests/unit/test_nginx_upstream_watcher.py)."""

    read_upstreams: Callable[[], str]  # the upstream files' text, as nginx would load them now
    resolve: Callable[[str], frozenset[str]]
    workers: Callable[[], frozenset[int] | None]  # nginx's serving workers; None: nginx not running
    reload_nginx: Callable[[], str]  # "" when nginx reloaded, else why not
    answers: Callable[[str, int, str], bool]  # address, port, host name: GET HEALTH_PATH gave 200
    switching_age: Callable[[], float | None]  # age of the deploy's switching flag; None: no flag
    log: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    resync: bool = False  # restarted while nginx ran: what nginx resolved is unknown, reload once

    generation: frozenset[int] | None = None  # the workers that were serving at the last check
    loaded_text: str | None = None  # the upstream files when nginx last (re)loaded
    loaded: dict[str, frozenset[str]] = field(default_factory=dict)  # what nginx resolved then
    previous: dict[str, frozenset[str]] = field(default_factory=dict)  # the last check's resolution
    next_reload: float = float("-inf")
    backoff: float = MIN_GAP
    reloads: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    failures: int = 0
    last_reload: float = 0.0  # epoch seconds of the last reload (0: none yet)
    waiting: str = ""
    resolved: dict[str, frozenset[str]] = field(default_factory=dict)  # this check's resolution

    def check(self) -> Decision:
        """One round: resolve, notice reloads made by others, reload when an address changed."""
        text = self.read_upstreams()
        self.resolved = {s.host: self.resolve(s.host) for s in parse_servers(text)}
        generation = self.workers()
        if generation is None:  # nginx is starting or stopping: nothing to compare with
            self.previous = self.resolved
            return Decision()
        if generation != self.generation:
            # nginx (re)loaded since the last check, resolving every name somewhere in between:
            # what it has is in the union of the two resolutions; an address of the previous one
            # that is gone now is then reloaded away once more, harmlessly.
            self.loaded_text = text
            self.loaded = {host: addrs | self.previous.get(host, frozenset())
                           for host, addrs in self.resolved.items()}
            self.generation = generation
        decision = self.decide(text)
        self.previous = self.resolved
        if decision.reload:
            decision = self.gate(decision)
        self.note_waiting(decision.wait)
        if decision.reload:
            self.do_reload(decision.reload, text)
        return decision

    def decide(self, text: str) -> Decision:
        if self.resync:
            return Decision(reload="resync: the watcher restarted while nginx ran; reloading once so "
                                   "that both agree")
        if text != self.loaded_text:
            # A deploy writes the file, tests it, then reloads (a moment); anyone else: their reload.
            if self.switching_age() is not None:
                return Decision()
            return Decision(wait="the upstream files changed since nginx loaded them; not reloading "
                                 "until whoever changes them does")
        unresolved = sorted(host for host, addrs in self.resolved.items() if not addrs)
        gone = {host: self.loaded[host] - addrs for host, addrs in self.resolved.items()
                if host in self.loaded and self.loaded[host] - addrs}
        if gone:
            if unresolved:
                return Decision(wait=f"{', '.join(unresolved)} does not resolve (nginx would refuse the "
                                     "configuration)")
            return Decision(reload="gone: " + "; ".join(
                f"{host}: {_addrs(old)} gone, now {_addrs(self.resolved[host])}"
                for host, old in sorted(gone.items())))
        if unresolved or self.switching_age() is not None:
            return Decision()
        admitted = [(host, addr) for host, addr, port in self._new_servers(text)
                    if self.answers(addr, port, host)]
        if admitted:
            return Decision(reload="added: " + "; ".join(
                f"{host}: {addr} answers {HEALTH_PATH}" for host, addr in admitted))
        return Decision()

    def _new_servers(self, text: str) -> list[tuple[str, str, int]]:
        """(host, address, port) of every address a name resolves to that nginx does not have."""
        return [(s.host, addr, s.port) for s in sorted(parse_servers(text), key=lambda s: (s.host, s.port))
                if s.host in self.loaded for addr in sorted(self.resolved[s.host] - self.loaded[s.host])]

    def gate(self, decision: Decision) -> Decision:
        """The reasons a wanted reload waits: a deploy switching, the gap after the last reload."""
        age = self.switching_age()
        if age is not None and age < SWITCH_MAX_AGE:
            return Decision(wait=f"a deploy is switching upstreams ({SWITCHING_FLAG} exists); it reloads "
                                 f"nginx itself. Wanted: {decision.reload}")
        if self.clock() < self.next_reload:
            return Decision(wait=f"at most one reload every {MIN_GAP:g} s (more after a refused one). "
                                 f"Wanted: {decision.reload}")
        return decision

    def note_waiting(self, wait: str) -> None:
        if wait and wait != self.waiting:
            self.log(f"waiting: {wait}")
        self.waiting = wait

    def do_reload(self, reason: str, text: str) -> None:
        self.log(f"reloading nginx: {reason}")
        error = self.reload_nginx()
        if error:
            self.failures += 1
            self.next_reload = self.clock() + self.backoff
            self.log(f"nginx refused the reload, it keeps its configuration ({error}); next try in "
                     f"{self.backoff:g} s")
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            return
        kind = reason.partition(":")[0]
        self.reloads[kind] = self.reloads.get(kind, 0) + 1
        self.last_reload = time.time()
        self.next_reload = self.clock() + MIN_GAP
        self.backoff = MIN_GAP
        self.resync = False
        self.generation = self.workers()
        self.loaded_text = text
        self.loaded = dict(self.resolved)

    def metrics(self) -> str:
        """The counters in Prometheus' text format."""
        prefix = "nginx_upstream_watcher_"
        families: list[tuple[str, str, str, list[tuple[str, float]]]] = [
            ("enabled", "gauge", "1 while the watcher runs (NGINX_UPSTREAM_WATCH_INTERVAL=0 turns it off).",
             [("", 1)]),
            ("reloads_total", "counter", "Reloads of nginx by the upstream watcher, by reason (gone: an "
             "address nginx used went away; added: a new one answered; resync: the watcher restarted).",
             [(f'{{reason="{kind}"}}', self.reloads.get(kind, 0)) for kind in ("gone", "added", "resync")]),
            ("reload_failures_total", "counter", "Reloads nginx refused (it kept its configuration).",
             [("", self.failures)]),
            ("last_reload_timestamp_seconds", "gauge", "When the watcher last reloaded nginx (0: never).",
             [("", round(self.last_reload, 3))]),
            ("last_check_timestamp_seconds", "gauge", "When the watcher last resolved the upstream names.",
             [("", round(time.time(), 3))]),
            ("waiting", "gauge", "1 while a wanted reload waits (the reason is in the container's log).",
             [("", 1 if self.waiting else 0)]),
            ("addresses", "gauge", "How many addresses an upstream server name resolves to now.",
             [(f'{{host="{_label(host)}"}}', len(addrs)) for host, addrs in sorted(self.resolved.items())]),
        ]
        lines: list[str] = []
        for name, kind, text, samples in families:
            lines += [f"# HELP {prefix}{name} {text}", f"# TYPE {prefix}{name} {kind}"]
            lines += [f"{prefix}{name}{labels} {value}" for labels, value in samples]
        return "\n".join(lines) + "\n"


def _addrs(addrs: Iterable[str]) -> str:
    return ",".join(sorted(addrs)) or "nothing"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# -- the real effects, in the nginx container ------------------------------------------------------


def read_upstreams(directory: Path = UPSTREAMS) -> str:
    parts: list[str] = []
    for path in sorted(directory.glob("*.conf")):
        with contextlib.suppress(OSError):  # replaced or removed between the listing and the read
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def resolve(host: str) -> frozenset[str]:
    """What nginx gets for `host` when it loads its configuration (getaddrinfo, any family)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def _proc_workers(master: int) -> dict[int, bool]:
    """Worker pid -> True when it is shutting down (an old worker finishing its requests)."""
    found: dict[int, bool] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        ppid = stat.rpartition(")")[2].split()[1]
        if ppid == str(master) and args.startswith(_WORKER):
            found[int(entry.name)] = "shutting down" in args
    return found


def nginx_master() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def serving_workers() -> frozenset[int] | None:
    master = nginx_master()
    if master is None:
        return None
    serving = frozenset(pid for pid, stopping in _proc_workers(master).items() if not stopping)
    return serving or None


def reload_nginx() -> str:
    """`nginx -s reload` (which tests the configuration first), confirmed by a new generation of
    workers replacing every serving one: nginx keeps its configuration, silently, when it fails."""
    before = serving_workers() or frozenset()
    try:
        done = subprocess.run(["nginx", "-s", "reload"], capture_output=True, text=True,
                              timeout=RELOAD_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"nginx -s reload exited with {done.returncode}"
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        now = serving_workers() or frozenset()
        if now and not now & before:
            return ""
        time.sleep(0.05)
    return f"no new worker processes within {RELOAD_TIMEOUT:g} s"


def answers(addr: str, port: int, host: str) -> bool:
    conn = http.client.HTTPConnection(addr, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", HEALTH_PATH, headers={"Host": host, "User-Agent": "nginx-upstream-watcher"})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def switching_age() -> float | None:
    try:
        return max(0.0, time.time() - SWITCHING_FLAG.stat().st_mtime)
    except OSError:
        return None


def write_metrics(text: str, path: Path = METRICS) -> None:
    """Atomically, readable by nginx's workers; its modification time is the heartbeat. The modes
    are set explicitly: the entrypoint may run under umask 077 (it made a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def log(message: str) -> None:
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    print(f"{stamp} [notice] upstream-watcher: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two checks [2]")
    parser.add_argument("--resync", action="store_true",
                        help="nginx already runs (the watcher was restarted): reload it once")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    watcher = Watcher(read_upstreams=read_upstreams, resolve=resolve, workers=serving_workers,
                      reload_nginx=reload_nginx, answers=answers, switching_age=switching_age, log=log,
                      resync=args.resync)
    log(f"watching the server names in {UPSTREAMS}/*.conf every {args.interval:g} s")
    while True:
        started = time.monotonic()
        watcher.check()
        write_metrics(watcher.metrics())
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
