"""Metrics of this process: one uvicorn worker per container, so no multiprocess mode."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the sample count and nothing here queries them.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "finaiflow_http_requests",
    "HTTP requests served, by route template.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "finaiflow_http_request_duration_seconds",
    "HTTP request duration, by route template.",
    ["method", "route"],
    # Reaches past the slow report's 30 s cap so those requests land in a real bucket.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "finaiflow_http_requests_in_progress",
    "HTTP requests being served right now.",
)
CACHE_REQUESTS = Counter(
    "finaiflow_cache_requests",
    "Cache lookups, by result.",
    ["result"],
)
APP_INFO = Gauge(
    "finaiflow_app_info",
    "Always 1; the release label tells which release this process runs.",
    ["release"],
)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
