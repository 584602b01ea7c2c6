"""A command run in a container through `docker exec`, made once more when it got no answer.

Under CPU starvation an exec of curl against the container's own HTTP API (Prometheus',
Alertmanager's) has come back with no output at all, now and then; the second call answers. What
counts as an answer is the caller's: a JSON object from Prometheus, any output from Alertmanager.
Only calls that may be repeated are (a POST whose answer was lost may have been applied).
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
                  repeat: bool = True, pause: float = 1.0) -> ExecResult:
    """`docker exec` of `argv` in `container`; when `answered` says the result is no answer and
    `repeat`, once more after `pause` seconds. The last result either way."""
    for attempt in range(2 if repeat else 1):
        if attempt:
            time.sleep(pause)
        code, streams = container.exec_run(list(argv), demux=True)
        out, err = cast("tuple[bytes | None, bytes | None]", streams)
        result = ExecResult(int(code), out or b"", err or b"")
        if answered(result):
            break
    return result
