"""FinaiFlow traffic through nginx: the personas whose requests must never fail during a deploy."""

from __future__ import annotations

import random
import uuid
from typing import ClassVar

from locust import FastHttpUser, between, task


class TenantAdmin(FastHttpUser):
    """Reads tenants (mostly cache hits), sometimes creates one, now and then runs a slow report."""

    wait_time = between(0.05, 0.2)
    insecure = True  # the development certificate; the TLS work makes this verifiable
    # Shared by all simulated users: every tenant created is read by everyone, through the cache.
    tenant_ids: ClassVar[list[int]] = []

    def on_start(self) -> None:
        tenant = {"name": "load", "domain": f"load-{uuid.uuid4().hex[:12]}.example.com"}
        with self.client.post("/api/v1/tenants", name="/api/v1/tenants [create]", catch_response=True,
                              json=tenant) as r:
            if r.status_code == 201:
                self.tenant_ids.append(r.json()["id"])
            else:
                r.failure(f"create tenant: HTTP {r.status_code}")

    @task(10)
    def read_tenant(self) -> None:
        if self.tenant_ids:
            self.client.get(f"/api/v1/tenants/{random.choice(self.tenant_ids)}", name="/api/v1/tenants/{id}")

    @task(5)
    def health(self) -> None:
        self.client.get("/health")

    @task(3)
    def list_tenants(self) -> None:
        self.client.get("/api/v1/tenants?limit=20", name="/api/v1/tenants")

    @task(1)
    def create_tenant(self) -> None:
        self.on_start()

    @task(1)
    def slow_report(self) -> None:
        self.client.get("/api/v1/reports/slow?seconds=2", name="/api/v1/reports/slow")
