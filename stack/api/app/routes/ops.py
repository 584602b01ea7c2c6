"""Endpoints for operators and machines: /health, /version, /metrics."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from app import metrics
from app.failures import reason
from app.schemas import Health, Version
from app.services import Services, get_services

router = APIRouter(tags=["ops"])

CHECK_TIMEOUT_SECONDS = 2.0

ServicesDep = Annotated[Services, Depends(get_services)]

# Probes cancelled at the deadline finish their cleanup here, after /health has
# answered: SQLAlchemy spends up to 2 s more closing a connection it invalidates.
_abandoned: set[asyncio.Task[None]] = set()


def _forget(task: asyncio.Task[None]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved so asyncio does not log it as unhandled


async def _probe(check: Coroutine[Any, Any, None]) -> str | None:
    """None if check succeeds within the deadline, else a credential-free reason."""
    task = asyncio.create_task(check)
    done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_SECONDS)
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        return "timeout"
    error = task.exception()
    # Any failure at all means the dependency is not usable.
    return None if error is None else reason(error)


async def _ping_database(services: Services) -> None:
    async with services.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _ping_cache(services: Services) -> None:
    await services.redis.ping()


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(services: ServicesDep) -> JSONResponse:
    database_error, cache_error = await asyncio.gather(
        _probe(_ping_database(services)), _probe(_ping_cache(services))
    )
    problems = [
        f"{part}: {failure}"
        for part, failure in (("database", database_error), ("cache", cache_error))
        if failure is not None
    ]
    body = Health(
        status="degraded" if problems else "ok",
        database="error" if database_error else "ok",
        cache="error" if cache_error else "ok",
        release=services.settings.release,
        error="; ".join(problems) or None,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if problems else 200)


@router.get("/version", response_model=Version)
async def version(services: ServicesDep) -> Version:
    return Version(
        release=services.settings.release,
        python=platform.python_version(),
        started_at=services.started_at,
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)
