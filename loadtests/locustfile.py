"""FinaiFlow traffic through nginx: the personas whose requests must never fail during a deploy.

    Reader       most of the traffic: tenant pages, served from the Redis cache, and listings
    TenantAdmin  writes: creates a tenant, reads it back, renames it, deletes it
    Analyst      the occasional slow report (2 s): always one in flight when traffic switches
    Monitor      an uptime probe: /health and /version once a second

Readers read a catalogue of tenants created when the test starts and deleted when it stops, so
the load leaves the database as it found it. Every non-2xx answer and every connection error
counts as a failure (FastHttpUser's default). Run it with the gate (loadtests/gate.py) or alone:
`locust -f loadtests/locustfile.py --host https://127.0.0.1 --headless -u 10 -t 30s`.

When --host names an address, pass the site's name too (`--servername staging.example`, the
stack's DOMAIN; the gate does): every request then carries it as Host and as TLS SNI, like a
browser's, since the api refuses /api/* for a Host outside ALLOWED_HOSTS (finaiflow_ops.http).
"""

from __future__ import annotations

import functools
import random
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent.ssl
from locust import FastHttpUser, between, constant_pacing, events, task

from finaiflow_ops import http

CATALOGUE_SIZE = 20
SLOW_REPORT_SECONDS = 2


def _domain() -> str:
    return f"load-{uuid.uuid4().hex[:12]}.example.com"


class Catalogue:
    """Tenants every Reader reads (through the cache); made before the load, removed after."""

    ids: ClassVar[list[int]] = []
    servername: ClassVar[str | None] = None  # the name asked for (ask_for), None: the host's own


@events.test_start.add_listener
def create_catalogue(environment: Any, **_kwargs: Any) -> None:
    with http.client(environment.host, servername=Catalogue.servername, base_url=environment.host) as client:
        for _ in range(CATALOGUE_SIZE):
            r = client.post("/api/v1/tenants", json={"name": "load catalogue", "domain": _domain()})
            r.raise_for_status()
            Catalogue.ids.append(r.json()["id"])


@events.test_stop.add_listener
def delete_catalogue(environment: Any, **_kwargs: Any) -> None:
    with http.client(environment.host, servername=Catalogue.servername, base_url=environment.host) as client:
        while Catalogue.ids:
            client.delete(f"/api/v1/tenants/{Catalogue.ids.pop()}")


class _FinaiFlowUser(FastHttpUser):
    abstract = True
    insecure = True  # the development certificate; a staging host with a real one verifies


class _AskingContext(gevent.ssl.SSLContext):
    """A TLS context that sends `servername` as SNI (and checks the certificate against it when
    verifying) whatever host the connection is for. geventhttpclient passes the URL's host as
    server_hostname and FastHttpUser offers no other way to change it than the context factory."""

    servername = ""

    def wrap_socket(self, sock: Any, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | None = None,
                    session: Any = None) -> Any:
        return super().wrap_socket(sock, server_side=server_side,
                                   do_handshake_on_connect=do_handshake_on_connect,
                                   suppress_ragged_eofs=suppress_ragged_eofs,
                                   server_hostname=self.servername or server_hostname, session=session)


def _asking_context(servername: str, verify: bool, cafile: str | None = None) -> gevent.ssl.SSLContext:
    """geventhttpclient's ssl_context_factory (called with its CA bundle as cafile)."""
    ctx = _AskingContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
    ctx.servername = servername
    if verify and cafile:
        ctx.load_verify_locations(cafile=cafile)
    elif verify:
        ctx.load_default_certs()
    else:  # what locust's insecure factory does; geventhttpclient sets check_hostname afterwards
        ctx.check_hostname = False
        ctx.verify_mode = gevent.ssl.CERT_NONE
    return ctx


def ask_for(host: str, servername: str | None) -> None:
    """Make every request of the load to `host` ask for `servername`: Host header and TLS SNI.

    Call it before the users start (it sets class attributes FastHttpUser reads when a user is
    made). None, or the host's own name, leaves the users as FastHttpUser makes them.
    """
    parts = urlsplit(host)
    name = (servername or "").strip().lower().rstrip(".")
    if not name or name == (parts.hostname or "").lower():
        Catalogue.servername = None
        _FinaiFlowUser.default_headers = None
        _FinaiFlowUser.ssl_context_factory = None
        return
    Catalogue.servername = name
    _FinaiFlowUser.default_headers = {"Host": http.host_header(name, parts.scheme, parts.port)}
    if parts.scheme == "https":
        _FinaiFlowUser.ssl_context_factory = functools.partial(_asking_context, name,
                                                               not _FinaiFlowUser.insecure)


@events.init_command_line_parser.add_listener
def _servername_option(parser: Any) -> None:
    parser.add_argument("--servername", default="", include_in_web_ui=False,
                        help="the site's name (the stack's DOMAIN), sent as Host and SNI to --host")


@events.init.add_listener
def _servername_from_command_line(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is not None and environment.host:
        ask_for(environment.host, getattr(options, "servername", "") or None)


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
