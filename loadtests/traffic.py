"""Locust traffic in a process of its own, every request recorded (gevent stays out of the caller).

    python -m loadtests.traffic --host URL --out FILE [--users 10] [--max-seconds 600] [--servername NAME]

Runs the locustfile's personas as a library (one local runner), prints "ready" on stdout once
every user runs, and stops on SIGINT or SIGTERM, or by itself after --max-seconds. Then it lets
the users finish their current request, removes what the load created (the locustfile's
test_stop hook) and writes one JSON line per request to FILE:

    {"start": 1764000000.123, "ms": 4.2, "name": "GET /health", "error": ""}

`start` is wall-clock time (the caller's clock too), `error` is empty for a success. The gate
(loadtests/gate.py) and the integration tests cut these samples into windows themselves.
--servername: the site's name (the stack's DOMAIN) every request asks for, as Host and SNI,
when --host names an address (see the locustfile).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import locust
from locust.env import Environment

from loadtests.locustfile import USER_CLASSES, ask_for

SPAWN_DEADLINE = 30.0
STOP_TIMEOUT = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--servername", default=None, help="the name asked for (Host, SNI) [the host's]")
    args = parser.parse_args(argv)
    if not 0 < args.max_seconds <= 3600 or not 0 < args.users <= 200:
        parser.error("--max-seconds must be in (0, 3600] and --users in (0, 200]")

    samples: list[dict[str, Any]] = []
    ask_for(args.host, args.servername)  # before any user is made: they read it when created

    def record(request_type: str, name: str, response_time: float, exception: BaseException | None = None,
               start_time: float | None = None, **_kwargs: Any) -> None:
        error = "" if exception is None else f"{type(exception).__name__}: {exception}"[:300]
        start = start_time if start_time is not None else time.time() - response_time / 1000
        samples.append({"start": start, "ms": round(response_time, 2), "name": f"{request_type} {name}",
                        "error": error})

    # stop_timeout: at the end users finish the task they are in rather than being killed mid-request.
    # events=locust.events: the locustfile's test_start/test_stop hooks are registered there.
    env = Environment(user_classes=list(USER_CLASSES), host=args.host, stop_timeout=STOP_TIMEOUT,
                      events=locust.events)
    env.events.request.add_listener(record)
    stop = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stop.set)
    runner = env.create_local_runner()
    runner.start(args.users, spawn_rate=args.users)
    deadline = time.monotonic() + SPAWN_DEADLINE
    while runner.user_count < args.users and time.monotonic() < deadline and not stop.is_set():
        gevent.sleep(0.1)
    print("ready" if runner.user_count >= args.users else "not ready", flush=True)
    stop.wait(timeout=args.max_seconds)
    runner.stop()  # then the locustfile's test_stop hook removes the catalogue
    runner.quit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
