"""compose model -> `docker stack deploy` file: secrets out of the file, ports, limits, keys."""

from __future__ import annotations

import json
from typing import Any

from finaiflow_ops.backends.swarm.spec import convert, secret_for

SECRET = "s3cr3t-value-that-must-not-leak-0123456789"
CONFIG: dict[str, Any] = {
    "name": "demo",
    "services": {
        "api": {
            "image": "finaiflow/api:1.0.0",
            "build": {"context": "api"},
            "pull_policy": "never",
            "restart": "unless-stopped",
            "depends_on": {"postgres": {"condition": "service_healthy"}},
            "security_opt": ["no-new-privileges:true"],
            "environment": {
                "SECRET_KEY": SECRET,
                "DATABASE_URL": f"postgresql+asyncpg://u:{SECRET}@postgres/db",
                "CACHE_TTL": "300",
                "EMPTY": None,
            },
            "mem_limit": "536870912",
            "healthcheck": {"interval": "2s"},
            "deploy": {"replicas": 2, "endpoint_mode": "dnsrr", "resources": {}, "placement": {}},
        },
        "nginx": {
            "image": "finaiflow/nginx:local",
            "ports": [
                {
                    "mode": "ingress",
                    "host_ip": "127.0.0.1",
                    "target": 443,
                    "published": "8443",
                    "protocol": "tcp",
                }
            ],
            "volumes": [{"type": "volume", "source": "nginx_ssl", "target": "/etc/nginx/ssl"}],
        },
    },
    "networks": {"default": {"name": "demo_default"}},
    "volumes": {"nginx_ssl": {"name": "demo_nginx_ssl"}},
}


def test_secret_values_become_docker_secrets_and_never_appear_in_the_stack_file() -> None:
    spec = convert(CONFIG, "demo")
    text = json.dumps(spec.stack)
    assert SECRET not in text
    api = spec.stack["services"]["api"]
    assert api["environment"]["CACHE_TTL"] == "300"
    assert "SECRET_KEY" not in api["environment"] and "DATABASE_URL" not in api["environment"]
    key = secret_for("demo", "SECRET_KEY", SECRET)
    assert api["environment"]["SECRET_KEY_FILE"] == f"/run/secrets/{key.name}"
    assert {s["source"] for s in api["secrets"]} == set(spec.secrets) == set(spec.stack["secrets"])
    assert spec.secrets[key.name][1] == SECRET
    assert all(v == {"external": True} for v in spec.stack["secrets"].values())


def test_a_changed_value_makes_a_new_secret_name() -> None:
    assert secret_for("demo", "SECRET_KEY", "a").name != secret_for("demo", "SECRET_KEY", "b").name
    assert secret_for("demo", "SECRET_KEY", "a").name == secret_for("demo", "SECRET_KEY", "a").name


def test_compose_only_keys_are_dropped_and_limits_mapped() -> None:
    api = convert(CONFIG, "demo").stack["services"]["api"]
    for key in ("build", "pull_policy", "restart", "depends_on", "security_opt", "mem_limit"):
        assert key not in api, key
    assert api["deploy"] == {
        "replicas": 2,
        "endpoint_mode": "dnsrr",
        "resources": {"limits": {"memory": "536870912b"}},
    }
    assert api["healthcheck"] == {"interval": "2s"}


def test_ports_are_host_mode_without_a_host_address() -> None:
    spec = convert(CONFIG, "demo").stack
    assert spec["services"]["nginx"]["ports"] == [
        {"target": 443, "published": 8443, "protocol": "tcp", "mode": "host"}
    ]
    assert spec["services"]["nginx"]["volumes"] == [
        {"type": "volume", "source": "nginx_ssl", "target": "/etc/nginx/ssl"}
    ]
    assert spec["networks"] == {"default": {"driver": "overlay", "attachable": True}}
    assert spec["volumes"] == {"nginx_ssl": {}}
    assert spec["version"] == "3.9"
