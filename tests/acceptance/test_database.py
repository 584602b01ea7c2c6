"""Checklist: database initialized (features/database.feature)."""

from __future__ import annotations

import uuid
from typing import Any

from pytest_bdd import parsers, scenarios, then, when

from tests.acceptance.conftest import Staging

scenarios("database.feature")


@then("the database's Alembic revision is the head of the running api image")
def alembic_at_head(staging: Staging) -> None:
    rows = staging.stack.psql("SELECT version_num FROM alembic_version")
    current = sorted(r[0] for r in rows)
    heads_out = staging.stack.exec("api", ["alembic", "heads"]).stdout
    heads = sorted(line.split()[0] for line in heads_out.splitlines() if line.strip())
    assert heads and current == heads, (
        f"{staging.name}: database at Alembic revision {current or 'none'}, the api image's head is {heads}"
    )


@then(parsers.parse('the index "{index}" exists on table "{table}"'))
def index_exists(staging: Staging, index: str, table: str) -> None:
    rows = staging.stack.psql("SELECT indexname, tablename FROM pg_indexes WHERE schemaname = 'public'")
    seen = [tbl for name, tbl in rows if name == index]
    assert seen == [table], f"{staging.name}: index {index} found on {seen or 'no table'}, expected {table}"


@when("I create a tenant through the api", target_fixture="tenant")
def create_tenant(staging: Staging) -> dict[str, Any]:
    body = {"name": "checklist", "domain": f"checklist-{uuid.uuid4().hex[:10]}.example.com"}
    with staging.client() as client:
        r = client.post(f"{staging.base_url}/api/v1/tenants", json=body)
    assert r.status_code == 201, f"{staging.name}: creating a tenant answered {r.status_code}: {r.text[:200]}"
    created: dict[str, Any] = r.json()
    return created


@then("I can read it back through the api")
def read_tenant(staging: Staging, tenant: dict[str, Any]) -> None:
    with staging.client() as client:
        r = client.get(f"{staging.base_url}/api/v1/tenants/{tenant['id']}")
    assert r.status_code == 200 and r.json()["domain"] == tenant["domain"], (
        f"{staging.name}: reading tenant {tenant['id']} answered {r.status_code}: {r.text[:200]}"
    )


@when("I delete it through the api", target_fixture="deleted")
def delete_tenant(staging: Staging, tenant: dict[str, Any]) -> int:
    with staging.client() as client:
        r = client.delete(f"{staging.base_url}/api/v1/tenants/{tenant['id']}")
    return r.status_code


@then("it is gone from the api and from the database")
def tenant_gone(staging: Staging, tenant: dict[str, Any], deleted: int) -> None:
    assert deleted == 204, f"{staging.name}: deleting tenant {tenant['id']} answered {deleted}"
    with staging.client() as client:
        r = client.get(f"{staging.base_url}/api/v1/tenants/{tenant['id']}")
    assert r.status_code == 404, f"{staging.name}: tenant {tenant['id']} still answers {r.status_code}"
    rows = staging.stack.psql(f"SELECT count(*) FROM tenants WHERE id = {int(tenant['id'])}")  # noqa: S608
    assert rows == [["0"]], f"{staging.name}: tenant {tenant['id']} is still in the database ({rows})"
