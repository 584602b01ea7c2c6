"""HTTP clients for the stack's public URL: the site's name (DOMAIN) asked for, wherever it connects.

A base URL often names an address (`https://203.0.113.7`, `https://127.0.0.1`): what nginx
publishes, or a staging host not in DNS yet. A request to it would carry the address as Host
and, over TLS, no SNI at all (clients never send an IP address as SNI). The api refuses /api/*
for a Host outside ALLOWED_HOSTS ("Invalid host header"), and a certificate is for a name, so
such requests test something no real client does. Here they carry the stack's DOMAIN as Host
and SNI while still connecting to the address, like `curl --resolve DOMAIN:443:ADDRESS`; the
certificate is then verified against DOMAIN too (httpcore hands the SNI name to the TLS layer as
`server_hostname`, which is also the name Python's hostname check uses).

Only an address is replaced. A URL that names a host (`https://www.example.org`) is asked for
as it is: that name is the virtual host the caller chose to test, and quietly swapping it for
DOMAIN would let a check pass for a name that is not served right (not in ALLOWED_HOSTS, not on
the certificate). Callers that must ask for one name whatever the URL says (`tls check
--servername`) pass it as `servername`.

    from finaiflow_ops import http

    with http.client(base_url, domain=stack.env.get("DOMAIN")) as c:
        c.post(f"{base_url}/api/v1/tenants", json=...)
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported where a client is made: every command loads this module, few make requests
    import httpx

__all__ = ["client", "host_header", "is_address", "servername_for"]

Verify = bool | str | ssl.SSLContext
RequestHook = Callable[["httpx.Request"], None]


def is_address(host: str) -> bool:
    """Whether `host` (a URL's hostname, brackets removed) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def servername_for(url: str, domain: str | None) -> str | None:
    """The name to ask `url`'s server for instead of its host: `domain` when the URL names an IP
    address, None when the URL's own host name is to be used (or there is no domain to ask for)."""
    host = urlsplit(url).hostname or ""
    domain = (domain or "").strip().lower().rstrip(".")
    if not domain or not is_address(host):
        return None
    return domain


def host_header(servername: str, scheme: str, port: int | None) -> str:
    """The Host header a client of `servername` sends: the port only when not the scheme's default."""
    default = {"https": 443, "http": 80}.get(scheme)
    return servername if port is None or port == default else f"{servername}:{port}"


def client(
    url: str,
    *,
    domain: str | None = None,
    servername: str | None = None,
    verify: Verify = False,
    timeout: float = 10.0,
    follow_redirects: bool = False,
    **kwargs: Any,
) -> httpx.Client:
    """An httpx client whose requests to `url`'s host ask for the site's name (Host and SNI).

    `url` is the stack's public (base) URL; requests may go to any path and port of its host.
    The name is `servername` when given, else `domain` when `url` names an address (see the
    module docstring); with neither, this is a plain client. Requests to any other host (a
    redirect elsewhere) are left alone, and so is a Host header or `sni_hostname` the caller set.
    Other keyword arguments go to httpx.Client (`base_url` too).
    `verify=False` by default, like the rest of the library's probes: a staging certificate is
    often self-signed; pass True, a CA file or an SSLContext to verify (against the name asked for).
    """
    import httpx

    parts = urlsplit(url)
    name = (servername or servername_for(url, domain) or "").strip().lower().rstrip(".")
    hooks: dict[str, list[Callable[..., Any]]] = dict(kwargs.pop("event_hooks", None) or {})
    if name and parts.hostname and name != parts.hostname.lower():
        # A request hook, not a transport: hooks run for every request, redirects included, and
        # whichever transport httpx picks for it (a proxy from the environment too).
        hooks["request"] = [_ask_for(parts.hostname, name), *hooks.get("request", [])]
    return httpx.Client(verify=_ssl_context(verify), timeout=timeout, follow_redirects=follow_redirects,
                        event_hooks=hooks, **kwargs)


def _ask_for(address: str, servername: str) -> RequestHook:
    """The request hook: Host and SNI set to `servername` on requests to `address`."""
    target = _normal(address)

    def hook(request: httpx.Request) -> None:
        if _normal(request.url.host) != target:
            return
        # httpx fills Host in from the URL when the caller did not: only that default is replaced,
        # so a test that sends a deliberate Host keeps it.
        sent = request.headers.get("host", "")
        if _normal(_host_of(sent)) == target:
            request.headers["Host"] = host_header(servername, request.url.scheme, request.url.port)
        if request.url.scheme == "https":
            request.extensions.setdefault("sni_hostname", servername)

    return hook


def _host_of(header: str) -> str:
    """The host part of a Host header: port and IPv6 brackets dropped."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _normal(host: str) -> str:
    """One spelling per host, so that `::1` and `0:0::1` or `Example.ORG` and `example.org` compare equal."""
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _ssl_context(verify: Verify) -> bool | ssl.SSLContext:
    # httpx deprecates verify=<path>: a CA file becomes the context it would have built.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
