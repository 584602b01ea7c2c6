"""The live check of an HTTPS endpoint: protocols, curves, certificate, HSTS, redirect.

Each check is a Finding (name, ok, detail); the report fails when any finding does. Protocol
probes pin one TLS version per handshake. OpenSSL 3 refuses to even offer TLS 1.0/1.1 at its
default security level, so those probes lower the client's level (`@SECLEVEL=0`): a server that
still accepts them is then seen accepting them, instead of the client failing on its own.

Curves (key exchange groups) are probed the same way: one TLS 1.3 handshake per curve with a client
offering only that curve. TLS 1.3 because there the list is about key exchange alone (in TLS 1.2
it also limits the curves of an ECDSA certificate the client accepts, so a P-256 certificate would
fail every other probe), and nginx's `ssl_ecdh_curve` is one list for both versions. Mozilla's
intermediate profile allows X25519,
prime256v1 and secp384r1; OpenSSL's defaults, which a server without `ssl_ecdh_curve` keeps, add
X448 and secp521r1.
"""

from __future__ import annotations

import re
import socket
import ssl
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509

from finaiflow_ops import http
from finaiflow_ops.errors import UsageError
from finaiflow_ops.tls.certs import CertificateInfo, covers, describe, expiry_margin_days

__all__ = [
    "MIN_HSTS_SECONDS",
    "OTHER_CURVES",
    "PROFILE_CURVES",
    "EndpointReport",
    "Finding",
    "check_endpoint",
    "probe_curve",
    "probe_protocol",
    "served_certificate",
]

MIN_HSTS_SECONDS = 365 * 24 * 3600  # one year: what browsers' preload lists ask for
_MISSING_PATH = "/.finaiflow-tls-check/not-found"  # an error page (404) must carry HSTS too
_PROTOCOLS = (
    ("TLS 1.0", ssl.TLSVersion.TLSv1, False),
    ("TLS 1.1", ssl.TLSVersion.TLSv1_1, False),
    ("TLS 1.2", ssl.TLSVersion.TLSv1_2, True),
    ("TLS 1.3", ssl.TLSVersion.TLSv1_3, True),
)

PROFILE_CURVES = ("X25519", "prime256v1", "secp384r1")  # Mozilla's intermediate profile
OTHER_CURVES = ("secp521r1", "X448")  # OpenSSL offers them too unless the server names its curves


@dataclass(frozen=True)
class Finding:
    """One check of the endpoint and what was seen."""

    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class EndpointReport:
    """What `tls check` reports: the served certificate and every finding."""

    url: str
    servername: str
    certificate: CertificateInfo | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(f"{f.check}: {f.detail}" for f in self.findings if not f.ok)


def _client_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():  # pinning TLS 1.0/1.1 is deprecated: here it is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def served_certificate(host: str, port: int, *, servername: str, timeout: float = 10.0) -> x509.Certificate:
    """The leaf certificate a server presents for `servername` (not verified: this is for reading)."""
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            _client_context().wrap_socket(raw, server_hostname=servername) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise UsageError(f"{host}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der)


def probe_protocol(host: str, port: int, version: ssl.TLSVersion, *, servername: str,
                   timeout: float = 10.0) -> tuple[bool | None, str]:
    """Whether the server completes a handshake pinned to `version`: (accepted, detail).

    None when this client cannot offer that version at all (nothing was learnt about the server).
    """
    return _handshake(host, port, _client_context(version), servername, timeout)


def _handshake(host: str, port: int, ctx: ssl.SSLContext, servername: str,
               timeout: float) -> tuple[bool | None, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=servername) as tls:
            return True, f"handshake completed ({tls.version()}, {(tls.cipher() or ('?',))[0]})"
    except ssl.SSLError as exc:
        if exc.reason == "NO_PROTOCOLS_AVAILABLE" or "no protocols available" in str(exc):
            return None, "this client's OpenSSL cannot offer it"
        return False, f"refused ({exc.reason or exc})"
    except (ConnectionResetError, ssl.SSLEOFError, TimeoutError) as exc:
        return False, f"refused (connection closed: {type(exc).__name__})"


def probe_curve(host: str, port: int, curve: str, *, servername: str,
                timeout: float = 10.0) -> tuple[bool | None, str]:
    """Whether the server completes a TLS 1.3 handshake where the client offers only `curve`.

    None when this client cannot offer that curve (nothing was learnt about the server)."""
    ctx = _client_context(ssl.TLSVersion.TLSv1_3)
    try:
        ctx.set_ecdh_curve(curve)
    except ValueError:
        return None, f"this client's OpenSSL does not know {curve}"
    return _handshake(host, port, ctx, servername, timeout)


def check_endpoint(
    url: str,
    *,
    servername: str | None = None,
    ca_file: str | None = None,
    verify: bool = True,
    installed_fingerprint: str | None = None,
    http_url: str | None = None,
    min_days: float | None = None,
    min_hsts: int = MIN_HSTS_SECONDS,
    timeout: float = 10.0,
) -> EndpointReport:
    """Check a live HTTPS endpoint; `servername` when `url` names an address (like curl --resolve).

    `ca_file` verifies against that CA (a development CA) instead of the system's roots;
    `http_url` is the plain-HTTP address to expect a redirect from (default: port 80 of the host);
    `min_days` the days the certificate must still have left (default: its expiry margin, 14 days
    or a sixth of a shorter-lived certificate's lifetime: certs.EXPIRY_MARGIN_DAYS).
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"not an https URL: {url!r}", hint="give https://host[:port]")
    host, port = parts.hostname, parts.port or 443
    name = servername or host
    try:
        leaf = served_certificate(host, port, servername=name, timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        return EndpointReport(url, name, None, (Finding("reachable", False, f"{host}:{port}: {exc}"),))
    info = describe(leaf)
    findings = [_protocol_finding(host, port, label, version, wanted, name, timeout)
                for label, version, wanted in _PROTOCOLS]
    findings += [_curve_finding(host, port, curve, curve in PROFILE_CURVES, name, timeout)
                 for curve in (*PROFILE_CURVES, *OTHER_CURVES)]
    if verify:
        findings.append(_trust_finding(host, port, name, ca_file, timeout))
    findings.append(Finding(f"certificate covers {name}", covers(info.sans, name),
                            f"names: {', '.join(info.sans) or 'none'}"))
    margin = min_days if min_days is not None else expiry_margin_days(info.not_before, info.not_after)
    left = (info.not_after - datetime.now(UTC)).total_seconds() / 86400
    findings.append(Finding(f"certificate valid for more than {margin:.3g} days", left > margin,
                            f"{left:.1f} days left (until {info.not_after:%Y-%m-%d %H:%M} UTC)"))
    if installed_fingerprint:
        same = installed_fingerprint.lower() == info.fingerprint
        findings.append(Finding("served certificate is the installed one", same,
                                f"served {info.fingerprint[:16]}…, installed {installed_fingerprint[:16]}…"))
    findings += _http_findings(url, name, http_url or f"http://{host}/", min_hsts, timeout)
    return EndpointReport(url, name, info, tuple(findings))


def _protocol_finding(host: str, port: int, label: str, version: ssl.TLSVersion, wanted: bool,
                      servername: str, timeout: float) -> Finding:
    accepted, detail = probe_protocol(host, port, version, servername=servername, timeout=timeout)
    check = f"{label} {'accepted' if wanted else 'refused'}"
    if accepted is None:  # unknown is not a pass: test from a client that can offer it
        return Finding(check, False, f"could not be tested: {detail}")
    return Finding(check, accepted == wanted, detail)


def _curve_finding(host: str, port: int, curve: str, wanted: bool, servername: str,
                   timeout: float) -> Finding:
    check = f"curve {curve} {'accepted' if wanted else 'refused'}"
    accepted, detail = probe_curve(host, port, curve, servername=servername, timeout=timeout)
    if accepted is None:
        return Finding(check, False, f"could not be tested: {detail}")
    return Finding(check, accepted == wanted, detail)


def _trust_finding(host: str, port: int, servername: str, ca_file: str | None, timeout: float) -> Finding:
    ctx = ssl.create_default_context(cafile=ca_file)
    anchor = f"the CA in {ca_file}" if ca_file else "the system's trusted roots"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=servername):
            return Finding("certificate trusted", True, f"verified against {anchor}")
    except ssl.SSLCertVerificationError as exc:
        return Finding("certificate trusted", False, f"{exc.verify_message} (against {anchor})")
    except (OSError, ssl.SSLError) as exc:
        return Finding("certificate trusted", False, f"handshake failed: {exc}")


def _http_findings(url: str, servername: str, http_url: str, min_hsts: int, timeout: float) -> list[Finding]:
    import httpx  # here: the CLI starts without it

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    found = []
    # The certificate was verified above; these requests read headers, asking for the same name
    # (Host and SNI) on the URL's host (finaiflow_ops.http).
    with http.client(url, servername=servername, verify=False, timeout=timeout) as client:
        page = parts.path or "/"
        for label, path in ((f"HSTS on {page}", page), ("HSTS on an error page", _MISSING_PATH)):
            try:
                r = client.get(base + path)
            except httpx.HTTPError as exc:
                found.append(Finding(label, False, f"request failed: {exc}"))
                continue
            found.append(_hsts_finding(label, r.status_code, r.headers.get("strict-transport-security"),
                                       min_hsts))
        try:
            # Explicit: the plain-HTTP URL may be published on another address than the HTTPS one.
            r = client.get(http_url.rstrip("/") + "/", headers={"Host": servername})
            location = r.headers.get("location", "")
            ok = r.status_code in (301, 302, 307, 308) and location.startswith("https://")
            seen = f"{http_url} answered {r.status_code}" + (f" -> {location}" if location else "")
            found.append(Finding("HTTP redirects to HTTPS", ok, seen))
        except httpx.HTTPError as exc:
            found.append(Finding("HTTP redirects to HTTPS", False, f"{http_url}: {exc}"))
    return found


def _hsts_finding(label: str, status: int, header: str | None, min_hsts: int) -> Finding:
    if not header:
        return Finding(label, False, f"HTTP {status} without Strict-Transport-Security")
    match = re.search(r"max-age\s*=\s*\"?(\d+)", header, re.IGNORECASE)
    max_age = int(match.group(1)) if match else 0
    return Finding(label, max_age >= min_hsts,
                   f"HTTP {status}, max-age={max_age} (at least {min_hsts} wanted)")
