"""Monitoring: what Prometheus sees of the stack, and `check`, the runbook's verification in one call.

Prometheus is asked through its own container (`curl` inside it, run with docker exec): the same
call works on an ssh:// target, where its loopback-only port is out of reach.

    prom = Prometheus.of(stack)
    prom.targets(); prom.rules(); prom.alerts(); prom.query('up{job="api"}')
    report = check(stack)          # CheckReport: one CheckItem per runbook verification
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit

from finaiflow_ops import health, polling
from finaiflow_ops.container_exec import ExecResult, exec_answered
from finaiflow_ops.errors import CommandFailed, OpsError, TargetUnreachable
from finaiflow_ops.stack import Stack

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = [
    "REQUIRED_ALERTS",
    "Alert",
    "AlertRule",
    "CheckItem",
    "CheckReport",
    "MonitoringStatus",
    "Prometheus",
    "Sample",
    "ScrapeTarget",
    "alerting_check",
    "check",
    "status",
]

PROMETHEUS_SERVICE = "prometheus"
PROMETHEUS_URL = "http://127.0.0.1:9090"
# The alerts an operator of the stack relies on (stack/prometheus/rules/finaiflow.yml). A
# Prometheus without them is running, but nobody would be woken up.
REQUIRED_ALERTS = (
    "ApiDown", "NginxDown", "DatabaseUnreachable", "RedisUnreachable", "OpsExporterDown",
    "ContainerRestartLoop", "ApiHighErrorRatio", "ApiLatencyHigh", "BackupTooOld", "BackupMissing",
    "CertificateExpiresSoon", "CertificateAboutToExpire", "DiskAlmostFull", "DiskFillingUp",
)  # fmt: skip
# What the series the dashboards and alerts need come from: job -> a series it must expose.
REQUIRED_SERIES = {
    "api": 'finaiflow_http_requests_total{job="api"}',
    "ops exporter": 'finaiflow_probe_success{job="ops"}',
    "nginx (through the ops exporter)": 'nginx_connections_accepted_total{job="ops"}',
    "nginx upstream watcher": 'nginx_upstream_watcher_enabled{job="nginx"}',
}
FRESH_SECONDS = 60.0  # six scrape intervals
SETTLE_SECONDS = 30.0  # DNS discovery refresh (10 s) + a scrape (10 s), with slack
BACKUP_MAX_AGE_HOURS = 26.0  # a daily backup, plus two hours of slack
# The services people know by another name, so a failure names what they look for.
KNOWN_AS = {"postgres": "PostgreSQL", "redis": "Redis", "database": "PostgreSQL", "cache": "Redis"}

Status = Literal["ok", "warn", "fail"]
TargetHealth = Literal["up", "down", "unknown"]  # unknown: not scraped yet
RuleState = Literal["inactive", "pending", "firing"]
RuleHealth = Literal["ok", "err", "unknown"]
AlertState = Literal["pending", "firing"]

K = TypeVar("K", bound=str)


def _kind(kinds: Any, value: object, default: K) -> K:
    """`value` when it is one of the Literal `kinds`, else `default` (an answer from a newer
    Prometheus is read as the nearest known kind, not trusted as a type)."""
    return cast(K, value) if value in get_args(kinds) else default


# -- Prometheus' API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and value."""

    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")


@dataclass(frozen=True)
class ScrapeTarget:
    """One active target of /api/v1/targets."""

    job: str
    instance: str
    health: TargetHealth
    last_error: str
    last_scrape: str

    @classmethod
    def from_json(cls, t: Mapping[str, Any]) -> ScrapeTarget:
        labels = t.get("labels", {})
        return cls(labels.get("job", ""), labels.get("instance", ""),
                   _kind(TargetHealth, t.get("health"), "unknown"),
                   t.get("lastError", ""), t.get("lastScrape", ""))

    @property
    def up(self) -> bool:
        return self.health == "up"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of /api/v1/rules."""

    group: str
    name: str
    severity: str
    state: RuleState
    health: RuleHealth
    last_error: str
    for_seconds: float

    @classmethod
    def from_json(cls, group: str, r: Mapping[str, Any]) -> AlertRule:
        state = _kind(RuleState, r.get("state"), _state_of(r.get("alerts", [])))
        return cls(group, r["name"], r.get("labels", {}).get("severity", ""), state,
                   _kind(RuleHealth, r.get("health"), "unknown"), r.get("lastError", ""),
                   float(r.get("duration", 0)))


@dataclass(frozen=True)
class Alert:
    """One active alert of /api/v1/alerts."""

    name: str
    severity: str
    state: AlertState
    summary: str
    labels: tuple[tuple[str, str], ...]
    active_at: str

    @classmethod
    def from_json(cls, a: Mapping[str, Any]) -> Alert:
        labels: Mapping[str, str] = a.get("labels", {})
        return cls(labels.get("alertname", ""), labels.get("severity", ""),
                   _kind(AlertState, a.get("state"), "pending"),
                   a.get("annotations", {}).get("summary", ""), tuple(sorted(labels.items())),
                   a.get("activeAt", ""))



def _json_object(result: ExecResult) -> Any:
    """What a successful curl printed, as JSON (None when it failed or printed no JSON)."""
    try:
        return json.loads(result.text) if result.exit_code == 0 else None
    except json.JSONDecodeError:
        return None


class Prometheus:
    """Prometheus' HTTP API, called with curl inside a container of the stack."""

    def __init__(self, container: Container, *, url: str = PROMETHEUS_URL, name: str = "Prometheus") -> None:
        self.container = container
        self.url = url.rstrip("/")
        self.name = name

    @classmethod
    def of(cls, stack: Stack) -> Prometheus:
        """The stack's Prometheus (its running container)."""
        name = f"Prometheus of {stack.project} on {stack.target}"
        return cls(stack.container(PROMETHEUS_SERVICE), name=name)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH and return its `data`; a failed call or an error answer raises CommandFailed."""
        argv = ["curl", "-sS", "--max-time", "10", "-G", f"{self.url}/api/v1/{path}"]
        for key, value in params.items():
            argv += ["--data-urlencode", f"{key}={value}"]
        parsed: list[Any] = [None]  # the last answer's JSON, read once (exec_answered asks of each)

        def answered(result: ExecResult) -> bool:
            parsed[0] = _json_object(result)
            return isinstance(parsed[0], dict)

        result = exec_answered(self.container, argv, answered)
        body = parsed[0]
        if not isinstance(body, dict) or body.get("status") != "success":
            said = result.error or result.text or f"exit {result.exit_code}, no output"
            why = body.get("error") if isinstance(body, dict) else said
            raise CommandFailed(f"{self.name}: /api/v1/{path} failed: {str(why).strip()[:200]}",
                                argv=argv, exit_status=result.exit_code, output_tail=result.error.strip(),
                                hint="is Prometheus running? see `finaiflow-ops logs prometheus`",
                                service=PROMETHEUS_SERVICE, container=self.container.name)
        return body["data"]

    def query(self, expr: str) -> tuple[Sample, ...]:
        """An instant query; vectors and scalars both come back as samples."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return tuple(Sample(tuple(sorted(r["metric"].items())), float(r["value"][1]))
                         for r in data["result"])
        if data["resultType"] == "scalar":
            return (Sample((), float(data["result"][1])),)
        raise CommandFailed(f"{self.name}: {expr!r} returned a {data['resultType']}, not a vector",
                            service=PROMETHEUS_SERVICE, container=self.container.name)

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one series (None when it yields none)."""
        samples = self.query(expr)
        return samples[0].value if samples else None

    def targets(self) -> tuple[ScrapeTarget, ...]:
        return tuple(ScrapeTarget.from_json(t) for t in self.api("targets", state="active")["activeTargets"])

    def rules(self) -> tuple[AlertRule, ...]:
        data = self.api("rules", type="alert")
        return tuple(AlertRule.from_json(g["name"], r)
                     for g in data["groups"] for r in g["rules"] if r.get("type") == "alerting")

    def alerts(self) -> tuple[Alert, ...]:
        return tuple(Alert.from_json(a) for a in self.api("alerts")["alerts"])

    def wait_scraped(self, *, timeout: float = 30.0) -> tuple[ScrapeTarget, ...]:
        """The targets once every one is up, or as they are at the deadline: a new target is
        "unknown" until its first scrape, and an api container replaced at another address stays a
        "down" target until DNS discovery refreshes (10 s), so a down target is asked again."""
        for _attempt in polling.attempts(within=timeout, every=1):
            targets = self.targets()
            if targets and all(t.up for t in targets):
                break
        return targets


def _state_of(alerts: Sequence[Mapping[str, Any]]) -> RuleState:
    states = {a.get("state") for a in alerts}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


# -- monitoring status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringStatus:
    """Prometheus' targets, alert rules and active alerts, and what is wrong with them."""

    targets: tuple[ScrapeTarget, ...]
    rules: tuple[AlertRule, ...]
    alerts: tuple[Alert, ...]

    @property
    def targets_down(self) -> tuple[str, ...]:
        return tuple(f"{t.job} {t.instance} ({t.health}{': ' + t.last_error if t.last_error else ''})"
                     for t in self.targets if not t.up)

    @property
    def missing_jobs(self) -> tuple[str, ...]:
        return tuple(sorted({"api", "ops", "prometheus"} - {t.job for t in self.targets}))

    @property
    def missing_rules(self) -> tuple[str, ...]:
        return tuple(sorted(set(REQUIRED_ALERTS) - {r.name for r in self.rules}))

    @property
    def broken_rules(self) -> tuple[str, ...]:
        return tuple(f"{r.name}: {r.last_error}" for r in self.rules if r.health == "err")

    def firing(self, severity: str) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.state == "firing" and a.severity == severity)


def status(stack: Stack, *, scraped_within: float = 30.0) -> MonitoringStatus:
    """Prometheus' view of the stack, once every target has been scraped (bounded wait)."""
    prom = Prometheus.of(stack)
    return MonitoringStatus(prom.wait_scraped(timeout=scraped_within), prom.rules(), prom.alerts())


# -- check -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckItem:
    """One verification: ok, warn (worth a look, does not fail the check) or fail, and why."""

    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class CheckReport:
    """Every verification of `check`, in the order the runbook does them."""

    target: str
    project: str
    url: str
    items: tuple[CheckItem, ...]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(f"{i.name}: {i.detail}" for i in self.items if not i.ok)


def check(
    stack: Stack,
    *,
    url: str | None = None,
    backup_max_age_hours: float = BACKUP_MAX_AGE_HOURS,
    cert_min_days: float | None = None,
) -> CheckReport:
    """The runbook's verification in one call: services, /health through nginx, metrics scraped,
    Prometheus targets and rules, alerts, newest backup age, certificate days left (more than
    `cert_min_days`; default: the certificate's expiry margin, tls.certs.EXPIRY_MARGIN_DAYS).

    Every item is checked even when an earlier one fails: the report shows all that is wrong.
    """
    stack.services()  # a missing compose file or .env is bad input (exit 2), not a failed check
    # Asked once, on first need, and shared by the items that need them. Without an HTTPS port
    # (nginx down), the items that need the URL fail; the others still run.
    base = functools.cache(lambda: (url or stack.base_url()).rstrip("/"))
    prometheus = functools.cache(lambda: Prometheus.of(stack))
    monitoring = functools.cache(lambda: status(stack, scraped_within=15))
    checks: list[tuple[str, Callable[[], tuple[Status, str]]]] = [
        ("services", lambda: _services(stack)),
        ("health", lambda: _health(base(), stack.env.get("DOMAIN"))),
        ("metrics", lambda: _metrics(prometheus())),
        ("targets", lambda: _targets(monitoring())),
        ("rules", lambda: _rules(monitoring())),
        ("alerts", lambda: _alerts(monitoring())),
        ("alerting", lambda: alerting_check(stack, prometheus())),
        ("backup", lambda: _backup(prometheus(), backup_max_age_hours)),
        ("archive", lambda: _archive(stack)),
        ("certificate", lambda: _certificate(stack, base(), cert_min_days)),
    ]
    items = []
    for name, run in checks:
        try:
            state, detail = run()
        except TargetUnreachable:
            raise  # nothing can be checked: exit 3, as for every command
        except (OpsError, OSError) as exc:
            message = exc.one_line() if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"
            state, detail = "fail", message
        items.append(CheckItem(name, state, detail))
    try:
        shown = base()
    except OpsError:
        shown = url or "no HTTPS URL"
    return CheckReport(str(stack.target), stack.project, shown, tuple(items))


def _named(service: str) -> str:
    return f"{service} ({KNOWN_AS[service]})" if service in KNOWN_AS else service


def _services(stack: Stack) -> tuple[Status, str]:
    st = stack.status()
    sick = [f"{_named(s.name)}: "
            + (", ".join(f"{c.state}/{c.health}" for c in s.containers) or "no container")
            for s in st.services if not s.healthy]
    restarted = [f"{c.name} restarted {c.restarts}x" for s in st.services for c in s.containers if c.restarts]
    if sick:
        return "fail", "; ".join(sick + restarted)
    running = sum(len(s.containers) for s in st.services)
    if restarted:
        return "warn", f"{running} containers healthy, but " + "; ".join(restarted)
    return "ok", f"{len(st.services)} services, {running} containers running and healthy"


def _health(base: str, domain: str | None) -> tuple[Status, str]:
    # Through nginx as a client of the site: DOMAIN as Host and SNI when the URL is an address.
    answer = health.probe(f"{base}/health", timeout=10, domain=domain)
    if answer.status is None:
        return "fail", f"{answer.url}: {answer.error}"
    try:
        body = json.loads(answer.body)
    except json.JSONDecodeError:
        body = {}
    parts = ", ".join(f"{_named(k)} {body[k]}" for k in ("database", "cache") if k in body)
    detail = f"{answer.url} answered {answer.status} in {answer.elapsed_ms:.0f} ms"
    detail += f": {parts}" if parts else ""
    if answer.ok:
        return "ok", detail
    return "fail", detail + (f" ({body['error']})" if body.get("error") else "")


def _metrics(prom: Prometheus, *, settle: float = SETTLE_SECONDS) -> tuple[Status, str]:
    # The freshest series counts: a replica replaced by a rolling update leaves its series behind
    # for Prometheus' 5 minute look-back, and they prove nothing about scraping now. A container
    # just replaced or restarted is found by DNS discovery and scraped within ~20 s: wait that long
    # (bounded) before calling its metrics missing, so `check` right after a deploy is not fooled.
    for _attempt in polling.attempts(within=settle, every=2):
        ages = {what: prom.value(f"min(time() - timestamp({series}))")
                for what, series in REQUIRED_SERIES.items()}
        stale = [f"{what} {'absent' if age is None else f'{age:.0f} s old'}"
                 for what, age in ages.items() if age is None or age > FRESH_SECONDS]
        if not stale:
            break
    if stale:
        return "fail", "not scraped: " + ", ".join(stale)
    return "ok", f"{', '.join(ages)} metrics scraped within {max(a or 0 for a in ages.values()):.0f} s"


def _targets(mon: MonitoringStatus) -> tuple[Status, str]:
    problems = list(mon.targets_down) + [f"no {job} target" for job in mon.missing_jobs]
    if problems:
        return "fail", "; ".join(problems)
    jobs = sorted({t.job for t in mon.targets})
    return "ok", f"{len(mon.targets)} targets up ({', '.join(jobs)})"


def _rules(mon: MonitoringStatus) -> tuple[Status, str]:
    problems = [f"missing alert {name}" for name in mon.missing_rules] + list(mon.broken_rules)
    if problems:
        return "fail", "; ".join(problems)
    return "ok", f"{len(mon.rules)} alert rules loaded and evaluating"


def _alerts(mon: MonitoringStatus) -> tuple[Status, str]:
    def names(alerts: Sequence[Alert]) -> str:
        return "; ".join(f"{a.name}: {a.summary}" if a.summary else a.name for a in alerts)

    critical, warning = mon.firing("critical"), mon.firing("warning")
    pending = [a for a in mon.alerts if a.state == "pending"]
    if critical:
        return "fail", f"critical firing: {names(critical)}"
    if warning or any(a.severity == "critical" for a in pending):
        shown = [*warning, *(a for a in pending if a.severity == "critical")]
        return "warn", f"{'warning firing' if warning else 'critical pending'}: {names(shown)}"
    note = f" ({len(pending)} pending: {', '.join(sorted({a.name for a in pending}))})" if pending else ""
    return "ok", "no alert firing" + note


def alerting_check(stack: Stack, prom: Prometheus) -> tuple[Status, str]:
    """Alertmanager up with its configuration, Prometheus sending to it, no failed notification in
    the last hour; a warning when nobody would be paged or no heartbeat is sent."""
    from finaiflow_ops import alerting

    am = alerting.Alertmanager.of(stack)
    if not am.status().get("config", {}).get("original"):
        return "fail", "Alertmanager has no configuration loaded"
    if not prom.api("alertmanagers")["activeAlertmanagers"]:
        return "fail", "Prometheus sends to no Alertmanager (see `alerting:` in prometheus.yml)"
    # Prometheus evaluates the Watchdog every 10 s and sends it at once, and scrapes Alertmanager
    # every 10 s: a fresh stack has both within a few seconds (bounded wait).
    failed_query = 'sum(increase(alertmanager_notifications_failed_total{job="alertmanager"}[1h]))'
    for _attempt in polling.attempts(within=SETTLE_SECONDS, every=2):
        watchdog = any(a.name == "Watchdog" for a in am.alerts())
        failed = prom.value(failed_query)
        if watchdog and failed is not None:
            break
    if not watchdog:
        return "fail", "Alertmanager holds no Watchdog alert: Prometheus' alerts do not reach it"
    if failed is None:
        return "fail", "no notification counters from Alertmanager: is it scraped (job alertmanager)?"
    if failed > 0:
        return "fail", (f"{failed:.0f} notification(s) failed in the last hour "
                        "(see `finaiflow-ops logs alertmanager --since 1h`, `finaiflow-ops alert test`)")
    configured = alerting.receivers(stack.env)
    shown = ", ".join(f"{r} ({'+'.join(i) or 'nothing'})" for r, i in configured.items())
    detail = f"Alertmanager holds Prometheus' alerts, no failed notification in 1 h; receivers: {shown}"
    unset = [what for what, receiver in (("ALERT_WEBHOOK_URL: nobody is paged", "paging"),
                                         ("ALERT_HEARTBEAT_URL: no dead man's switch", "heartbeat"))
             if not configured[receiver]]
    if unset:
        return "warn", f"{detail}; not set: {'; '.join(unset)}"
    return "ok", detail


def _backup(prom: Prometheus, max_age_hours: float) -> tuple[Status, str]:
    age = prom.value('max(time() - finaiflow_backup_last_verified_timestamp_seconds{job="ops"})')
    if age is not None:
        verified = prom.value('sum(finaiflow_backups{job="ops", state="verified"})') or 0
        detail = f"newest verified backup {age / 3600:.1f} h old ({verified:.0f} verified)"
        if age > max_age_hours * 3600:
            return "fail", f"{detail}, older than {max_age_hours:g} h"
        return "ok", detail
    readable = prom.value('min(finaiflow_facts_readable{job="ops", fact="backups"})')
    if readable is None:
        return "fail", "unknown: no backup facts from the ops exporter (is it scraped?)"
    if readable == 0:
        return "fail", "the ops exporter cannot read PROJECT_DIR/backups (docs/monitoring.md: file contract)"
    return "fail", "no verified backup yet: run `finaiflow-ops backup create`"


def _archive(stack: Stack) -> tuple[Status, str]:
    """Continuous WAL archiving (docs/backups.md): fails when segments wait longer than a healthy
    archiver lets them; warns while the archive command fails but has not been failing that long."""
    from finaiflow_ops.backup.database import Database
    from finaiflow_ops.backup.pgbackrest import STUCK_SECONDS, Archiver
    from finaiflow_ops.pitr import interrupted

    left = interrupted(stack)
    if left:
        return "fail", left
    archiver = Archiver.of(Database.of(stack))
    if archiver.mode == "off":
        return "warn", "WAL is not archived (PG_ARCHIVE=off): no point-in-time recovery"
    if archiver.stuck:
        return "fail", (f"WAL archiving is stuck: {archiver.describe()}; pg_wal grows until it is fixed "
                        f"(more than {STUCK_SECONDS:.0f} s; see `finaiflow-ops logs postgres`)")
    return ("warn" if archiver.failing else "ok"), archiver.describe()


def _certificate(stack: Stack, base: str, min_days: float | None) -> tuple[Status, str]:
    from finaiflow_ops.tls.certs import expiry_margin_days
    from finaiflow_ops.tls.check import served_certificate

    parts = urlsplit(base)
    host = parts.hostname or "localhost"
    # The certificate of the site the stack serves, also when the URL is an address (as curl --resolve).
    servername = stack.env.get("DOMAIN") or host
    cert = served_certificate(host, parts.port or 443, servername=servername, timeout=10)
    days = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() / 86400
    detail = (f"{cert.subject.rfc4514_string()} served for {servername} expires "
              f"{cert.not_valid_after_utc:%Y-%m-%d} ({days:.1f} days left)")
    margin = min_days if min_days is not None else expiry_margin_days(cert.not_valid_before_utc,
                                                                      cert.not_valid_after_utc)
    if days <= margin:
        return "fail", f"{detail}, {margin:g} days or fewer"
    return "ok", detail
