"""The PostgreSQL engine: one pool per process, reconnecting on its own after an outage."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Errors meaning "the database is unreachable", as opposed to a bad query.
# asyncpg lets OSError (refused, DNS, timeout) escape from connect() unwrapped.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    OSError,
)

CONNECT_TIMEOUT_SECONDS = 2.0
# Fails a query on a hung (not down) server instead of holding the request forever.
COMMAND_TIMEOUT_SECONDS = 30.0


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # A pooled connection may have died with a PostgreSQL restart; test it
        # on checkout rather than hand a dead one to a request.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": COMMAND_TIMEOUT_SECONDS,
        },
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers serialise rows after commit without
    # lazy-loading, which async sessions cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)
