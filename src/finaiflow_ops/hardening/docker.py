"""The Docker daemon: no unprotected TCP socket; log rotation, live-restore, no-new-privileges.

State comes from `docker info` where the engine answers (effective: live-restore, the logging
driver), /etc/docker/daemon.json (log-opts and no-new-privileges, which `docker info` does not
report) and dockerd's command line (`-H tcp://...` set by a service unit). Every finding says
which of them it read. `apply` edits daemon.json only, keeping every other key; live-restore is
reloaded with SIGHUP, the other settings take effect when dockerd restarts (with live-restore on,
containers keep running through it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finaiflow_ops.hardening.base import (
    Command,
    Context,
    Manual,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    WriteFile,
    run_many,
)

__all__ = ["DAEMON_JSON", "DaemonSettingsRule", "DaemonState", "DaemonTcpSocketRule", "EngineInfo",
           "tcp_hosts"]

DAEMON_JSON = "/etc/docker/daemon.json"
LOG_OPTS = {"max-size": "10m", "max-file": "3"}
_RESTART_NOTE = "takes effect when dockerd restarts"


@dataclass(frozen=True)
class EngineInfo:
    """What the rules read of `docker info`: the settings in effect now."""

    logging_driver: str
    live_restore: bool

    @classmethod
    def from_json(cls, info: dict[str, Any]) -> EngineInfo:
        return cls(str(info.get("LoggingDriver") or ""), bool(info.get("LiveRestoreEnabled")))


@dataclass(frozen=True)
class DaemonState:
    info: EngineInfo | None  # `docker info` (None: the engine does not answer)
    config: dict[str, Any]  # daemon.json ({} when absent)
    config_exists: bool
    config_error: str  # daemon.json that is not a JSON object
    args: tuple[str, ...]  # dockerd's command line

    @property
    def source(self) -> str:
        parts = ["docker info" if self.info is not None else "docker info unavailable (engine not running)",
                 DAEMON_JSON if self.config_exists else f"{DAEMON_JSON} (absent)"]
        if self.args:
            parts.append("dockerd command line")
        return ", ".join(parts)


def tcp_hosts(state: DaemonState) -> tuple[list[str], list[str]]:
    """Unprotected TCP listeners: (from daemon.json, from the command line); --tlsverify protects them."""
    args = list(state.args)
    if state.config.get("tlsverify") is True or "--tlsverify" in args:
        return [], []
    from_args = []
    for i, arg in enumerate(args):
        if arg in ("-H", "--host") and i + 1 < len(args):
            from_args.append(args[i + 1])
        elif arg.startswith(("-H=", "--host=")):
            from_args.append(arg.split("=", 1)[1])
    from_config = [h for h in state.config.get("hosts") or [] if isinstance(h, str)]
    return ([h for h in from_config if h.startswith("tcp://")], [h for h in from_args if h.startswith("tcp://")])


def read_daemon(ctx: Context) -> DaemonState:
    docker_info, daemon_json, ps, installed_check = run_many(
        ctx.target, ("docker", "info", "--format", "{{json .}}"), ("cat", DAEMON_JSON),
        ("ps", "-C", "dockerd", "-o", "args="), ("sh", "-c", "command -v dockerd || test -d /etc/docker"))
    info = (EngineInfo.from_json(json.loads(docker_info.stdout))
            if docker_info.ok and docker_info.stdout.strip() else None)
    text = daemon_json.stdout if daemon_json.ok else None
    config: dict[str, Any] = {}
    error = ""
    if text is not None and text.strip():
        try:
            parsed = json.loads(text)
            config = parsed if isinstance(parsed, dict) else {}
            error = "" if isinstance(parsed, dict) else "is not a JSON object"
        except json.JSONDecodeError as exc:
            error = f"is not valid JSON (line {exc.lineno})"
    args = tuple(ps.stdout.split()) if ps.ok else ()
    if not (info is not None or text is not None or args or installed_check.ok):
        raise NotApplicable("Docker is not installed")
    return DaemonState(info, config, text is not None, error, args)


class _DaemonRule(Rule[DaemonState]):
    def facts(self, ctx: Context) -> DaemonState:
        return read_daemon(ctx)

    def write(self, state: DaemonState, config: dict[str, Any], what: str) -> WriteFile:
        if state.config_error:
            raise Manual(f"{DAEMON_JSON} {state.config_error}: fix it by hand first")
        return WriteFile(DAEMON_JSON, json.dumps(config, indent=2) + "\n", note=f"{what} ({_RESTART_NOTE})")


class DaemonTcpSocketRule(_DaemonRule):
    id = "docker.daemon.tcp-socket"
    title = "Docker API not exposed on TCP without TLS"
    severity = Severity.HIGH

    def evaluate(self, ctx: Context, state: DaemonState) -> Verdict:
        from_config, from_args = tcp_hosts(state)
        problems = [f"Docker API on {h} without TLS ({DAEMON_JSON})" for h in from_config]
        problems += [f"Docker API on {h} without TLS (dockerd command line)" for h in from_args]
        if state.config_error:
            problems.append(f"{DAEMON_JSON} {state.config_error}")
        return Verdict(tuple(problems), state.source, "no TCP listener without TLS")

    def plan(self, ctx: Context, state: DaemonState) -> Sequence[Operation]:
        from_config, from_args = tcp_hosts(state)
        if from_args:
            raise Manual(f"dockerd is started with {' '.join(from_args)}: remove it from its service unit "
                         "(systemctl edit docker), or enable --tlsverify")
        config = dict(state.config)
        hosts = [h for h in config.get("hosts") or [] if h not in from_config]
        if hosts:
            config["hosts"] = hosts
        else:
            config.pop("hosts", None)  # the default: the local unix socket only
        return [self.write(state, config, f"remove {', '.join(from_config)} from hosts")]


class DaemonSettingsRule(_DaemonRule):
    id = "docker.daemon.settings"
    title = "Docker daemon: log rotation, live-restore, no-new-privileges"
    severity = Severity.MEDIUM

    @staticmethod
    def _driver(state: DaemonState) -> str:
        in_effect = state.info.logging_driver if state.info is not None else ""
        return in_effect or str(state.config.get("log-driver") or "json-file")

    @staticmethod
    def _live_restore(state: DaemonState) -> bool:
        if state.info is not None:
            return state.info.live_restore
        return state.config.get("live-restore") is True

    def evaluate(self, ctx: Context, state: DaemonState) -> Verdict:
        problems = []
        driver = self._driver(state)
        if driver == "json-file" and not (state.config.get("log-opts") or {}).get("max-size"):
            problems.append("json-file logs have no max-size: they grow without bound")
        if not self._live_restore(state):
            problems.append("live-restore is set in daemon.json but not active (reload dockerd)"
                            if state.config.get("live-restore") is True else "live-restore is off")
        if state.config.get("no-new-privileges") is not True:
            problems.append("no-new-privileges is not the default for containers")
        if state.config_error:
            problems.append(f"{DAEMON_JSON} {state.config_error}")
        return Verdict(tuple(problems), state.source,
                       f"log driver {driver} rotated, live-restore, no-new-privileges")

    def plan(self, ctx: Context, state: DaemonState) -> Sequence[Operation]:
        config = dict(state.config)
        if self._driver(state) == "json-file":
            config["log-opts"] = {**LOG_OPTS, **(config.get("log-opts") or {})}
        config["live-restore"] = True
        config["no-new-privileges"] = True
        ops: list[Operation] = []
        if config != state.config:
            ops.append(self.write(state, config, "set log-opts, live-restore, no-new-privileges"))
        if state.info is not None and not self._live_restore(state):
            ops.append(Command("reload dockerd (SIGHUP: live-restore is reloadable)",
                               ("sh", "-c", 'kill -HUP "$(cat /var/run/docker.pid)"')))
        return ops
