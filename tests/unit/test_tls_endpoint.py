"""The defaults `tls check`, `tls install` and `tls schedule` take from the stack, in the library."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from finaiflow_ops.errors import UsageError
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target
from finaiflow_ops.tls import AcmeOptions, endpoint


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    (tmp_path / ".env").write_text("DOMAIN=app.example.org\nALLOWED_HOSTS=127.0.0.1,www.app.example.org\n")
    return Stack(Target.parse("local://"), str(tmp_path))


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What check_endpoint was asked, with nginx publishing https on 8443 and http on 8080."""
    seen: dict[str, Any] = {}
    published = {"https": "https://127.0.0.1:8443", "http": "http://127.0.0.1:8080"}
    monkeypatch.setattr(endpoint, "published_url", lambda _stack, scheme: published.get(scheme))
    monkeypatch.setattr(endpoint, "read_installed", lambda _stack: SimpleNamespace(fingerprint="ab:cd"))

    def check_endpoint(url: str, **kwargs: Any) -> None:
        seen.update(kwargs, url=url)

    monkeypatch.setattr(endpoint, "check_endpoint", check_endpoint)
    seen["published"] = published
    return seen


def test_the_stacks_own_endpoint_is_checked_by_default(stack: Stack, checked: dict[str, Any]) -> None:
    endpoint.check_stack_endpoint(stack)
    assert checked["url"] == "https://127.0.0.1:8443" and checked["http_url"] == "http://127.0.0.1:8080"
    assert checked["servername"] == "app.example.org"
    assert checked["installed_fingerprint"] == "ab:cd"  # the stack's own: compared with what it installed
    assert checked["verify"] is True and checked["min_days"] is None  # the expiry margin


def test_a_given_url_is_checked_as_it_is(stack: Stack, checked: dict[str, Any]) -> None:
    endpoint.check_stack_endpoint(stack, "https://other.example", min_days=30)
    assert checked["url"] == "https://other.example"
    assert checked["http_url"] is None and checked["servername"] is None
    assert checked["installed_fingerprint"] is None and checked["min_days"] == 30
    endpoint.check_stack_endpoint(stack, "https://other.example", installed=True, servername="x.example")
    assert checked["installed_fingerprint"] == "ab:cd" and checked["servername"] == "x.example"


def test_given_values_win_over_the_stacks(stack: Stack, checked: dict[str, Any]) -> None:
    endpoint.check_stack_endpoint(stack, servername="www.app.example.org", http_url="http://h:81",
                                  installed=False, verify=False)
    assert checked["servername"] == "www.app.example.org" and checked["http_url"] == "http://h:81"
    assert checked["installed_fingerprint"] is None and checked["verify"] is False


def test_no_published_https_port_is_a_usage_error(stack: Stack, checked: dict[str, Any]) -> None:
    checked["published"].clear()
    with pytest.raises(UsageError, match="publishes no HTTPS port"):
        endpoint.check_stack_endpoint(stack)


def test_the_lineage_defaults_to_the_stacks_first_domain(stack: Stack) -> None:
    assert AcmeOptions().lineage(stack) == f"{stack.project_dir}/letsencrypt/config/live/app.example.org"
    assert AcmeOptions(acme_dir="/etc/le").lineage(stack, ["b.example"]) == "/etc/le/config/live/b.example"


def test_the_ops_command_given_is_the_one_scheduled(stack: Stack) -> None:
    assert AcmeOptions(ops_command="/opt/ops/bin/finaiflow-ops").ops(stack) == "/opt/ops/bin/finaiflow-ops"
    assert AcmeOptions().ops(stack).endswith("finaiflow-ops")
