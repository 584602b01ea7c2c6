"""Validation before install, inspection, domains: pure logic on certificates made here (trustme)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509

from finaiflow_ops.tls import certs
from finaiflow_ops.tls.certs import (
    CertificateRejected,
    configured_domains,
    covers,
    describe,
    inspect_pem,
    load_certificates,
    renewal_due,
    renewal_time,
    validate,
)

DOMAIN = "staging.finaiflow.test"


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(root: trustme.CA) -> trustme.CA:
    return root.create_child_ca()


def anchors(ca: trustme.CA) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(ca.cert_pem.bytes())]


def pair(ca: trustme.CA, *names: str, **kwargs: object) -> tuple[bytes, bytes, list[bytes]]:
    """(fullchain, key, [each certificate]) of a leaf issued by `ca` (trustme adds intermediates)."""
    leaf = ca.issue_cert(*(names or (DOMAIN,)), **kwargs)  # type: ignore[arg-type]
    pems = [p.bytes() for p in leaf.cert_chain_pems]
    return b"".join(pems), leaf.private_key_pem.bytes(), pems


def test_a_complete_chain_for_the_domain_passes(root: trustme.CA, intermediate: trustme.CA) -> None:
    chain, key, _ = pair(intermediate)
    result = validate(chain, key, domains=[DOMAIN], anchors=anchors(root))
    assert result.ok, result.problems
    assert any("chains to the trusted root" in n for n in result.notes)
    assert result.leaf.sans == (DOMAIN,) and len(result.chain) == 1


def test_an_intermediate_whose_root_is_unknown_is_complete_with_a_note(intermediate: trustme.CA) -> None:
    chain, key, _ = pair(intermediate)
    result = validate(chain, key, domains=[DOMAIN], anchors=[])
    assert result.ok, result.problems
    assert any("not in the trust store" in n for n in result.notes)


def test_a_key_that_does_not_match_is_refused(intermediate: trustme.CA) -> None:
    chain, _, _ = pair(intermediate)
    _, other_key, _ = pair(intermediate)
    result = validate(chain, other_key, domains=[DOMAIN], anchors=[])
    assert result.problems == (f"the private key does not match the certificate for {DOMAIN!r}",)


def test_a_certificate_for_another_domain_is_refused(intermediate: trustme.CA) -> None:
    chain, key, _ = pair(intermediate, "other.example.org")
    result = validate(chain, key, domains=[DOMAIN, "other.example.org"], anchors=[])
    assert len(result.problems) == 1
    assert f"does not cover {DOMAIN}" in result.problems[0] and "other.example.org" in result.problems[0]


def test_an_expired_certificate_is_refused(intermediate: trustme.CA) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    chain, key, _ = pair(intermediate, not_before=past - timedelta(days=90), not_after=past)
    result = validate(chain, key, domains=[DOMAIN], anchors=[])
    assert [p for p in result.problems if p.startswith("the certificate expired on")], result.problems


def test_a_certificate_inside_the_renewal_window_is_refused(intermediate: trustme.CA) -> None:
    end = datetime.now(UTC) + timedelta(days=10, hours=1)
    chain, key, _ = pair(intermediate, not_after=end)
    result = validate(chain, key, domains=[DOMAIN], anchors=[], renew_window_days=30)
    assert result.problems == (f"the certificate expires in 10 days ({end:%Y-%m-%d}), "
                               "inside the renewal window of 30 days",)
    assert validate(chain, key, domains=[DOMAIN], anchors=[], renew_window_days=7).ok


def test_the_default_window_is_the_last_third_of_the_lifetime(intermediate: trustme.CA) -> None:
    now = datetime.now(UTC)
    # A 6-day certificate just issued is fine (a fixed 30-day window refused every short-lived one)...
    fresh, key, _ = pair(intermediate, not_before=now - timedelta(hours=1),
                         not_after=now - timedelta(hours=1) + timedelta(days=6))
    assert validate(fresh, key, domains=[DOMAIN], anchors=[]).ok
    assert not validate(fresh, key, domains=[DOMAIN], anchors=[], renew_window_days=30).ok
    # ...one with less than a third of its 6 days left is due, and refused.
    start = now - timedelta(days=4, hours=1)
    due, key, _ = pair(intermediate, not_before=start, not_after=start + timedelta(days=6))
    problems = validate(due, key, domains=[DOMAIN], anchors=[]).problems
    assert len(problems) == 1, problems
    assert "inside its renewal window (the last third of its 6-day lifetime" in problems[0]
    info = describe(load_certificates(due)[0])
    assert renewal_due(info) and renewal_time(info) == info.not_after - timedelta(days=2)
    # 90 days: due at 30 left, as before; 45 days: at 15.
    for days, left in ((90, 30), (45, 15)):
        chain = pair(intermediate, not_before=now, not_after=now + timedelta(days=days))[0]
        info = describe(load_certificates(chain)[0])
        assert renewal_time(info) == info.not_after - timedelta(days=left)
        assert not renewal_due(info, now + timedelta(days=days - left - 1))
        assert renewal_due(info, renewal_time(info))


@pytest.mark.parametrize(("lifetime_days", "margin"), [(90, 14.0), (45, 7.5), (6, 1.0), (365, 14.0)])
def test_the_expiry_margin_is_14_days_or_a_sixth_of_a_shorter_lifetime(lifetime_days: int,
                                                                      margin: float) -> None:
    start = datetime(2027, 2, 1, tzinfo=UTC)
    assert certs.expiry_margin_days(start, start + timedelta(days=lifetime_days)) == margin


def test_a_missing_intermediate_is_refused(root: trustme.CA, intermediate: trustme.CA) -> None:
    _, key, pems = pair(intermediate)
    result = validate(pems[0], key, domains=[DOMAIN], anchors=anchors(root))
    assert len(result.problems) == 1 and result.problems[0].startswith("chain incomplete: the issuer of")


def test_a_chain_out_of_order_is_refused(intermediate: trustme.CA) -> None:
    _, key, pems = pair(intermediate)
    result = validate(pems[1] + pems[0], key, domains=[DOMAIN], anchors=[])
    assert any(p.startswith("chain out of order") for p in result.problems), result.problems


def test_a_leaf_issued_directly_by_a_trusted_root_needs_no_intermediate(root: trustme.CA) -> None:
    chain, key, _ = pair(root)
    assert validate(chain, key, domains=[DOMAIN], anchors=anchors(root)).ok
    assert not validate(chain, key, domains=[DOMAIN], anchors=[]).ok


def test_a_file_without_a_certificate_or_key_is_bad_input(intermediate: trustme.CA) -> None:
    chain, key, _ = pair(intermediate)
    with pytest.raises(CertificateRejected, match="holds no PEM certificate") as caught:
        validate(b"not a certificate", key, domains=[DOMAIN])
    assert caught.value.exit_code == 2
    with pytest.raises(CertificateRejected, match="private key cannot be read: it is not a PEM private key"):
        validate(chain, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", domains=[DOMAIN])


def test_inspect_reads_names_issuer_key_type_and_chain(intermediate: trustme.CA) -> None:
    rsa_chain, _, _ = pair(intermediate, DOMAIN, "127.0.0.1", key_type=trustme.KeyType.RSA)
    report = inspect_pem(rsa_chain, source="fullchain.pem")
    assert report.leaf.sans == (DOMAIN, "127.0.0.1")
    assert report.leaf.key_type == "RSA 2048"
    assert report.leaf.issuer == report.chain[0].subject and report.chain[0].is_ca
    assert report.leaf.days_left > 0 and not report.leaf.expired and not report.leaf.self_signed
    ec_chain, _, _ = pair(intermediate, key_type=trustme.KeyType.ECDSA)
    assert inspect_pem(ec_chain).leaf.key_type.startswith("EC ")


def test_configured_domains_come_from_domain_and_allowed_hosts() -> None:
    env = {"DOMAIN": "App.example.org",
           "ALLOWED_HOSTS": "app.example.org, www.example.org,127.0.0.1,localhost,*"}
    assert configured_domains(env) == ("app.example.org", "www.example.org")
    assert configured_domains({}) == ()


@pytest.mark.parametrize(("san", "domain", "expected"), [
    ("app.example.org", "APP.example.org.", True),
    ("*.example.org", "app.example.org", True),
    ("*.example.org", "a.b.example.org", False),
    ("*.example.org", "example.org", False),
    ("other.org", "app.example.org", False),
])
def test_covers_matches_names_and_single_label_wildcards(san: str, domain: str, expected: bool) -> None:
    assert covers([san], domain) is expected


def test_the_public_roots_are_loaded_once() -> None:
    assert len(certs.trust_anchors()) > 50
    assert certs.trust_anchors() [-1] is certs.trust_anchors()[-1]
