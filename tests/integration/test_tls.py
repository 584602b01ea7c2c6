"""Installing certificates into the running nginx, refusing bad ones, and the live check.

Every test leaves nginx serving the certificate it served before the module started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from finaiflow_ops import tls
from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.install import SSL_DIR

pytestmark = pytest.mark.integration


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finaiflow_ops.cli", "--target", str(stack.target),
         "--project-dir", stack.project_dir, *args],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )


def started_at(stack: Stack) -> str:
    return str(stack.container("nginx").attrs["State"]["StartedAt"])


@pytest.fixture(scope="module")
def local_stack(stack: Stack) -> Stack:
    if not stack.target.is_local:
        pytest.skip("replaces the served certificate with test files from this machine: local stack only")
    return stack


@pytest.fixture(scope="module")
def domain(local_stack: Stack) -> str:
    return tls.configured_domains(local_stack.env)[0]


@pytest.fixture(scope="module", autouse=True)
def served_before(local_stack: Stack, domain: str) -> Iterator[tls.InstalledPair]:
    """The pair nginx serves when the module starts; served again at the end, whatever happened."""
    before = tls.read_installed(local_stack)
    yield before
    if tls.served_fingerprint(local_stack, domain) != before.fingerprint or \
            tls.read_installed(local_stack).key_pem != before.key_pem:
        tls.restore(local_stack, before, servername=domain)


@dataclass(frozen=True)
class DevInstall:
    ca: tls.DevCA
    cert_pem: bytes
    key_pem: bytes
    result: tls.InstallResult
    started_before: str


@pytest.fixture(scope="module")
def dev_installed(local_stack: Stack, domain: str, tmp_path_factory: pytest.TempPathFactory) -> DevInstall:
    ca = tls.ensure_dev_ca(tmp_path_factory.mktemp("dev-ca"))
    cert, key = tls.issue_from_dev_ca([domain], ca=ca)
    before = started_at(local_stack)
    result = tls.install(local_stack, cert, key, ca_files=[ca.cert_path.read_bytes()])
    return DevInstall(ca, cert, key, result, before)


def test_install_serves_the_new_certificate_after_a_graceful_reload(
        local_stack: Stack, domain: str, dev_installed: DevInstall, served_before: tls.InstalledPair) -> None:
    result = dev_installed.result
    assert result.changed and result.previous_fingerprint == served_before.fingerprint
    new = result.certificate.fingerprint
    assert tls.served_fingerprint(local_stack, domain) == new == result.served_fingerprint
    assert tls.read_installed(local_stack).fingerprint == result.certificate.fingerprint
    assert started_at(local_stack) == dev_installed.started_before, "nginx was restarted, not reloaded"
    modes = local_stack.exec("nginx", ["stat", "-c", "%n %a %U", f"{SSL_DIR}/cert.pem", f"{SSL_DIR}/key.pem"])
    assert modes.stdout.split("\n")[:2] == [f"{SSL_DIR}/cert.pem 644 root", f"{SSL_DIR}/key.pem 600 root"]
    previous = local_stack.exec("nginx", ["cat", f"{SSL_DIR}/cert.pem.prev"]).stdout.encode()
    assert tls.InstalledPair(previous, b"").fingerprint == served_before.fingerprint, "no rollback copy kept"


def test_installing_the_same_pair_again_changes_nothing(local_stack: Stack,
                                                        dev_installed: DevInstall) -> None:
    again = tls.install(local_stack, dev_installed.cert_pem, dev_installed.key_pem,
                        ca_files=[dev_installed.ca.cert_path.read_bytes()])
    assert not again.changed and again.served_fingerprint == dev_installed.result.certificate.fingerprint


def test_the_live_check_passes_with_verification_against_the_development_ca(
        local_stack: Stack, dev_installed: DevInstall) -> None:
    done = cli(local_stack, "--json", "tls", "check", "--ca-file", str(dev_installed.ca.cert_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"]
    assert report["certificate"]["fingerprint"] == dev_installed.result.certificate.fingerprint
    checks = {f["check"] for f in report["findings"]}
    assert {"certificate trusted", "served certificate is the installed one", "TLS 1.1 refused",
            "HSTS on an error page", "HTTP redirects to HTTPS"} <= checks
    # Mozilla's intermediate curves exactly (the template's ssl_ecdh_curve), and nothing else.
    assert {"curve X25519 accepted", "curve prime256v1 accepted", "curve secp384r1 accepted",
            "curve secp521r1 refused", "curve X448 refused"} <= checks


def test_the_live_check_fails_when_the_ca_is_not_trusted(local_stack: Stack,
                                                         dev_installed: DevInstall) -> None:
    done = cli(local_stack, "--json", "tls", "check")
    assert done.returncode == 1
    failed = [f["check"] for f in json.loads(done.stdout)["findings"] if not f["ok"]]
    assert failed == ["certificate trusted"]
    last = done.stderr.strip().splitlines()[-1]
    assert "certificate trusted: unable to get local issuer certificate" in last


# -- refused pairs: the served certificate stays --------------------------------------------------------

@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


def _bad_pair(case: str, ca: trustme.CA, domain: str) -> tuple[bytes, bytes]:
    inter = ca.create_child_ca()
    if case == "key that does not match":
        chain = inter.issue_cert(domain).cert_chain_pems
        return b"".join(p.bytes() for p in chain), inter.issue_cert(domain).private_key_pem.bytes()
    if case == "certificate for another domain":
        leaf = inter.issue_cert("other.example.org")
    elif case == "expired certificate":
        past = datetime.now(UTC) - timedelta(days=2)
        leaf = inter.issue_cert(domain, not_before=past - timedelta(days=90), not_after=past)
    else:  # missing intermediate: the leaf alone
        leaf = inter.issue_cert(domain)
        return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()
    return b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


@pytest.mark.parametrize(("case", "reason"), [
    ("key that does not match", "the private key does not match the certificate"),
    ("certificate for another domain", "does not cover"),
    ("expired certificate", "the certificate expired on"),
    ("missing intermediate", "chain incomplete: the issuer of"),
])
def test_a_bad_pair_is_refused_and_the_served_certificate_stays(
        local_stack: Stack, domain: str, test_ca: trustme.CA, tmp_path: Path, case: str, reason: str) -> None:
    cert, key = _bad_pair(case, test_ca, domain)
    (tmp_path / "fullchain.pem").write_bytes(cert)
    (tmp_path / "privkey.pem").write_bytes(key)
    test_ca.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    before = tls.served_fingerprint(local_stack, domain)
    installed = tls.read_installed(local_stack)
    done = cli(local_stack, "--yes", "tls", "install", "--cert", str(tmp_path / "fullchain.pem"),
               "--key", str(tmp_path / "privkey.pem"), "--ca-file", str(tmp_path / "root.pem"))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert last.startswith("error: refusing to install the certificate") and reason in last, last
    assert last.endswith("nothing was changed; the served certificate stays")
    assert key.decode() not in done.stderr + done.stdout
    assert tls.served_fingerprint(local_stack, domain) == before
    assert tls.read_installed(local_stack) == installed


def _weak_rsa_pair(ca: trustme.CA, domain: str) -> tuple[bytes, bytes]:
    """A pair that passes our validation but that OpenSSL 3 refuses to load (1024-bit RSA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_a_pair_nginx_cannot_load_is_rolled_back(local_stack: Stack, domain: str, test_ca: trustme.CA,
                                                 base_url: str) -> None:
    cert, key = _weak_rsa_pair(test_ca, domain)
    before, started = tls.served_fingerprint(local_stack, domain), started_at(local_stack)
    with pytest.raises(CheckFailed, match=r"install rolled back: nginx -t rejects the new certificate: "
                                          r".*ee key too small") as caught:
        tls.install(local_stack, cert, key, ca_files=[test_ca.cert_pem.bytes()])
    assert caught.value.exit_code == 1
    # Where it failed, as fields: nginx's container, and nginx -t's own output.
    assert caught.value.service == "nginx" and caught.value.container
    assert "key too small" in caught.value.log_tail
    assert tls.served_fingerprint(local_stack, domain) == before
    assert tls.read_installed(local_stack).fingerprint == before
    assert started_at(local_stack) == started
    assert httpx.get(f"{base_url}/health", verify=False, timeout=10).status_code == 200


# -- servers of our own: one still offering TLS 1.0/1.1, one with nginx's default curves -------------

LEGACY_CONF = """
events {}
http {
    server {
        listen 443 ssl;
        ssl_certificate /own/cert.pem;
        ssl_certificate_key /own/key.pem;
        # What an old configuration still says; OpenSSL 3 needs security level 0 to honour it.
        ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
        ssl_ciphers DEFAULT:@SECLEVEL=0;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;  # the profile's: only the protocols are wrong here
        add_header Strict-Transport-Security "max-age=63072000" always;
        location / { return 404; }
    }
    server {
        listen 80;
        return 301 https://$host$request_uri;
    }
}
"""
# Everything as the profile wants but the curves: without ssl_ecdh_curve, nginx ("auto") takes
# OpenSSL's default groups, which add X448 and secp521r1.
DEFAULT_CURVES_CONF = LEGACY_CONF.replace("TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", "TLSv1.2 TLSv1.3").replace(
    "DEFAULT:@SECLEVEL=0", "ECDHE+AESGCM").replace(
    "ssl_ecdh_curve X25519:prime256v1:secp384r1;  # the profile's: only the protocols are wrong here", "")


@contextmanager
def own_nginx(local_stack: Stack, tmp_path: Path, test_ca: trustme.CA, conf: str,
              name: str) -> Iterator[tuple[str, str]]:
    """An nginx of our own on 127.0.0.1 with `conf`, serving NAME: (https URL, http URL)."""
    leaf = test_ca.issue_cert(name)
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    (tmp_path / "nginx.conf").write_text(conf)
    tmp_path.chmod(0o755)
    engine = local_stack.target.docker()
    container = engine.containers.run(
        local_stack.images()["nginx"], ["nginx", "-c", "/own/nginx.conf", "-g", "daemon off;"],
        entrypoint=[], name=f"finaiflow-tls-test-own-{uuid.uuid4().hex[:8]}", detach=True,
        ports={"443/tcp": ("127.0.0.1", None), "80/tcp": ("127.0.0.1", None)},
        volumes={str(tmp_path): {"bind": "/own", "mode": "ro"}},
    )
    try:
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        https, http = ports["443/tcp"][0]["HostPort"], ports["80/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(https)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"our own nginx did not listen within 15 s: {container.logs()[-500:]!r}")
                time.sleep(0.2)
        yield f"https://127.0.0.1:{https}", f"http://127.0.0.1:{http}"
    finally:
        container.remove(force=True)


@pytest.fixture
def legacy_server(local_stack: Stack, tmp_path: Path, test_ca: trustme.CA) -> Iterator[tuple[str, str]]:
    """An nginx of our own, on 127.0.0.1, that still accepts TLS 1.0 and 1.1: (https URL, http URL)."""
    with own_nginx(local_stack, tmp_path, test_ca, LEGACY_CONF, "legacy.finaiflow.test") as urls:
        yield urls


def test_the_live_check_reports_a_server_that_still_offers_tls_1_1(
        local_stack: Stack, legacy_server: tuple[str, str], test_ca: trustme.CA, tmp_path: Path) -> None:
    https, http = legacy_server
    test_ca.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    done = cli(local_stack, "--json", "tls", "check", https, "--servername", "legacy.finaiflow.test",
               "--ca-file", str(tmp_path / "root.pem"), "--http-url", http)
    assert done.returncode == 1, done.stderr
    findings = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    failed = sorted(name for name, f in findings.items() if not f["ok"])
    assert failed == ["TLS 1.0 refused", "TLS 1.1 refused"], findings
    assert findings["TLS 1.1 refused"]["detail"].startswith("handshake completed (TLSv1.1")
    assert "fails 2 TLS check(s): TLS 1.0 refused: handshake completed" in done.stderr


def test_the_live_check_fails_a_curve_outside_mozillas_intermediate_profile(
        local_stack: Stack, test_ca: trustme.CA, tmp_path: Path) -> None:
    test_ca.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    name = "curves.finaiflow.test"
    with own_nginx(local_stack, tmp_path, test_ca, DEFAULT_CURVES_CONF, name) as (https, http):
        done = cli(local_stack, "--json", "tls", "check", https, "--servername", name,
                   "--ca-file", str(tmp_path / "root.pem"), "--http-url", http)
    assert done.returncode == 1, done.stderr
    findings = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    failed = sorted(name for name, f in findings.items() if not f["ok"])
    assert failed == ["curve X448 refused", "curve secp521r1 refused"], findings
    assert findings["curve X448 refused"]["detail"].startswith("handshake completed (TLSv1.3")
    for curve in ("X25519", "prime256v1", "secp384r1"):
        assert findings[f"curve {curve} accepted"]["ok"], findings

