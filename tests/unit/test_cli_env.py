"""`env generate --alert-*`: a new .env with its alert receivers, checked like `env check`; the
webhook URLs and the SMTP password (from the environment, never an option) are never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finaiflow_ops import envfile
from finaiflow_ops.cli import main

PAGE = "https://hooks.example.org/services/T0/B0/pageTok3n"
TICKET = "http://tickets.internal:8080/hook/ticketTok3n"
BEAT = "https://hc-ping.example.org/beatTok3n"
PASSWORD = "pw-Xk4mQ9vT2pLw"
SMTP = ["--alert-smtp-host", "smtp.example.org:587", "--alert-smtp-from", "alertmanager@example.org",
        "--alert-smtp-to", "ops@example.org"]


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FINAIFLOW_TARGET", "FINAIFLOW_PROJECT_DIR", "FINAIFLOW_ENV_FILE", "ALERT_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def generate(capsys: pytest.CaptureFixture[str], stack: Path, *argv: str) -> tuple[int, str]:
    """Run `env generate` into stack; its exit code and everything it printed."""
    with pytest.raises(SystemExit) as exited:
        main(["env", "generate", "--project-dir", str(stack), *argv])
    printed = capsys.readouterr()
    return int(exited.value.code or 0), printed.out + printed.err


def test_every_alert_option_lands_in_the_env_and_no_secret_is_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", PASSWORD)
    code, printed = generate(capsys, tmp_path, "--alert-webhook-url", PAGE, "--alert-warning-webhook-url",
                             TICKET, "--alert-heartbeat-url", BEAT, *SMTP, "--alert-smtp-username", "am",
                             "--json")
    assert code == 0, printed
    loaded = envfile.load(tmp_path / ".env")
    assert {key: loaded.values.get(key) for key in envfile.ALERT_RECEIVER_KEYS} == {
        "ALERT_WEBHOOK_URL": PAGE, "ALERT_WARNING_WEBHOOK_URL": TICKET, "ALERT_HEARTBEAT_URL": BEAT,
        "ALERT_SMTP_HOST": "smtp.example.org:587", "ALERT_SMTP_FROM": "alertmanager@example.org",
        "ALERT_SMTP_TO": "ops@example.org", "ALERT_SMTP_USERNAME": "am", "ALERT_SMTP_PASSWORD": PASSWORD,
    }
    assert envfile.check(loaded) == []
    assert set(envfile.ALERT_RECEIVER_KEYS) <= set(json.loads(printed)["keys"])
    assert "Tok3n" not in printed and PASSWORD not in printed


def test_without_alert_options_no_alert_key_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", PASSWORD)  # read only for --alert-smtp-username
    assert generate(capsys, tmp_path)[0] == 0
    assert not [key for key in envfile.load(tmp_path / ".env").values if key.startswith("ALERT_")]


@pytest.mark.parametrize(("argv", "says"), [
    (["--alert-webhook-url", "hooks.example.org/services/pageTok3n"],
     "error: --alert-webhook-url is not an http(s) URL with a host: give the paging receiver's full"),
    (["--alert-webhook-url", PAGE, "--alert-heartbeat-url", "ftp://hc-ping.example.org/beatTok3n"],
     "error: --alert-heartbeat-url is not an http(s) URL with a host"),
    (["--alert-warning-webhook-url", TICKET],
     "error: --alert-webhook-url missing while --alert-warning-webhook-url is set"),
    (["--alert-smtp-host", "smtp.example.org", *SMTP[2:]], "error: --alert-smtp-host must be host:port"),
    (SMTP[:2], "error: --alert-smtp-from missing or not an e-mail address (--alert-smtp-host is set)"),
    ([*SMTP, "--alert-smtp-username", "am"],
     "error: --alert-smtp-username needs the SMTP password in $ALERT_SMTP_PASSWORD: "
     "export ALERT_SMTP_PASSWORD"),
    (["--alert-webhook-url", ""], "error: --alert-webhook-url is empty"),
])
def test_a_bad_alert_option_is_one_usage_error_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    code, printed = generate(capsys, tmp_path, *argv)
    assert code == 2, printed
    assert printed.strip().splitlines() == [printed.strip()]  # one line
    assert printed.startswith(says), printed
    assert "Tok3n" not in printed
    assert list(tmp_path.iterdir()) == []


def test_a_bad_alert_option_with_force_keeps_the_old_env(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert generate(capsys, tmp_path)[0] == 0
    before = (tmp_path / ".env").read_text()
    code, printed = generate(capsys, tmp_path, "--force", "--yes", "--alert-webhook-url", "pageTok3n")
    assert (code, "Tok3n" in printed) == (2, False), printed
    assert (tmp_path / ".env").read_text() == before
