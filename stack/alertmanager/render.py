"""Render Alertmanager's configuration from the environment, check it, then start Alertmanager.

    render.py                 render, `amtool check-config`, exec Alertmanager with it
    render.py --check-only    render and check only (the image build; the route tests)
    render.py --check-only --out FILE   ... and keep the rendered file
    render.py ARGS...         ARGS go to Alertmanager (the compose file sets --log.level)

The environment is the .env's (compose passes the ALERT_* settings):
  ALERT_WEBHOOK_URL          the paging webhook (critical alerts); unset: nobody is paged
  ALERT_WARNING_WEBHOOK_URL  the ticket webhook (warning alerts); default ALERT_WEBHOOK_URL
  ALERT_HEARTBEAT_URL        the dead man's switch: Watchdog is sent there every heartbeat interval
  ALERT_SMTP_HOST (host:port), ALERT_SMTP_FROM, ALERT_SMTP_TO, ALERT_SMTP_USERNAME,
  ALERT_SMTP_PASSWORD        e-mail for critical and warning alerts, when ALERT_SMTP_HOST is set
  ALERT_GROUP_WAIT (30s), ALERT_GROUP_INTERVAL (5m), ALERT_REPEAT_INTERVAL (4h),
  ALERT_HEARTBEAT_INTERVAL (1m)
On a swarm, a secret comes as NAME_FILE (a Docker secret's path), which is read instead.
A configuration amtool refuses stops the container before Alertmanager uses it. Nothing printed
here holds a setting's value: URLs and passwords carry tokens.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "alertmanager.yml.in"
DEFAULT_OUT = Path("/tmp/alertmanager.yml")  # noqa: S108 - the container's own tmpfs
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
INTERVALS = {"group_wait": ("ALERT_GROUP_WAIT", "30s"), "group_interval": ("ALERT_GROUP_INTERVAL", "5m"),
             "repeat_interval": ("ALERT_REPEAT_INTERVAL", "4h"),
             "heartbeat_interval": ("ALERT_HEARTBEAT_INTERVAL", "1m")}
SECRET_KEYS = ("ALERT_WEBHOOK_URL", "ALERT_WARNING_WEBHOOK_URL", "ALERT_HEARTBEAT_URL",
               "ALERT_SMTP_USERNAME", "ALERT_SMTP_PASSWORD")


def fail(message: str) -> None:
    print(f"alertmanager configuration: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def webhooks(url: str, *, send_resolved: bool = True) -> list[dict[str, object]]:
    if not url:
        return []
    if not url.startswith(("http://", "https://")):
        fail("a webhook URL is not http(s) (run `finaiflow-ops env check`)")
    return [{"url": url, "send_resolved": send_resolved}]


def fields(env: dict[str, str]) -> dict[str, str]:
    """The template's @name@ fields, each a JSON value."""
    values: dict[str, object] = {}
    for name, (key, default) in INTERVALS.items():
        value = env.get(key) or default
        if not DURATION.fullmatch(value):
            fail(f"{key} is not a duration such as 30s, 5m or 4h")
        values[name] = value
    page = env.get("ALERT_WEBHOOK_URL", "")
    values["paging_webhooks"] = webhooks(page)
    values["ticket_webhooks"] = webhooks(env.get("ALERT_WARNING_WEBHOOK_URL") or page)
    values["heartbeat_webhooks"] = webhooks(env.get("ALERT_HEARTBEAT_URL", ""), send_resolved=False)
    smtp: dict[str, object] = {}
    emails: list[dict[str, object]] = []
    if env.get("ALERT_SMTP_HOST"):
        if not env.get("ALERT_SMTP_TO") or not env.get("ALERT_SMTP_FROM"):
            fail("ALERT_SMTP_HOST is set without ALERT_SMTP_FROM and ALERT_SMTP_TO")
        smtp = {"smtp_smarthost": env["ALERT_SMTP_HOST"], "smtp_from": env["ALERT_SMTP_FROM"]}
        if env.get("ALERT_SMTP_USERNAME"):
            smtp["smtp_auth_username"] = env["ALERT_SMTP_USERNAME"]
            smtp["smtp_auth_password"] = env.get("ALERT_SMTP_PASSWORD", "")
        emails = [{"to": env["ALERT_SMTP_TO"], "send_resolved": True}]
    elif any(env.get(k) for k in ("ALERT_SMTP_FROM", "ALERT_SMTP_TO", "ALERT_SMTP_USERNAME")):
        fail("SMTP settings are given without ALERT_SMTP_HOST")
    values["emails"] = emails
    rendered = {name: json.dumps(value) for name, value in values.items()}
    # The global SMTP settings, one `key: value` line each under `global:`.
    rendered["smtp_global"] = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in smtp.items())
    return rendered


def render(env: dict[str, str]) -> str:
    values = fields(env)
    text = TEMPLATE.read_text()

    def field(match: re.Match[str]) -> str:
        return values[match[1]]

    return re.sub(r"@([a-z_]+)@", field, text)


def redact(text: str, env: dict[str, str]) -> str:
    for key in SECRET_KEYS:
        if env.get(key):
            text = text.replace(env[key], "***")
    return text


def check(path: Path, env: dict[str, str]) -> None:
    result = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        fail("amtool check-config refused it:\n" + redact(result.stdout + result.stderr, env))


def environment() -> dict[str, str]:
    """The process environment, with every NAME_FILE (a swarm's Docker secret) read into NAME."""
    env = dict(os.environ)
    for key, path in os.environ.items():
        if key.startswith("ALERT_") and key.endswith("_FILE") and not env.get(key[:-5]):
            env[key[:-5]] = Path(path).read_text().strip()
    return env


def main(argv: list[str]) -> None:
    env = environment()
    check_only = "--check-only" in argv
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else DEFAULT_OUT
    extra = [a for a in argv if a.startswith("--log.")]
    text = render(env)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".alertmanager.")  # 0600: it holds the URLs
    with os.fdopen(fd, "w") as f:
        f.write(text)
    Path(tmp).replace(out)
    check(out, env)
    if check_only:
        print(f"alertmanager configuration: {out} is valid", flush=True)
        return
    args = ["prometheus-alertmanager", f"--config.file={out}", "--storage.path=/alertmanager",
            "--web.listen-address=:9093", "--cluster.listen-address=", "--data.retention=120h", *extra]
    os.execvp(args[0], args)  # noqa: S606 - Alertmanager replaces this process


if __name__ == "__main__":
    main(sys.argv[1:])
