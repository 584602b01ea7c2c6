"""Create or promote a superuser: python -m app.create_superuser --email EMAIL [--tenant-domain D].

Idempotent, so the runbook can run it on every deploy: an existing user is
promoted and keeps its password. The password of a new user comes from
FINAIFLOW_SUPERUSER_PASSWORD or, on a terminal, a prompt; it is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import ConfigError, database_url
from app.db import make_engine, make_sessionmaker
from app.failures import reason
from app.models import Tenant, User
from app.passwords import hash_password

PASSWORD_ENV = "FINAIFLOW_SUPERUSER_PASSWORD"  # noqa: S105 (the name of a variable, not a password)
MIN_PASSWORD_LENGTH = 12
UNDEFINED_TABLE = "42P01"  # PostgreSQL SQLSTATE


class CommandError(Exception):
    """A failure worth one line on stderr and exit status 1."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.create_superuser",
        description=f"Create a superuser, or promote an existing user. "
        f"A new user's password is read from {PASSWORD_ENV} or prompted for.",
    )
    parser.add_argument("--email", required=True, help="the user's email (case-insensitive)")
    parser.add_argument("--tenant-domain", help="attach the user to the tenant with this domain")
    return parser.parse_args(argv)


def _normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > 320 or any(c.isspace() for c in email):
        raise CommandError(f"not a valid email address: {raw!r}")
    return email


def _read_password() -> str:
    # Empty counts as unset: compose passes "" for a variable listed but not defined.
    password = os.environ.get(PASSWORD_ENV) or None
    if password is None:
        if not sys.stdin.isatty():
            raise CommandError(f"no password: set {PASSWORD_ENV} or run it on a terminal")
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("the passwords do not match")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


async def _tenant_id(session: AsyncSession, domain: str | None) -> int | None:
    if domain is None:
        return None
    tenant_id = await session.scalar(
        select(Tenant.id).where(Tenant.domain == domain.strip().lower())
    )
    if tenant_id is None:
        raise CommandError(f"no tenant with domain {domain}")
    return tenant_id


async def _create_or_promote(session: AsyncSession, email: str, tenant_domain: str | None) -> str:
    tenant_id = await _tenant_id(session, tenant_domain)
    user = await session.scalar(select(User).where(User.email == email))
    if user is not None:
        changed = not user.is_superuser or (tenant_id is not None and user.tenant_id != tenant_id)
        user.is_superuser = True
        if tenant_id is not None:
            user.tenant_id = tenant_id
        await session.commit()
        if changed:
            return f"{email} already exists: promoted to superuser (password unchanged)"
        return f"{email} is already a superuser: nothing to do"

    # Asked only now, so promoting an existing user never needs a password.
    password_hash = hash_password(_read_password())
    session.add(
        User(email=email, password_hash=password_hash, is_superuser=True, tenant_id=tenant_id)
    )
    await session.commit()
    return f"created superuser {email}"


async def _check_reachable(engine: AsyncEngine, url: str) -> None:
    """Fail with one line if PostgreSQL is down, unreachable or refuses the login."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, sa_exc.DBAPIError) as error:
        where = make_url(url)  # named by host and database only: the URL holds the password
        raise CommandError(
            f"cannot reach the database at {where.host}:{where.port or 5432}/{where.database} "
            f"({reason(error)})"
        ) from None


async def _run(url: str, email: str, tenant_domain: str | None) -> str:
    engine = make_engine(url, pool_size=1)
    try:
        await _check_reachable(engine, url)
        async with make_sessionmaker(engine)() as session:
            return await _create_or_promote(session, email, tenant_domain)
    except sa_exc.ProgrammingError as error:
        if getattr(error.orig, "sqlstate", None) != UNDEFINED_TABLE:
            raise
        raise CommandError("the schema is missing: run `alembic upgrade head` first") from None
    except sa_exc.IntegrityError:
        # Another run created the same email between our lookup and insert.
        raise CommandError(f"{email} was created concurrently: run the command again") from None
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        email = _normalise_email(args.email)
        message = asyncio.run(_run(database_url(), email, args.tenant_domain))
    except (CommandError, ConfigError) as error:
        print(f"create_superuser: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("create_superuser: interrupted", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
