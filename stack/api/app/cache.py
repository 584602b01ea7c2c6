"""Read-through cache on Redis that degrades to "bypass" instead of failing requests.

Redis is an accelerator here, never a source of truth: any Redis error makes
the caller go to PostgreSQL. Timeouts are short and retries are off so a dead
Redis costs a request about a second at most, not the client's default backoff.
"""

from __future__ import annotations

import enum
import logging
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app import metrics
from app.failures import reason

log = logging.getLogger("finaiflow.cache")

CACHE_TIMEOUT_SECONDS = 1.0
# OSError covers TimeoutError and the socket errors redis-py does not wrap.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)


class CacheResult(enum.StrEnum):
    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"


def make_redis(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_connect_timeout=CACHE_TIMEOUT_SECONDS,
        socket_timeout=CACHE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        # Probe idle pooled connections so one killed by a Redis restart is
        # replaced before use rather than failing the first request after it.
        health_check_interval=30,
    )


class Cache:
    def __init__(self, client: Redis, *, prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._available = True

    def key(self, kind: str, ident: int | str) -> str:
        return f"{self._prefix}{kind}:{ident}"

    async def get(self, key: str) -> tuple[CacheResult, bytes | None]:
        try:
            # decode_responses is off, so values come back as bytes.
            value = cast(bytes | None, await self._client.get(key))
        except REDIS_ERRORS as error:
            self._mark_unavailable(error)
            metrics.CACHE_REQUESTS.labels(result=CacheResult.BYPASS.value).inc()
            return CacheResult.BYPASS, None
        self._mark_available()
        result = CacheResult.MISS if value is None else CacheResult.HIT
        metrics.CACHE_REQUESTS.labels(result=result.value).inc()
        return result, value

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(key, value, ex=self._ttl)
        except REDIS_ERRORS as error:
            self._mark_unavailable(error)

    async def invalidate(self, key: str) -> None:
        # If this fails, the stale entry lives at most CACHE_TTL seconds.
        try:
            await self._client.delete(key)
        except REDIS_ERRORS as error:
            self._mark_unavailable(error)
            log.warning("could not invalidate %s; it expires within %ss", key, self._ttl)

    # Log transitions only: a Redis outage would otherwise log once per request.
    def _mark_unavailable(self, error: BaseException) -> None:
        if self._available:
            self._available = False
            log.warning("redis unavailable (%s); reading through to postgresql", reason(error))

    def _mark_available(self) -> None:
        if not self._available:
            self._available = True
            log.info("redis available again")
