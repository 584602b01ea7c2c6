"""The ASGI app: `uvicorn app.main:app`."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from app import metrics
from app.cache import Cache, make_redis
from app.config import ConfigError, Settings
from app.db import UNAVAILABLE_ERRORS, make_engine, make_sessionmaker
from app.failures import reason
from app.middleware import ApiHostCheckMiddleware, MetricsMiddleware
from app.routes import ops, reports, tenants
from app.services import Services

log = logging.getLogger("finaiflow.api")


def _configure_logging() -> None:
    # uvicorn configures only its own loggers; give ours the same destination.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    app_logger = logging.getLogger("finaiflow")
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.INFO)
    app_logger.propagate = False


async def _database_unavailable(_request: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", reason(error))
    return JSONResponse({"detail": "database unavailable"}, status_code=503)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Neither client connects here: the app starts, and reports itself
        # degraded, while PostgreSQL or Redis is still coming up.
        engine = make_engine(settings.database_url)
        redis = make_redis(settings.redis_url)
        services = Services(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=redis,
            cache=Cache(redis, prefix=settings.redis_cache_prefix, ttl_seconds=settings.cache_ttl),
            started_at=datetime.now(UTC),
        )
        app.state.services = services
        log.info("release %s started (environment %s)", settings.release, settings.environment)
        try:
            yield
        finally:
            await services.close()
            log.info("release %s stopped", settings.release)

    app = FastAPI(
        title="FinaiFlow API",
        version=settings.release,
        lifespan=lifespan,
        # Interactive docs are for developers, not for the internet.
        docs_url=None if settings.environment == "production" else "/docs",
        redoc_url=None,
        openapi_url=None if settings.environment == "production" else "/openapi.json",
    )
    for error_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, _database_unavailable)
    app.include_router(ops.router)
    app.include_router(tenants.router)
    app.include_router(reports.router)

    # Added innermost first: metrics wraps everything so host rejections are counted too.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["X-Cache"],
    )
    app.add_middleware(ApiHostCheckMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(MetricsMiddleware)

    metrics.APP_INFO.labels(release=settings.release).set(1)
    return app


def _load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as error:
        raise SystemExit(f"finaiflow api: configuration error: {error}") from None


_configure_logging()
app = create_app(_load_settings())
