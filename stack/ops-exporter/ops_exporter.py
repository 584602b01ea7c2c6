"""FinaiFlow ops-facts exporter: what Prometheus cannot scrape from the application itself.

Answers GET /metrics in the Prometheus text format. Every scrape reads the facts afresh:

- probes over the stack's network: the api's /health (database and cache reachability, as the
  app itself sees them), each api container's /version (its start time, by container name),
  nginx over HTTPS (its /nginx-health and the certificate it serves to clients) and nginx's
  stub_status (connection and request counters, on an internal port);
- files that finaiflow-ops writes on the host, in the project directory mounted read-only:
  backup manifests (backups/*.json) and the release history (.finaiflow/releases.json);
- the status files of the pgBackRest repository volume, mounted read-only (status/archived,
  status/failed, status/backups): WAL archiving and physical backups;
- free space of the filesystems under the mounted paths (statvfs).

Facts that are absent (no backup yet, no release recorded, nginx down) leave their metrics out
rather than inventing a value; alert rules test for that absence explicitly.

Python standard library only (plus the openssl command line, to read certificate dates), so the
image is the base image and one file. Runs without capabilities on a read-only root.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

START_TIME = time.time()
VERSION = "1"

# -- the exposition format -------------------------------------------------------------------------


@dataclass
class Metric:
    """One metric family: name, type, help and its samples (labels -> value)."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, float(value)))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition of `metrics`; families without samples are left out."""
    lines: list[str] = []
    for m in metrics:
        if not m.samples:
            continue
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{m.name}{{{text}}} {_number(value)}" if text else f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


# -- reading the host's facts ---------------------------------------------------------------------

def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from an ISO 8601 string (with zone, or UTC) or a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a naive time is taken as UTC: the tools write UTC
        return parsed.replace(tzinfo=UTC).timestamp()
    return parsed.timestamp()


@dataclass(frozen=True)
class Backup:
    manifest: str
    taken: float | None  # when its snapshot was taken (the dump's start): the age of its data
    finished: float | None
    size: float | None
    verified: bool
    problem: str = ""


def read_backup(manifest: Path) -> Backup:
    """One manifest as finaiflow_ops.backup writes it (`<dump>.json` beside `<dump>`), judged as its
    `backup list` does: verified when the manifest is whole, names its dump, the dump has the
    recorded size, and no later verification failed (a `<dump>.failed` marker).

    The full check (checksum, read-back) is `finaiflow-ops backup verify`: reading gigabytes on
    every scrape is not the exporter's job.
    """
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except PermissionError:
        return Backup(manifest.name, None, None, None, False, "permission denied")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Backup(manifest.name, None, None, None, False, f"invalid: {type(exc).__name__}")
    if not isinstance(data, dict):
        return Backup(manifest.name, None, None, None, False, "not a JSON object")
    taken, finished = parse_time(data.get("started_at")), parse_time(data.get("finished_at"))
    size = data.get("size")
    dump = manifest.with_suffix("")
    if taken is None or finished is None:
        problem = "no start or finish time"
    elif not data.get("sha256"):
        problem = "no checksum"
    elif data.get("file") != dump.name:
        problem = f"describes {data.get('file')!r}, not {dump.name}"
    elif dump.with_name(dump.name + ".failed").exists():
        problem = "failed a later verification"
    else:
        try:
            actual = dump.stat().st_size
        except OSError:
            actual = None
        problem = ("dump file missing" if actual is None
                   else "" if actual == size else f"{actual} bytes, the manifest says {size}")
    return Backup(manifest.name, taken, finished, float(size) if isinstance(size, int) else None,
                  not problem, problem)


def _readable(fact: str, ok: bool) -> Metric:
    return Metric("finaiflow_facts_readable", "gauge",
                  "1 when the fact files could be read (absent counts as readable: no fact yet).").add(
                      1 if ok else 0, fact=fact)


def backup_metrics(backups_dir: Path) -> list[Metric]:
    count = Metric("finaiflow_backups", "gauge", "Backup manifests found, by state.")
    last_verified = Metric("finaiflow_backup_last_verified_timestamp_seconds", "gauge",
                           "When the snapshot of the newest verified backup was taken (absent: none).")
    last_size = Metric("finaiflow_backup_last_verified_size_bytes", "gauge",
                       "Size of the newest verified backup.")
    last_duration = Metric("finaiflow_backup_last_verified_duration_seconds", "gauge",
                           "How long the newest verified backup's dump took.")
    last_any = Metric("finaiflow_backup_last_timestamp_seconds", "gauge",
                      "When the snapshot of the newest backup with a manifest, verified or not, was taken.")
    # A directory that is there but cannot be listed, or a manifest that cannot be read, is a
    # permission problem to alert on, not "no backup".
    try:
        manifests = sorted(backups_dir.glob("*.json")) if backups_dir.exists() else []
        listable = not backups_dir.exists() or os.access(backups_dir, os.R_OK | os.X_OK)
    except OSError:
        manifests, listable = [], False
    backups = [read_backup(m) for m in manifests]
    unreadable = any(b.problem == "permission denied" for b in backups)
    verified = [b for b in backups if b.verified]
    count.add(len(verified), state="verified").add(len(backups) - len(verified), state="unverified")
    if verified:
        newest = max(verified, key=lambda b: b.taken or 0.0)
        last_verified.add(newest.taken or 0.0)
        if newest.size is not None:
            last_size.add(newest.size)
        if newest.taken is not None and newest.finished is not None:
            last_duration.add(max(0.0, newest.finished - newest.taken))
    dated = [b.taken for b in backups if b.taken is not None]
    if dated:
        last_any.add(max(dated))
    return [_readable("backups", listable and not unreadable), count, last_verified, last_size, last_duration,
            last_any]


def _histories(data: Any) -> dict[str, tuple[list[dict[str, Any]], Any]]:
    """service -> (its release records oldest first, the id of the current one), from the file
    finaiflow_ops.releases writes: {"services": {"api": {"current": 3, "releases": [...]}}}."""
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        raise ValueError("no services")
    return {
        str(name): ([r for r in entry["releases"] if isinstance(r, dict)], entry.get("current"))
        for name, entry in services.items()
        if isinstance(entry, dict) and isinstance(entry.get("releases"), list) and entry["releases"]
    }


def _kind(record: Mapping[str, Any]) -> str:
    return str(record.get("kind") or "deploy")


def _release_name(record: Mapping[str, Any]) -> str:
    """A release is named by its image tag (finaiflow/api:1.1.0 -> 1.1.0)."""
    image = str(record.get("image") or "")
    return image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else (image or "unknown")


def release_metrics(history: Path) -> list[Metric]:
    info = Metric("finaiflow_release_info", "gauge", "The current release of each service (always 1).")
    changed = Metric("finaiflow_release_last_change_timestamp_seconds", "gauge",
                     "When the last deploy or rollback of each service happened.")
    total = Metric("finaiflow_release_records", "gauge",
                   "Releases kept in the history, by service and kind (deploy, rollback, observed).")
    try:
        histories = _histories(json.loads(history.read_text(encoding="utf-8"))) if history.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        # Unreadable, not ours, or caught half-written: say so rather than report no release.
        return [_readable("releases", False)]
    for service, (records, current_id) in sorted(histories.items()):
        kinds: dict[str, int] = {}
        for r in records:
            kinds[_kind(r)] = kinds.get(_kind(r), 0) + 1
        for kind, n in sorted(kinds.items()):
            total.add(n, service=service, kind=kind)
        current = next((r for r in records if r.get("id") == current_id), records[-1])
        info.add(1, service=service, release=_release_name(current), image=str(current.get("image") or ""),
                 id=str(current.get("id", "")))
        last = records[-1]
        at = parse_time(last.get("deployed_at"))
        if at is not None:
            changed.add(at, service=service, kind=_kind(last), release=_release_name(last))
    return [_readable("releases", True), info, changed, total]


def _status_line(path: Path) -> list[str] | None:
    """The fields of a one-line status file, None when it is absent; PermissionError propagates."""
    try:
        return path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return None


def archive_metrics(status_dir: Path) -> list[Metric]:
    """The pgBackRest repository's status files (written by the postgres image's archive command and
    by `finaiflow-ops backup physical`): WAL archiving and physical backups (docs/backups.md)."""
    archived = Metric("finaiflow_wal_last_archived_timestamp_seconds", "gauge",
                      "When the newest WAL segment reached the pgBackRest repository.")
    failed = Metric("finaiflow_wal_archive_last_failure_timestamp_seconds", "gauge",
                    "When the archive command last failed (absent: never).")
    failures = Metric("finaiflow_wal_archive_failures_total", "counter",
                      "Failed runs of the archive command.")
    full = Metric("finaiflow_pgbackrest_last_full_backup_timestamp_seconds", "gauge",
                  "When the newest full pgBackRest backup ended.")
    newest = Metric("finaiflow_pgbackrest_last_backup_timestamp_seconds", "gauge",
                    "When the newest pgBackRest backup (full or differential) ended.")
    try:
        done = _status_line(status_dir / "archived")
        broke = _status_line(status_dir / "failed")
        backups = _status_line(status_dir / "backups")
    except OSError:
        return [_readable("archive", False)]
    try:
        if done:
            archived.add(float(done[0]))
        if broke:
            failed.add(float(broke[0]))
        failures.add(float(broke[1]) if broke else 0.0)
        if backups:
            if float(backups[0]) > 0:
                full.add(float(backups[0]))
            newest.add(float(backups[1]), type=backups[2])
    except (IndexError, ValueError):
        return [_readable("archive", False)]
    return [_readable("archive", True), archived, failed, failures, full, newest]


def disk_metrics(paths: Mapping[str, str]) -> list[Metric]:
    size = Metric("finaiflow_filesystem_size_bytes", "gauge", "Size of the filesystem holding the path.")
    avail = Metric("finaiflow_filesystem_avail_bytes", "gauge",
                   "Space available to unprivileged users on the filesystem holding the path.")
    for name, path in sorted(paths.items()):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        size.add(st.f_blocks * st.f_frsize, mount=name)
        avail.add(st.f_bavail * st.f_frsize, mount=name)
    return [size, avail]


# -- probes over the network ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    project_dir: Path = Path("/facts/project")
    api_host: str = "api"
    api_port: int = 8000
    nginx_host: str = "nginx"
    nginx_https_port: int = 443
    nginx_status_url: str = "http://nginx:8080/stub_status"
    domain: str = "localhost"
    disks: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    archive_status: Path = Path("/facts/volumes/pg_archive/status")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        disks = dict(part.split("=", 1) for part in env.get("DISK_PATHS", "").split(",") if "=" in part)
        return cls(
            project_dir=Path(env.get("PROJECT_DIR", "/facts/project")),
            api_host=env.get("API_HOST", "api"),
            api_port=int(env.get("API_PORT", "8000")),
            nginx_host=env.get("NGINX_HOST", "nginx"),
            nginx_https_port=int(env.get("NGINX_HTTPS_PORT", "443")),
            nginx_status_url=env.get("NGINX_STATUS_URL", "http://nginx:8080/stub_status"),
            domain=env.get("DOMAIN") or "localhost",
            disks=disks,
            timeout=float(env.get("PROBE_TIMEOUT", "3")),
            archive_status=Path(env.get("ARCHIVE_STATUS", "/facts/volumes/pg_archive/status")),
        )


def _probe_family() -> tuple[Metric, Metric]:
    return (Metric("finaiflow_probe_success", "gauge", "1 when the probe got the answer it expects."),
            Metric("finaiflow_probe_duration_seconds", "gauge", "How long the probe took."))


def _get_json(url: str, timeout: float) -> Any:
    """The JSON body of a GET, whatever the status (a 503 from /health still carries its report)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (URLs from the config)
            return json.loads(r.read(65536))
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read(65536))
        except (OSError, ValueError):
            return None
    except (OSError, ValueError):
        return None


def container_of(ptr_name: str) -> str:
    """The container a reverse lookup names, without its network: Docker's DNS answers
    `finaiflow-api-1.finaiflow_default` for a compose container and
    `ffswarm_api.2.k3x9....ffswarm_default` for a swarm task, whose service name alone would be the
    same for every task (a rolling update would count as restarts)."""
    head, dot, _network = ptr_name.rstrip(".").rpartition(".")
    return head if dot else ptr_name.rstrip(".")


def api_container_metrics(cfg: Config) -> list[Metric]:
    """When each api container's process started, by container name.

    Prometheus labels api targets by address, and Docker gives a freed address to the next
    container at once: across rolling updates one address shows many processes. The container
    name (Docker's DNS answers reverse lookups) stays with a container through its restarts, so
    restarts counted per name are restarts, not deploys.
    """
    started = Metric("finaiflow_api_process_start_time_seconds", "gauge",
                     "When the process of each api container started (its /version), by container name.")
    try:
        addresses = sorted({str(a[4][0]) for a in socket.getaddrinfo(cfg.api_host, cfg.api_port,
                                                                 proto=socket.IPPROTO_TCP)})
    except OSError:
        return [started]
    for address in addresses:
        try:
            name = container_of(socket.gethostbyaddr(address)[0])
        except OSError:
            name = address
        body = _get_json(f"http://{address}:{cfg.api_port}/version", cfg.timeout)
        at = parse_time(body.get("started_at")) if isinstance(body, dict) else None
        if at is not None:
            started.add(at, container=name)
    return [started]


def api_health_metrics(cfg: Config) -> list[Metric]:
    """The api's own view of its dependencies: /health answers 200 or 503 with a JSON body."""
    success, duration = _probe_family()
    up = Metric("finaiflow_dependency_up", "gauge",
                "1 when the api reaches the dependency (database: PostgreSQL, cache: Redis), says /health.")
    start = time.monotonic()
    body = _get_json(f"http://{cfg.api_host}:{cfg.api_port}/health", cfg.timeout)
    duration.add(time.monotonic() - start, probe="api_health")
    report = isinstance(body, dict) and all(k in body for k in ("database", "cache"))
    success.add(1 if report else 0, probe="api_health")
    if report:
        for dependency in ("database", "cache"):
            up.add(1 if body[dependency] == "ok" else 0, dependency=dependency)
    return [success, duration, up]


def _certificate_dates(der: bytes) -> tuple[float, float, str, str]:
    """notBefore, notAfter (epoch seconds), subject and issuer of a DER certificate (openssl x509)."""
    done = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-startdate", "-enddate", "-subject", "-issuer",
         "-nameopt", "RFC2253"],
        input=der, capture_output=True, timeout=5, check=True,
    )
    fields = dict(line.split("=", 1) for line in done.stdout.decode().splitlines() if "=" in line)
    return (float(ssl.cert_time_to_seconds(fields["notBefore"])),
            float(ssl.cert_time_to_seconds(fields["notAfter"])),
            fields.get("subject", ""), fields.get("issuer", ""))


def nginx_https_metrics(cfg: Config) -> list[Metric]:
    """GET /nginx-health over TLS with the site's name, as a client would; keep the served certificate."""
    success, duration = _probe_family()
    not_after = Metric("finaiflow_tls_certificate_not_after_timestamp_seconds", "gauge",
                       "When the certificate nginx serves expires.")
    not_before = Metric("finaiflow_tls_certificate_not_before_timestamp_seconds", "gauge",
                        "When the certificate nginx serves became valid.")
    info = Metric("finaiflow_tls_certificate_info", "gauge", "The certificate nginx serves (always 1).")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The served certificate is read, not trusted: expiry is what this measures, and the
    # development certificate is self-signed. Trust is checked by `finaiflow-ops tls check`.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = time.monotonic()
    ok, der = False, b""
    try:
        with socket.create_connection((cfg.nginx_host, cfg.nginx_https_port), timeout=cfg.timeout) as raw, \
                context.wrap_socket(raw, server_hostname=cfg.domain) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            request = f"GET /nginx-health HTTP/1.1\r\nHost: {cfg.domain}\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            status_line = tls.recv(64).split(b"\r\n", 1)[0]
            ok = status_line.split(b" ")[1:2] == [b"200"]
    except (OSError, ssl.SSLError, IndexError):
        ok = False
    duration.add(time.monotonic() - start, probe="nginx_https")
    success.add(1 if ok else 0, probe="nginx_https")
    if der:
        try:
            before, after, subject, issuer = _certificate_dates(der)
        except (OSError, subprocess.SubprocessError, KeyError, ValueError):
            pass
        else:
            not_after.add(after, domain=cfg.domain)
            not_before.add(before, domain=cfg.domain)
            info.add(1, domain=cfg.domain, subject=subject, issuer=issuer)
    return [success, duration, not_after, not_before, info]


def parse_stub_status(text: str) -> dict[str, float]:
    """nginx's stub_status page -> its counters (the names nginx-prometheus-exporter uses)."""
    lines = [ln.split() for ln in text.strip().splitlines()]
    try:
        active = float(lines[0][2])
        accepted, handled, requests = (float(v) for v in lines[2][:3])
        reading, writing, waiting = float(lines[3][1]), float(lines[3][3]), float(lines[3][5])
    except (IndexError, ValueError) as exc:
        raise ValueError("not a stub_status page") from exc
    return {"active": active, "accepted": accepted, "handled": handled, "requests": requests,
            "reading": reading, "writing": writing, "waiting": waiting}


def nginx_status_metrics(cfg: Config) -> list[Metric]:
    up = Metric("nginx_up", "gauge", "1 when nginx's stub_status answered.")
    gauges = {k: Metric(f"nginx_connections_{k}", "gauge", f"Client connections {k}.")
              for k in ("active", "reading", "writing", "waiting")}
    counters = {
        "accepted": Metric("nginx_connections_accepted_total", "counter", "Client connections accepted."),
        "handled": Metric("nginx_connections_handled_total", "counter", "Client connections handled."),
        "requests": Metric("nginx_http_requests_total", "counter", "HTTP requests nginx received."),
    }
    try:
        with urllib.request.urlopen(cfg.nginx_status_url, timeout=cfg.timeout) as r:  # noqa: S310 (config URL)
            values = parse_stub_status(r.read(4096).decode())
    except (OSError, ValueError):
        return [up.add(0)]
    up.add(1)
    for key, metric in {**gauges, **counters}.items():
        metric.add(values[key])
    return [up, *gauges.values(), *counters.values()]


def own_metrics(scrape_started: float) -> list[Metric]:
    return [
        Metric("process_start_time_seconds", "gauge", "When this exporter started.").add(START_TIME),
        Metric("finaiflow_ops_exporter_build_info", "gauge", "Always 1.").add(1, version=VERSION),
        Metric("finaiflow_ops_exporter_scrape_duration_seconds", "gauge", "How long collecting took.")
        .add(time.monotonic() - scrape_started),
    ]


def merge(families: Iterable[Metric]) -> list[Metric]:
    """Families of the same name (readable{fact=...} from two readers) become one."""
    merged: dict[str, Metric] = {}
    for m in families:
        if m.name in merged:
            merged[m.name].samples.extend(m.samples)
        else:
            merged[m.name] = Metric(m.name, m.kind, m.help, list(m.samples))
    return list(merged.values())


def collect(cfg: Config, pool: ThreadPoolExecutor) -> str:
    started = time.monotonic()
    probes: list[Callable[[Config], list[Metric]]] = [api_health_metrics, api_container_metrics,
                                                      nginx_https_metrics, nginx_status_metrics]
    futures = [pool.submit(p, cfg) for p in probes]
    families = backup_metrics(cfg.project_dir / "backups") + release_metrics(
        cfg.project_dir / ".finaiflow" / "releases.json") + disk_metrics(cfg.disks) + archive_metrics(
        cfg.archive_status)
    for f in futures:
        families += f.result()
    return render(merge(families + own_metrics(started)))


# -- the HTTP server ---------------------------------------------------------------------------------


def serve(cfg: Config, port: int) -> None:
    pool = ThreadPoolExecutor(max_workers=6)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, status = collect(cfg, pool).encode(), "text/plain; version=0.0.4", 200
            elif self.path == "/-/healthy":
                body, ctype, status = b"ok\n", "text/plain", 200
            else:
                body, ctype, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape every 10 s is noise; errors go to stderr below

    server = ThreadingHTTPServer(("", port), Handler)
    print(f"ops-exporter listening on :{port}, facts from {cfg.project_dir}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(Config.from_env(os.environ), int(os.environ.get("LISTEN_PORT", "9188")))
