"""/api/v1/tenants: CRUD, with single-tenant reads going through the Redis cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import Cache, CacheResult
from app.models import Tenant
from app.schemas import TenantIn, TenantOut
from app.services import Services, get_services

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])

JSON = "application/json"


async def get_session(
    services: Annotated[Services, Depends(get_services)],
) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as session:
        yield session


def get_cache(services: Annotated[Services, Depends(get_services)]) -> Cache:
    return services.cache


SessionDep = Annotated[AsyncSession, Depends(get_session)]
CacheDep = Annotated[Cache, Depends(get_cache)]
# Bounded to PostgreSQL's bigint so an oversized id is a 422, not a driver error.
TenantId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _not_found(tenant_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant_id} not found")


def _duplicate_domain(domain: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"a tenant with domain {domain} already exists")


@router.get("", response_model=list[TenantOut])
async def list_tenants(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[TenantOut]:
    rows = await session.scalars(select(Tenant).order_by(Tenant.id).limit(limit).offset(offset))
    return [TenantOut.model_validate(row) for row in rows]


@router.post("", response_model=TenantOut, status_code=status.HTTP_201_CREATED)
async def create_tenant(body: TenantIn, session: SessionDep) -> TenantOut:
    tenant = Tenant(name=body.name, domain=body.domain)
    session.add(tenant)
    try:
        await session.commit()
    except IntegrityError:
        raise _duplicate_domain(body.domain) from None
    await session.refresh(tenant)
    return TenantOut.model_validate(tenant)


@router.get(
    "/{tenant_id}",
    response_model=TenantOut,
    responses={200: {"headers": {"X-Cache": {"description": "HIT, MISS or BYPASS"}}}},
)
async def read_tenant(tenant_id: TenantId, session: SessionDep, cache: CacheDep) -> Response:
    key = cache.key("tenant", tenant_id)
    result, cached = await cache.get(key)
    if cached is not None:
        return Response(cached, media_type=JSON, headers={"X-Cache": result.value.upper()})

    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise _not_found(tenant_id)
    payload = TenantOut.model_validate(tenant).model_dump_json().encode()
    if result is CacheResult.MISS:
        # A write racing this read can leave the old row cached; CACHE_TTL bounds that.
        await cache.set(key, payload)
    return Response(payload, media_type=JSON, headers={"X-Cache": result.value.upper()})


@router.put("/{tenant_id}", response_model=TenantOut)
async def update_tenant(
    tenant_id: TenantId, body: TenantIn, session: SessionDep, cache: CacheDep
) -> TenantOut:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise _not_found(tenant_id)
    tenant.name = body.name
    tenant.domain = body.domain
    try:
        await session.commit()
    except IntegrityError:
        raise _duplicate_domain(body.domain) from None
    await cache.invalidate(cache.key("tenant", tenant_id))
    return TenantOut.model_validate(tenant)


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(tenant_id: TenantId, session: SessionDep, cache: CacheDep) -> Response:
    deleted = await session.scalar(
        delete(Tenant).where(Tenant.id == tenant_id).returning(Tenant.id)
    )
    if deleted is None:
        raise _not_found(tenant_id)
    await session.commit()
    await cache.invalidate(cache.key("tenant", tenant_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
