"""ASGI middleware: request metrics and the Host check for /api/*."""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics

# Requests that matched no route share one label, so scanners probing random
# paths cannot grow the metric's cardinality.
UNMATCHED_ROUTE = "<unmatched>"

# Loopback is always acceptable: operators curl the API from the host itself.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.HTTP_REQUESTS_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.HTTP_REQUESTS_IN_PROGRESS.dec()
            # The router stores the matched route in the scope; its path is the
            # template (/api/v1/tenants/{tenant_id}), not the raw URL.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )


def _host_name(host_header: str) -> str:
    """The host part of a Host header: port dropped, IPv6 brackets removed, lowercased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    for pattern in allowed:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class ApiHostCheckMiddleware:
    """Reject /api/* requests whose Host is not in ALLOWED_HOSTS.

    Only /api/* is checked: Docker healthchecks and Prometheus reach /health,
    /version and /metrics by container IP, which no allow-list would name.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_api_path(scope["path"]):
            headers = dict(scope["headers"])
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if not host_allowed(host, self.allowed):
                response = JSONResponse({"detail": "Invalid host header"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")
