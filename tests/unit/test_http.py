"""Requests to an address ask for the site's name (issue 14): Host and TLS SNI are the stack's
DOMAIN, and the certificate verifies against DOMAIN, while the connection goes to the address.

A real TLS server on 127.0.0.1 with a certificate for DOMAIN only (trustme) records, for every
request, the SNI name its connection's handshake carried and the Host header; for /api/* it
answers like the api's host check (400 "Invalid host header" for a Host other than DOMAIN).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from loadtests import gate

from finaiflow_ops import envfile, health, http, monitoring, tls
from finaiflow_ops.hardening import nginx
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from tests.acceptance.conftest import Staging
from tests.rollout_support import version

DOMAIN = "staging.finaiflow.test"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it: its connection's SNI (None: none sent) and Host."""

    method: str
    path: str
    host: str
    sni: str | None


@dataclass
class Site:
    """A running test server: its URL (an address, or a name given) and what it saw."""

    url: str
    port: int
    seen: list[Seen] = field(default_factory=list)

    @property
    def asked(self) -> set[tuple[str, str | None]]:
        return {(s.host, s.sni) for s in self.seen}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: one handshake serves several requests, as in the load

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        host = self.headers.get("Host", "")
        sni = getattr(self.connection, "sni", None)
        seen = self.server.site.seen
        seen.append(Seen(self.command, self.path, host, sni))
        status, body = 200, {"host": host, "sni": sni, "release": "1.0.0", "id": len(seen)}
        if self.path.startswith("/api/") and host.rsplit(":", 1)[0] != DOMAIN:
            status, body = 400, {"detail": "Invalid host header"}
        elif self.command == "POST":
            status = 201
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Strict-Transport-Security", "max-age=31536000")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # silence: one line per request otherwise
        pass


def _remember_sni(sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
    sock.sni = name  # the server-side SSLSocket: the handler finds it as its connection


@contextmanager
def serving(cert: trustme.LeafCert | None, host: str = "127.0.0.1") -> Iterator[Site]:
    """A server on `host` (TLS with `cert`, plain HTTP without) until the block ends."""
    server = _Server((host, 0), _Handler)
    port = server.server_address[1]
    scheme = "https" if cert else "http"
    server.site = Site(f"{scheme}://{host}:{port}", port)
    if cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ctx.sni_callback = _remember_sni
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def site(ca: trustme.CA) -> Iterator[Site]:
    with serving(ca.issue_cert(DOMAIN)) as running:
        yield running


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA only, with hostname checks on."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


# -- which name is asked for --------------------------------------------------------------------


@pytest.mark.parametrize(("url", "domain", "asked"), [
    ("https://127.0.0.1", DOMAIN, DOMAIN),
    ("https://203.0.113.7:8443/x", "Staging.Finaiflow.Test.", DOMAIN),
    ("https://[::1]:443", DOMAIN, DOMAIN),
    ("https://www.finaiflow.test", DOMAIN, None),  # a name is the virtual host the caller chose
    ("https://localhost", DOMAIN, None),
    ("https://127.0.0.1", None, None),
    ("https://127.0.0.1", "", None),
])
def test_the_domain_is_asked_for_only_when_the_url_names_an_address(url: str, domain: str | None,
                                                                     asked: str | None) -> None:
    assert http.servername_for(url, domain) == asked


@pytest.mark.parametrize(("scheme", "port", "header"), [
    ("https", None, DOMAIN), ("https", 443, DOMAIN), ("https", 8443, f"{DOMAIN}:8443"),
    ("http", 80, DOMAIN), ("http", 8080, f"{DOMAIN}:8080"), ("http", 443, f"{DOMAIN}:443"),
])
def test_the_host_header_carries_the_port_only_when_not_the_default(scheme: str, port: int | None,
                                                                     header: str) -> None:
    assert http.host_header(DOMAIN, scheme, port) == header


# -- the client, against a real TLS server --------------------------------------------------------


def test_a_request_to_the_address_sends_the_domain_as_sni_and_host_and_verifies_against_it(
        site: Site, trusting: ssl.SSLContext) -> None:
    with http.client(site.url, domain=DOMAIN, verify=trusting) as client:
        r = client.post(f"{site.url}/api/v1/tenants", json={"name": "x"})
    assert r.status_code == 201, r.text
    assert site.seen == [Seen("POST", "/api/v1/tenants", f"{DOMAIN}:{site.port}", DOMAIN)]


def test_without_the_domain_the_address_is_sent_and_the_certificate_does_not_verify(
        site: Site, trusting: ssl.SSLContext) -> None:
    # The failure of issue 14, and proof that the test server and the CA check what they should.
    with http.client(site.url, domain=None, verify=trusting) as client, \
            pytest.raises(httpx.ConnectError, match=re.escape("127.0.0.1")):
        client.get(f"{site.url}/health")
    with http.client(site.url, verify=False) as client:
        r = client.post(f"{site.url}/api/v1/tenants", json={})
    assert r.status_code == 400 and r.json()["detail"] == "Invalid host header"
    assert site.asked == {(f"127.0.0.1:{site.port}", None)}  # no SNI: clients never send an address


def test_the_certificate_is_verified_against_the_domain_not_skipped(ca: trustme.CA,
                                                                    trusting: ssl.SSLContext) -> None:
    with serving(ca.issue_cert("other.finaiflow.test")) as other, \
            http.client(other.url, domain=DOMAIN, verify=trusting) as client, \
            pytest.raises(httpx.ConnectError, match=re.escape(DOMAIN)):
        client.get(f"{other.url}/health")
    assert other.seen == []


def test_a_ca_file_verifies_too(site: Site, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with http.client(site.url, domain=DOMAIN, verify=str(ca_file)) as client:
        assert client.get(f"{site.url}/health").json()["sni"] == DOMAIN


def test_a_name_in_the_url_is_asked_for_as_it_is(site: Site) -> None:
    url = f"https://localhost:{site.port}"
    with http.client(url, domain=DOMAIN) as client:
        client.get(f"{url}/health")
    assert site.asked == {(f"localhost:{site.port}", "localhost")}


def test_other_hosts_and_a_deliberate_host_header_are_left_alone(site: Site) -> None:
    with http.client(site.url, domain=DOMAIN) as client:
        client.get(f"https://localhost:{site.port}/elsewhere")
        client.get(f"{site.url}/deliberate", headers={"Host": "evil.example"})
        client.get(f"{site.url}/asked")
    hosts = {s.path: (s.host, s.sni) for s in site.seen}
    assert hosts == {"/elsewhere": (f"localhost:{site.port}", "localhost"),
                     "/deliberate": ("evil.example", DOMAIN),
                     "/asked": (f"{DOMAIN}:{site.port}", DOMAIN)}


def test_plain_http_to_the_address_carries_the_domain_as_host() -> None:
    with serving(None) as plain, http.client(plain.url, domain=DOMAIN) as client:
        assert client.post(f"{plain.url}/api/v1/tenants", json={}).status_code == 201
        assert plain.asked == {(f"{DOMAIN}:{plain.port}", None)}


# -- the library's callers ------------------------------------------------------------------------


def _stack_with_domain(tmp_path: Path) -> Stack:
    envfile.write(tmp_path / ".env", envfile.generate(domain=DOMAIN))
    return Stack(Target.parse("local://"), str(tmp_path))


def _checklist_request(site: Site, stack: Stack) -> httpx.Response:
    with Staging(stack, site.url).client() as client:
        return client.post(f"{site.url}/api/v1/tenants")


CALLERS: dict[str, Callable[[Site, Stack], object]] = {
    "health.probe": lambda s, _st: health.probe(f"{s.url}/api/v1/tenants", domain=DOMAIN),
    "health.wait_http": lambda s, _st: health.wait_http(f"{s.url}/health", timeout=5, domain=DOMAIN),
    "check's health item": lambda s, _st: monitoring._health(s.url, DOMAIN),
    "harden's nginx responses": lambda s, _st: nginx._fetch(s.url, DOMAIN),
    "the gate's /version": lambda s, _st: gate.current_release(s.url, http.servername_for(s.url, DOMAIN)),
    "the drill's /version": lambda s, _st: version(s.url, http.servername_for(s.url, DOMAIN)),
    "the checklist's requests": _checklist_request,
}


@pytest.mark.parametrize("caller", CALLERS)
def test_every_caller_asks_the_address_for_the_domain(site: Site, tmp_path: Path, caller: str) -> None:
    CALLERS[caller](site, _stack_with_domain(tmp_path))
    assert site.seen and site.asked == {(f"{DOMAIN}:{site.port}", DOMAIN)}


def test_the_checklist_asks_for_the_url_s_name_when_it_names_one(tmp_path: Path) -> None:
    stack = _stack_with_domain(tmp_path)
    assert Staging(stack, "https://203.0.113.7").servername == DOMAIN
    assert Staging(stack, "https://www.finaiflow.test:8443").servername == "www.finaiflow.test"


def test_the_tls_check_reads_headers_as_the_domain(site: Site, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with serving(None) as plain:
        report = tls.check_endpoint(f"{site.url}/health", servername=DOMAIN, ca_file=str(ca_file),
                                    http_url=plain.url, timeout=5)
        redirect_host = {s.host for s in plain.seen}
    findings = {f.check: f for f in report.findings}
    assert findings["certificate trusted"].ok, findings["certificate trusted"].detail
    assert findings["HSTS on /health"].ok and findings["HSTS on an error page"].ok
    assert site.asked == {(f"{DOMAIN}:{site.port}", DOMAIN)}  # the HSTS requests
    assert redirect_host == {DOMAIN}


# -- the load (locust, in its own process as the gate runs it) --------------------------------------


def test_the_load_asks_for_the_domain_on_every_request_and_handshake(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.traffic", "--host", site.url, "--servername", DOMAIN,
         "--users", "4", "--max-seconds", "2", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ready", run.stderr[-2000:]
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    failed = [s for s in samples if s["error"]]
    assert samples and not failed, failed[:3]
    # The catalogue (httpx, before and after the load) and every locust user (geventhttpclient).
    methods = {s.method for s in site.seen}
    assert {"POST", "GET", "DELETE"} <= methods
    assert site.asked == {(f"{DOMAIN}:{site.port}", DOMAIN)}
