"""Settings read once from the environment.

URLs and SECRET_KEY are kept out of repr() so a logged or printed Settings
never leaks a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A required variable is missing or a value cannot be parsed; names the variable only."""


def _required(environ: Mapping[str, str], name: str) -> str:
    """NAME, or the content of the file NAME_FILE names (Docker secrets: /run/secrets/...)."""
    value = environ.get(name, "").strip()
    path = environ.get(f"{name}_FILE", "").strip()
    if not value and path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE cannot be read ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _csv(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in environ.get(name, "").split(",") if item.strip())


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def database_url(environ: Mapping[str, str] = os.environ) -> str:
    """DATABASE_URL alone: what migrations and the CLI need, without the app's other settings."""
    url = _required(environ, "DATABASE_URL")
    if not url.startswith("postgresql+asyncpg://"):
        raise ConfigError("DATABASE_URL must start with postgresql+asyncpg://")
    return url


def _redis_url(environ: Mapping[str, str]) -> str:
    url = _required(environ, "REDIS_URL")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    secret_key: str = field(repr=False)
    environment: str
    release: str
    allowed_hosts: tuple[str, ...]
    cors_origins: tuple[str, ...]
    cache_ttl: int
    redis_cache_prefix: str
    slow_report_seconds: float
    slow_report_max_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        environment = environ.get("ENVIRONMENT", "production").strip() or "production"
        secret_key = _required(environ, "SECRET_KEY")
        # A short key in production is almost always a placeholder left in a .env.
        if environment == "production" and len(secret_key) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters in production")
        slow_max = _number(environ, "SLOW_REPORT_MAX_SECONDS", 30)
        slow_default = _number(environ, "SLOW_REPORT_SECONDS", 3)
        cache_ttl = int(_number(environ, "CACHE_TTL", 300))
        if cache_ttl < 1:
            raise ConfigError("CACHE_TTL must be at least 1 second")
        if slow_default > slow_max:
            raise ConfigError("SLOW_REPORT_SECONDS must not exceed SLOW_REPORT_MAX_SECONDS")
        return cls(
            database_url=database_url(environ),
            redis_url=_redis_url(environ),
            secret_key=secret_key,
            environment=environment,
            release=environ.get("RELEASE", "dev").strip() or "dev",
            allowed_hosts=tuple(host.lower() for host in _csv(environ, "ALLOWED_HOSTS")),
            cors_origins=_csv(environ, "CORS_ORIGINS"),
            cache_ttl=cache_ttl,
            redis_cache_prefix=environ.get("REDIS_CACHE_PREFIX", "finaiflow:cache:"),
            slow_report_seconds=slow_default,
            slow_report_max_seconds=slow_max,
        )
