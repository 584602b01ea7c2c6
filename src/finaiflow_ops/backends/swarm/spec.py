"""The compose model (compose.yaml + swarm.yaml, as `docker compose config` resolves it) turned
into a `docker stack deploy` file, and the Docker secrets it needs. Pure functions: no engine.

Secret values never go into the file: every environment variable that holds one (by name, or a
URL with a password) becomes a Docker secret mounted at /run/secrets/NAME, and the variable is
replaced by NAME_FILE, which the images read (the official images' convention). Secret names end
with a digest of the value: a changed .env makes new secrets, and services roll onto them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from finaiflow_ops import envfile

# What `docker stack deploy` (compose file format 3.9) understands, per service. The rest of the
# compose model (build, pull_policy, restart, depends_on, expose, security_opt, shm_size) either
# means nothing to Swarm or is replaced: mem_limit by deploy.resources, restart by restart_policy.
_KEPT = (
    "image",
    "command",
    "entrypoint",
    "environment",
    "healthcheck",
    "stop_grace_period",
    "stop_signal",
    "user",
    "read_only",
    "tmpfs",
    "cap_drop",
    "cap_add",
    "logging",
    "labels",
    "working_dir",
    "hostname",
    "init",
    "ulimits",
    "sysctls",
)
_DEPLOY_KEPT = (
    "mode",
    "replicas",
    "endpoint_mode",
    "update_config",
    "rollback_config",
    "restart_policy",
    "placement",
    "labels",
    "resources",
    "max_replicas_per_node",
)
FORMAT_VERSION = "3.9"


@dataclass(frozen=True)
class Secret:
    """A Docker secret made from one .env value: `name` in the engine, mounted as /run/secrets/name."""

    name: str
    variable: str  # the environment variable it replaces
    digest: str  # sha256 of the value, first 12 hex digits

    @property
    def path(self) -> str:
        return f"/run/secrets/{self.name}"


@dataclass(frozen=True)
class SwarmSpec:
    """The stack file (no secret values in it) and the secrets to create before deploying it."""

    stack: dict[str, Any]
    secrets: dict[str, tuple[Secret, str]]  # name -> (secret, value): the values stay in memory

    @property
    def secret_names(self) -> list[str]:
        return sorted(self.secrets)


def secret_for(project: str, variable: str, value: str) -> Secret:
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return Secret(f"{project}_{variable.lower()}_{digest}", variable, digest)


def _memory(value: Any) -> str | None:
    if value in (None, "", "0", 0):
        return None
    text = str(value)
    return f"{text}b" if text.isdigit() else text  # compose config gives bytes, stack deploy wants a unit


def _ports(ports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Host-mode ports: the ingress mesh needs IPVS, and dnsrr services cannot use it anyway. Swarm
    cannot bind a host address, so a port compose kept on 127.0.0.1 is open on every interface of
    the node it runs on: the host firewall decides (finaiflow-ops harden, docs/swarm.md)."""
    return [
        {
            "target": int(p["target"]),
            "published": int(p["published"]),
            "protocol": p.get("protocol", "tcp"),
            "mode": "host",
        }
        for p in ports
        if p.get("published")
    ]


def _volumes(volumes: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for v in volumes:
        entry = {"type": v["type"], "source": v.get("source"), "target": v["target"]}
        if v.get("read_only"):
            entry["read_only"] = True
        kept.append({k: val for k, val in entry.items() if val is not None})
    return kept


def _deploy(service: Mapping[str, Any]) -> dict[str, Any]:
    deploy = {
        k: v for k, v in (service.get("deploy") or {}).items() if k in _DEPLOY_KEPT and v not in ({}, None)
    }
    memory = _memory(service.get("mem_limit"))
    if memory:
        deploy.setdefault("resources", {}).setdefault("limits", {})["memory"] = memory
    return deploy


def _healthcheck(check: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # An interval alone (the compose file shortens the api's) keeps the image's own test.
    return dict(check) if check else None


def convert(config: Mapping[str, Any], project: str) -> SwarmSpec:
    """The stack file for `config` (the resolved compose model, secrets included) under `project`."""
    services: dict[str, Any] = {}
    secrets: dict[str, tuple[Secret, str]] = {}
    for name, svc in (config.get("services") or {}).items():
        out: dict[str, Any] = {k: svc[k] for k in _KEPT if svc.get(k) not in (None, [], {})}
        environment = {k: ("" if v is None else str(v)) for k, v in (svc.get("environment") or {}).items()}
        mounted = []
        for variable, value in sorted(environment.items()):
            if envfile.is_secret(variable, value):
                secret = secret_for(project, variable, value)
                secrets[secret.name] = (secret, value)
                del environment[variable]
                environment[f"{variable}_FILE"] = secret.path
                # Docker's default mode, 0444: the images run as their own users (api 1001,
                # postgres, redis), whose ids differ between base images; only they run inside.
                mounted.append({"source": secret.name, "target": secret.name})
        if environment:
            out["environment"] = environment
        if mounted:
            out["secrets"] = mounted
        check = _healthcheck(svc.get("healthcheck"))
        if check:
            out["healthcheck"] = check
        if svc.get("ports"):
            out["ports"] = _ports(svc["ports"])
        if svc.get("volumes"):
            out["volumes"] = _volumes(svc["volumes"])
        out["networks"] = sorted(svc.get("networks") or {"default": None})
        out["deploy"] = _deploy(svc)
        services[name] = out
    stack: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "services": services,
        # Attachable: the one-off migration container joins the stack's network like a task.
        "networks": {
            name: {"driver": "overlay", "attachable": True} for name in (config.get("networks") or {})
        },
        "volumes": {name: {} for name in (config.get("volumes") or {})},
        "secrets": {name: {"external": True} for name in sorted(secrets)},
    }
    return SwarmSpec(stack, secrets)
