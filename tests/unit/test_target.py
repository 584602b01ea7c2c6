"""Target URLs and result rendering: pure logic."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from finaiflow_ops.errors import TargetUnreachable, UsageError
from finaiflow_ops.output import jsonable
from finaiflow_ops.target import Target


@pytest.mark.parametrize(
    ("url", "kind", "host", "user", "port"),
    [
        ("local://", "local", "", "", None),
        ("ssh://deploy@staging.example:2222", "ssh", "staging.example", "deploy", 2222),
        ("ssh://staging.example", "ssh", "staging.example", "", None),
        ("docker://vps-1", "docker", "vps-1", "", None),
    ],
)
def test_target_urls_parse(url: str, kind: str, host: str, user: str, port: int | None) -> None:
    t = Target.parse(url)
    assert (t.kind, t.host, t.user, t.port, str(t)) == (kind, host, user, port, url)


@pytest.mark.parametrize("url", ["ftp://x", "ssh://", "local://somewhere", "staging", "ssh://h:99999"])
def test_bad_target_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        Target.parse(url)
    assert url in caught.value.one_line() and "use local://, ssh://" in caught.value.one_line()


def test_published_ports_are_reached_at_the_ssh_host_or_loopback() -> None:
    assert Target.parse("ssh://d@10.0.0.5").address == "10.0.0.5"
    assert Target.parse("local://").address == "127.0.0.1"


def test_local_run_returns_output_and_status() -> None:
    result = Target.parse("local://").run("sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_local_run_passes_arguments_without_a_shell() -> None:
    result = Target.parse("local://").run("printf", "%s|", "a b", "$HOME", ";rm")
    assert result.stdout == "a b|$HOME|;rm|"


def test_a_container_target_has_no_docker_engine() -> None:
    with pytest.raises(UsageError, match="is a container, not a Docker host"):
        Target.parse("docker://vps").docker()


def test_error_one_line_joins_message_and_hint() -> None:
    e = TargetUnreachable("cannot reach  ssh://x:\n refused", hint="check the host")
    assert e.one_line() == "cannot reach ssh://x: refused: check the host"
    assert e.exit_code == 3


@dataclass(frozen=True)
class _Item:
    name: str
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)


def test_json_form_has_fields_and_public_properties() -> None:
    assert jsonable([_Item("a", (1, 2))]) == [{"name": "a", "sizes": [1, 2], "total": 3}]


def test_identity_file_is_a_target_option() -> None:
    assert Target.parse("ssh://root@h:2222?identity_file=/k/id").identity_file == "/k/id"
    with pytest.raises(UsageError):
        Target.parse("ssh://root@h?password=x")


@pytest.mark.parametrize(
    ("stderr", "unreachable"),
    [
        ("ssh: connect to host 10.0.0.1 port 22: Connection refused\r\n", True),
        ("Warning: Permanently added '[h]:2222' to the list of known hosts.\r\n"
         "root@h: Permission denied (publickey).\r\n", True),
        ("Host key verification failed.\r\n", True),
        ("ERROR  NOK: ('nginx-limit-req',)\n", False),  # fail2ban-client's own exit 255
        ("", False),
    ],
)
def test_a_remote_exit_255_is_unreachable_only_when_ssh_failed(stderr: str, unreachable: bool) -> None:
    from finaiflow_ops.ssh import ssh_error_line, ssh_failed

    assert ssh_failed(stderr) is unreachable
    if unreachable:
        assert not ssh_error_line(stderr).startswith("Warning:")
