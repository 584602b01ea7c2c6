"""The stack's .env: parse, render, generate, write safely, check for production, redact.

Replaces the runbook's setup.sh and its "edit .env with your production values" step.
Nothing here puts a secret value in a message, a finding or a repr: only keys, paths and
line numbers.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

from finaiflow_ops.errors import EnvFileError, UsageError

if TYPE_CHECKING:
    from finaiflow_ops.target import Target

__all__ = [
    "EnvFile",
    "Finding",
    "alert_receivers",
    "check",
    "generate",
    "load",
    "parse",
    "redact",
    "render",
    "write",
]

# ---------------------------------------------------------------------------------------
# Constants

DB_SCHEME = "postgresql+asyncpg"
POSTGRES_USER = "finaiflow_user"
POSTGRES_DB = "finaiflow_db"
COMPOSE_PROJECT_NAME = "finaiflow"

# Alertmanager's settings (stack/alertmanager/render.py reads them; docs/monitoring.md).
ALERT_URL_KEYS = ("ALERT_WEBHOOK_URL", "ALERT_WARNING_WEBHOOK_URL", "ALERT_HEARTBEAT_URL")
ALERT_SMTP_KEYS = ("ALERT_SMTP_HOST", "ALERT_SMTP_FROM", "ALERT_SMTP_TO", "ALERT_SMTP_USERNAME",
                   "ALERT_SMTP_PASSWORD")
ALERT_INTERVAL_KEYS = ("ALERT_GROUP_WAIT", "ALERT_GROUP_INTERVAL", "ALERT_REPEAT_INTERVAL",
                       "ALERT_HEARTBEAT_INTERVAL")
ALERT_RECEIVER_KEYS = ALERT_URL_KEYS + ALERT_SMTP_KEYS
ALERT_KEYS = ALERT_RECEIVER_KEYS + ALERT_INTERVAL_KEYS
_DURATION_RE = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")  # Alertmanager's (Prometheus') durations
_ALERT_KEY_RE = re.compile(r"\bALERT_[A-Z_]+\b")
# What to do about a receiver setting that alert_receivers() refuses.
_URL_HINT = "give the receiver's full http:// or https:// URL"
_RECEIVER_HINTS = {
    "ALERT_WEBHOOK_URL": "give the paging receiver's full http:// or https:// URL",
    "ALERT_WARNING_WEBHOOK_URL": _URL_HINT, "ALERT_HEARTBEAT_URL": _URL_HINT,
    "ALERT_SMTP_HOST": "give the mail server's host and port",
    "ALERT_SMTP_FROM": "give the sender's e-mail address",
    "ALERT_SMTP_TO": "give the recipient's e-mail address",
    "ALERT_SMTP_PASSWORD": "give the SMTP password with the username",
}

SECRET_KEY_MIN_LEN = 32
SECRET_KEY_MIN_BITS = 128.0
PASSWORD_MIN_LEN = 16
MIN_DISTINCT_CHARS = 8

# A strength rule set: value -> its problems (empty when fine).
_Rules = Callable[[str], list[str]]

# Sections of the rendered file, in order; keys not listed go to a final "other" section.
_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("security", ("SECRET_KEY", "ENVIRONMENT")),
    ("database", ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATABASE_URL")),
    ("cache", ("REDIS_PASSWORD", "REDIS_URL")),
    ("domain", ("DOMAIN", "ALLOWED_HOSTS", "CORS_ORIGINS")),
    ("stack", ("NGINX_BIND", "HTTP_PORT", "HTTPS_PORT", "RATE_LIMIT_RPS", "RATE_LIMIT_BURST",
               "PROMETHEUS_PORT", "ALERTMANAGER_PORT", "API_IMAGE", "COMPOSE_PROJECT_NAME")),
    ("alerting", ALERT_KEYS),
)

_HEADER = (
    "# finaiflow stack configuration, written by finaiflow-ops.\n"
    "# It holds secrets: keep it mode 0600 and out of version control.\n"
    "# Regenerate with `finaiflow-ops env generate` rather than editing secrets by hand.\n"
)

# Exact (case-insensitive) values that are defaults or the runbook's placeholders.
_KNOWN_DEFAULTS = frozenset(
    {
        "strong_password", "password", "postgres", "changeme", "change_me", "finaiflow",
        "finaiflow_user", "finaiflow_db", "admin", "secret", "123456", "12345678",
        "123456789", "root", "redis", "qwerty", "letmein", "default", "test",
    }
)  # fmt: skip
# Substrings that only a placeholder or a hand-typed "secret" contains.
_PLACEHOLDER_MARKERS = (
    "change", "secret", "password", "generated", "your", "example", "placeholder",
    "replace", "insecure", "<", ">",
)  # fmt: skip
# The runbook's domain and other stand-ins that must never reach production.
_PLACEHOLDER_DOMAINS = (
    "votre-domaine.com", "your-domain.com", "yourdomain.com", "domain.com",
    "example.com", "example.org", "example.net",
)  # fmt: skip

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE_RE = re.compile(r"(?:export[ \t]+)?(?P<key>[^=\s]*)[ \t]*=(?P<raw>.*)", re.DOTALL)
_INLINE_COMMENT_RE = re.compile(r"\s#")
# Values made only of these need no quotes (covers tokens, URLs, host lists, images).
_SAFE_UNQUOTED_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=,%?&*~^]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what compose accepts as a project name
_DQ_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
# Alert webhook URLs carry their token in the path (chat services' incoming webhooks, healthchecks).
_SECRET_NAME_RE = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|^ALERT_\w*_URL$", re.IGNORECASE)
_URL_NAME_RE = re.compile(r"_(?:URL|URI|DSN)$", re.IGNORECASE)
# Fallback for URLs urlsplit rejects: the password between "user:" and "@".
_URL_PASSWORD_RE = re.compile(r"://[^/@:]*:([^@]*)@")


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EnvFile:
    """A loaded .env: its path, its values (read-only) and its permission bits."""

    path: PurePath  # a remote .env is a PurePosixPath
    # repr=False: a dataclass repr in a log line or traceback must not print secrets.
    values: Mapping[str, str] = field(repr=False)
    mode: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


@dataclass(frozen=True)
class Finding:
    """One production problem: the key it concerns and what is wrong (never the value)."""

    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


# ---------------------------------------------------------------------------------------
# Parse / render


def parse(text: str) -> dict[str, str]:
    """Parse .env text into a dict; malformed lines and duplicate keys raise EnvFileError."""
    values: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    # Split on "\n" only: str.splitlines() would also split on \x0c, \u2028 and others,
    # which are legitimate characters inside a quoted value.
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE_RE.fullmatch(stripped)
        if match is None:
            raise EnvFileError(f"line {number}: expected KEY=VALUE", hint=_PARSE_HINT)
        key = match["key"]
        if not _KEY_RE.fullmatch(key):
            # Don't echo it: a malformed "key" may be a pasted secret.
            raise EnvFileError(f"line {number}: invalid key name", hint=_PARSE_HINT)
        value = _parse_value(match["raw"], number, key)
        if key in first_seen:
            raise EnvFileError(
                f"{key} is set twice (lines {first_seen[key]} and {number})",
                hint="keep one of them: a duplicate leaves it unclear which value is live",
            )
        first_seen[key] = number
        values[key] = value
    return values


_PARSE_HINT = "fix that line; quote values that contain spaces, # or quotes"


def _parse_value(raw: str, number: int, key: str) -> str:
    body = raw.lstrip(" \t")
    if body[:1] == '"':
        parsed = _parse_double_quoted(body)
        if parsed is None:
            raise EnvFileError(f"line {number}: {key}: unterminated double quote", hint=_PARSE_HINT)
        value, rest = parsed
    elif body[:1] == "'":
        end = body.find("'", 1)
        if end < 0:
            raise EnvFileError(f"line {number}: {key}: unterminated single quote", hint=_PARSE_HINT)
        value, rest = body[1:end], body[end + 1 :]
    else:
        # Like docker compose: "#" starts a comment only after whitespace, so "a#b" is a value.
        comment = _INLINE_COMMENT_RE.search(raw)
        return (raw[: comment.start()] if comment else raw).strip()
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise EnvFileError(f"line {number}: {key}: unexpected text after the closing quote", hint=_PARSE_HINT)
    return value


def _parse_double_quoted(body: str) -> tuple[str, str] | None:
    """Return (value, text after the closing quote), or None if the quote never closes."""
    out: list[str] = []
    i = 1
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # Unknown escapes stay literal so Windows-ish paths survive.
            out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        elif char == '"':
            return "".join(out), body[i + 1 :]
        else:
            out.append(char)
            i += 1
    return None


def render(values: Mapping[str, str]) -> str:
    """Render values as .env text: header, grouped sections, quoting only where needed."""
    for key in values:
        if not _KEY_RE.fullmatch(key):
            raise UsageError(f"invalid .env key name {key!r}", hint="use letters, digits and _")
    known = {key for _, keys in _SECTIONS for key in keys}
    sections = [(title, [k for k in keys if k in values]) for title, keys in _SECTIONS]
    sections.append(("other", [k for k in values if k not in known]))
    chunks = [_HEADER]
    for title, keys in sections:
        if keys:
            lines = "".join(f"{key}={_quote(values[key])}\n" for key in keys)
            chunks.append(f"\n# --- {title} ---\n{lines}")
    return "".join(chunks)


def _quote(value: str) -> str:
    if _SAFE_UNQUOTED_RE.fullmatch(value):
        return value
    # Single quotes first: docker compose does not interpolate "$" inside them.
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


# ---------------------------------------------------------------------------------------
# Load / write


def load(path: Path) -> EnvFile:
    """Read and parse the .env at path, recording its permission bits."""
    try:
        # O_NONBLOCK: a FIFO at the path must not hang us; it fails the S_ISREG test below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise EnvFileError(
            f"no .env at {path}", hint="run `finaiflow-ops env generate` to create one"
        ) from None
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EnvFileError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # from None: the chained error would show the offending byte.
        raise EnvFileError(f"{path} is not UTF-8 text") from None
    try:
        values = parse(text)
    except EnvFileError as exc:
        raise EnvFileError(f"{path}: {exc.message}", hint=exc.hint) from None
    return EnvFile(path=path, values=values, mode=stat.S_IMODE(info.st_mode))


def write(path: Path, values: Mapping[str, str], *, force: bool = False) -> Path:
    """Write values to path atomically with mode 0600; refuse to overwrite unless force."""
    text = render(values)  # before touching the disk: a bad key must not leave a file
    if not force and os.path.lexists(path):
        raise _exists_error(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # 0o600 at creation, so the secrets are never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have removed bits; make the mode exact
            _write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            tmp.replace(path)
        else:
            _link_no_clobber(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        # Gone already after a replace; still there after a link or an error.
        tmp.unlink(missing_ok=True)
    return path


# Writes stdin to $1 on a target as `write` does here: created 0600 in the same directory, synced,
# then linked into place (refusing an existing file, exit 17) or, with $2 = force, renamed over it.
_WRITE_ON_TARGET = r"""set -eu
umask 077
tmp=$(mktemp "$(dirname -- "$1")/.env.XXXXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp"
sync -- "$tmp" 2>/dev/null || sync
if [ "$2" = force ]; then mv -f -- "$tmp" "$1"; else ln -- "$tmp" "$1" 2>/dev/null || exit 17; fi
"""


def write_on(target: Target, path: str, values: Mapping[str, str], *, force: bool = False) -> str:
    """`write` on a target (a remote host): the same atomic 0600 file, the secrets carried on the
    connection's standard input, never on a command line."""
    text = render(values)
    if not force and target.exists(path):
        raise _exists_error(Path(path))
    done = target.run("sh", "-c", _WRITE_ON_TARGET, "write-env", path, "force" if force else "new",
                      input=text.encode("utf-8"), check=False)
    if done.exit_status == 17:
        raise _exists_error(Path(path))
    if not done.ok:
        problem = (done.stderr.strip().splitlines() or ["exit " + str(done.exit_status)])[-1]
        raise UsageError(f"cannot write {path} on {target}: {problem}",
                         hint="check that the project directory exists there (finaiflow-ops host setup "
                              "--project-dir DIR makes it)")
    return path


def _exists_error(path: Path) -> UsageError:
    return UsageError(
        f"{path} already exists; not overwriting it",
        hint="pass --force to replace it (its current secrets will be lost)",
    )


def _link_no_clobber(tmp: Path, path: Path) -> None:
    # A hard link fails if the target appeared since our first check; os.replace would
    # silently clobber a file someone created meanwhile.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:
        # Some filesystems have no hard links: fall back to check-then-replace.
        if os.path.lexists(path):
            raise _exists_error(path) from None
        tmp.replace(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; best effort, since the file itself is already in place.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------------------
# Generate


def generate(
    *,
    domain: str = "staging.finaiflow.test",
    extra_hosts: Sequence[str] = (),
    bind: str = "127.0.0.1",
    http_port: int = 80,
    https_port: int = 443,
    api_image: str = "finaiflow/api:1.0.0",
    rate_limit_rps: int = 20,
    project_name: str = COMPOSE_PROJECT_NAME,
    prometheus_port: int = 9090,
    alertmanager_port: int = 9093,
) -> dict[str, str]:
    """Fresh values for the stack's .env, with newly drawn secrets (what setup.sh did).

    `rate_limit_rps` is nginx's per-client request rate (burst: twice as many). A local staging
    stack sees every client at one address (Docker's port proxy), so it wants a high one.
    `project_name` and the ports let several stacks share one Docker engine (tests, previews).
    """
    if isinstance(extra_hosts, str):
        # A str is a Sequence[str]; iterating it would add one "host" per character.
        raise TypeError("extra_hosts must be a sequence of host names, not a str")
    domain = domain.strip().lower()
    if not _is_hostname(domain):
        raise UsageError(f"invalid domain {domain!r}", hint="give a host name like app.example.org")
    hosts = [domain]
    for host in extra_hosts:
        host = host.strip().lower()
        if not (_is_hostname(host) or _is_ip(host)):
            raise UsageError(f"invalid extra host {host!r}", hint="give a host name or IP address")
        if host not in hosts:
            hosts.append(host)
    if not _is_ip(bind):
        raise UsageError(f"invalid bind address {bind!r}", hint="use 127.0.0.1 locally, 0.0.0.0 on a VPS")
    for name, port in (("http_port", http_port), ("https_port", https_port)):
        if isinstance(port, bool) or not 1 <= port <= 65535:
            raise UsageError(f"invalid {name} {port!r}", hint="use a port between 1 and 65535")
    if http_port == https_port:
        raise UsageError("http_port and https_port must differ")
    if not _PROJECT_RE.fullmatch(project_name):
        raise UsageError(f"invalid project name {project_name!r}",
                         hint="lowercase letters, digits, dashes, underscores; not starting with a dash")
    taken: list[int] = [http_port, https_port]
    for name, port in (("prometheus_port", prometheus_port), ("alertmanager_port", alertmanager_port)):
        if isinstance(port, bool) or not 1 <= port <= 65535 or port in taken:
            raise UsageError(f"invalid {name} {port!r}", hint="a free port from 1 to 65535, not another's")
        taken.append(port)
    if isinstance(rate_limit_rps, bool) or rate_limit_rps < 1:
        raise UsageError(f"invalid rate limit {rate_limit_rps!r}", hint="give requests per second, >= 1")
    if not _IMAGE_RE.fullmatch(api_image):
        raise UsageError(f"invalid api image {api_image!r}", hint="e.g. finaiflow/api:1.0.0")

    secret_key = _strong_token(64)
    # token_urlsafe only uses [A-Za-z0-9_-], so the passwords go into URLs unescaped.
    postgres_password = _strong_token(32)
    redis_password = _strong_token(32)
    return {
        "SECRET_KEY": secret_key,
        "ENVIRONMENT": "production",
        "POSTGRES_USER": POSTGRES_USER,
        "POSTGRES_PASSWORD": postgres_password,
        "POSTGRES_DB": POSTGRES_DB,
        "DATABASE_URL": (f"{DB_SCHEME}://{POSTGRES_USER}:{postgres_password}@postgres:5432/{POSTGRES_DB}"),
        "REDIS_PASSWORD": redis_password,
        "REDIS_URL": f"redis://:{redis_password}@redis:6379/0",
        "DOMAIN": domain,
        "ALLOWED_HOSTS": ",".join(hosts),
        "CORS_ORIGINS": f"https://{domain}",
        "NGINX_BIND": bind,
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(https_port),
        "RATE_LIMIT_RPS": str(rate_limit_rps),
        "RATE_LIMIT_BURST": str(2 * rate_limit_rps),
        "API_IMAGE": api_image,
        "PROMETHEUS_PORT": str(prometheus_port),
        "ALERTMANAGER_PORT": str(alertmanager_port),
        "COMPOSE_PROJECT_NAME": project_name,
    }


def alert_receivers(settings: Mapping[str, str], *, name: Callable[[str], str] = str) -> dict[str, str]:
    """Alert receiver settings (ALERT_RECEIVER_KEYS) to add to a generated .env, in a stable order.

    They must pass the rules `check` applies to them: the first problem is a UsageError in which
    each key is called name(key) (the CLI passes its option names). No value is ever in it: the
    webhook URLs carry tokens, like the password.
    """
    unknown = sorted(set(settings) - set(ALERT_RECEIVER_KEYS))
    if unknown:
        raise UsageError(f"not an alert receiver setting: {', '.join(unknown)}",
                         hint=f"use {', '.join(ALERT_RECEIVER_KEYS)}")
    for key, value in settings.items():
        if not value.strip():
            # An unset shell variable expands to "": say so rather than write a .env without the receiver.
            raise UsageError(f"{name(key)} is empty", hint="give a value or leave it out")
    problems = _alerting_problems(settings)
    if problems:
        key, problem = problems[0]
        message = _ALERT_KEY_RE.sub(lambda m: name(m[0]) if m[0] in ALERT_KEYS else m[0], f"{key} {problem}")
        raise UsageError(message, hint=_RECEIVER_HINTS.get(key))
    return {key: settings[key] for key in ALERT_RECEIVER_KEYS if key in settings}


def _strong_token(nbytes: int) -> str:
    # A random token can, rarely, contain a marker word such as "your"; draw again so a
    # freshly generated file always passes check().
    for _ in range(100):
        token = secrets.token_urlsafe(nbytes)
        if not _secret_key_problems(token) and not _password_problems(token):
            return token
    raise RuntimeError("could not draw a token that passes the strength checks")


# ---------------------------------------------------------------------------------------
# Check


def check(env: EnvFile) -> list[Finding]:
    """Production problems in env, in a stable order; no finding contains a value."""
    values = env.values
    findings: list[Finding] = []

    def add(key: str, problems: Sequence[str]) -> None:
        findings.extend(Finding(key, problem) for problem in problems)

    if env.mode & 0o077:
        add("(file)", [f"mode {env.mode:04o}, must be 0600 (group/other can read secrets)"])

    environment = values.get("ENVIRONMENT")
    if environment is None:
        add("ENVIRONMENT", ["missing; must be production"])
    elif environment != "production":
        add("ENVIRONMENT", ["must be production"])

    add("SECRET_KEY", _required(values, "SECRET_KEY", _secret_key_problems))
    add("DATABASE_URL", _database_url_problems(values))
    add("POSTGRES_PASSWORD", _required(values, "POSTGRES_PASSWORD", _password_problems))
    if "REDIS_PASSWORD" in values:
        add("REDIS_PASSWORD", _password_problems(values["REDIS_PASSWORD"]))
    if "REDIS_URL" in values:
        add("REDIS_URL", _redis_url_problems(values))
    if "DOMAIN" in values:
        add("DOMAIN", _domain_problems(values["DOMAIN"]))
    add("ALLOWED_HOSTS", _allowed_hosts_problems(values))
    add("CORS_ORIGINS", _cors_problems(values))
    if "NGINX_BIND" in values and not _is_ip(values["NGINX_BIND"]):
        add("NGINX_BIND", ["is not an IP address"])
    for key in ("HTTP_PORT", "HTTPS_PORT"):
        if key in values and not _is_port(values[key]):
            add(key, ["is not a port number (1-65535)"])
    for key, problem in _alerting_problems(values):
        add(key, [problem])
    return findings


def _alerting_problems(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """Alertmanager's receivers and intervals. Unset is fine (no receiver: `check` warns that
    nobody is paged); a value that is set must work, or Alertmanager refuses to start."""
    problems: list[tuple[str, str]] = []
    for key in ALERT_URL_KEYS:
        url = values.get(key, "")
        if url:
            parts = _split_url(url)
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append((key, "is not an http(s) URL with a host"))
    if values.get("ALERT_WARNING_WEBHOOK_URL") and not values.get("ALERT_WEBHOOK_URL"):
        problems.append(("ALERT_WEBHOOK_URL", "missing while ALERT_WARNING_WEBHOOK_URL is set: "
                                              "critical alerts would page nobody"))
    smtp = {key: values.get(key, "") for key in ALERT_SMTP_KEYS}
    if smtp["ALERT_SMTP_HOST"]:
        host, _, port = smtp["ALERT_SMTP_HOST"].rpartition(":")
        if not host or not _is_port(port):
            problems.append(("ALERT_SMTP_HOST", "must be host:port (e.g. smtp.example.com:587)"))
        for key in ("ALERT_SMTP_FROM", "ALERT_SMTP_TO"):
            if "@" not in smtp[key]:
                problems.append((key, "missing or not an e-mail address (ALERT_SMTP_HOST is set)"))
        if smtp["ALERT_SMTP_USERNAME"] and not smtp["ALERT_SMTP_PASSWORD"]:
            problems.append(("ALERT_SMTP_PASSWORD", "missing while ALERT_SMTP_USERNAME is set"))
    elif any(smtp.values()):
        given = ", ".join(k for k, v in smtp.items() if v)
        problems.append(("ALERT_SMTP_HOST", f"missing while {given} is set: no e-mail would be sent"))
    for key in ALERT_INTERVAL_KEYS:
        if key in values and not _DURATION_RE.fullmatch(values[key]):
            problems.append((key, "is not a duration such as 30s, 5m or 4h"))
    return problems


def _required(values: Mapping[str, str], key: str, rules: _Rules) -> list[str]:
    value = values.get(key)
    return ["missing"] if value is None else rules(value)


def _looks_placeholder(value: str) -> bool:
    folded = value.casefold()
    return folded in _KNOWN_DEFAULTS or any(marker in folded for marker in _PLACEHOLDER_MARKERS)


def _shannon_bits(value: str) -> float:
    """Estimated entropy: empirical Shannon entropy per character times the length."""
    n = len(value)
    if n == 0:
        return 0.0
    per_char = -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    return per_char * n


def _secret_key_problems(value: str) -> list[str]:
    if not value:
        return ["is empty"]
    problems = []
    if _looks_placeholder(value):
        problems.append("looks like a placeholder or default, generate a random one")
    if len(value) < SECRET_KEY_MIN_LEN:
        problems.append(f"shorter than {SECRET_KEY_MIN_LEN} characters")
    if len(set(value)) < MIN_DISTINCT_CHARS:
        problems.append(f"has fewer than {MIN_DISTINCT_CHARS} distinct characters")
    if _shannon_bits(value) < SECRET_KEY_MIN_BITS:
        problems.append(f"estimated entropy below {SECRET_KEY_MIN_BITS:.0f} bits")
    return problems


def _password_problems(value: str) -> list[str]:
    if not value:
        return ["is empty"]
    problems = []
    if _looks_placeholder(value):
        problems.append("is a known default or placeholder")
    if len(value) < PASSWORD_MIN_LEN:
        problems.append(f"shorter than {PASSWORD_MIN_LEN} characters")
    if len(set(value)) < MIN_DISTINCT_CHARS:
        problems.append(f"has fewer than {MIN_DISTINCT_CHARS} distinct characters")
    return problems


def _split_url(value: str) -> SplitResult | None:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return None
    return parts


def _database_url_problems(values: Mapping[str, str]) -> list[str]:
    url = values.get("DATABASE_URL")
    if url is None:
        return ["missing"]
    # Compare the raw prefix: urlsplit lowercases the scheme, and we want it exact.
    if url.partition("://")[0] != DB_SCHEME or "://" not in url:
        return [f"scheme must be {DB_SCHEME}"]
    parts = _split_url(url)
    if parts is None:
        return ["is not a valid URL (check the host and port)"]
    problems = []
    user = unquote(parts.username) if parts.username else ""
    if not user:
        problems.append("has no user")
    if not parts.hostname:
        problems.append("has no host")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        problems.append("has no database name")
    password = unquote(parts.password) if parts.password is not None else ""
    problems.extend(f"password {p}" for p in _password_problems(password))
    expected = values.get("POSTGRES_PASSWORD")
    if expected is not None and password != expected:
        problems.append("password does not match POSTGRES_PASSWORD (the api could not log in)")
    if "POSTGRES_USER" in values and user != values["POSTGRES_USER"]:
        problems.append("user does not match POSTGRES_USER")
    if "POSTGRES_DB" in values and database != values["POSTGRES_DB"]:
        problems.append("database name does not match POSTGRES_DB")
    return problems


def _redis_url_problems(values: Mapping[str, str]) -> list[str]:
    url = values["REDIS_URL"]
    if url.partition("://")[0] not in ("redis", "rediss") or "://" not in url:
        return ["scheme must be redis or rediss"]
    parts = _split_url(url)
    if parts is None:
        return ["is not a valid URL (check the host and port)"]
    problems = []
    if not parts.hostname:
        problems.append("has no host")
    password = unquote(parts.password) if parts.password is not None else None
    if "REDIS_PASSWORD" in values:
        if password != values["REDIS_PASSWORD"]:
            problems.append("does not use REDIS_PASSWORD")
    elif password is not None:
        problems.extend(f"password {p}" for p in _password_problems(password))
    return problems


def _is_placeholder_domain(host: str) -> bool:
    host = host.lower()
    return any(host == p or host.endswith("." + p) for p in _PLACEHOLDER_DOMAINS)


def _domain_problems(domain: str) -> list[str]:
    if not _is_hostname(domain):
        return ["is not a valid hostname"]
    if _is_placeholder_domain(domain):
        return ["is a placeholder domain"]
    return []


def _allowed_hosts_problems(values: Mapping[str, str]) -> list[str]:
    raw = values.get("ALLOWED_HOSTS")
    if raw is None:
        return ["missing"]
    if not raw.strip():
        return ["is empty"]
    problems = []
    hosts = [h.strip() for h in raw.split(",")]
    for index, host in enumerate(hosts, start=1):
        # Entries are named by position: findings never carry values.
        if not host:
            problems.append(f"entry {index} is empty")
        elif "*" in host:
            problems.append(f"entry {index} is a wildcard; list the real host names")
        elif not (_is_hostname(host) or _is_ip(host)):
            problems.append(f"entry {index} is not a valid hostname or IP address")
        elif _is_placeholder_domain(host):
            problems.append(f"entry {index} is a placeholder domain")
    domain = values.get("DOMAIN")
    if domain and domain.lower() not in {h.lower() for h in hosts}:
        # The api answers 400 to /api requests whose Host is not listed.
        problems.append("does not include DOMAIN")
    return problems


def _cors_problems(values: Mapping[str, str]) -> list[str]:
    raw = values.get("CORS_ORIGINS")
    if raw is None:
        return ["missing"]
    if not raw.strip():
        return ["is empty"]
    problems = []
    for index, origin in enumerate((o.strip() for o in raw.split(",")), start=1):
        if not origin:
            problems.append(f"entry {index} is empty")
            continue
        if "*" in origin:
            problems.append(f"entry {index} is a wildcard; list the real origins")
            continue
        parts = _split_url(origin)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"entry {index} is not an origin (https://host[:port])")
        elif not origin.startswith("https://"):
            problems.append(f"entry {index} must use https://")
        elif parts.path or parts.query or parts.fragment or parts.username is not None:
            # Browsers send the Origin without path or slash; such an entry never matches.
            problems.append(f"entry {index} has a path or extras; an origin is https://host[:port]")
        elif not (_is_hostname(parts.hostname) or _is_ip(parts.hostname)):
            problems.append(f"entry {index} has an invalid host")
        elif _is_placeholder_domain(parts.hostname):
            problems.append(f"entry {index} is a placeholder domain")
    return problems


def _is_hostname(value: str) -> bool:
    if not value or len(value) > 253:
        return False
    labels = value.split(".")
    # An all-numeric last label is no TLD: "1.2.3.4" is an IP, not a name.
    return all(_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _is_ip(value: str) -> bool:
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]  # host lists write IPv6 addresses in brackets
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_port(value: str) -> bool:
    return value.isascii() and value.isdigit() and 1 <= int(value) <= 65535


# ---------------------------------------------------------------------------------------
# Redact


def is_secret(key: str, value: str) -> bool:
    """Whether the variable holds a secret: by its name, or a URL with a password in it."""
    return bool(value) and (bool(_SECRET_NAME_RE.search(key))
                            or bool(_URL_NAME_RE.search(key) and _url_password(value)))


def redact(text: str, env: Mapping[str, str]) -> str:
    """Replace every secret value of env found in text with ***."""
    found: set[str] = set()
    for key, value in env.items():
        if not value:
            continue
        if _SECRET_NAME_RE.search(key):
            found.add(value)
        if _URL_NAME_RE.search(key):
            password = _url_password(value)
            if password:
                found.update({password, unquote(password)})
    found.discard("")
    if not found:
        return text
    # One pass, longest first: a secret that is part of another can't leave a fragment.
    pattern = re.compile("|".join(re.escape(s) for s in sorted(found, key=len, reverse=True)))
    return pattern.sub("***", text)


def _url_password(url: str) -> str | None:
    """The password in url's userinfo, still percent-encoded, or None."""
    try:
        return urlsplit(url).password
    except ValueError:
        # urlsplit rejects some netlocs (bad IPv6 brackets); the password must still go.
        match = _URL_PASSWORD_RE.search(url)
        return match[1] if match else None
