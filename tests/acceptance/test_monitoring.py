"""Checklist: monitoring active (features/monitoring.feature)."""

from __future__ import annotations

import pytest
from pytest_bdd import parsers, scenarios, then

from finaiflow_ops import monitoring
from finaiflow_ops.monitoring import MonitoringStatus, Prometheus
from finaiflow_ops.stack import Stack
from tests.acceptance.conftest import Staging

scenarios("monitoring.feature")

JOBS = {"the api": "api", "the ops exporter": "ops"}


@pytest.fixture(scope="module")
def prometheus_view(stack: Stack) -> MonitoringStatus:
    """Prometheus' view, taken once for the item's scenarios (targets, rules, alerts): its wait
    for every target up (at most 30 s) is paid once, not once per scenario, when one stays down."""
    return monitoring.status(stack, scraped_within=30)


@then("Prometheus reports every target up, the api, the ops exporter and itself included")
def every_target_up(staging: Staging, prometheus_view: MonitoringStatus) -> None:
    problems = [*prometheus_view.targets_down, *(f"no {job} target" for job in prometheus_view.missing_jobs)]
    assert not problems, f"{staging.name}: Prometheus targets not up: {'; '.join(problems)}"


@then("Prometheus has loaded every required alert rule and evaluates them without error")
def rules_loaded(staging: Staging, prometheus_view: MonitoringStatus) -> None:
    assert not prometheus_view.missing_rules, (
        f"{staging.name}: alert rules not loaded: {', '.join(prometheus_view.missing_rules)}")
    assert not prometheus_view.broken_rules, (
        f"{staging.name}: alert rules failing to evaluate: {'; '.join(prometheus_view.broken_rules)}")


@then("no critical alert is firing")
def no_critical_alert(staging: Staging, prometheus_view: MonitoringStatus) -> None:
    firing = [f"{a.name} ({a.summary})" for a in prometheus_view.firing("critical")]
    assert not firing, f"{staging.name}: critical alerts firing: {'; '.join(firing)}"


@then("Alertmanager has its configuration, Prometheus sends to it, no notification failed in 1 h")
def alerts_delivered(staging: Staging) -> None:
    status, detail = monitoring.alerting_check(staging.stack, Prometheus.of(staging.stack))
    assert status != "fail", f"{staging.name}: alerting: {detail}"


@then(parsers.parse('Prometheus scraped "{series}" from {source} within the last minute'))
def series_fresh(staging: Staging, series: str, source: str) -> None:
    selector = f'{series}{{job="{JOBS[source]}"}}'
    age = Prometheus.of(staging.stack).value(f"min(time() - timestamp({selector}))")
    assert age is not None and age < monitoring.FRESH_SECONDS, (
        f"{staging.name}: {selector} " + ("absent" if age is None else f"last scraped {age:.0f} s ago"))
