"""/api/v1/reports: deliberately slow reports, to prove rolling updates drain in-flight requests."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from app.models import Tenant
from app.schemas import SlowReport
from app.services import Services, get_services

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/slow", response_model=SlowReport)
async def slow_report(
    services: Annotated[Services, Depends(get_services)],
    seconds: Annotated[float | None, Query(ge=0)] = None,
) -> SlowReport:
    settings = services.settings
    # The cap comes from the environment, so it is checked here rather than in Query().
    cap = settings.slow_report_max_seconds
    if seconds is not None and seconds > cap:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "seconds"),
                    "msg": f"Input should be less than or equal to {cap:g}",
                    "input": seconds,
                    "ctx": {"le": cap},
                }
            ]
        )
    duration = settings.slow_report_seconds if seconds is None else seconds
    await asyncio.sleep(duration)
    # The session is opened after the sleep so a long report does not hold a pooled connection idle.
    async with services.sessions() as session:
        tenants = await session.scalar(select(func.count()).select_from(Tenant))
    return SlowReport(
        report="tenant_count", seconds=duration, tenants=tenants or 0, release=settings.release
    )
