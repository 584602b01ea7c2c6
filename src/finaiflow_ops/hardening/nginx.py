"""nginx: no version in responses, security headers on real responses (error pages too), a rate limit.

The configuration is read as nginx resolved it (`nginx -T` in the nginx container), and the
headers from real responses through the published HTTPS port: a normal page and a 404, because
`add_header` without `always` silently skips error responses. The configuration lives in the
nginx image (stack/nginx): these rules report what to change; they do not edit it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops import http
from finaiflow_ops.hardening.base import (
    Context,
    Manual,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
)

__all__ = ["NginxHeadersRule", "NginxRateLimitRule", "NginxServerTokensRule", "Response", "directives",
           "missing_headers"]

_HINT = "edit the nginx configuration (stack/nginx), rebuild the image and recreate nginx"


@dataclass(frozen=True)
class Response:
    path: str
    status: int
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True)
class NginxState:
    config: str  # nginx -T, comments removed
    responses: tuple[Response, ...]


def directives(config: str, name: str) -> list[str]:
    """The arguments of every `name ...;` directive in an nginx configuration."""
    return [m.group(1).strip() for m in re.finditer(rf"(?:^|[;{{}}\s]){name}\s+([^;]*);", config)]


def _strip_comments(text: str) -> str:
    """The configuration without `#` comments (a # inside quotes is text, not a comment)."""
    lines = []
    for line in text.splitlines():
        quote = ""
        for i, char in enumerate(line):
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#":
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def missing_headers(headers: dict[str, str]) -> list[str]:
    """The security headers a response lacks."""
    missing = []
    if not headers.get("strict-transport-security", "").startswith("max-age="):
        missing.append("Strict-Transport-Security")
    if headers.get("x-content-type-options", "").lower() != "nosniff":
        missing.append("X-Content-Type-Options: nosniff")
    csp = headers.get("content-security-policy", "")
    if not headers.get("x-frame-options") and "frame-ancestors" not in csp:
        missing.append("X-Frame-Options (or CSP frame-ancestors)")
    if not headers.get("referrer-policy"):
        missing.append("Referrer-Policy")
    return missing


def _fetch(base_url: str, domain: str | None = None) -> tuple[Response, ...]:
    probe = f"/finaiflow-harden-{secrets.token_hex(4)}"  # nothing serves it: a real 404
    found = []
    # Headers, not trust: not verified. DOMAIN is asked for when the URL is an address, so these
    # are the responses of the site itself (finaiflow_ops.http).
    with http.client(base_url, domain=domain, verify=False, timeout=10) as client:
        for path in ("/", probe):
            r = client.get(base_url + path)
            found.append(Response(path, r.status_code, {k.lower(): v for k, v in r.headers.items()}))
    return tuple(found)


class _NginxRule(Rule[NginxState]):
    fetch_responses = False

    def facts(self, ctx: Context) -> NginxState:
        stack = ctx.need_stack()
        ctx.nginx_container()  # NotApplicable when nginx is not running
        config = _strip_comments(stack.exec("nginx", ["nginx", "-T"]).stdout)
        if not self.fetch_responses:
            return NginxState(config, ())
        import httpx  # here: the CLI starts without it

        base = stack.base_url()
        try:
            return NginxState(config, _fetch(base, stack.env.get("DOMAIN")))
        except httpx.HTTPError as exc:
            raise NotApplicable(f"cannot reach {base} from here ({type(exc).__name__})") from exc

    def plan(self, ctx: Context, state: NginxState) -> Sequence[Operation]:
        raise Manual(_HINT)


class NginxServerTokensRule(_NginxRule):
    id = "nginx.server-tokens"
    title = "nginx does not announce its version"
    severity = Severity.LOW
    fetch_responses = True

    def evaluate(self, ctx: Context, state: NginxState) -> Verdict:
        values = directives(state.config, "server_tokens")
        problems = [] if values and all(v == "off" for v in values) else [
            f"server_tokens is {', '.join(values) or 'unset (on)'} (wanted off)"]
        for r in state.responses:
            server = r.headers.get("server", "")
            if re.search(r"\d", server):
                problems.append(f"{r.status} {r.path} sends Server: {server}")
        return Verdict(tuple(problems), "nginx -T, response headers", "server_tokens off")


class NginxHeadersRule(_NginxRule):
    id = "nginx.headers"
    title = "security headers on every response, error pages included"
    severity = Severity.MEDIUM
    fetch_responses = True

    def evaluate(self, ctx: Context, state: NginxState) -> Verdict:
        problems = [f"{r.status} {r.path} lacks {', '.join(missing)}"
                    for r in state.responses if (missing := missing_headers(r.headers))]
        seen = ", ".join(f"{r.status} {r.path}" for r in state.responses)
        return Verdict(tuple(problems), "HTTPS responses",
                       f"HSTS, nosniff, frame, referrer headers on {seen}")


class NginxRateLimitRule(_NginxRule):
    id = "nginx.rate-limit"
    title = "nginx rate-limits requests (limit_req), which the fail2ban jail reads"
    severity = Severity.MEDIUM

    def evaluate(self, ctx: Context, state: NginxState) -> Verdict:
        zones = directives(state.config, "limit_req_zone")
        used = directives(state.config, "limit_req")
        problems = []
        if not zones:
            problems.append("no limit_req_zone")
        if not used:
            problems.append("no limit_req in any server or location")
        rates = ", ".join(re.findall(r"rate=(\S+)", " ".join(zones)))
        return Verdict(tuple(problems), "nginx -T", f"limit_req zones at {rates or '?'}, used {len(used)}x")
