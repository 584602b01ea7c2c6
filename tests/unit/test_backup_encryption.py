"""Encrypted and off-host backups, pure logic: recipients, manifests, copy destinations, the ssh argv
of a target, the scheduled job's command line."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finaiflow_ops.backup.archive import default_directory
from finaiflow_ops.backup.encryption import parse_recipients, redact
from finaiflow_ops.backup.manifest import Encryption, Manifest, backup_name, is_encrypted_name, parse_name
from finaiflow_ops.backup.offsite import parse_destination
from finaiflow_ops.backup.schedule import Job
from finaiflow_ops.errors import UsageError
from finaiflow_ops.ssh import CONNECTION_LOST, SshConnection
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN"
SECRET = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"


# -- recipients ------------------------------------------------------------------------------------

def test_public_keys_are_taken_as_they_are_and_ssh_comments_dropped() -> None:
    assert parse_recipients([AGE_KEY, f"{SSH_KEY} ops@laptop", AGE_KEY]) == (AGE_KEY, SSH_KEY)


def test_a_recipients_file_gives_its_keys_in_order_without_comments(tmp_path: Path) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text(f"# the ops team\n\n{SSH_KEY} ops@laptop\n  {AGE_KEY}  \n")
    assert parse_recipients([str(path)]) == (SSH_KEY, AGE_KEY)


@pytest.mark.parametrize("text", [SECRET, f"# mine\n{SECRET}\n"])
def test_a_private_key_is_refused_without_being_shown(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    for value in (SECRET, str(path)):
        with pytest.raises(UsageError, match="private key") as caught:
            parse_recipients([value])
        assert SECRET not in caught.value.one_line() and SECRET[16:30] not in caught.value.one_line()


@pytest.mark.parametrize(("content", "message"), [
    (None, "is neither a public key nor a file"),
    ("# nothing\n", "names no public key"),
    (f"{AGE_KEY}\nnot a key\n", "line 2 of"),
])
def test_what_is_not_a_public_key_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "recipients.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message):
        parse_recipients([str(path)])


def test_ages_own_messages_are_redacted() -> None:
    said = redact(f'unknown recipient type: "{SECRET}"')
    assert said == 'unknown recipient type: "AGE-SECRET-KEY-(redacted)"'


# -- names and manifests -----------------------------------------------------------------------------

def test_encrypted_backups_are_named_dump_age_and_parse_like_the_others() -> None:
    when = datetime(2025, 1, 2, 2, 0, tzinfo=UTC)
    name = backup_name("finaiflow_db", when, encrypted=True)
    assert name == "finaiflow_db-20250102T020000Z.dump.age" and is_encrypted_name(name)
    assert parse_name(name) == parse_name(backup_name("finaiflow_db", when)) == ("finaiflow_db", when)
    assert parse_name(name + ".json") is None and not is_encrypted_name(backup_name("finaiflow_db", when))


def _manifest() -> Manifest:
    now = datetime(2025, 1, 2, 2, 0, 5, tzinfo=UTC)
    return Manifest(file="finaiflow_db-20250102T020000Z.dump.age", sha256="a" * 64, size=1234,
                    format="custom", database="finaiflow_db", server_version="15.20",
                    pg_dump_version="pg_dump 15.20",
                    compression="gzip level 1", started_at=now, finished_at=now, verified_at=now,
                    snapshot="00000004-1", tables={"public.t": 3},
                    encryption=Encryption("age", "1.1.1", (AGE_KEY, SSH_KEY), AGE_KEY, "b" * 64, 1000))


def test_the_encryption_round_trips_through_the_manifest() -> None:
    m = _manifest()
    assert Manifest.from_json(m.to_json()) == m


def test_a_plaintext_manifest_has_no_encryption_field() -> None:
    plain = replace(_manifest(), encryption=None)
    assert '"encryption"' not in plain.to_json() and Manifest.from_json(plain.to_json()).encryption is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("recipients", [], "encryption.recipients"),
    ("plaintext_sha256", "nope", "encryption.plaintext_sha256"),
    ("plaintext_size", -1, "encryption.plaintext_size"),
])
def test_a_bad_encryption_field_is_named(field: str, value: object, message: str) -> None:
    data = json.loads(_manifest().to_json())
    data["encryption"][field] = value
    with pytest.raises(ValueError, match=message):
        Manifest.from_json(json.dumps(data))


# -- copy destinations and the ssh argv -----------------------------------------------------------------

def test_an_ssh_copy_destination_names_a_target_and_an_absolute_path() -> None:
    dest = parse_destination("ssh://backup@vault.example:2222/srv/backups/?identity_file=/k/id")
    assert dest.path == "/srv/backups" and dest.target is not None
    assert (dest.target.user, dest.target.host, dest.target.port, dest.target.identity_file) == (
        "backup", "vault.example", 2222, "/k/id")
    assert str(dest) == "ssh://backup@vault.example:2222/srv/backups"
    assert parse_destination("relative/dir").target is None


@pytest.mark.parametrize(("url", "message"), [
    ("ssh://backup@vault.example", "no remote directory"),
    ("ssh://backup@vault.example/", "no remote directory"),
    ("ftp://vault.example/srv", "cannot copy to"),
    ("ssh://vault.example/srv?password=x", "unknown option"),
])
def test_bad_copy_destinations_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_destination(url)


def test_command_argv_runs_as_is_locally_and_in_a_container() -> None:
    argv = ["sh", "-c", 'echo "$1"', "x", "a b;c"]
    assert Target.parse("local://").command_argv(argv) == argv
    assert Target.parse("docker://vps").command_argv(argv) == ["docker", "exec", "-i", "vps", *argv]


def test_command_argv_over_ssh_quotes_once_and_shares_run_s_connection() -> None:
    argv = ["sh", "-c", 'cat >"$1"', "copy", "/srv/it's here"]
    connection = SshConnection("vps", "deploy", 2222, "/k/id", "/k/config")
    ssh = connection.client_argv(shlex.join(argv))
    assert ssh[0] == "ssh" and ssh[-3:-1] == ["--", "vps"]
    assert shlex.split(ssh[-1]) == argv  # the remote shell gets back exactly these arguments
    options = " ".join(ssh[1:-3])
    for wanted in ("-F /k/config", "BatchMode=yes", "StrictHostKeyChecking=accept-new", "User=deploy",
                   "Port=2222", "-i /k/id", "ControlMaster=no", f"ControlPath={connection.control_path}"):
        assert wanted in options, options
    # Never a connection of its own when the shared one is gone: the fallback only says so.
    assert "ProxyCommand=" in options and CONNECTION_LOST in options


# -- the scheduled job ------------------------------------------------------------------------------

def test_the_scheduled_backup_encrypts_and_its_prune_is_unchanged() -> None:
    job = Job("/usr/bin/finaiflow-ops", "/opt/finaiflow", "/opt/finaiflow/backups",
              create_options=("--encrypt-to", AGE_KEY, "--encrypt-to", "/etc/finaiflow/recipients.txt",
                              "--copy-to", "ssh://b@vault/srv/b?identity_file=/k/id"))
    create, physical, prune = job.command().split(" && ")
    assert physical.endswith("backup physical")  # pgBackRest's repository is on the host, not age-encrypted
    assert create.endswith(f"backup create --encrypt-to {AGE_KEY} --encrypt-to /etc/finaiflow/recipients.txt "
                           "--copy-to 'ssh://b@vault/srv/b?identity_file=/k/id' --dir /opt/finaiflow/backups")
    assert "--encrypt-to" not in prune and "--copy-to" not in prune
    assert job.cron_block().count("--encrypt-to") == 2
    assert "--encrypt-to" in job.systemd_units()[f"{job.unit}.service"]


def test_a_remote_target_has_no_default_backup_directory() -> None:
    # PROJECT_DIR is a path on the target: streamed here, backups need a directory named here (the
    # host's own finaiflow-ops keeps them in PROJECT_DIR/backups: archive.take).
    with pytest.raises(UsageError, match="streamed to this machine are kept in a directory that must be"):
        default_directory(Stack(Target.parse("ssh://deploy@vps"), "/opt/finaiflow"))
    local = Stack(Target.parse("local://"), "/opt/finaiflow")
    assert default_directory(local) == Path("/opt/finaiflow/backups")
