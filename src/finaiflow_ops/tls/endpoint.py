"""The stack's own HTTPS endpoint, checked with what the stack says about it (`tls check`)."""

from __future__ import annotations

from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import Stack
from finaiflow_ops.tls.certs import configured_domains
from finaiflow_ops.tls.check import EndpointReport, check_endpoint
from finaiflow_ops.tls.install import published_url, read_installed

__all__ = ["check_stack_endpoint"]


def check_stack_endpoint(
    stack: Stack,
    url: str | None = None,
    *,
    servername: str | None = None,
    http_url: str | None = None,
    installed: bool | None = None,
    ca_file: str | None = None,
    verify: bool = True,
    min_days: float | None = None,
) -> EndpointReport:
    """`check_endpoint` with the stack's defaults. Without `url`: the HTTPS URL nginx publishes, the
    plain-HTTP one that must redirect, and the stack's first domain as the name to ask for. The
    certificate served is compared with the one installed in the stack when `installed`, by default
    when the URL is the stack's own."""
    own = url is None
    if url is None:
        url = published_url(stack, "https")
        if not url:
            raise UsageError(f"nginx publishes no HTTPS port on {stack.target}",
                             hint="start the stack, or give the URL to check")
        http_url = http_url or published_url(stack, "http")
        servername = servername or next(iter(configured_domains(stack.env)), None)
    compare = own if installed is None else installed
    fingerprint = read_installed(stack).fingerprint if compare else None
    return check_endpoint(url, servername=servername, ca_file=ca_file, verify=verify,
                          installed_fingerprint=fingerprint, http_url=http_url, min_days=min_days)
