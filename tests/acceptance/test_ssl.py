"""Checklist: SSL certificates installed (features/ssl.feature).

The CA clients trust: FINAIFLOW_TLS_CA_FILE when set (a staging with a private CA), the
development CA when staging serves a certificate from it, the system's roots otherwise.
A local reference stack gets its staging certificate from the development CA when it is brought
up (`finaiflow-ops tls dev-cert`, in the nox session and the test fixture); a stack still serving
the nginx entrypoint's self-signed placeholder fails this item, as it should.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from pytest_bdd import given, parsers, scenarios, then, when

from finaiflow_ops import tls
from finaiflow_ops.tls.certs import expiry_margin_days
from tests.acceptance.conftest import Staging

scenarios("ssl.feature")

CA_FILE_ENV = "FINAIFLOW_TLS_CA_FILE"


def _served(staging: Staging) -> x509.Certificate:
    url = urlsplit(staging.base_url)
    return tls.served_certificate(url.hostname or "", url.port or 443, servername=staging.servername)


@given("the certificate authority its clients trust", target_fixture="trusted_ca")
def trusted_ca(staging: Staging) -> str | None:
    if os.environ.get(CA_FILE_ENV):
        return os.environ[CA_FILE_ENV]
    served = _served(staging)
    dev_ca = tls.dev_ca_dir() / "ca.pem"
    if dev_ca.exists() and x509.load_pem_x509_certificate(dev_ca.read_bytes()).subject == served.issuer:
        return str(dev_ca)
    return None


@when("the HTTPS endpoint of staging is checked", target_fixture="tls_report")
def check_endpoint(staging: Staging, trusted_ca: str | None) -> tls.EndpointReport:
    return tls.check_endpoint(
        f"{staging.base_url}/health",
        servername=staging.servername,
        ca_file=trusted_ca,
        installed_fingerprint=tls.read_installed(staging.stack).fingerprint,
        http_url=tls.published_url(staging.stack, "http"),
    )


def _assert_ok(staging: Staging, report: tls.EndpointReport, *checks: str) -> None:
    findings = {f.check: f for f in report.findings}
    missing = [c for c in checks if c not in findings]
    failed = [f"{c}: {findings[c].detail}" for c in checks if c in findings and not findings[c].ok]
    assert not missing and not failed, (
        f"{staging.name} ({report.url}, {report.servername}): " + "; ".join(failed + [f"{c}: not checked"
                                                                                      for c in missing])
    )


@then(parsers.parse("TLS {old} and TLS {older} are refused"))
def refused(staging: Staging, tls_report: tls.EndpointReport, old: str, older: str) -> None:
    _assert_ok(staging, tls_report, f"TLS {old} refused", f"TLS {older} refused")


@then(parsers.parse("TLS {new} and TLS {newer} are accepted"))
def accepted(staging: Staging, tls_report: tls.EndpointReport, new: str, newer: str) -> None:
    _assert_ok(staging, tls_report, f"TLS {new} accepted", f"TLS {newer} accepted")


@then("the certificate is trusted and covers the domain")
def trusted(staging: Staging, tls_report: tls.EndpointReport) -> None:
    _assert_ok(staging, tls_report, "certificate trusted", f"certificate covers {tls_report.servername}")


@then("it is valid for longer than its expiry margin (14 days, or a sixth of a shorter lifetime)")
def valid_for(staging: Staging, tls_report: tls.EndpointReport) -> None:
    cert = tls_report.certificate
    assert cert is not None, f"{staging.name}: no certificate was served"
    margin = expiry_margin_days(cert.not_before, cert.not_after)
    left = (cert.not_after - datetime.now(UTC)).total_seconds() / 86400
    assert left > margin, (f"{staging.name}: the served certificate has {left:.1f} days left "
                           f"(until {cert.not_after:%Y-%m-%d}), more than {margin:g} wanted")


@then("the served certificate is the one installed in nginx")
def served_is_installed(staging: Staging, tls_report: tls.EndpointReport) -> None:
    _assert_ok(staging, tls_report, "served certificate is the installed one")


@then("HSTS with a max-age of at least one year is sent on a page and on an error page")
def hsts(staging: Staging, tls_report: tls.EndpointReport) -> None:
    _assert_ok(staging, tls_report, "HSTS on /health", "HSTS on an error page")


@then("plain HTTP is redirected to HTTPS")
def redirected(staging: Staging, tls_report: tls.EndpointReport) -> None:
    _assert_ok(staging, tls_report, "HTTP redirects to HTTPS")
