"""FinaiFlow traffic through nginx: the personas whose requests must never fail during a deploy.

    Reader       most of the traffic: tenant pages, served from the Redis cache, and listings
    TenantAdmin  writes: creates a tenant, reads it back, renames it, deletes it
    Analyst      the occasional slow report (2 s): always one in flight when traffic switches
    Monitor      an uptime probe: /health and /version once a second

Readers read a catalogue of tenants created when the test starts and deleted when it stops, so
the load leaves the database as it found it. Every non-2xx answer and every connection error
counts as a failure (FastHttpUser's default). Run it with the gate (loadtests/gate.py) or alone:
`locust -f loadtests/locustfile.py --host https://127.0.0.1 --headless -u 10 -t 30s`.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, ClassVar

import httpx
from locust import FastHttpUser, between, constant_pacing, events, task

CATALOGUE_SIZE = 20
SLOW_REPORT_SECONDS = 2


def _domain() -> str:
    return f"load-{uuid.uuid4().hex[:12]}.example.com"


class Catalogue:
    """Tenants every Reader reads (through the cache); made before the load, removed after."""

    ids: ClassVar[list[int]] = []


@events.test_start.add_listener
def create_catalogue(environment: Any, **_kwargs: Any) -> None:
    with httpx.Client(base_url=environment.host, verify=False, timeout=10) as client:
        for _ in range(CATALOGUE_SIZE):
            r = client.post("/api/v1/tenants", json={"name": "load catalogue", "domain": _domain()})
            r.raise_for_status()
            Catalogue.ids.append(r.json()["id"])


@events.test_stop.add_listener
def delete_catalogue(environment: Any, **_kwargs: Any) -> None:
    with httpx.Client(base_url=environment.host, verify=False, timeout=10) as client:
        while Catalogue.ids:
            client.delete(f"/api/v1/tenants/{Catalogue.ids.pop()}")


class _FinaiFlowUser(FastHttpUser):
    abstract = True
    insecure = True  # the development certificate; a staging host with a real one verifies


class Reader(_FinaiFlowUser):
    """Tenant pages (cache hits after the first read) and the listing."""

    weight = 6
    wait_time = between(0.05, 0.2)

    @task(10)
    def read_tenant(self) -> None:
        if Catalogue.ids:
            self.client.get(f"/api/v1/tenants/{random.choice(Catalogue.ids)}", name="/api/v1/tenants/{id}")

    @task(3)
    def list_tenants(self) -> None:
        self.client.get("/api/v1/tenants?limit=20", name="/api/v1/tenants")


class TenantAdmin(_FinaiFlowUser):
    """A write cycle: create, read back, rename, delete (its own tenants only)."""

    weight = 2
    wait_time = between(0.2, 0.5)

    @task
    def tenant_lifecycle(self) -> None:
        domain = _domain()
        created = self.client.post("/api/v1/tenants", json={"name": "load admin", "domain": domain},
                                   name="/api/v1/tenants [create]")
        if created.status_code != 201:
            return  # counted as a failure already
        path = f"/api/v1/tenants/{created.json()['id']}"
        self.client.get(path, name="/api/v1/tenants/{id}")
        self.client.put(path, json={"name": "load admin renamed", "domain": domain},
                        name="/api/v1/tenants/{id}")
        self.client.delete(path, name="/api/v1/tenants/{id}")


class Analyst(_FinaiFlowUser):
    """A slow report, back to back: a request is in flight whenever traffic switches."""

    weight = 1
    wait_time = between(0.1, 0.3)

    @task
    def slow_report(self) -> None:
        self.client.get(f"/api/v1/reports/slow?seconds={SLOW_REPORT_SECONDS}", name="/api/v1/reports/slow")


class Monitor(_FinaiFlowUser):
    """An uptime probe, once a second."""

    weight = 1
    wait_time = constant_pacing(1)

    @task
    def health(self) -> None:
        self.client.get("/health")
        self.client.get("/version")


USER_CLASSES = [Reader, TenantAdmin, Analyst, Monitor]
