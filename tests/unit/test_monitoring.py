"""Monitoring's pure logic: what counts as a failing check item, the rule and dashboard files
kept in step with the code, and `logs` time handling."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from finaiflow_ops import logs, monitoring
from finaiflow_ops.errors import UsageError
from finaiflow_ops.monitoring import (
    Alert,
    AlertRule,
    AlertState,
    MonitoringStatus,
    RuleHealth,
    ScrapeTarget,
    TargetHealth,
)

STACK = Path(__file__).resolve().parents[2] / "stack"
RULES = STACK / "prometheus" / "rules" / "finaiflow.yml"
RULE_TESTS = STACK / "prometheus" / "tests" / "finaiflow.test.yml"
DASHBOARDS = sorted((STACK / "grafana" / "dashboards").glob("*.json"))


def target(job: str, health: TargetHealth = "up", error: str = "") -> ScrapeTarget:
    return ScrapeTarget(job, f"{job}:1", health, error, "")


def rule(name: str, health: RuleHealth = "ok") -> AlertRule:
    return AlertRule("g", name, "critical", "inactive", health, "boom" if health == "err" else "", 60)


def alert(name: str, severity: str, state: AlertState = "firing") -> Alert:
    return Alert(name, severity, state, f"{name} summary", (("alertname", name),), "")


HEALTHY = MonitoringStatus((target("api"), target("ops"), target("prometheus")),
                           tuple(rule(n) for n in monitoring.REQUIRED_ALERTS), ())


# -- check items from Prometheus' state ---------------------------------------------------------------------


def test_a_healthy_monitoring_status_passes_targets_rules_and_alerts() -> None:
    assert monitoring._targets(HEALTHY) == ("ok", "3 targets up (api, ops, prometheus)")
    assert monitoring._rules(HEALTHY)[0] == "ok"
    assert monitoring._alerts(HEALTHY) == ("ok", "no alert firing")


def test_a_down_or_missing_target_fails_naming_it_and_its_error() -> None:
    mon = MonitoringStatus((target("api", "down", "connection refused"), target("prometheus")), (), ())
    state, detail = monitoring._targets(mon)
    assert state == "fail"
    assert "api api:1 (down: connection refused)" in detail and "no ops target" in detail


def test_missing_or_broken_rules_fail_naming_them() -> None:
    mon = MonitoringStatus((), (rule("ApiDown", "err"),), ())
    state, detail = monitoring._rules(mon)
    assert state == "fail" and "missing alert RedisUnreachable" in detail and "ApiDown: boom" in detail


@pytest.mark.parametrize(("alerts", "state", "named"), [
    ((alert("RedisUnreachable", "critical"),), "fail", "critical firing: RedisUnreachable"),
    ((alert("BackupTooOld", "warning"),), "warn", "warning firing: BackupTooOld"),
    ((alert("ApiDown", "critical", "pending"),), "warn", "critical pending: ApiDown"),
    ((alert("BackupMissing", "warning", "pending"),), "ok", "1 pending: BackupMissing"),
])
def test_only_a_firing_critical_alert_fails_the_check(alerts: tuple[Alert, ...], state: str,
                                                      named: str) -> None:
    got_state, detail = monitoring._alerts(MonitoringStatus((), (), alerts))
    assert got_state == state and named in detail


class FakePrometheus:
    """Answers `value(expr)` by the metric name the expression mentions."""

    def __init__(self, **by_metric: float) -> None:
        self.by_metric = by_metric

    def value(self, expr: str) -> float | None:
        return next((v for name, v in self.by_metric.items() if f"{name}{{" in expr), None)


@pytest.mark.parametrize(("facts", "state", "detail"), [
    ({"finaiflow_backup_last_verified_timestamp_seconds": 3 * 3600, "finaiflow_backups": 2}, "ok",
     "newest verified backup 3.0 h old (2 verified)"),
    ({"finaiflow_backup_last_verified_timestamp_seconds": 27 * 3600}, "fail", "older than 26 h"),
    ({"finaiflow_facts_readable": 1}, "fail", "no verified backup yet: run `finaiflow-ops backup create`"),
    ({"finaiflow_facts_readable": 0}, "fail", "cannot read PROJECT_DIR/backups"),
    ({}, "fail", "no backup facts from the ops exporter"),
])
def test_backup_item_fails_when_the_newest_verified_backup_is_old_missing_or_unknown(
        facts: dict[str, float], state: str, detail: str) -> None:
    got_state, got_detail = monitoring._backup(FakePrometheus(**facts), 26)  # type: ignore[arg-type]
    assert got_state == state and detail in got_detail


def test_metrics_item_takes_one_look_at_the_deadline_and_names_what_is_stale() -> None:
    class Stale:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def value(self, expr: str) -> float | None:
            self.asked.append(expr)
            return 300.0 if "nginx_connections" in expr else None if "probe_success" in expr else 5.0

    prom = Stale()
    state, detail = monitoring._metrics(prom, settle=0)  # type: ignore[arg-type]
    assert state == "fail"
    assert detail == "not scraped: ops exporter absent, nginx (through the ops exporter) 300 s old"
    assert len(prom.asked) == len(monitoring.REQUIRED_SERIES)


def test_metrics_item_passes_when_every_series_is_fresh() -> None:
    prom = FakePrometheus()
    prom.value = lambda expr: 12.0  # type: ignore[method-assign]
    state, detail = monitoring._metrics(prom, settle=0)  # type: ignore[arg-type]
    assert state == "ok" and detail.endswith("metrics scraped within 12 s")


# -- Prometheus' answers, read into typed views ------------------------------------------------------------


def test_targets_are_read_from_the_api_answer() -> None:
    answer = {"labels": {"job": "api", "instance": "10.0.0.5:8000"}, "health": "down",
              "lastError": "connection refused", "lastScrape": "2024-05-01T12:00:00Z", "scrapePool": "api"}
    assert ScrapeTarget.from_json(answer) == ScrapeTarget(
        "api", "10.0.0.5:8000", "down", "connection refused", "2024-05-01T12:00:00Z")
    assert ScrapeTarget.from_json({"labels": {}, "health": "weird"}).health == "unknown"


def test_a_rule_without_a_state_takes_the_state_of_its_alerts() -> None:
    rule_json = {"name": "ApiDown", "labels": {"severity": "critical"}, "health": "ok", "duration": 60,
                 "alerts": [{"state": "pending"}, {"state": "firing"}], "type": "alerting"}
    assert AlertRule.from_json("g", rule_json) == AlertRule(
        "g", "ApiDown", "critical", "firing", "ok", "", 60.0)
    bare = AlertRule.from_json("g", {"name": "X"})
    assert (bare.state, bare.health, bare.severity, bare.for_seconds) == ("inactive", "unknown", "", 0.0)


def test_alerts_are_read_from_the_api_answer() -> None:
    answer = {"labels": {"alertname": "RedisUnreachable", "severity": "critical", "job": "ops"},
              "annotations": {"summary": "Redis is down"}, "state": "firing", "activeAt": "t"}
    assert Alert.from_json(answer) == Alert(
        "RedisUnreachable", "critical", "firing", "Redis is down",
        (("alertname", "RedisUnreachable"), ("job", "ops"), ("severity", "critical")), "t")


def test_wait_scraped_returns_the_targets_as_they_are_at_the_deadline() -> None:
    class Answers(monitoring.Prometheus):
        def __init__(self, *answers: tuple[ScrapeTarget, ...]) -> None:
            self.answers = list(answers)

        def targets(self) -> tuple[ScrapeTarget, ...]:
            return self.answers.pop(0)

    unknown = (target("api", "unknown"),)
    assert Answers(unknown, (target("api"),)).wait_scraped(timeout=0) == unknown
    up = (target("api"),)
    assert Answers((), up).wait_scraped(timeout=60) == up  # no target yet is not "all up"


def test_a_report_fails_only_on_fail_items_and_lists_them() -> None:
    report = monitoring.CheckReport("local://", "p", "https://x", (
        monitoring.CheckItem("health", "fail", "503: cache (Redis) error"),
        monitoring.CheckItem("alerts", "warn", "warning firing: BackupTooOld"),
        monitoring.CheckItem("services", "ok", "6 services")))
    assert not report.ok
    assert report.failing == ("health: 503: cache (Redis) error",)


# -- the rule and test files, kept in step with the code ---------------------------------------------------


def alert_rules() -> dict[str, str]:
    """alert name -> its `for:` window, read from the production rules."""
    text = RULES.read_text()
    return dict(re.findall(r"- alert: (\w+)\n(?:.*\n)*?\s+for: (\S+)", text))


def test_every_required_alert_is_defined_with_a_for_window_of_a_minute_or_more() -> None:
    rules = alert_rules()
    assert set(monitoring.REQUIRED_ALERTS) <= set(rules), set(monitoring.REQUIRED_ALERTS) - set(rules)
    short = {n: f for n, f in rules.items() if not re.fullmatch(r"([1-9]\d*)[mh]", f)}
    assert not short, f"production `for:` windows must stay at a minute or more: {short}"


def test_every_alert_rule_has_a_promtool_test_that_makes_it_fire() -> None:
    tested = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", RULE_TESTS.read_text()))
    assert set(alert_rules()) <= tested, f"alerts never shown firing: {set(alert_rules()) - tested}"


# -- dashboards ---------------------------------------------------------------------------------------------


def panels_of(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["panels"])


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert sorted(uids) == ["finaiflow-api", "finaiflow-backups", "finaiflow-certificates",
                            "finaiflow-deploys"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_the_provisioned_datasource_and_panels_do_not_overlap(path: Path) -> None:
    datasource = STACK / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    provisioned = re.search(r"uid: (\S+)", datasource.read_text())
    assert provisioned
    cells: set[tuple[int, int]] = set()
    ids = []
    for panel in panels_of(path):
        ids.append(panel["id"])
        assert panel["datasource"]["uid"] == provisioned[1], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    assert len(ids) == len(set(ids))


def test_deploys_are_annotations_on_the_traffic_dashboards() -> None:
    for name in ("finaiflow-api", "finaiflow-deploys"):
        board = json.loads((STACK / "grafana" / "dashboards" / f"{name}.json").read_text())
        exprs = [a.get("expr", "") for a in board["annotations"]["list"]]
        assert any("finaiflow_release_last_change_timestamp_seconds" in e for e in exprs), name


# -- logs ---------------------------------------------------------------------------------------------------


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", datetime(2024, 5, 1, 11, 59, 30, tzinfo=UTC)),
    ("15m", datetime(2024, 5, 1, 11, 45, tzinfo=UTC)),
    ("2h", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("1d", datetime(2024, 4, 30, 12, 0, tzinfo=UTC)),
    ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
    ("2024-05-01T08:00:00", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
])
def test_since_takes_durations_and_times(text: str, expected: datetime) -> None:
    assert logs.parse_since(text, now=NOW) == expected


def test_since_that_is_neither_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="neither a duration nor a time"):
        logs.parse_since("yesterday")


def test_docker_timestamps_with_trimmed_nanoseconds_sort_as_time_does() -> None:
    stamps = ["2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00.123456789Z", "2024-05-01T12:00:00.45Z"]
    assert sorted(stamps, key=logs.sort_key) == [stamps[1], stamps[2], stamps[0]]
