"""A development CA for staging: a local root that issues the staging certificate.

The nginx entrypoint starts with a self-signed certificate, which no client can verify, so a
staging check had to turn verification off. A development CA (like mkcert's) fixes that: one
root per operator machine, its key mode 0600, and staging certificates issued from it; clients
that should trust staging (the acceptance tests, a browser) are given the CA file.
The CA lives on the machine that runs finaiflow-ops, never on the target: only the issued
certificate and its own key travel there, through `tls install`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.certs import configured_domains
from finaiflow_ops.tls.install import InstallResult, install

__all__ = [
    "DEV_CA_DIR_ENV",
    "DevCA",
    "dev_ca_dir",
    "ensure_dev_ca",
    "install_dev_certificate",
    "issue_from_dev_ca",
]

DEV_CA_DIR_ENV = "FINAIFLOW_DEV_CA_DIR"
CA_YEARS = 10
LEAF_DAYS = 90  # like a public certificate, so renewal windows behave the same on staging


@dataclass(frozen=True)
class DevCA:
    """Where the development CA is; `cert_path` is the file clients verify with."""

    cert_path: Path
    key_path: Path
    created: bool = False

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"the development CA in {self.cert_path.parent} cannot be read ({type(exc).__name__})",
                hint=f"remove that directory to make a new CA, or set {DEV_CA_DIR_ENV}",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"the development CA key in {self.key_path} is not an EC key")
        return cert, key


def dev_ca_dir() -> Path:
    """$FINAIFLOW_DEV_CA_DIR, else $XDG_DATA_HOME/finaiflow-ops/dev-ca (~/.local/share/...)."""
    if os.environ.get(DEV_CA_DIR_ENV):
        return Path(os.environ[DEV_CA_DIR_ENV])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "finaiflow-ops" / "dev-ca"


def ensure_dev_ca(directory: Path | None = None) -> DevCA:
    """The development CA in `directory` (default: dev_ca_dir()), created on first use."""
    directory = directory or dev_ca_dir()
    ca = DevCA(directory / "ca.pem", directory / "ca-key.pem")
    if ca.cert_path.exists() and ca.key_path.exists():
        ca.load()
        return ca
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FinaiFlow development"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"FinaiFlow development CA ({socket.gethostname()})"),
    ])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    # The key first: a CA file without its key is unusable, a key without the CA file is re-made.
    _write_atomic(ca.key_path, _key_pem(key), 0o600)
    _write_atomic(ca.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return DevCA(ca.cert_path, ca.key_path, created=True)


def issue_from_dev_ca(
    domains: Sequence[str], *, ca: DevCA, days: int = LEAF_DAYS, ips: Sequence[str] = ("127.0.0.1",),
    issued_days_ago: int = 0,
) -> tuple[bytes, bytes]:
    """A server certificate for `domains` (and localhost, `ips`) signed by the CA, valid for `days`
    more days (and from `issued_days_ago` days ago): (cert PEM, key PEM)."""
    if not domains:
        raise UsageError("no domain to issue the development certificate for", hint="set DOMAIN in .env")
    ca_cert, ca_key = ca.load()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys([*domains, "localhost"])]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=issued_days_ago, hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def install_dev_certificate(stack: Stack, *, domains: Sequence[str] = (), ca_dir: Path | None = None,
                            progress: Callable[[str], None] | None = None) -> InstallResult:
    """Issue a staging certificate from the development CA and install it (validated like any other)."""
    ca = ensure_dev_ca(ca_dir)
    domains = tuple(domains) or configured_domains(stack.env)
    cert_pem, key_pem = issue_from_dev_ca(domains, ca=ca)
    return install(stack, cert_pem, key_pem, domains=domains, ca_files=[ca.cert_path.read_bytes()],
                   progress=progress)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # the umask must neither widen nor narrow what was asked
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
