"""Real certificates from a real ACME server (pebble) through the stack's nginx, under load.

pebble (Let's Encrypt's test server, Debian package) validates HTTP-01 challenges on the port
nginx publishes for plain HTTP; pebble-challtestsrv is its DNS and answers 127.0.0.1 for every
name, so the staging domain resolves to this machine. certbot runs with the webroot method, the
way it does in production: nothing is stopped, and the load running meanwhile must see no error.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx
import pytest
import trustme

from finaiflow_ops import tls
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.schedule import CRON_MARKER
from tests.integration.test_tls import cli, domain, local_stack, started_at
from tests.packages_support import ensure_package

__all__ = ["domain", "local_stack"]  # fixtures shared with test_tls (module-scoped: one per module)

pytestmark = pytest.mark.integration
EMAIL = "ops@finaiflow.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pebble:
    directory: str  # the ACME directory URL
    listener_ca: Path  # what certbot trusts for pebble's own HTTPS (REQUESTS_CA_BUNDLE)
    root: Path  # the root pebble issues under (install's chain check trusts it)


# Short-lived certificates, as Let's Encrypt is moving to (64 days in 2027, 45 in 2028, 6-day ones
# already offered): pebble issues for 6 days. A fixed 30-day window would refuse to install them
# and renew them on every run; the last third of the lifetime (2 days) does neither.
VALIDITY = timedelta(days=6)


@contextmanager
def running_pebble(work: Path, http_port: int) -> Iterator[Pebble]:
    """pebble and its DNS on free loopback ports, validating HTTP-01 on `http_port`, issuing 6-day
    certificates; stopped after."""
    ensure_package("pebble", "pebble")
    listener = trustme.CA()
    server = listener.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(work / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    listener.cert_pem.write_to_path(str(work / "listener-ca.pem"))
    acme, management, dns, dns_management = (free_port() for _ in range(4))
    (work / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(work / "cert.pem"), "privateKey": str(work / "key.pem"),
        "httpPort": http_port, "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
        "certificateValidityPeriod": int(VALIDITY.total_seconds()),
    }}))
    logs = [(work / "challtestsrv.log").open("wb"), (work / "pebble.log").open("wb")]
    procs = [subprocess.Popen(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}"],
        stdout=logs[0], stderr=subprocess.STDOUT)]
    # No random validation sleeps, no rejected nonces, and no authorisation reuse: every order,
    # renewals included, is validated on http_port.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    procs.append(subprocess.Popen(
        ["pebble", "-config", str(work / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
        stdout=logs[1], stderr=subprocess.STDOUT, env=env))
    try:
        directory = f"https://127.0.0.1:{acme}/dir"
        trust = ssl.create_default_context(cafile=str(work / "listener-ca.pem"))
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(directory, verify=trust, timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    pytest.fail(f"pebble did not start: {(work / 'pebble.log').read_text()[-800:]}")
                time.sleep(0.2)
        root = httpx.get(f"https://127.0.0.1:{management}/roots/0", verify=trust)
        (work / "root.pem").write_bytes(root.content)
        yield Pebble(directory, work / "listener-ca.pem", work / "root.pem")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def options_for(pebble: Pebble, acme_dir: Path) -> tls.AcmeOptions:
    return tls.AcmeOptions(server=pebble.directory, acme_dir=str(acme_dir), ca_bundle=str(pebble.listener_ca),
                           ca_files=(str(pebble.root),))


@pytest.fixture(scope="module")
def pebble(local_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """pebble validating on the port nginx publishes for plain HTTP (80 in CI)."""
    http = tls.published_url(local_stack, "http")
    assert http, "nginx publishes no plain HTTP port"
    with running_pebble(tmp_path_factory.mktemp("pebble"), urlsplit(http).port or 80) as server:
        yield server


@pytest.fixture(scope="module")
def acme(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> tls.AcmeOptions:
    return options_for(pebble, tmp_path_factory.mktemp("letsencrypt"))


# What the load asks for: an answer of the api through nginx that does not depend on the database
# and Redis answering within /health's deadlines (a 503 from a starved Redis ping under the suite's
# CPU load is not what a certificate swap is tested for).
LOAD_PATH = "/version"


@dataclass
class Load:
    """Client threads requesting `url` until stopped; bounded by `max_seconds` whatever happens.

    Most threads open a new TLS connection per request, so every request is a handshake with
    whatever certificate nginx serves at that instant. One thread keeps its connection alive,
    like a browser: an HTTP/1.1 server may close an idle keep-alive connection at any time (nginx
    does when a reload retires a worker), and clients then retry an idempotent request once on a
    new connection (RFC 9112, 9.3.1). Those retries are counted apart; a retry that fails too, or
    any other error, is a failure.
    """

    url: str
    threads: int = 3
    max_seconds: float = 90.0
    ok: int = 0
    retried: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.ok + sum(self.failures.values())

    def _get(self, client: httpx.Client, keepalive: bool) -> str:
        try:
            try:
                response = client.get(self.url)
            except httpx.RemoteProtocolError:
                if not keepalive:
                    raise
                with self._lock:
                    self.retried += 1
                response = client.get(self.url)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "" if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:120]}"

    def _run(self, deadline: float, keepalive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keepalive else 0)
        with httpx.Client(verify=False, timeout=10, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                failure = self._get(client, keepalive)
                with self._lock:
                    if failure:
                        self.failures[failure] += 1
                    else:
                        self.ok += 1

    def __enter__(self) -> Load:
        self._start = time.monotonic()
        deadline = self._start + self.max_seconds
        self._workers = [threading.Thread(target=self._run, args=(deadline, i == 0), daemon=True)
                         for i in range(self.threads)]
        for w in self._workers:
            w.start()
        time.sleep(2)  # traffic is flowing before the operation starts
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        time.sleep(2)  # and keeps flowing after it (old nginx workers finishing)
        self._stop.set()
        for w in self._workers:
            w.join(timeout=15)
        self.seconds = round(time.monotonic() - self._start, 1)


@dataclass(frozen=True)
class Issued:
    result: tls.IssueResult
    load: Load
    started_before: str


@pytest.fixture(scope="module")
def issued(local_stack: Stack, domain: str, acme: tls.AcmeOptions, base_url: str) -> Iterator[Issued]:
    """A certificate issued by pebble through nginx under load; the previous pair is served again after."""
    before = tls.read_installed(local_stack)
    started = started_at(local_stack)
    try:
        with Load(f"{base_url}{LOAD_PATH}") as load:
            result = tls.issue(local_stack, email=EMAIL, options=acme)
        print(f"\nissued in {result.seconds} s; load: {load.requests} requests in {load.seconds} s, "
              f"failures {dict(load.failures)}, keep-alive retries {load.retried}")
        yield Issued(result, load, started)
    finally:
        tls.restore(local_stack, before, servername=domain)


def test_issue_through_the_nginx_webroot_makes_nginx_serve_the_certificate(
        local_stack: Stack, domain: str, issued: Issued) -> None:
    result = issued.result
    assert result.method == "webroot" and result.domains == (domain,)
    assert result.certificate.issuer.startswith("CN=Pebble Intermediate CA")
    assert domain in result.certificate.sans
    lifetime = result.certificate.not_after - result.certificate.not_before  # x509: the last second counts
    assert VALIDITY - timedelta(seconds=1) <= lifetime <= VALIDITY, lifetime
    assert result.installed, "nginx does not serve the issued certificate"
    assert tls.served_fingerprint(local_stack, domain) == result.certificate.fingerprint
    assert started_at(local_stack) == issued.started_before, "nginx was restarted"


def test_issue_drops_no_request(issued: Issued) -> None:
    load = issued.load
    assert load.requests > 100, f"too little load to prove anything: {load.requests} requests"
    failed = sum(load.failures.values())
    assert not load.failures, f"{failed} of {load.requests} requests failed: {load.failures}"


def test_the_short_lived_certificate_is_checked_against_a_sixth_of_its_lifetime(
        local_stack: Stack, issued: Issued) -> None:
    """6 days of validity: 14 days left cannot be asked of it (every check would fail from its
    first minute); its margin is a day, half its renewal window."""
    def days_finding(min_days: float | None) -> tls.Finding:
        report = tls.check_stack_endpoint(local_stack, verify=False, min_days=min_days)
        return next(f for f in report.findings if f.check.startswith("certificate valid for more than"))

    own = days_finding(None)  # pebble's lifetime is 6 days less a second: the margin shows as 1
    assert own.check == "certificate valid for more than 1 days" and own.ok, own
    fixed = days_finding(14)
    assert fixed.check == "certificate valid for more than 14 days" and not fixed.ok, fixed


def test_forced_renewal_under_load_swaps_the_certificate_without_restart(
        local_stack: Stack, domain: str, acme: tls.AcmeOptions, issued: Issued, base_url: str) -> None:
    before = tls.served_fingerprint(local_stack, domain)
    assert before == issued.result.certificate.fingerprint
    with Load(f"{base_url}{LOAD_PATH}") as load:
        result = tls.renew(local_stack, options=acme, force=True)
    print(f"\nrenewed in {result.seconds} s; load: {load.requests} requests in {load.seconds} s, "
          f"failures {dict(load.failures)}, keep-alive retries {load.retried}")
    assert result.renewed and result.fingerprint_before == before
    new = result.fingerprint_after
    assert tls.served_fingerprint(local_stack, domain) == new == result.served_fingerprint
    assert result.fingerprint_after != before
    assert started_at(local_stack) == issued.started_before, "nginx was restarted"
    assert load.requests > 100 and not load.failures, f"{load.failures} of {load.requests}"


def test_renewal_that_is_not_due_changes_nothing(local_stack: Stack, domain: str, acme: tls.AcmeOptions,
                                                 issued: Issued) -> None:
    # 6 days left of 6: not due before 2 are left (a fixed 30-day window would renew it right now).
    served = tls.served_fingerprint(local_stack, domain)
    leaf = tls.inspect_pem(Path(issued.result.lineage, "fullchain.pem").read_bytes()).leaf
    assert not tls.renewal_due(leaf)
    assert abs(tls.renewal_time(leaf) - (leaf.not_after - VALIDITY / 3)) < timedelta(seconds=1)
    done = cli(local_stack, "--yes", "--json", "tls", "renew", *acme.cli_args())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["renewed"] and result["served_fingerprint"] == served


def test_renew_dry_run_asks_the_server_and_changes_nothing(local_stack: Stack, domain: str,
                                                           acme: tls.AcmeOptions, issued: Issued) -> None:
    served = tls.served_fingerprint(local_stack, domain)
    lineage = Path(issued.result.lineage, "fullchain.pem").read_bytes()
    done = cli(local_stack, "--json", "tls", "renew", "--dry-run", *acme.cli_args())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dry_run"] is True
    assert Path(issued.result.lineage, "fullchain.pem").read_bytes() == lineage
    assert tls.served_fingerprint(local_stack, domain) == served


def test_the_deploy_hook_is_saved_for_any_renewal_runner(local_stack: Stack, acme: tls.AcmeOptions,
                                                         domain: str, issued: Issued) -> None:
    conf = Path(acme.state_dir(local_stack), "config", "renewal", f"{domain}.conf").read_text()
    hook = next(ln for ln in conf.splitlines() if ln.startswith("renew_hook") or ln.startswith("deploy_hook"))
    assert "tls install" in hook and '--lineage "$RENEWED_LINEAGE"' in hook
    assert "authenticator = webroot" in conf


def test_the_renewal_is_scheduled_once_in_cron_and_the_entry_runs(
        local_stack: Stack, acme: tls.AcmeOptions, issued: Issued) -> None:
    ensure_package("crontab", "cron")
    saved = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    try:
        first = cli(local_stack, "--yes", "--json", "tls", "schedule", "--kind", "cron", *acme.cli_args())
        second = cli(local_stack, "--yes", "--json", "tls", "schedule", "--kind", "cron", *acme.cli_args())
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        assert json.loads(first.stdout)["changed"] and not json.loads(second.stdout)["changed"]
        entry = json.loads(second.stdout)["entry"]
        crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
        assert crontab.count(CRON_MARKER + local_stack.project_dir) == 1 and crontab.count(entry) == 1
        # What cron would run, with cron's bare environment: the renewal (not due) succeeds.
        command = entry.split(" ", 5)[5].rsplit(" >>", 1)[0]
        ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300, check=False,
                             env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")})
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert "not due" in ran.stdout
        removed = cli(local_stack, "--yes", "--json", "tls", "schedule", "--kind", "cron", "--remove")
        assert removed.returncode == 0 and json.loads(removed.stdout)["changed"], removed.stderr
        after = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False).stdout
        assert CRON_MARKER + local_stack.project_dir not in after
    finally:
        if saved.returncode == 0:
            subprocess.run(["crontab", "-"], input=saved.stdout, text=True, check=True)
        else:
            subprocess.run(["crontab", "-r"], capture_output=True, check=False)


def test_standalone_issues_with_certbot_answering_the_challenge_itself(
        local_stack: Stack, domain: str, tmp_path: Path) -> None:
    """For a first certificate before nginx runs: certbot listens itself (here on a free port,
    the one this pebble validates on), then the certificate is installed into nginx."""
    port = free_port()
    before = tls.read_installed(local_stack)
    (tmp_path / "pebble").mkdir()
    try:
        with running_pebble(tmp_path / "pebble", port) as server:
            result = tls.issue(local_stack, email=EMAIL, options=options_for(server, tmp_path / "le"),
                               standalone=True, http_port=port)
        assert result.method == "standalone" and result.installed
        assert tls.served_fingerprint(local_stack, domain) == result.certificate.fingerprint
    finally:
        tls.restore(local_stack, before, servername=domain)
