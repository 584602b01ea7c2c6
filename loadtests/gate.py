"""The load gate: steady locust traffic through nginx on 127.0.0.1; passes only with zero failures.

    python -m loadtests.gate [--host https://127.0.0.1] [--users 8] [--seconds 20] [--out reports/load.json]

Numbers go to the output file and are printed. The rolling-update and rollback phases, with the
runbook's own update measured beside them, are added by the zero-downtime work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gevent
from locust.env import Environment
from locust.stats import StatsEntry

from loadtests.locustfile import TenantAdmin


@dataclass(frozen=True)
class PhaseResult:
    """What one phase of load saw."""

    phase: str
    seconds: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: dict[str, int]

    @classmethod
    def from_stats(cls, phase: str, seconds: float, total: StatsEntry, errors: dict[str, int]) -> PhaseResult:
        return cls(phase, round(seconds, 1), total.num_requests, total.num_failures,
                   round(total.num_requests / seconds, 1) if seconds else 0.0,
                   total.get_response_time_percentile(0.5) or 0.0,
                   total.get_response_time_percentile(0.95) or 0.0,
                   total.get_response_time_percentile(0.99) or 0.0, errors)


def run_phase(host: str, phase: str, *, users: int, seconds: float) -> PhaseResult:
    """Run `users` simulated users for `seconds` (bounded), then stop them and collect the stats."""
    env = Environment(user_classes=[TenantAdmin], host=host)
    runner = env.create_local_runner()
    start = time.monotonic()
    runner.start(users, spawn_rate=users)
    gevent.sleep(seconds)
    runner.stop()  # waits for users to finish their current request
    runner.quit()
    elapsed = time.monotonic() - start
    errors = {f"{e.method} {e.name}: {e.error}": e.occurrences for e in env.stats.errors.values()}
    return PhaseResult.from_stats(phase, elapsed, env.stats.total, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="https://127.0.0.1")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("reports/load.json"))
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.users <= 200:
        parser.error("--seconds must be in (0, 600] and --users in (0, 200]")

    results = [run_phase(args.host, "steady", users=args.users, seconds=args.seconds)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    for r in results:
        print(f"{r.phase:>8}: {r.requests} requests, {r.failures} failed, {r.rps} req/s, "
              f"p50 {r.p50_ms:.0f} ms, p95 {r.p95_ms:.0f} ms, p99 {r.p99_ms:.0f} ms")
        for error, count in r.errors.items():
            print(f"          {count} x {error}")
    print(f"written to {args.out}")
    failed = sum(r.failures for r in results)
    if failed:
        print(f"gate: FAILED ({failed} failed requests)", file=sys.stderr)
        return 1
    print("gate: passed (0 failed requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
