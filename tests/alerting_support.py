"""What the alerting tests share: a real HTTP receiver (tests/alert_receiver.py) in a container of
the base image on a stack's network, and the .env settings that send a stack's alerts to it.

The test session's stack sends every alert to the session's receiver (tests/conftest.py starts it
before the stack, on the stack's network, so that not one notification fails), with Alertmanager's
group wait and interval shortened through the .env settings an operator has too."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

RECEIVER_SOURCE = Path(__file__).with_name("alert_receiver.py").read_text()
RECEIVER_IMAGE = "finaiflow/base:bookworm"
RECEIVER_ALIAS = "alert-receiver"
SESSION_RECEIVER = "finaiflow-alert-receiver"
PORT = 9099


def receiver_settings(host: str = RECEIVER_ALIAS) -> dict[str, str]:
    """ALERT_* settings of a stack whose alerts go to a receiver at `host`: /page for critical,
    /ticket for warning, /heartbeat for the Watchdog; quick groups (a test waits seconds, not minutes)."""
    base = f"http://{host}:{PORT}"
    return {"ALERT_WEBHOOK_URL": f"{base}/page", "ALERT_WARNING_WEBHOOK_URL": f"{base}/ticket",
            "ALERT_HEARTBEAT_URL": f"{base}/heartbeat", "ALERT_GROUP_WAIT": "2s",
            "ALERT_GROUP_INTERVAL": "5s", "ALERT_HEARTBEAT_INTERVAL": "10s"}


class Receiver:
    """A running receiver container: what it got, and waiting for what it should get."""

    def __init__(self, container: Container) -> None:
        self.container = container

    @classmethod
    def start(cls, network: str, *, name: str, alias: str = RECEIVER_ALIAS) -> Receiver:
        client = docker.from_env()
        for old in client.containers.list(all=True, filters={"name": f"^{name}$"}):
            old.remove(force=True)
        container = client.containers.run(
            RECEIVER_IMAGE, ["python3", "-c", RECEIVER_SOURCE], name=name, detach=True,
            network=network, labels={"finaiflow.test": "alert-receiver"},
            networking_config={network: client.api.create_endpoint_config(aliases=[alias])})
        receiver = cls(container)
        deadline = time.monotonic() + 20
        while True:
            try:
                receiver.received()
                return receiver
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @classmethod
    def find(cls, name: str = SESSION_RECEIVER) -> Receiver | None:
        found = docker.from_env().containers.list(filters={"name": f"^{name}$"})
        return cls(found[0]) if found else None

    def received(self) -> list[dict[str, Any]]:
        code, out = self.container.exec_run(["curl", "-fsS", f"http://127.0.0.1:{PORT}/received"])
        assert code == 0, out
        return list(json.loads(out))

    def notifications(self, path: str, alertname: str, *, since: float = 0.0,
                      status: str | None = None) -> list[dict[str, Any]]:
        """Alertmanager's webhook bodies posted to `path` since `since` (epoch s) that carry
        `alertname` (and, when given, the group's status: firing or resolved)."""
        return [n for n in self.received()
                if n["path"] == path and n["at"] >= since and isinstance(n["body"], dict)
                and any(a["labels"].get("alertname") == alertname for a in n["body"].get("alerts", []))
                and (status is None or n["body"].get("status") == status)]

    def wait(self, found: Callable[[], list[dict[str, Any]]], *, timeout: float, what: str,
             context: Callable[[], str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (got := found()):
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: nothing received within {timeout:.0f} s"
                            + (f" ({context()})" if context else ""))
            time.sleep(1)
        return got[0]

    def remove(self) -> None:
        self.container.remove(force=True)
