"""Install a certificate into the running nginx, with no downtime and no way to end up worse.

Order of work: validate the pair (nothing touched yet); copy it into the nginx_ssl volume
through the nginx container (the Docker engine API, so an ssh target works the same); rename
the new files over the live ones, keeping the old pair as *.prev; `nginx -t`; graceful reload
(`nginx -s reload`: in-flight requests finish on the old workers); then read the certificate
nginx actually serves. Any failure after the swap puts the previous pair back and reloads, so
the certificate served before stays served.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from finaiflow_ops import polling
from finaiflow_ops.errors import CheckFailed, CommandFailed, OpsError, UsageError
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.stack import ServiceStatus, Stack
from finaiflow_ops.target import Target
from finaiflow_ops.tls.certs import (
    DEFAULT_RENEW_WINDOW_DAYS,
    CertificateInfo,
    CertificateRejected,
    configured_domains,
    fingerprint,
    load_certificates,
    trust_anchors,
    validate,
)
from finaiflow_ops.tls.check import served_certificate

__all__ = [
    "SSL_DIR",
    "InstallResult",
    "InstalledPair",
    "install",
    "published_url",
    "read_file",
    "read_installed",
    "restore",
    "served_fingerprint",
]

SSL_DIR = "/etc/nginx/ssl"  # the nginx_ssl volume inside the nginx container
SERVICE = "nginx"

# Rename the new pair over the live one, keeping the live one as *.prev for a manual rollback.
# Each rename is atomic; nginx reads the files only at the reload that follows.
_SWAP = """set -eu
cd "$1"
[ -e cert.pem ] && cp -p cert.pem cert.pem.prev
[ -e key.pem ] && cp -p key.pem key.pem.prev
mv -f key.pem.new key.pem
mv -f cert.pem.new cert.pem
"""


@dataclass(frozen=True)
class InstalledPair:
    """The certificate chain and key nginx has in its volume (the key is never shown)."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(load_certificates(self.cert_pem)[0])


@dataclass(frozen=True)
class InstallResult:
    """What `tls install` did."""

    domains: tuple[str, ...]
    certificate: CertificateInfo
    previous_fingerprint: str
    served_fingerprint: str
    changed: bool
    notes: tuple[str, ...] = ()


def read_file(target: Target, path: str, *, what: str = "file") -> bytes:
    """A certificate, key or CA file on the target; a missing one is bad input (exit 2)."""
    if not target.exists(path):
        raise UsageError(f"no {what} at {path} on {target}", hint="check the path (read on the target)")
    return target.read_text(path).encode()


def read_installed(stack: Stack) -> InstalledPair:
    """The pair in nginx's volume, read through the running nginx container."""
    cert = stack.exec(SERVICE, ["cat", f"{SSL_DIR}/cert.pem"], expect_output=True).stdout.encode()
    key = stack.exec(SERVICE, ["cat", f"{SSL_DIR}/key.pem"], expect_output=True).stdout.encode()
    return InstalledPair(cert, key)


def published_url(stack: Stack, scheme: str) -> str | None:
    """nginx's published URL for `scheme` (https, http) without the trailing slash, if any."""
    running = tuple(stack.containers(SERVICE, all=False))
    urls = stack.urls([ServiceStatus(SERVICE, running)])
    return next((u.rstrip("/") for u in urls if u.startswith(f"{scheme}://")), None)


def served_fingerprint(stack: Stack, servername: str, *, timeout: float = 5.0) -> str:
    """SHA-256 fingerprint of the certificate nginx serves on its published HTTPS port."""
    base = published_url(stack, "https")
    if not base:
        raise UsageError(f"nginx publishes no HTTPS port on {stack.target}", hint="start the stack first")
    url = urlsplit(base)
    return fingerprint(served_certificate(url.hostname or stack.target.address, url.port or 443,
                                          servername=servername, timeout=timeout))


def install(
    stack: Stack,
    fullchain_pem: bytes,
    key_pem: bytes,
    *,
    domains: Sequence[str] = (),
    renew_window_days: int | None = DEFAULT_RENEW_WINDOW_DAYS,
    ca_files: Sequence[bytes] = (),
    timeout: float = 20.0,
    progress: Progress | None = None,
) -> InstallResult:
    """Validate the pair, then make nginx serve it (see the module docstring for the order).

    `domains` default to the stack's configured ones (DOMAIN, ALLOWED_HOSTS); `ca_files` are
    extra trusted roots for the chain check (a development CA, a test ACME server's root).
    Raises CertificateRejected (nothing touched) or the error that made it roll back.
    """
    say = or_quiet(progress)
    domains = tuple(domains) or configured_domains(stack.env)
    if not domains:
        raise UsageError("no domain to install a certificate for", hint="set DOMAIN in .env or pass --domain")
    checked = validate(fullchain_pem, key_pem, domains=domains, renew_window_days=renew_window_days,
                       anchors=trust_anchors(ca_files))
    if not checked.ok:
        raise CertificateRejected(
            f"refusing to install the certificate for {checked.leaf.name}: "
            + "; ".join(checked.problems),
            problems=checked.problems,
            hint="nothing was changed; the served certificate stays",
        )
    new_fp = checked.leaf.fingerprint
    previous = read_installed(stack)
    served_before = _served_or_none(stack, domains[0])
    same_files = previous.fingerprint == new_fp and previous.key_pem.strip() == key_pem.strip()
    if same_files and served_before == new_fp:
        say("this certificate is already installed and served: nothing to do")
        return InstallResult(domains, checked.leaf, previous.fingerprint, new_fp, False, checked.notes)
    say(f"installing the certificate for {', '.join(domains)} ({checked.leaf.days_left} days left)")
    try:
        served = _activate(stack, fullchain_pem, key_pem, domains[0], timeout=timeout, say=say)
    except OpsError as exc:
        say(f"install failed ({exc.one_line()}): putting the previous certificate back")
        try:
            _activate(stack, previous.cert_pem, previous.key_pem, domains[0], timeout=timeout, say=say)
        except OpsError as again:
            raise CheckFailed(f"install failed ({exc.one_line()}) and so did putting the previous "
                              f"certificate back ({again.one_line()})",
                              hint=f"the previous pair is {SSL_DIR}/*.prev in the nginx container",
                              service=exc.service, container=exc.container, log_tail=exc.log_tail) from exc
        raise CheckFailed(f"install rolled back: {exc.one_line()}",
                          hint="the previous certificate is served again",
                          service=exc.service, container=exc.container, log_tail=exc.log_tail) from exc
    return InstallResult(domains, checked.leaf, previous.fingerprint, served, True, checked.notes)


def restore(stack: Stack, pair: InstalledPair, *, servername: str | None = None, timeout: float = 20.0,
            progress: Progress | None = None) -> str:
    """Serve a pair saved earlier with read_installed() again; it was live, so it is not re-validated."""
    name = servername or (configured_domains(stack.env) or ("localhost",))[0]
    say = or_quiet(progress)
    return _activate(stack, pair.cert_pem, pair.key_pem, name, timeout=timeout, say=say)


def _activate(stack: Stack, cert_pem: bytes, key_pem: bytes, servername: str, *, timeout: float,
              say: Progress) -> str:
    """Write, test, reload, and wait until nginx serves `cert_pem`; returns its fingerprint."""
    nginx = stack.container(SERVICE)
    want = fingerprint(load_certificates(cert_pem)[0])
    archive = _tar({"cert.pem.new": (cert_pem, 0o644), "key.pem.new": (key_pem, 0o600)})
    if not nginx.put_archive(SSL_DIR, archive):
        raise CommandFailed(f"could not copy the certificate into {SERVICE}:{SSL_DIR}", service=SERVICE,
                            container=nginx.name)
    stack.exec(SERVICE, ["sh", "-c", _SWAP, "swap", SSL_DIR])
    test = stack.exec(SERVICE, ["nginx", "-t", "-q"], check=False)
    if not test.ok:
        emerg = [ln for ln in test.stderr.splitlines() if "[emerg]" in ln]
        why = re.sub(r"^.*?\[emerg\] [\d#]+: ", "", emerg[0]) if emerg else _last_line(test.stderr)
        raise CheckFailed(f"nginx -t rejects the new certificate: {why}", service=SERVICE,
                          container=nginx.name, log_tail=test.stderr.strip())
    say("nginx -t passed: reloading nginx gracefully")
    stack.exec(SERVICE, ["nginx", "-s", "reload"])
    return _wait_served(stack, servername, want, timeout=timeout)


SERVED_STREAK = 5  # handshakes in a row on the new certificate: no old worker accepts any more


def _wait_served(stack: Stack, servername: str, want: str, *, timeout: float) -> str:
    """Old workers finish their connections; new connections get the new certificate soon after.
    One handshake is not enough: an old worker may accept a few more connections until it has
    handled the reload signal (seen in CI under load), so several in a row must agree."""
    seen, streak = "", 0
    for attempt in polling.attempts(within=timeout, every=0.2):
        seen = _served_or_none(stack, servername) or "unreachable"
        streak = streak + 1 if seen == want else 0
        if streak >= SERVED_STREAK or (streak and attempt.last):
            return seen
    tail = stack.exec(SERVICE, ["tail", "-n", "3", "/var/log/nginx/error.log"], check=False).stdout
    raise CheckFailed(
        f"nginx still serves {seen[:16]} instead of {want[:16]} {timeout:.0f} s after the reload"
        + (f": {_last_line(tail)}" if tail.strip() else ""),
        hint="see the nginx error log (finaiflow-ops logs nginx)",
        service=SERVICE, log_tail=tail.strip(),
    )


def _served_or_none(stack: Stack, servername: str) -> str | None:
    try:
        return served_fingerprint(stack, servername)
    except (OSError, OpsError, ValueError):
        return None


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(posixpath.basename(name))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 0, 0, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
