"""Unit tests of finaiflow_ops.alerting's pure parts, and of the Alertmanager configuration
renderer (stack/alertmanager/render.py): receivers from .env, matchers, durations, log outcomes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from finaiflow_ops import alerting
from finaiflow_ops.errors import UsageError

RENDER = Path(__file__).resolve().parents[2] / "stack" / "alertmanager" / "render.py"


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", RENDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_receivers_follow_the_env_as_the_renderer_does() -> None:
    assert alerting.receivers({}) == {"paging": (), "ticket": (), "heartbeat": ()}
    page = {"ALERT_WEBHOOK_URL": "https://h.example.org/p"}
    assert alerting.receivers(page) == {"paging": ("webhook",), "ticket": ("webhook",), "heartbeat": ()}
    mail = page | {"ALERT_SMTP_HOST": "smtp.example.org:587", "ALERT_HEARTBEAT_URL": "https://hc.example.org/1"}
    assert alerting.receivers(mail) == {"paging": ("webhook", "email"), "ticket": ("webhook", "email"),
                                        "heartbeat": ("webhook",)}


def test_rendered_configuration_routes_and_receivers() -> None:
    env = {"ALERT_WEBHOOK_URL": "https://h.example.org/page", "ALERT_WARNING_WEBHOOK_URL": "https://h.example.org/t",
           "ALERT_HEARTBEAT_URL": "https://hc.example.org/1", "ALERT_GROUP_WAIT": "5s"}
    text = renderer().render(env)
    assert "@" not in re.sub(r"#.*", "", text)  # every field filled
    assert 'group_wait: "5s"' in text and 'repeat_interval: "4h"' in text
    receivers = dict(re.findall(r"- name: (\w+)\n    webhook_configs: (.*)", text))
    assert json.loads(receivers["paging"]) == [{"url": env["ALERT_WEBHOOK_URL"], "send_resolved": True}]
    assert json.loads(receivers["ticket"])[0]["url"] == env["ALERT_WARNING_WEBHOOK_URL"]
    assert json.loads(receivers["heartbeat"]) == [{"url": env["ALERT_HEARTBEAT_URL"], "send_resolved": False}]


def test_renderer_refuses_bad_values_without_printing_them(capsys: pytest.CaptureFixture[str]) -> None:
    render = renderer()
    for env in ({"ALERT_WEBHOOK_URL": "ftp://h.example.org/s3cr3t"}, {"ALERT_GROUP_WAIT": "soon"},
                {"ALERT_SMTP_TO": "ops@example.org"}):
        with pytest.raises(SystemExit):
            render.render(env)
    assert "s3cr3t" not in capsys.readouterr().err


@pytest.mark.parametrize(("text", "matcher"), [
    ("alertname=ApiDown", {"name": "alertname", "value": "ApiDown", "isRegex": False, "isEqual": True}),
    ("job!=api", {"name": "job", "value": "api", "isRegex": False, "isEqual": False}),
    ('alertname=~"Api.*"', {"name": "alertname", "value": "Api.*", "isRegex": True, "isEqual": True}),
    ("severity!~warn.*", {"name": "severity", "value": "warn.*", "isRegex": True, "isEqual": False}),
])
def test_matchers(text: str, matcher: dict[str, object]) -> None:
    assert alerting.parse_matcher(text) == matcher


def test_bad_matcher_and_duration_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        alerting.parse_matcher("no operator")
    with pytest.raises(UsageError):
        alerting.parse_duration("half an hour")
    assert alerting.parse_duration("30m") == 30
    assert alerting.parse_duration("2h") == 120
    assert alerting.parse_duration("90s") == 1.5


def test_notification_outcomes_are_read_from_alertmanagers_log_lines() -> None:
    ok = ('level=debug ts=2026-12-04T21:30:00.123Z caller=notify.go:772 component=dispatcher '
          'receiver=paging integration=webhook[0] msg="Notify success" attempts=1')
    retry = ('level=warn ts=2026-12-04T21:30:00.123Z caller=notify.go:724 component=dispatcher '
             'receiver=ticket integration=webhook[0] msg="Notify attempt failed, will retry later" '
             'attempts=1 '
             'err="unexpected status code 500: \\"refused\\" by the receiver"')
    failed = ('level=error ts=2026-12-04T21:30:05.123Z caller=dispatch.go:354 component=dispatcher '
              'msg="Notify for alerts failed" num_alerts=1 err="heartbeat/webhook[0]: notify retry canceled '
              'after 3 attempts: Post \\"<redacted>\\": dial tcp 10.0.0.9:9: connect: connection refused"')
    assert alerting.parse_outcome(ok) == ("paging", "success", "")
    assert alerting.parse_outcome(retry) == ("ticket", "retrying",
                                             'unexpected status code 500: "refused" by the receiver')
    receiver, outcome, error = alerting.parse_outcome(failed) or ("", "", "")
    assert (receiver, outcome) == ("heartbeat", "failed") and error.endswith("connection refused")
    received = 'level=debug component=dispatcher msg="Received alert" alert=Watchdog'
    assert alerting.parse_outcome(received) is None
