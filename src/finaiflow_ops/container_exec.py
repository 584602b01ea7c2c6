"""A command run in a container through `docker exec`, made once more when it got no answer.

Under CPU starvation (the test suite's three workers on two cores), an exec has come back with no
output at all, exit 0, now and then: curl against Prometheus' or Alertmanager's API, `cat` of
nginx's certificate over SSH. The second call answers. What counts as an answer is the caller's: a
JSON object from Prometheus, any output from Alertmanager or `cat`. Only calls that may be repeated
are (a POST whose answer was lost may have been applied).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

__all__ = ["ExecResult", "exec_answered"]


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def error(self) -> str:
        return self.stderr.decode(errors="replace")


def exec_answered(container: Any, argv: Sequence[str], answered: Callable[[ExecResult], bool], *,
                  repeat: bool = True, pause: float = 1.0, user: str = "") -> ExecResult:
    """`docker exec` of `argv` in `container` (as `user`, "" for the image's); when `answered` says
    the result is no answer and `repeat`, once more after `pause` seconds. The last result either
    way. An exit code the engine did not give is taken as 0, as docker-py's exec_run leaves it."""
    for attempt in range(2 if repeat else 1):
        if attempt:
            time.sleep(pause)
        code, streams = container.exec_run(list(argv), user=user, demux=True)
        out, err = cast("tuple[bytes | None, bytes | None]", streams)
        result = ExecResult(int(code or 0), out or b"", err or b"")
        if answered(result):
            break
    return result
