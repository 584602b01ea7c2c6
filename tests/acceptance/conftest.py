"""Steps shared by every checklist feature: Given the target, When a request, Then facts.

Then steps only assert, with a message naming the target and the value seen.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pytest_bdd import given, parsers, then, when

from finaiflow_ops import http
from finaiflow_ops.stack import Stack


@dataclass(frozen=True)
class Staging:
    """The target under acceptance: its stack and the HTTPS URL it serves at."""

    stack: Stack
    base_url: str

    @property
    def name(self) -> str:
        return str(self.stack.target)

    @property
    def servername(self) -> str:
        """The site's name every request asks for: the stack's DOMAIN when --base-url names an
        address (the api refuses an address as Host, the certificate is for the name), else the
        URL's own host name."""
        asked = http.servername_for(self.base_url, self.stack.env.get("DOMAIN"))
        return asked or urlsplit(self.base_url).hostname or ""

    def client(self, *, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client that connects to base_url and asks for `servername` (Host and SNI).
        Not verified: the certificate is the SSL item's business, not every request's."""
        return http.client(self.base_url, servername=self.servername, verify=False, timeout=timeout)


@given("the staging target", target_fixture="staging")
def the_staging_target(stack: Stack, base_url: str) -> Staging:
    return Staging(stack, base_url)


@when(parsers.parse('I request "{path}" over HTTPS'), target_fixture="response")
def request_https(staging: Staging, path: str) -> httpx.Response:
    with staging.client() as client:
        return client.get(f"{staging.base_url}{path}")


@when(parsers.parse('I request "{path}" over plain HTTP'), target_fixture="response")
def request_http(staging: Staging, path: str) -> httpx.Response:
    http_url = next((u for u in staging.stack.status().urls
                     if u.startswith("http://") and ":9090" not in u), None)
    assert http_url, f"{staging.name}: nginx publishes no plain HTTP port"
    # Asking for the site's name, as a browser sent to http://DOMAIN would: the redirect goes there.
    with http.client(http_url, servername=staging.servername) as client:
        return client.get(f"{http_url.rstrip('/')}{path}")


@then(parsers.parse("the answer is {status:d}"))
def answer_is(staging: Staging, response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (
        f"{staging.name}: {response.request.url} answered {response.status_code}, expected {status}: "
        f"{response.text[:200]}"
    )


@then(parsers.parse('the health report says the {part} is "{state}"'))
def health_part(staging: Staging, response: httpx.Response, part: str, state: str) -> None:
    key = {"database": "database", "cache": "cache"}[part]
    seen = response.json().get(key)
    assert seen == state, f"{staging.name}: /health reports {part} {seen!r}, expected {state!r}"


@then(parsers.parse('I am redirected to "{path}" over HTTPS'))
def redirected(staging: Staging, response: httpx.Response, path: str) -> None:
    location = response.headers.get("location", "")
    redirected = location.startswith("https://") and location.endswith(path)
    assert response.status_code in (301, 308) and redirected, (
        f"{staging.name}: plain HTTP answered {response.status_code} with location {location!r}"
    )


@then("every service has a running container that Docker reports healthy")
def all_healthy(staging: Staging) -> None:
    status = staging.stack.status()
    sick = [f"{s.name} ({', '.join(f'{c.state}/{c.health}' for c in s.containers) or 'no container'})"
            for s in status.services if not s.healthy]
    assert not sick, f"{staging.name}: not healthy: {'; '.join(sick)}"


@then(parsers.parse('the api answers its metrics with "{metric}" inside the network'))
def api_metrics(staging: Staging, metric: str) -> None:
    result = staging.stack.exec("prometheus", ["curl", "-fsS", "http://api:8000/metrics"], check=False)
    assert result.ok and metric in result.stdout, (
        f"{staging.name}: api /metrics exit {result.exit_status}, {metric} "
        f"{'present' if metric in result.stdout else 'absent'}: {result.stderr[:200]}"
    )


@then("Prometheus answers its own metrics on the loopback")
def prometheus_metrics(staging: Staging) -> None:
    result = staging.stack.exec("prometheus", ["curl", "-fsS", "http://127.0.0.1:9090/metrics"], check=False)
    assert result.ok and "prometheus_build_info" in result.stdout, (
        f"{staging.name}: Prometheus /metrics exit {result.exit_status}: {result.stderr[:200]}"
    )


@then("Prometheus reports every api target up")
def api_targets_up(staging: Staging) -> None:
    targets = _api_targets_after_a_scrape(staging)
    down = [f"{t['labels']['instance']}={t['health']} {t.get('lastError', '')}".strip()
            for t in targets if t["health"] != "up"]
    assert targets and not down, f"{staging.name}: api targets {down or 'none found'}"


def _api_targets_after_a_scrape(staging: Staging, timeout: float = 45.0) -> list[dict[str, Any]]:
    """Prometheus' api targets once all are up, or as they are when the deadline passes.

    Bounded convergence, not leniency: right after a deploy Prometheus still lists the removed
    containers until its DNS discovery refreshes (10 s), and new ones stay "unknown" until their
    first scrape. A target still not up at the deadline fails the step.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = staging.stack.exec(
            "prometheus", ["curl", "-fsS", "http://127.0.0.1:9090/api/v1/targets?state=active"], check=False)
        assert result.ok, f"{staging.name}: Prometheus targets API exit {result.exit_status}"
        active = json.loads(result.stdout)["data"]["activeTargets"]
        targets = [t for t in active if t["labels"]["job"] == "api"]
        if (targets and all(t["health"] == "up" for t in targets)) or time.monotonic() > deadline:
            return targets
        time.sleep(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    remote = not config.getoption("--target").startswith("local://")
    for item in items:
        item.add_marker(pytest.mark.integration)
        if remote and "destructive" in item.keywords and not config.getoption("--allow-destructive"):
            item.add_marker(pytest.mark.skip(
                reason="changes the target: pass --allow-destructive to run it on a remote target"))


# -- the checklist summary: one line per checklist item (feature), pass or fail and why -------------

_outcomes: dict[str, list[tuple[str, str, str]]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        # pytest-bdd documents each scenario test as "<feature file>: <scenario name>".
        doc = getattr(getattr(item, "obj", None), "__doc__", "") or item.nodeid
        feature, _, scenario = doc.partition(": ")
        reason = ""
        if report.failed:
            lines = [ln for ln in str(report.longrepr).splitlines() if ln.startswith("E ")]
            reason = lines[0][1:].strip() if lines else str(report.longrepr).splitlines()[-1]
        _outcomes.setdefault(Path(feature).stem, []).append(
            (scenario or item.name, report.outcome, reason))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    terminalreporter.section("deployment checklist")
    for feature, results in sorted(_outcomes.items()):
        failed = [r for r in results if r[1] == "failed"]
        mark = "FAIL" if failed else "pass"
        passed = len(results) - len(failed)
        terminalreporter.write_line(f"[{mark}] {feature}: {passed}/{len(results)} scenarios")
        for name, _, reason in failed:
            terminalreporter.write_line(f"       {name}: {reason}")
