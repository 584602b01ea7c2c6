"""The renewal schedule's rendering and crontab merging, and the development CA's files."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from finaiflow_ops.errors import UsageError
from finaiflow_ops.tls import devca
from finaiflow_ops.tls.certs import validate
from finaiflow_ops.tls.check import _hsts_finding
from finaiflow_ops.tls.schedule import CRON_MARKER, cron_line, merge_crontab, systemd_units, unit_name

DIR = "/srv/finaiflow"
LINE = "7 3,15 * * * finaiflow-ops --project-dir /srv/finaiflow --yes tls renew >>/srv/log 2>&1"


def test_merging_adds_the_entry_once_and_keeps_other_lines() -> None:
    existing = "MAILTO=ops@example.org\n0 1 * * * /usr/local/bin/backup\n"
    once = merge_crontab(existing, DIR, LINE)
    assert once == existing + f"{CRON_MARKER}{DIR}\n{LINE}\n"
    assert merge_crontab(once, DIR, LINE) == once


def test_merging_replaces_a_changed_entry_and_removes_it() -> None:
    once = merge_crontab("", DIR, LINE)
    changed = merge_crontab(once, DIR, LINE.replace("renew", "renew --force"))
    assert changed.count(CRON_MARKER) == 1 and "--force" in changed
    assert merge_crontab(changed, DIR, None) == ""


def test_entries_of_other_stacks_are_left_alone() -> None:
    both = merge_crontab(merge_crontab("", DIR, LINE), "/srv/other", LINE.replace(DIR, "/srv/other"))
    assert merge_crontab(both, DIR, None) == f"{CRON_MARKER}/srv/other\n{LINE.replace(DIR, '/srv/other')}\n"


def test_the_cron_line_runs_twice_a_day_at_a_minute_of_its_own() -> None:
    line = cron_line(DIR, "finaiflow-ops tls renew", "/srv/renew.log")
    minute, hours, *_ = line.split()
    first, second = (int(h) for h in hours.split(","))
    assert 0 <= int(minute) < 60 and second == first + 12
    assert line.endswith("finaiflow-ops tls renew >>/srv/renew.log 2>&1")
    with pytest.raises(UsageError, match="'%'"):
        cron_line(DIR, "date +%s", "/l")


def test_the_systemd_timer_runs_the_service_twice_a_day() -> None:
    units = systemd_units("finaiflow-prod", DIR, "finaiflow-ops --project-dir /srv/finaiflow --yes tls renew")
    name = unit_name("finaiflow-prod")
    assert set(units) == {f"{name}.service", f"{name}.timer"}
    service, timer = units[f"{name}.service"], units[f"{name}.timer"]
    assert "Type=oneshot" in service
    assert "ExecStart=/bin/sh -c 'finaiflow-ops --project-dir /srv/finaiflow --yes tls renew'" in service
    calendar = next(ln for ln in timer.splitlines() if ln.startswith("OnCalendar="))
    hours = calendar.split()[1].split(":")[0].split(",")
    assert int(hours[1]) == int(hours[0]) + 12
    assert "Persistent=true" in timer and "WantedBy=timers.target" in timer


def test_the_development_ca_key_is_private_and_reused(tmp_path: Path) -> None:
    ca = devca.ensure_dev_ca(tmp_path / "ca")
    assert ca.created
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    again = devca.ensure_dev_ca(tmp_path / "ca")
    assert not again.created and again.cert_path.read_bytes() == ca.cert_path.read_bytes()


def test_the_development_certificate_validates_against_its_ca(tmp_path: Path) -> None:
    from cryptography import x509

    ca = devca.ensure_dev_ca(tmp_path)
    cert, key = devca.issue_from_dev_ca(["staging.finaiflow.test"], ca=ca)
    root = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    result = validate(cert, key, domains=["staging.finaiflow.test", "localhost"], anchors=[root])
    assert result.ok, result.problems
    assert result.leaf.sans == ("staging.finaiflow.test", "localhost", "127.0.0.1")
    assert 85 <= result.leaf.days_left <= 90
    with pytest.raises(UsageError, match="no domain"):
        devca.issue_from_dev_ca([], ca=ca)


def test_a_damaged_development_ca_is_named_not_shown(tmp_path: Path) -> None:
    ca = devca.ensure_dev_ca(tmp_path)
    ca.key_path.write_text("garbage")
    with pytest.raises(UsageError, match="cannot be read") as caught:
        devca.ensure_dev_ca(tmp_path)
    assert "garbage" not in caught.value.one_line()


@pytest.mark.parametrize(("header", "ok"), [
    ("max-age=63072000; includeSubDomains", True),
    ('max-age="31536000"', True),
    ("max-age=86400", False),
    (None, False),
])
def test_hsts_needs_a_max_age_of_a_year(header: str | None, ok: bool) -> None:
    assert _hsts_finding("HSTS", 200, header, 31536000).ok is ok


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_rendered_units(tmp_path: Path) -> None:
    """systemd's own parser, offline (no running systemd needed): the units load without error."""
    units = systemd_units("finaiflow", DIR, f"{sys.executable} -m finaiflow_ops.cli --yes tls renew")
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in units)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
