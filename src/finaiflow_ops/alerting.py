"""Alerting: the stack's Alertmanager, what it holds and whether its notifications reach people.

Alertmanager is asked through its own container (`curl` inside it, run with docker exec), as
Prometheus is (monitoring.py): the same call works on an ssh:// target.

    am = Alertmanager.of(stack)
    am.alerts(); am.silences(); am.counters()
    test_delivery(stack, "critical")      # a synthetic alert through the real route; Delivery
    silence(stack, minutes=30, comment="maintenance"); unsilence(stack)

Whether a notification was delivered is read from Alertmanager itself: its per-integration
notification counters, and its log (the stack runs it at `--log.level=debug`, which logs each
notification's outcome with the receiver's name and, for a webhook, the status code and body it
answered). The receivers' URLs are secrets (their tokens are in the path): none is printed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from finaiflow_ops import envfile, polling
from finaiflow_ops.container_exec import exec_answered
from finaiflow_ops.errors import CommandFailed, OpsError, UsageError
from finaiflow_ops.stack import Stack

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = [
    "ALERTMANAGER_SERVICE",
    "RECEIVER_OF",
    "ActiveAlert",
    "Alertmanager",
    "Counter",
    "Delivery",
    "Held",
    "Silence",
    "held",
    "receivers",
    "silence",
    "silenced",
    "test_delivery",
    "unsilence",
]

ALERTMANAGER_SERVICE = "alertmanager"
ALERTMANAGER_URL = "http://127.0.0.1:9093"
TEST_ALERT = "FinaiflowAlertTest"
CREATED_BY = "finaiflow-ops"
Severity = Literal["critical", "warning"]
# The routes of stack/alertmanager/alertmanager.yml.in: severity -> receiver.
RECEIVER_OF: dict[str, str] = {"critical": "paging", "warning": "ticket"}
HEARTBEAT_RECEIVER = "heartbeat"
DELIVERY_TIMEOUT = 90.0  # the default group_wait (30 s), a webhook's retries, and slack

# Alertmanager's logfmt lines of a notification's outcome: msg -> outcome. A first success is
# logged at debug level; the failures name the receiver in `receiver=` or at the start of `err`.
_OUTCOMES = {"Notify success": "success", "Notify attempt failed, will retry later": "retrying",
             "Notify for alerts failed": "failed"}
_FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def receivers(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """receiver -> its integrations, as stack/alertmanager/render.py configures them from .env."""
    page = env.get("ALERT_WEBHOOK_URL", "")
    ticket = env.get("ALERT_WARNING_WEBHOOK_URL", "") or page
    mail = ("email",) if env.get("ALERT_SMTP_HOST") else ()
    return {"paging": (("webhook",) if page else ()) + mail,
            "ticket": (("webhook",) if ticket else ()) + mail,
            HEARTBEAT_RECEIVER: ("webhook",) if env.get("ALERT_HEARTBEAT_URL") else ()}


# -- what Alertmanager holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveAlert:
    """One alert Alertmanager holds: firing (active), or suppressed by a silence or an inhibition."""

    name: str
    severity: str
    state: str  # active, suppressed, unprocessed
    since: str  # startsAt
    receivers: tuple[str, ...]
    summary: str
    labels: tuple[tuple[str, str], ...]
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]

    @classmethod
    def from_json(cls, a: Mapping[str, Any]) -> ActiveAlert:
        labels: Mapping[str, str] = a.get("labels", {})
        status = a.get("status", {})
        return cls(labels.get("alertname", ""), labels.get("severity", ""), status.get("state", ""),
                   a.get("startsAt", ""), tuple(r.get("name", "") for r in a.get("receivers", [])),
                   a.get("annotations", {}).get("summary", ""), tuple(sorted(labels.items())),
                   tuple(status.get("silencedBy") or ()), tuple(status.get("inhibitedBy") or ()))


@dataclass(frozen=True)
class Silence:
    """One silence: its id, state (active, pending, expired), matchers and window."""

    id: str
    state: str
    matchers: tuple[str, ...]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str

    @classmethod
    def from_json(cls, s: Mapping[str, Any]) -> Silence:
        def shown(m: Mapping[str, Any]) -> str:
            op = ("=~" if m.get("isRegex") else "=") if m.get("isEqual", True) else \
                 ("!~" if m.get("isRegex") else "!=")
            return f"{m['name']}{op}{json.dumps(m['value'])}"

        return cls(s["id"], s.get("status", {}).get("state", ""), tuple(shown(m) for m in s["matchers"]),
                   s.get("startsAt", ""), s.get("endsAt", ""), s.get("createdBy", ""), s.get("comment", ""))


@dataclass(frozen=True)
class Counter:
    """Alertmanager's notification counters of one integration (webhook, email) since its start."""

    integration: str
    notifications: float
    failed: float
    requests: float
    requests_failed: float


class Alertmanager:
    """Alertmanager's HTTP API, called with curl inside its container."""

    def __init__(self, container: Container, *, url: str = ALERTMANAGER_URL,
                 name: str = "Alertmanager") -> None:
        self.container = container
        self.url = url.rstrip("/")
        self.name = name

    @classmethod
    def of(cls, stack: Stack) -> Alertmanager:
        return cls(stack.container(ALERTMANAGER_SERVICE),
                   name=f"Alertmanager of {stack.project} on {stack.target}")

    def call(self, path: str, *, method: str = "GET", body: object = None) -> str:
        """The body of METHOD URL/PATH; a failed call or a 4xx/5xx answer raises CommandFailed."""
        argv = ["curl", "-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}", f"{self.url}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        # a GET that got no answer at all is made once more
        result = exec_answered(self.container, argv, lambda r: bool(r.stdout or r.stderr),
                               repeat=method == "GET")
        text, _, status = result.text.rpartition("\n")
        if result.exit_code != 0 or not status.startswith("2"):
            why = result.error.strip() or f"HTTP {status}: {text.strip()[:200]}"
            raise CommandFailed(f"{self.name}: {method} {path} failed: {why}", argv=argv[:8],
                                exit_status=result.exit_code,
                                hint="is it running? see `finaiflow-ops logs alertmanager`",
                                service=ALERTMANAGER_SERVICE, container=self.container.name)
        return text

    def api(self, path: str, *, method: str = "GET", body: object = None) -> Any:
        text = self.call(f"/api/v2/{path}", method=method, body=body)
        return json.loads(text) if text.strip() else None

    def status(self) -> Mapping[str, Any]:
        """/api/v2/status: the configuration loaded (it holds secrets: never print it), uptime."""
        return cast("Mapping[str, Any]", self.api("status"))

    def alerts(self) -> tuple[ActiveAlert, ...]:
        return tuple(sorted((ActiveAlert.from_json(a) for a in self.api("alerts")),
                            key=lambda a: (a.state, a.severity != "critical", a.since, a.name)))

    def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        self.api("alerts", method="POST", body=list(alerts))

    def silences(self) -> tuple[Silence, ...]:
        return tuple(Silence.from_json(s) for s in self.api("silences"))

    def add_silence(self, body: Mapping[str, Any]) -> str:
        return str(self.api("silences", method="POST", body=body)["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        self.call(f"/api/v2/silence/{silence_id}", method="DELETE")

    def counters(self) -> dict[str, Counter]:
        """integration -> its notification counters, from /metrics."""
        values: dict[tuple[str, str], float] = {}
        for line in self.call("/metrics").splitlines():
            m = re.match(r'alertmanager_(notifications|notifications_failed|notification_requests|'
                         r'notification_requests_failed)_total\{integration="(\w+)"\} (\S+)$', line)
            if m:
                values[(m[1], m[2])] = float(m[3])
        names = sorted({integration for _, integration in values})
        return {i: Counter(i, values.get(("notifications", i), 0), values.get(("notifications_failed", i), 0),
                           values.get(("notification_requests", i), 0),
                           values.get(("notification_requests_failed", i), 0)) for i in names}

    def outcomes(self, since: datetime) -> list[tuple[str, str, str]]:
        """(receiver, outcome, error) of each notification attempt logged since `since`; outcome:
        success, retrying or failed."""
        logs = self.container.logs(stdout=True, stderr=True, since=since).decode(errors="replace")
        return [outcome for line in logs.splitlines() if (outcome := parse_outcome(line))]


def parse_outcome(line: str) -> tuple[str, str, str] | None:
    """(receiver, outcome, error) of one of Alertmanager's log lines, or None for another line."""
    fields = {k: v[1:-1].replace('\\"', '"') if v.startswith('"') else v for k, v in _FIELD_RE.findall(line)}
    outcome = _OUTCOMES.get(fields.get("msg", ""))
    if outcome is None:
        return None
    error = fields.get("err", "")
    receiver = fields.get("receiver") or error.partition("/")[0]
    return receiver, outcome, error


@dataclass(frozen=True)
class Held:
    """What Alertmanager holds now: its alerts and its silences not yet expired."""

    alerts: tuple[ActiveAlert, ...]
    silences: tuple[Silence, ...]


def held(stack: Stack) -> Held:
    am = Alertmanager.of(stack)
    return Held(am.alerts(), tuple(s for s in am.silences() if s.state != "expired"))


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- alert test ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of `alert test`: where the synthetic alert went and whether it was delivered."""

    severity: str
    receiver: str
    integrations: tuple[str, ...]
    delivered: bool
    error: str
    seconds: float
    notifications: dict[str, float]  # integration -> notifications sent during the test
    failed_requests: dict[str, float]  # integration -> requests that failed during the test
    test_id: str


def test_delivery(stack: Stack, severity: Severity = "critical", *,
                  timeout: float = DELIVERY_TIMEOUT) -> Delivery:
    """Send a synthetic alert through the route of `severity` and wait for Alertmanager to notify
    its receiver: delivered when Alertmanager logs a success for that receiver after the post; not
    when it logs a failed attempt (the webhook's status and answer, or the connection error), or
    nothing in `timeout`.
    The alert is resolved afterwards (its resolved notification follows)."""
    if severity not in RECEIVER_OF:
        raise UsageError(f"unknown severity {severity!r}", hint="critical or warning")
    receiver = RECEIVER_OF[severity]
    integrations = receivers(stack.env)[receiver]
    am = Alertmanager.of(stack)
    test_id = uuid.uuid4().hex[:12]
    if not integrations:
        return Delivery(severity, receiver, (), False,
                        f"receiver {receiver} has no webhook or e-mail configured: set ALERT_WEBHOOK_URL "
                        "in .env (docs/monitoring.md)", 0.0, {}, {}, test_id)
    labels = {"alertname": TEST_ALERT, "severity": severity, "test_id": test_id}
    alert = {"labels": labels, "annotations": {
        "summary": f"Synthetic {severity} alert from `finaiflow-ops alert test` ({test_id}): ignore it",
        "description": "It proves that alerts reach this receiver."}}
    before = am.counters()
    started = datetime.now(UTC) - timedelta(seconds=1)
    start = time.monotonic()
    am.post([{**alert, "startsAt": _stamp(datetime.now(UTC))}])
    delivered, error = False, f"no notification to {receiver} within {timeout:.0f} s"
    try:
        for _attempt in polling.attempts(within=timeout, every=1):
            # The first outcome for the receiver after the post: the test alert's group is new, so
            # Alertmanager notifies it after the group wait; another group of the same receiver
            # notified in between would be taken for it (its outcome is still the receiver's).
            mine = [(o, e) for r, o, e in am.outcomes(started) if r == receiver]
            if any(o == "success" for o, _ in mine):
                delivered, error = True, ""
                break
            failures = [e for o, e in mine if o != "success"]
            if failures:
                error = failures[-1] or "the notification failed"
                break
        seconds = time.monotonic() - start
        after = am.counters()
    finally:
        am.post([{**alert, "endsAt": _stamp(datetime.now(UTC))}])  # resolved
    zero = Counter("", 0, 0, 0, 0)
    sent = {i: c.notifications - before.get(i, zero).notifications for i, c in after.items()}
    failed = {i: c.requests_failed - before.get(i, zero).requests_failed for i, c in after.items()}
    return Delivery(severity, receiver, integrations, delivered, envfile.redact(error, stack.env), seconds,
                    {i: v for i, v in sent.items() if v}, {i: v for i, v in failed.items() if v}, test_id)


# -- silences --------------------------------------------------------------------------------------------

# Everything but the Watchdog: the heartbeat keeps going during a maintenance window.
_ALL_BUT_WATCHDOG = ({"name": "alertname", "value": ".+", "isRegex": True, "isEqual": True},
                     {"name": "alertname", "value": "Watchdog", "isRegex": False, "isEqual": False})


def parse_matcher(text: str) -> dict[str, Any]:
    """NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX as Alertmanager's matcher."""
    m = re.fullmatch(r"(\w+)(=~|!~|!=|=)(.*)", text.strip())
    if not m:
        raise UsageError(f"bad matcher {text!r}", hint="NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
    return {"name": m[1], "value": m[3].strip('"'), "isRegex": "~" in m[2],
            "isEqual": not m[2].startswith("!")}


def silence(stack: Stack, *, minutes: float, comment: str, matchers: Sequence[str] = (),
            author: str = CREATED_BY) -> Silence:
    """A silence from now for `minutes` (default matchers: every alert but the Watchdog)."""
    if minutes <= 0:
        raise UsageError("a silence needs a positive duration", hint="e.g. --for 30m")
    if not comment.strip():
        raise UsageError("a silence needs a comment", hint="say why: --comment 'upgrading PostgreSQL'")
    am = Alertmanager.of(stack)
    now = datetime.now(UTC)
    body = {"matchers": [parse_matcher(m) for m in matchers] or list(_ALL_BUT_WATCHDOG),
            "startsAt": _stamp(now), "endsAt": _stamp(now + timedelta(minutes=minutes)),
            "createdBy": author, "comment": comment}
    made = am.add_silence(body)
    return next(s for s in am.silences() if s.id == made)


def unsilence(stack: Stack, silence_id: str | None = None) -> tuple[Silence, ...]:
    """Expire one silence, or every active one finaiflow-ops made; the silences ended."""
    am = Alertmanager.of(stack)
    active = [s for s in am.silences() if s.state in ("active", "pending")]
    chosen = [s for s in active if s.id == silence_id] if silence_id else \
             [s for s in active if s.created_by == CREATED_BY]
    if silence_id and not chosen:
        raise OpsError(f"no active silence {silence_id} on {stack.target}",
                       hint="see `finaiflow-ops alert list`")
    for s in chosen:
        am.expire_silence(s.id)
    return tuple(chosen)


DEPLOY_SILENCE_MINUTES = 60.0  # a deploy killed on the way leaves a silence that ends by itself


@contextmanager
def silenced(stack: Stack, *, comment: str, minutes: float = DEPLOY_SILENCE_MINUTES) -> Iterator[Silence]:
    """A silence of every alert but the Watchdog for the duration of the block, ended after it
    (and, if finaiflow-ops dies in between, by itself after `minutes`)."""
    made = silence(stack, minutes=minutes, comment=comment)
    try:
        yield made
    finally:
        unsilence(stack, made.id)


def parse_duration(text: str) -> float:
    """30m, 2h, 90s, 1d -> minutes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise UsageError(f"bad duration {text!r}", hint="e.g. 30m, 2h, 1d")
    return float(m[1]) * {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}[m[2]]
