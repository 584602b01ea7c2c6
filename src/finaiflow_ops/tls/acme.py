"""Certificates from an ACME server (Let's Encrypt, its staging, or pebble) with certbot.

certbot runs on the target host and answers HTTP-01 challenges with the webroot method: it
writes the token into the `acme_webroot` volume (through the volume's path on the host) and
the running nginx serves it at /.well-known/acme-challenge/. Nothing stops, so issuing and
renewing cost no downtime (the runbook's `--standalone` needed port 80, which nginx holds).
`--standalone` stays for a first certificate before the stack runs.

certbot keeps its state (account, keys, lineages, renewal settings) in ACME_DIR on the target
(default PROJECT_DIR/letsencrypt). Its deploy hook runs `finaiflow-ops tls install --lineage`
on the target, so any renewal (ours, a cron job, Debian's certbot.timer) installs the new pair
through the same validated path; after certbot we check that nginx serves the lineage's
certificate and install it ourselves when the hook did not.

When to renew: certbot 4.1 and later ask the CA for its ACME Renewal Info (ARI) window and, where
the CA gives none, renew when a third of the certificate's lifetime is left; they decide. With an
older certbot (Debian 12 ships 2.1: a fixed 30 days, which would renew a 6-day certificate on every
run and a 45-day one two weeks after issuance) finaiflow-ops decides by the same third and forces
the renewal when it is due.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finaiflow_ops.docker_inspect import source_at
from finaiflow_ops.errors import CheckFailed, OpsError, UsageError
from finaiflow_ops.health import probe
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.certs import (
    DEFAULT_RENEW_WINDOW_DAYS,
    CertificateInfo,
    configured_domains,
    describe,
    fingerprint,
    load_certificates,
    renewal_due,
    renewal_time,
)
from finaiflow_ops.tls.install import (
    SERVICE,
    InstallResult,
    install,
    published_url,
    read_file,
    served_fingerprint,
)

__all__ = [
    "LETSENCRYPT",
    "LETSENCRYPT_STAGING",
    "AcmeOptions",
    "IssueResult",
    "Method",
    "RenewResult",
    "certbot_version",
    "default_executable",
    "deploy_hook",
    "install_lineage",
    "issue",
    "renew",
    "webroot_path",
]

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
Method = Literal["webroot", "standalone"]  # how certbot answers the HTTP-01 challenge
WEBROOT = "/var/www/acme"  # where nginx serves /.well-known/acme-challenge/ from (acme_webroot volume)
CERTBOT_TIMEOUT = 600.0
ARI_CERTBOT = (4, 1)  # asks the CA's renewal info (ARI); without it renews at a third of the lifetime


@dataclass(frozen=True)
class AcmeOptions:
    """How certbot runs on the target. Paths are paths on the target."""

    server: str | None = None  # ACME directory; None: Let's Encrypt for issue, the saved one for renew
    acme_dir: str | None = None  # certbot's state; default PROJECT_DIR/letsencrypt
    ca_bundle: str | None = None  # REQUESTS_CA_BUNDLE: the CA of a private ACME server's own TLS
    certbot: str | None = None  # the executable; default: ours beside this Python, else certbot on PATH
    ca_files: tuple[str, ...] = ()  # extra roots install's chain check trusts (a private ACME CA)
    ops_command: str | None = None  # finaiflow-ops on the target, for the deploy hook
    renew_window_days: int | None = DEFAULT_RENEW_WINDOW_DAYS  # None: the last third of the lifetime

    def state_dir(self, stack: Stack) -> str:
        return self.acme_dir or posixpath.join(stack.project_dir, "letsencrypt")

    def lineage(self, stack: Stack, domains: Sequence[str] = ()) -> str:
        """certbot's directory of a certificate on the target, STATE_DIR/config/live/NAME, NAME the
        first of `domains`, else of the stack's (DOMAIN, then ALLOWED_HOSTS)."""
        name = (tuple(domains) or configured_domains(stack.env) or ("",))[0]
        return posixpath.join(self.state_dir(stack), "config", "live", name)

    def ops(self, stack: Stack) -> str:
        """finaiflow-ops on the target, as the deploy hook and the renewal schedule run it."""
        return self.ops_command or default_executable(stack, "finaiflow-ops")

    def cli_args(self) -> list[str]:
        """These options as `finaiflow-ops tls` arguments, for commands run later on the target."""
        args = [] if self.renew_window_days is None else [f"--window={self.renew_window_days}"]
        for flag, value in (("--server", self.server), ("--acme-dir", self.acme_dir),
                            ("--ca-bundle", self.ca_bundle), ("--certbot", self.certbot),
                            ("--ops-command", self.ops_command)):
            if value:
                args.append(f"{flag}={value}")
        args += [f"--ca-file={ca}" for ca in self.ca_files]
        return args


@dataclass(frozen=True)
class IssueResult:
    """What `tls issue` did: the lineage certbot wrote and whether nginx serves it."""

    domains: tuple[str, ...]
    server: str
    method: Method
    lineage: str
    certificate: CertificateInfo
    served_fingerprint: str | None
    seconds: float

    @property
    def installed(self) -> bool:
        return self.served_fingerprint == self.certificate.fingerprint


@dataclass(frozen=True)
class RenewResult:
    """What `tls renew` did; `renewed` is derived from the lineage's certificate before and after."""

    lineage: str
    dry_run: bool
    fingerprint_before: str
    fingerprint_after: str
    served_fingerprint: str | None
    seconds: float

    @property
    def renewed(self) -> bool:
        return self.fingerprint_before != self.fingerprint_after


# -- issue ------------------------------------------------------------------------------------------

def issue(
    stack: Stack,
    *,
    domains: Sequence[str] = (),
    email: str | None = None,
    options: AcmeOptions = AcmeOptions(),
    standalone: bool = False,
    http_port: int = 80,
    force: bool = False,
    progress: Progress | None = None,
) -> IssueResult:
    """Get a certificate for `domains` (default DOMAIN and ALLOWED_HOSTS) and install it.

    Webroot through the running nginx by default. `standalone` lets certbot answer on
    `http_port` itself (it must be free: for a first certificate, before the stack runs); the
    certificate is then installed by `tls install` once nginx runs.
    """
    say = or_quiet(progress)
    domains = tuple(domains) or configured_domains(stack.env)
    if not domains:
        raise UsageError("no domain to issue a certificate for", hint="set DOMAIN in .env or pass --domain")
    email = email or stack.env.get("ACME_EMAIL")
    if not email:
        raise UsageError("no contact email for the ACME account",
                         hint="pass --email, or set ACME_EMAIL in .env (expiry notices go there)")
    server = options.server or LETSENCRYPT
    name = domains[0]
    if standalone:
        method = ["--standalone", "--http-01-port", str(http_port)]
    else:
        webroot = webroot_path(stack)
        _preflight_webroot(stack, webroot, name)
        method = ["--webroot", "-w", webroot]
    say(f"requesting a certificate for {', '.join(domains)} from {server} "
        f"({'standalone' if standalone else 'webroot through nginx'})")
    start = time.monotonic()
    _certbot(stack, options, "certonly", "--non-interactive", "--agree-tos", "--email", email,
             "--server", server, "--cert-name", name, *(a for d in domains for a in ("-d", d)), *method,
             "--force-renewal" if force else "--keep-until-expiring",
             "--deploy-hook", deploy_hook(stack, options))
    lineage = _lineage(stack, options, name)
    cert = describe(load_certificates(stack.target.read_text(f"{lineage}/fullchain.pem").encode())[0])
    served: str | None = None
    if _nginx_running(stack):
        served = _ensure_served(stack, lineage, cert.fingerprint, options, say)
    else:
        say(f"nginx is not running: start the stack, then `finaiflow-ops tls install --lineage {lineage}`")
    return IssueResult(domains, server, "standalone" if standalone else "webroot", lineage, cert, served,
                       round(time.monotonic() - start, 2))


# -- renew ------------------------------------------------------------------------------------------

def renew(
    stack: Stack,
    *,
    options: AcmeOptions = AcmeOptions(),
    domain: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> RenewResult:
    """`certbot renew` for the stack's certificate, webroot through nginx, deploy hook = our install.

    Not due (before the CA's renewal info window, else before the last third of the lifetime: see
    the module docstring) means nothing happens, unless `force`.
    `dry_run` talks to the ACME server (Let's Encrypt's staging for Let's Encrypt) and changes nothing.
    """
    say = or_quiet(progress)
    name = domain or (configured_domains(stack.env) or ("",))[0]
    if not name:
        raise UsageError("no domain to renew", hint="set DOMAIN in .env or pass --domain")
    lineage = _lineage(stack, options, name)
    before = _lineage_fingerprint(stack, lineage)
    args = ["renew", "--non-interactive", "--cert-name", name, "--no-random-sleep-on-renew",
            "--webroot", "-w", webroot_path(stack), "--deploy-hook", deploy_hook(stack, options)]
    if options.server:  # otherwise certbot uses the server saved with the certificate
        args += ["--server", options.server]
    if dry_run:
        args.append("--dry-run")
    if force:
        args.append("--force-renewal")
    start = time.monotonic()
    version = certbot_version(stack, options)
    if version < ARI_CERTBOT and not force and not dry_run:
        leaf = describe(load_certificates(stack.target.read_text(f"{lineage}/fullchain.pem").encode())[0])
        shown = ".".join(str(n) for n in version)
        if not renewal_due(leaf):
            say(f"not due: {name} renews from {renewal_time(leaf):%Y-%m-%d %H:%M} UTC, a third of its "
                f"lifetime before it expires (certbot {shown} has no renewal info; finaiflow-ops decides)")
            served = served_fingerprint(stack, name) if _nginx_running(stack) else None
            return RenewResult(lineage, dry_run, before, before, served, round(time.monotonic() - start, 2))
        say(f"due: a third of its lifetime or less is left (certbot {shown} would wait for 30 days)")
        force = True
        args.append("--force-renewal")
    say(f"certbot renew{' --dry-run' if dry_run else ''}{' --force-renewal' if force else ''} for {name}")
    _certbot(stack, options, *args)
    after = _lineage_fingerprint(stack, lineage)
    served = None
    if not dry_run and after != before:
        served = _ensure_served(stack, lineage, after, options, say)
    elif _nginx_running(stack):
        served = served_fingerprint(stack, name)
    return RenewResult(lineage, dry_run, before, after, served, round(time.monotonic() - start, 2))


def install_lineage(stack: Stack, lineage: str, *, ca_files: Sequence[str] = (),
                    renew_window_days: int | None = DEFAULT_RENEW_WINDOW_DAYS, domains: Sequence[str] = (),
                    progress: Progress | None = None) -> InstallResult:
    """Install certbot's fullchain.pem and privkey.pem from a lineage directory on the target."""
    target = stack.target
    if not target.exists(f"{lineage}/fullchain.pem"):
        raise UsageError(f"no certificate in {lineage} on {target}",
                         hint="issue one first (tls issue), or give --cert and --key")
    return install(stack, read_file(target, f"{lineage}/fullchain.pem", what="certbot fullchain.pem"),
                   read_file(target, f"{lineage}/privkey.pem", what="certbot privkey.pem"),
                   domains=domains, renew_window_days=renew_window_days,
                   ca_files=[read_file(target, f, what="CA file") for f in ca_files], progress=progress)


# -- pieces -----------------------------------------------------------------------------------------

def webroot_path(stack: Stack) -> str:
    """The host path of the volume nginx serves /.well-known/acme-challenge/ from."""
    source = source_at(stack.container(SERVICE).attrs, WEBROOT)
    if source:
        return source
    raise UsageError(f"nginx has no volume at {WEBROOT} on {stack.target}",
                     hint="the compose file must mount the acme_webroot volume there")


def deploy_hook(stack: Stack, options: AcmeOptions) -> str:
    """The shell command certbot runs after each renewal: our install, on the target itself."""
    argv = [options.ops(stack), "--target", "local://", "--project-dir", stack.project_dir,
            "--env-file", stack.env_path, "--yes", "tls", "install", *options.cli_args()]
    return shlex.join(argv) + ' --lineage "$RENEWED_LINEAGE"'


def certbot_version(stack: Stack, options: AcmeOptions) -> tuple[int, ...]:
    """The version of the certbot that runs on the target (`certbot --version`: "certbot 5.8.0")."""
    executable = options.certbot or default_executable(stack, "certbot")
    done = stack.target.run(executable, "--version", check=False)
    match = re.search(r"(\d+)\.(\d+)", done.stdout + done.stderr)
    if not done.ok or not match:
        raise UsageError(f"certbot is not available on {stack.target} ({executable})",
                         hint="pip install certbot beside finaiflow-ops, or apt-get install certbot")
    return int(match.group(1)), int(match.group(2))


def _certbot(stack: Stack, options: AcmeOptions, *args: str) -> None:
    state = options.state_dir(stack)
    env = ["env", f"REQUESTS_CA_BUNDLE={options.ca_bundle}"] if options.ca_bundle else []
    executable = options.certbot or default_executable(stack, "certbot")
    certbot_version(stack, options)
    dirs = ["--config-dir", f"{state}/config", "--work-dir", f"{state}/work", "--logs-dir", f"{state}/logs"]
    stack.target.run(*env, executable, *args, *dirs, timeout=CERTBOT_TIMEOUT)


def default_executable(stack: Stack, name: str) -> str:
    """The one installed beside finaiflow-ops: beside this Python for a local target, in the
    virtualenv `host setup` made on a remote one (finaiflow-ops[acme]); else PATH's."""
    if not stack.target.is_local:
        from finaiflow_ops.host.selfinstall import INSTALL_ROOT

        beside_ops = f"{INSTALL_ROOT}/venv/bin/{name}"
        return beside_ops if stack.target.run("test", "-x", beside_ops, check=False).ok else name
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def _lineage(stack: Stack, options: AcmeOptions, name: str) -> str:
    lineage = options.lineage(stack, [name])
    if not stack.target.exists(f"{lineage}/fullchain.pem"):
        raise UsageError(f"no certificate for {name} in {lineage} on {stack.target}",
                         hint="issue one first: finaiflow-ops tls issue")
    return lineage


def _lineage_fingerprint(stack: Stack, lineage: str) -> str:
    return fingerprint(load_certificates(stack.target.read_text(f"{lineage}/fullchain.pem").encode())[0])


def _nginx_running(stack: Stack) -> bool:
    return any(c.state == "running" for c in stack.containers(SERVICE, all=False))


def _ensure_served(stack: Stack, lineage: str, want: str, options: AcmeOptions, say: Progress) -> str:
    """The deploy hook normally installed it; when not (a failing hook only warns in certbot), install now."""
    name = lineage.rstrip("/").rsplit("/", 1)[-1]
    try:
        served = served_fingerprint(stack, name)
    except (OSError, OpsError, ValueError):
        served = ""
    if served == want:
        say("the deploy hook installed the new certificate: nginx serves it")
        return served
    say("nginx does not serve the new certificate yet: installing it")
    return install_lineage(stack, lineage, ca_files=options.ca_files,
                           renew_window_days=options.renew_window_days, progress=say).served_fingerprint


def _preflight_webroot(stack: Stack, webroot: str, domain: str) -> None:
    """Serve a probe file through nginx before asking the CA: a broken path fails here, not at the CA."""
    if not stack.target.run("test", "-w", webroot, check=False).ok:
        raise UsageError(f"the ACME webroot {webroot} is not writable on {stack.target}",
                         hint="run as root on the target (Docker's volume directories belong to root)")
    token = f"finaiflow-probe-{secrets.token_hex(8)}"
    path = f"{webroot}/.well-known/acme-challenge/{token}"
    write = 'mkdir -p "$(dirname "$1")" && printf ok >"$1" && chmod 644 "$1"'
    stack.target.run("sh", "-c", write, "sh", path)
    try:
        url = f"{_http_base(stack)}/.well-known/acme-challenge/{token}"
        seen = probe(url, host=domain)
        if not (seen.ok and seen.body == "ok"):
            raise CheckFailed(f"nginx does not serve the ACME webroot: {url} (Host: {domain}) answered "
                              f"{seen.status or seen.error}",
                              hint="the nginx site must serve /.well-known/acme-challenge/ from " + WEBROOT)
    finally:
        stack.target.run("rm", "-f", path, check=False)


def _http_base(stack: Stack) -> str:
    """nginx's published plain-HTTP address (its port 80)."""
    url = published_url(stack, "http")
    if not url:
        raise UsageError(f"nginx publishes no plain HTTP port on {stack.target}",
                         hint="ACME HTTP-01 validation needs port 80 reachable from the internet")
    return url
