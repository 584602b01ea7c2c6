"""The zero-downtime gate: locust traffic through nginx while the api is updated and rolled back.

    python -m loadtests.gate [--project-dir stack] [--target local://] [--service api]
                             [--users 10] [--rest 15] [--settle 5] [--other IMAGE]
                             [--max-rollback-seconds 10] [--no-runbook] [--out reports/load.json]

One locust run (loadtests/traffic.py, in its own process) drives steady traffic through nginx on
127.0.0.1 for the whole gate, and these phases are cut out of it:

    rest      nothing changes: the reference numbers
    update    finaiflow_ops.rollout.deploy SERVICE to the other release            (ours)
              (the release found stays running as the warm standby)
    rollback  finaiflow_ops.rollout.rollback SERVICE: back to the warm standby     (ours)
    update-cold, rollback-cold   the same with `standby=0`: the rollback starts containers, as
              without a standby (skipped with --no-cold)                          (ours)
    runbook   the runbook's `docker compose up -d --no-deps --scale api=2 api`, with the other
              release, nginx configured as the runbook's (`server api:8000`)    (the baseline)
    restore   finaiflow_ops.rollout.deploy back to the release found, as many replicas as found

A switch window runs from the command's start until --settle seconds after it returned; each
request counts in the window it started in. The gate passes when no request failed at rest or
in our phases (the runbook's failures are the baseline it is compared with), /version changed
and came back, and each rollback put traffic back within --max-rollback-seconds. Each of our
phases reports the command's phase times (reconcile, migrate, scale-up, health, switch, drain,
retire) and what became of the warm standby. Results go to
--out and to PROJECT_DIR/.finaiflow/loadgate.json on the target (what the "load tests done"
checklist item reads), and are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from finaiflow_ops import http, releases, rollout
from finaiflow_ops.proxy import Proxy, Upstream
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

REPO = Path(__file__).resolve().parent.parent
_URL_IN_ERROR = re.compile(r"URL \S+ ?")


@dataclass(frozen=True)
class Sample:
    """One request: when it started (epoch seconds), how long it took, what, and its error."""

    start: float
    ms: float
    name: str
    error: str = ""


@dataclass(frozen=True)
class Window:
    """The numbers of one phase: the requests that started between `start` and `end`."""

    phase: str
    kind: str  # rest | ours | runbook
    seconds: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    command_seconds: float | None = None  # how long the command ran
    switch_seconds: float | None = None  # when traffic was on the new containers, from its start
    slow_in_flight: int = 0  # slow reports in flight at the switch, all of them completed or failed
    release_after: str = ""  # what /version said once the window closed
    phases: dict[str, float] = field(default_factory=dict)  # the command's phase times (ours)
    standby: str = ""  # what became of the warm standby (ours)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of values (0 when there are none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def window(samples: Sequence[Sample], phase: str, kind: str, start: float, end: float,
           **extra: Any) -> Window:
    """Cut the requests that started in [start, end) out of samples, and summarise them."""
    inside = [s for s in samples if start <= s.start < end]
    times = [s.ms for s in inside]
    # Locust puts the URL in the error: drop it, so that a 502 on /tenants/1 and /tenants/2 count as one.
    errors = Counter(f"{s.name}: {_URL_IN_ERROR.sub('', s.error)}" for s in inside if s.error)
    seconds = max(end - start, 1e-9)
    return Window(phase, kind, round(end - start, 1), len(inside), sum(errors.values()),
                  round(len(inside) / seconds, 1), percentile(times, 0.5), percentile(times, 0.95),
                  percentile(times, 0.99), dict(errors.most_common(10)), **extra)


def in_flight_at(samples: Sequence[Sample], moment: float, name: str = "/reports/slow") -> list[Sample]:
    """The requests (of `name`) that had started before `moment` and ended after it."""
    return [s for s in samples if name in s.name and s.start < moment < s.start + s.ms / 1000]


# -- traffic ------------------------------------------------------------------------------------------


@contextmanager
def traffic(host: str, *, users: int, max_seconds: float,
            servername: str | None = None) -> Iterator[Callable[[], list[Sample]]]:
    """Locust traffic against host while the block runs; yields a function that, once the block
    has ended, returns every request made (the traffic is stopped when the block exits).
    `servername`: the site's name every request asks for (Host, SNI), when host is an address."""
    out = Path(tempfile.mkstemp(prefix="finaiflow-load-", suffix=".jsonl")[1])
    named = ["--servername", servername] if servername else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.traffic", "--host", host, "--users", str(users),
         "--max-seconds", str(max_seconds), "--out", str(out), *named],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    collected: list[Sample] = []
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the load did not start ({ready or 'exited'}): is {host} serving?")
        yield lambda: collected
    finally:
        proc.send_signal(2)  # SIGINT: users finish their task, the catalogue is removed
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            collected.extend(Sample(**json.loads(line)) for line in out.read_text().splitlines() if line)
            out.unlink()


def current_release(base_url: str, servername: str | None = None) -> str:
    try:
        with http.client(base_url, servername=servername) as client:
            return str(client.get(f"{base_url}/version").json().get("release", "?"))
    except (httpx.HTTPError, ValueError):
        return "?"


# -- the gate -----------------------------------------------------------------------------------------


@dataclass
class Gate:
    stack: Stack
    service: str
    base_url: str
    original: str
    other: str
    replicas: int
    settle: float
    servername: str | None = None  # asked for on base_url (Host, SNI): DOMAIN when it is an address
    marks: list[tuple[str, str, float, float, dict[str, Any]]] = field(default_factory=list)

    def run(self, phase: str, kind: str, action: Callable[[], rollout.DeployResult | None]) -> None:
        """Run one switch; record its window (start, end + settle) and what it measured."""
        print(f"[gate] {phase} ({kind}) ...", file=sys.stderr, flush=True)
        start = time.time()
        _command_start[0] = time.monotonic()
        result = action()
        end = time.time()
        time.sleep(self.settle)
        measured: dict[str, Any] = {"switch_seconds": None}
        if result is not None:
            measured = {"switch_seconds": round(result.switch_seconds, 2), "standby": result.standby,
                        "phases": {p.name: p.seconds for p in result.phases}}
        self.marks.append((phase, kind, start, end + self.settle,
                           {"command_seconds": round(end - start, 2), **measured,
                            "release_after": current_release(self.base_url, self.servername)}))

    def update(self, image: str, replicas: int | None = None,
               standby: float | None = None) -> rollout.DeployResult:
        return rollout.deploy(self.stack, self.service, image, replicas=replicas, backup=False,
                              standby=standby, progress=_progress)

    def rollback(self) -> rollout.DeployResult:
        return rollout.rollback(self.stack, self.service, progress=_progress)

    def runbook_update(self, image: str) -> None:
        """The runbook's command, on nginx as the runbook configures it (`server api:8000`)."""
        proxy = Proxy(self.stack)
        upstream = proxy.read_upstream(self.service)
        port = upstream.port if upstream and upstream.port else 8000
        proxy.switch_gracefully(Upstream.of(self.service, [self.service], port))
        time.sleep(self.settle)  # outside any window: the runbook's stack starts from rest
        var = rollout.image_variable(self.stack, self.service)
        self.stack.compose("up", "-d", "--no-deps", "--scale", f"{self.service}=2", self.service,
                           env={var: image}, timeout=300)


_command_start = [time.monotonic()]  # set when each switch's command starts (Gate.run)


def _progress(message: str) -> None:
    """A progress line of our command, with the seconds since it started (where the time goes)."""
    print(f"  {time.monotonic() - _command_start[0]:5.2f}s {message}", file=sys.stderr, flush=True)


def run_gate(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(Target.parse(args.target), args.project_dir)
    base_url = args.host or stack.base_url()
    running = [c for c in stack.containers(args.service) if c.state == "running"]
    if not running:
        raise SystemExit(f"gate: {args.service} has no running container in {args.project_dir}")
    original = running[0].image
    others = [i for i in rollout.available_images(stack, args.service) if i != original]
    other = args.other or (others[0] if others else "")
    if not other:
        raise SystemExit(f"gate: no other release of {original} on {stack.target} to update to (--other)")
    # The api refuses /api/* for an address as Host: the load asks for the site's name, as users do.
    servername = http.servername_for(base_url, stack.env.get("DOMAIN"))
    before = current_release(base_url, servername)
    gate = Gate(stack, args.service, base_url, original, other, len(running), args.settle, servername)
    on = f"{base_url} (as {servername})" if servername else base_url
    print(f"[gate] {args.users} users on {on}; {original} -> {other} and back; rest {args.rest} s",
          file=sys.stderr, flush=True)
    budget = args.rest + 900.0  # the traffic stops by itself even if this process dies
    with traffic(base_url, users=args.users, max_seconds=budget, servername=servername) as requests:
        rest_start = time.time()
        time.sleep(args.rest)
        gate.marks.append(("rest", "rest", rest_start, time.time(), {"release_after": before}))
        gate.run("update", "ours", lambda: gate.update(other))
        gate.run("rollback", "ours", gate.rollback)
        if not args.no_cold:
            gate.run("update-cold", "ours", lambda: gate.update(other, standby=0))
            gate.run("rollback-cold", "ours", gate.rollback)
        if not args.no_runbook:
            gate.run("runbook", "runbook", lambda: gate.runbook_update(other))
            gate.run("restore", "ours", lambda: gate.update(original, replicas=gate.replicas, standby=0))
    samples = requests()
    windows = []
    for phase, kind, start, end, extra in gate.marks:
        switch = extra.get("switch_seconds")
        slow = len(in_flight_at(samples, start + switch)) if switch is not None else 0
        windows.append(window(samples, phase, kind, start, end, slow_in_flight=slow, **extra))
    # Requests outside every window (setting the runbook's nginx up, the ends) count too.
    outside = [s for s in samples if not any(start <= s.start < end for _, _, start, end, _ in gate.marks)]
    if outside:
        windows.append(window(outside, "between", "rest", outside[0].start, outside[-1].start + 1e-3))
    return verdict(windows, before=before, original=original, other=other, users=args.users,
                   max_rollback=args.max_rollback_seconds, stack=stack)


def verdict(windows: list[Window], *, before: str, original: str, other: str, users: int,
            max_rollback: float, stack: Stack) -> dict[str, Any]:
    by = {w.phase: w for w in windows}
    problems = [f"{w.phase}: {w.failures} failed request(s)" for w in windows
                if w.kind != "runbook" and w.failures]
    if by["update"].release_after in ("?", before):
        problems.append(f"update: /version still says {by['update'].release_after}")
    for phase in ("rollback", "rollback-cold"):
        if phase not in by:
            continue
        if by[phase].release_after != before:
            problems.append(f"{phase}: /version says {by[phase].release_after}, expected {before}")
        seconds = by[phase].switch_seconds or math.inf
        if seconds > max_rollback:
            problems.append(f"{phase}: traffic back after {seconds:.1f} s, limit {max_rollback:.0f} s")
    ids = sorted({rollout.image_id(stack, original), rollout.image_id(stack, other)})
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": not problems,
        "problems": problems,
        "users": users,
        "releases": [original, other],
        "image_ids": ids,
        "rollback_seconds": by["rollback"].switch_seconds,
        "rollback_command_seconds": by["rollback"].command_seconds,
        "update_seconds": by["update"].switch_seconds,
        "update_command_seconds": by["update"].command_seconds,
        "update_phases": by["update"].phases,
        "rollback_standby": by["rollback"].standby,
        "rollback_cold_seconds": by["rollback-cold"].switch_seconds if "rollback-cold" in by else None,
        "rollback_cold_command_seconds": (by["rollback-cold"].command_seconds if "rollback-cold" in by
                                          else None),
        "runbook_failures": by["runbook"].failures if "runbook" in by else None,
        "windows": [asdict(w) for w in windows],
    }


def print_report(report: dict[str, Any], out: Path) -> None:
    header = (f"{'phase':<9} {'kind':<8} {'window':>7} {'requests':>8} {'failed':>6} {'req/s':>6} "
              f"{'p50':>6} {'p95':>6} {'p99':>6} {'switch':>7} {'command':>8} {'slow*':>5}  /version after")
    print(header)
    for w in report["windows"]:
        switch = f"{w['switch_seconds']:.1f}s" if w["switch_seconds"] is not None else "-"
        command = f"{w['command_seconds']:.1f}s" if w["command_seconds"] is not None else "-"
        print(f"{w['phase']:<9} {w['kind']:<8} {w['seconds']:>6.1f}s {w['requests']:>8} {w['failures']:>6} "
              f"{w['rps']:>6} {w['p50_ms']:>5.0f}m {w['p95_ms']:>5.0f}m {w['p99_ms']:>5.0f}m {switch:>7} "
              f"{command:>8} {w['slow_in_flight']:>5}  {w['release_after']}")
        for error, count in w["errors"].items():
            print(f"          {count} x {error}")
        if w.get("phases"):
            print("          phases: " + ", ".join(f"{name} {sec:.2f}s" for name, sec in w["phases"].items()))
        if w.get("standby"):
            print(f"          standby: {w['standby']}")
    print("  (m = ms; switch: from the command's start until nginx served the new containers; "
          "slow*: 2 s reports in flight at that moment)")
    print(f"deploy: traffic on the new release after {report['update_seconds']} s "
          f"(command {report['update_command_seconds']} s)")
    print(f"rollback from the warm standby: traffic back after {report['rollback_seconds']} s "
          f"(command {report['rollback_command_seconds']} s)")
    if report.get("rollback_cold_seconds") is not None:
        print(f"rollback without a standby: traffic back after {report['rollback_cold_seconds']} s "
              f"(command {report['rollback_cold_command_seconds']} s)")
    print(f"written to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--project-dir", default=os.environ.get("FINAIFLOW_PROJECT_DIR", str(REPO / "stack")))
    parser.add_argument("--target", default="local://")
    parser.add_argument("--service", default="api")
    parser.add_argument("--host", default=None, help="the HTTPS base URL [what nginx publishes]")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rest", type=float, default=15.0, help="seconds of steady load before any switch")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds a window stays open after a switch")
    parser.add_argument("--other", default=None, help="the release to update to [another tag of the image]")
    parser.add_argument("--max-rollback-seconds", type=float, default=10.0)
    parser.add_argument("--no-runbook", action="store_true", help="skip the runbook's update (the baseline)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the update and rollback without a warm standby")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "load.json")
    args = parser.parse_args(argv)
    if not 0 < args.rest <= 600 or not 0 <= args.settle <= 60 or not 0 < args.users <= 200:
        parser.error("--rest must be in (0, 600], --settle in [0, 60], --users in (0, 200]")

    report = run_gate(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    stack = Stack(Target.parse(args.target), args.project_dir)
    releases.write_state(stack, "loadgate.json", json.dumps(report, indent=2) + "\n")
    print_report(report, args.out)
    if report["passed"]:
        print("gate: passed (0 failed requests in our phases)")
        return 0
    print(f"gate: FAILED: {'; '.join(report['problems'])}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
