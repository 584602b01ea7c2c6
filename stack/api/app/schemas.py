"""Request and response bodies."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

# RFC 1123 host names, at least two labels: tenants are addressed by their domain.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")


class TenantIn(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    domain: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=253)]

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, value: str) -> str:
        value = value.removesuffix(".")
        if not _DOMAIN.fullmatch(value):
            raise ValueError("must be a domain name such as acme.example.com")
        return value


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    domain: str
    created_at: datetime


class Health(BaseModel):
    status: str
    database: str
    cache: str
    release: str
    error: str | None = None


class Version(BaseModel):
    release: str
    python: str
    started_at: datetime


class SlowReport(BaseModel):
    report: str
    seconds: float
    tenants: int
    release: str
