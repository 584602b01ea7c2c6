"""Certificates as data: read PEM, describe a certificate, and validate a pair before install.

Pure logic (no host, no network): what `tls inspect` prints and what `tls install` checks
before it touches the live files. A pair is refused when the key does not match, a configured
domain is not covered, the chain is out of order or incomplete, or the certificate is expired
or inside the renewal window.
"""

from __future__ import annotations

import ipaddress
import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from finaiflow_ops.errors import CertificateRejected

__all__ = [
    "DEFAULT_RENEW_WINDOW_DAYS",
    "EXPIRY_MARGIN_DAYS",
    "RENEW_FRACTION",
    "CertificateInfo",
    "CertificateRejected",
    "ChainReport",
    "Validation",
    "configured_domains",
    "covers",
    "describe",
    "expiry_margin_days",
    "fingerprint",
    "inspect_pem",
    "load_certificates",
    "load_private_key",
    "renewal_due",
    "renewal_time",
    "trust_anchors",
    "validate",
]

# A certificate is renewed when a third of its lifetime is left (certbot 4 and later when the CA
# gives no ACME Renewal Info window; Let's Encrypt's advice): 30 days of a 90-day certificate,
# 15 of the 45-day ones of 2028, 2 of a 6-day one. A pair already inside that window would be
# renewed again at once, so it is not worth installing. None: that rule; a number of days: a fixed
# window instead (`--window DAYS`).
RENEW_FRACTION = 3
DEFAULT_RENEW_WINDOW_DAYS: int | None = None
# A served certificate is "expiring" (`check` and `tls check` fail, CertificateExpiresSoon warns)
# with less than its margin left: 14 days, or for a short-lived one a sixth of its lifetime (half its
# renewal window: renewal has failed for that long). 14 days of a 90-day certificate, 7.5 of a
# 45-day one, 1 of a 6-day one; a fixed 14 days would fail every certificate shorter than 15 days.
EXPIRY_MARGIN_DAYS = 14.0

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


@dataclass(frozen=True)
class CertificateInfo:
    """One certificate, as `tls inspect` shows it."""

    subject: str
    common_name: str
    sans: tuple[str, ...]
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    key_type: str
    fingerprint: str  # SHA-256 of the DER, lowercase hex
    self_signed: bool
    is_ca: bool

    @property
    def name(self) -> str:
        """The common name, or the first SAN for certificates without one (as ACME issues them)."""
        return self.common_name or (self.sans[0] if self.sans else self.subject)

    @property
    def days_left(self) -> int:
        return (self.not_after - datetime.now(UTC)).days

    @property
    def expired(self) -> bool:
        return self.not_after <= datetime.now(UTC)


@dataclass(frozen=True)
class ChainReport:
    """A PEM file: its leaf certificate and the issuers that follow it."""

    source: str
    leaf: CertificateInfo
    chain: tuple[CertificateInfo, ...]


@dataclass(frozen=True)
class Validation:
    """What install found about a pair: problems refuse it, notes are for information."""

    leaf: CertificateInfo
    chain: tuple[CertificateInfo, ...]
    domains: tuple[str, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


# -- reading ------------------------------------------------------------------------------------------

def load_certificates(pem: bytes, *, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in file order; a file without one is a UsageError."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise CertificateRejected(f"the {what} holds no PEM certificate",
                                  hint="give the full chain in PEM (certbot's fullchain.pem)")
    return certs


def load_private_key(pem: bytes) -> PrivateKey:
    """The private key of a PEM file (never echoed: errors name the problem, not the content)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography raises TypeError for a key that needs a password, ValueError for anything else.
        reason = "it is encrypted" if isinstance(exc, TypeError) else "it is not a PEM private key"
        raise CertificateRejected(f"the private key cannot be read: {reason}",
                                  hint="give the unencrypted key in PEM (certbot's privkey.pem)") from None
    if not isinstance(key, PrivateKey):
        raise CertificateRejected("the private key is of a type TLS servers cannot use")
    return key


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def describe(cert: x509.Certificate) -> CertificateInfo:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        constraints = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        is_ca = bool(getattr(constraints, "ca", False))
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        common_name=str(cn[0].value) if cn else "",
        sans=_sans(cert),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=_key_type(cert.public_key()),
        fingerprint=fingerprint(cert),
        self_signed=_issued_by(cert, cert),
        is_ca=is_ca,
    )


def inspect_pem(pem: bytes, *, source: str = "-") -> ChainReport:
    certs = load_certificates(pem)
    return ChainReport(source, describe(certs[0]), tuple(describe(c) for c in certs[1:]))


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [str(n).lower() for n in ext.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s name and key signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- domains --------------------------------------------------------------------------------------------

def configured_domains(env: Mapping[str, str]) -> tuple[str, ...]:
    """The DNS names a public certificate must cover: DOMAIN, then ALLOWED_HOSTS.

    IP addresses, `localhost` and `*` are left out: no public CA issues for them.
    """
    names = [env.get("DOMAIN", ""), *env.get("ALLOWED_HOSTS", "").split(",")]
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        if not name or name in ("localhost", "*") or _is_ip(name) or name in out:
            continue
        out.append(name)
    return tuple(out)


def covers(sans: Iterable[str], domain: str) -> bool:
    """Whether a certificate's names cover `domain` (a wildcard covers exactly one label)."""
    domain = domain.lower().rstrip(".")
    for san in sans:
        san = san.lower()
        if san == domain:
            return True
        if san.startswith("*.") and "." in domain and domain.split(".", 1)[1] == san[2:]:
            return True
    return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# -- validation ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _default_anchors() -> tuple[x509.Certificate, ...]:
    import certifi

    with warnings.catch_warnings():  # a few public roots predate RFC 5280's positive serials
        warnings.simplefilter("ignore")
        return tuple(x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes()))


def trust_anchors(extra: Iterable[bytes] = ()) -> tuple[x509.Certificate, ...]:
    """The public roots (certifi's bundle) plus extra PEM roots (a development CA, pebble's root)."""
    more = [cert for pem in extra for cert in load_certificates(pem, what="CA file")]
    return (*more, *_default_anchors())


def renewal_time(info: CertificateInfo) -> datetime:
    """When a certificate is due for renewal: a third of its lifetime before it expires."""
    return info.not_after - (info.not_after - info.not_before) / RENEW_FRACTION


def expiry_margin_days(not_before: datetime, not_after: datetime) -> float:
    """Days a certificate with this validity must still have left (see EXPIRY_MARGIN_DAYS)."""
    lifetime = (not_after - not_before).total_seconds() / 86400
    return min(EXPIRY_MARGIN_DAYS, lifetime / (2 * RENEW_FRACTION))


def renewal_due(info: CertificateInfo, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) >= renewal_time(info)


def validate(
    fullchain_pem: bytes,
    key_pem: bytes,
    *,
    domains: Sequence[str],
    renew_window_days: int | None = DEFAULT_RENEW_WINDOW_DAYS,
    anchors: Sequence[x509.Certificate] | None = None,
    now: datetime | None = None,
) -> Validation:
    """Check a certificate chain and its key before they are installed.

    The chain must start with the leaf and go up one issuer at a time. It is complete when it
    ends in a self-signed certificate, in a certificate issued by a trusted root (`anchors`), or
    in an intermediate CA (servers do not send the root; whether clients trust an unknown root
    is reported as a note). A leaf whose issuer is neither in the file nor a trusted root means
    the intermediate is missing, which browsers without it cached reject.
    """
    certs = load_certificates(fullchain_pem)
    key = load_private_key(key_pem)
    now = now or datetime.now(UTC)
    anchors = trust_anchors() if anchors is None else anchors
    leaf, infos = certs[0], [describe(c) for c in certs]
    problems: list[str] = []
    notes: list[str] = []

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        problems.append(f"the private key does not match the certificate for {infos[0].name!r}")

    missing = [d for d in domains if not covers(infos[0].sans, d)]
    if missing:
        problems.append(f"the certificate does not cover {', '.join(missing)} "
                        f"(it names {', '.join(infos[0].sans) or 'nothing'})")

    for i, (child, parent) in enumerate(itertools.pairwise(certs)):
        if not _issued_by(child, parent):
            problems.append(f"chain out of order: certificate {i + 2} ({infos[i + 1].subject}) did not issue "
                            f"certificate {i + 1} ({infos[i].subject})")
    last, last_info = certs[-1], infos[-1]
    if not last_info.self_signed:
        root = next((a for a in anchors if a.subject == last.issuer and _issued_by(last, a)), None)
        if root is not None:
            notes.append(f"chains to the trusted root {root.subject.rfc4514_string()}")
        elif last_info.is_ca:
            notes.append(f"the root {last_info.issuer} is not in the trust store used here")
        else:
            problems.append(f"chain incomplete: the issuer of {last_info.subject} ({last_info.issuer}) is "
                            "missing; install the full chain (leaf then intermediates, like fullchain.pem)")
    else:
        notes.append("self-signed: clients will not trust it")

    for i, info in enumerate(infos):
        what = "the certificate" if i == 0 else f"chain certificate {i + 1} ({info.subject})"
        if info.not_after <= now:
            problems.append(f"{what} expired on {info.not_after:%Y-%m-%d}")
        elif info.not_before > now:
            problems.append(f"{what} is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC")
    days_left = (infos[0].not_after - now).days
    expires = f"the certificate expires in {days_left} days ({infos[0].not_after:%Y-%m-%d})"
    if infos[0].not_after <= now:
        pass
    elif renew_window_days is not None and days_left < renew_window_days:
        problems.append(f"{expires}, inside the renewal window of {renew_window_days} days")
    elif renew_window_days is None and renewal_due(infos[0], now):
        lifetime = infos[0].not_after - infos[0].not_before
        problems.append(f"{expires}, inside its renewal window (the last third of its "
                        f"{lifetime.total_seconds() / 86400:g}-day lifetime, from "
                        f"{renewal_time(infos[0]):%Y-%m-%d %H:%M} UTC)")
    return Validation(infos[0], tuple(infos[1:]), tuple(domains), tuple(problems), tuple(notes))
