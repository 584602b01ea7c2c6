"""Waiting for something on a target, written once: bounded in time and in count.

    for attempt in polling.attempts(within=timeout, every=0.5):
        last = probe()
        if last.ok:
            return last
    raise HealthTimeout(f"... within {timeout:.0f} s (last: {last})")

The first attempt comes at once; the next ones every `every` seconds; the last one at the deadline
(`attempt.last` tells the body it is the final look, for a loop that reports then). A body that
wants to stop returns or breaks; one that runs to the end has timed out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    number: int  # 1, 2, ...
    elapsed: float  # seconds since the first attempt
    last: bool  # the deadline has come: this is the final look


def attempts(*, within: float, every: float) -> Iterator[Attempt]:
    """Attempts until `within` seconds have passed, `every` seconds apart (at least one, always a
    final one at the deadline, at most within/every + 2 in all)."""
    if every <= 0:
        raise ValueError("the polling interval must be positive")
    start = time.monotonic()
    deadline = start + max(within, 0.0)
    number = 0
    while True:
        number += 1
        now = time.monotonic()
        last = now >= deadline
        yield Attempt(number, now - start, last)
        if last:
            return
        time.sleep(max(0.0, min(every, deadline - time.monotonic())))
