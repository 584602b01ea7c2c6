"""Waiting for health, always against a deadline: Docker health status and HTTP probes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from finaiflow_ops import http, polling
from finaiflow_ops.errors import HealthTimeout
from finaiflow_ops.progress import Progress

__all__ = ["Container", "HasContainers", "Probe", "probe", "wait_healthy", "wait_http"]


class Container(Protocol):
    """What a health wait reads of a container (stack.ContainerInfo is one)."""

    @property
    def name(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def health(self) -> str: ...
    @property
    def restarts(self) -> int: ...
    @property
    def ready(self) -> bool: ...


C = TypeVar("C", bound=Container, covariant=True)


class HasContainers(Protocol[C]):
    """Something with services and their containers, and their logs (a Stack)."""

    def services(self) -> list[str]: ...
    def containers(self) -> Sequence[C]: ...
    def logs(self, container_id: str, *, tail: int = 30) -> str: ...

_CRASH_LOOP_RESTARTS = 2
_LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class Probe:
    """One HTTP request's outcome: the status code, or the error that prevented one."""

    url: str
    status: int | None
    elapsed_ms: float
    error: str = ""
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def probe(url: str, *, timeout: float = 5.0, verify: bool | str = False, host: str | None = None,
          domain: str | None = None) -> Probe:
    """GET `url` once. `verify=False` by default: the development certificate is self-signed.

    `domain` is the stack's DOMAIN: asked for (Host and SNI) when `url` names an address, since
    the api refuses an address as Host and the certificate is for the name (finaiflow_ops.http).
    `host` is a name asked for whatever `url` names.
    """
    import httpx

    start = time.monotonic()
    try:
        with http.client(url, domain=domain, servername=host, verify=verify, timeout=timeout) as client:
            r = client.get(url)
        return Probe(url, r.status_code, (time.monotonic() - start) * 1000, body=r.text[:2000])
    except httpx.HTTPError as exc:
        return Probe(url, None, (time.monotonic() - start) * 1000, error=f"{type(exc).__name__}: {exc}")


def wait_http(url: str, *, timeout: float = 60.0, interval: float = 0.5, verify: bool | str = False,
              domain: str | None = None) -> Probe:
    """Probe `url` until it answers 200, or raise HealthTimeout with the last answer.

    `domain`: the stack's DOMAIN, asked for when `url` names an address (see probe).
    """
    for _attempt in polling.attempts(within=timeout, every=interval):
        last = probe(url, timeout=min(5.0, timeout), verify=verify, domain=domain)
        if last.ok:
            return last
    seen = f"HTTP {last.status}" if last.status else last.error
    raise HealthTimeout(f"{url} did not answer 200 within {timeout:.0f} s (last: {seen})")


def wait_healthy(
    stack: HasContainers[C],
    *,
    services: Sequence[str] | None = None,
    timeout: float = 180.0,
    interval: float = 1.0,
    progress: Progress | None = None,
) -> list[C]:
    """Wait until every container of `services` (default: all) runs and is healthy.

    Fails early, with the container's last log lines, when one exits or restarts in a loop.
    """
    wanted = list(services) if services else stack.services()
    said: dict[str, str] = {}
    for _attempt in polling.attempts(within=timeout, every=interval):
        containers = [c for c in stack.containers() if c.service in wanted]
        missing = sorted(set(wanted) - {c.service for c in containers})
        for c in containers:
            line = f"{c.service}: {c.state}" + (f" ({c.health})" if c.health != "none" else "")
            if progress and said.get(c.name) != line:
                progress(f"{c.name}: {c.state}" + (f", {c.health}" if c.health != "none" else ""))
            said[c.name] = line
            _fail_if_crashed(stack, c)
        if not missing and all(c.ready for c in containers):
            return containers
    raise _not_healthy(stack, containers, missing, timeout)


def _not_healthy(stack: HasContainers[C], containers: Sequence[C], missing: Sequence[str],
                 timeout: float) -> HealthTimeout:
    """The timeout, naming what was still waiting; when it is one container, the error carries
    its service, name and last log lines as fields."""
    unready = [c for c in containers if not c.ready]
    waiting = [f"{c.name} ({c.state}, {c.health})" for c in unready]
    waiting += [f"{s} (no container)" for s in missing]
    message = f"not healthy after {timeout:.0f} s: {', '.join(waiting)}"
    hint = "see `finaiflow-ops logs SERVICE` for why"
    if len(unready) == 1 and not missing:
        (c,) = unready
        try:
            log_tail = stack.logs(c.id, tail=_LOG_TAIL_LINES).strip()
        except Exception:  # gone meanwhile, an engine error: the timeout is still the error to report
            log_tail = ""
        return HealthTimeout(message, hint=hint, service=c.service, container=c.name, log_tail=log_tail)
    if len(missing) == 1 and not unready:
        return HealthTimeout(message, hint=hint, service=missing[0])
    return HealthTimeout(message, hint=hint)


def _fail_if_crashed(stack: HasContainers[C], c: Container) -> None:
    crashed = c.state in ("exited", "dead", "restarting") or (
        c.restarts >= _CRASH_LOOP_RESTARTS and not c.ready
    )
    if crashed:
        log_tail = stack.logs(c.id, tail=_LOG_TAIL_LINES).strip()
        tail = log_tail.splitlines()
        last = f": {tail[-1]}" if tail else ""
        raise HealthTimeout(
            f"{c.name} {c.state} (restarted {c.restarts}x) instead of becoming healthy{last}",
            hint=f"see `finaiflow-ops logs {c.service}` for the whole log",
            service=c.service, container=c.name, log_tail=log_tail,
        )
