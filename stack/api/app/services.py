"""The per-process clients the routes share, created and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cache import Cache
from app.config import Settings


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    cache: Cache
    started_at: datetime

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
