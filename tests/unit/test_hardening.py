"""Pure logic of the hardening rules: parsing what hosts print, deciding what is wrong, and the
facts/plan/apply flow (with a fake rule whose state lives in memory)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from finaiflow_ops.errors import TargetUnreachable, UsageError
from finaiflow_ops.hardening import AuditReport, select
from finaiflow_ops.hardening.base import (
    Context,
    Finding,
    Manual,
    NotApplicable,
    Operation,
    Outcome,
    Refuse,
    Rule,
    Severity,
    Status,
    Verdict,
    wait_reachable,
)
from finaiflow_ops.hardening.containers import ContainerFacts, exposures
from finaiflow_ops.hardening.docker import DaemonSettingsRule, DaemonState, EngineInfo, tcp_hosts
from finaiflow_ops.hardening.fail2ban import render_jail
from finaiflow_ops.hardening.firewall import UfwState, parse_added, parse_rule, parse_status
from finaiflow_ops.hardening.nginx import directives, missing_headers
from finaiflow_ops.hardening.packages import periodic_values
from finaiflow_ops.hardening.scans import interpret_pip_audit
from finaiflow_ops.hardening.sshd import (
    AUTH,
    LIMITS,
    mismatches,
    parse_drop_in,
    parse_effective,
    render_drop_in,
)
from finaiflow_ops.hardening.sysctl import FORWARDING, render_conf, wanted
from finaiflow_ops.stack import ContainerInfo
from finaiflow_ops.target import Target

# -- ufw ------------------------------------------------------------------------------------------

ADDED = """Added user rules (see 'ufw status' for running firewall):
ufw allow 22/tcp
ufw allow 8080
ufw limit 2222/tcp
ufw allow from 10.0.0.0/8
ufw allow from 10.1.0.0/16 to any port 5432 proto tcp
ufw allow OpenSSH
ufw allow 'Nginx Full'
ufw allow out 53
ufw deny 23/tcp
ufw route allow 8000/tcp
"""


def test_ufw_rules_are_read_with_their_ports() -> None:
    rules = {r.text: r for r in parse_added(ADDED)}
    assert rules["ufw allow 22/tcp"].ports == {22}
    assert rules["ufw allow 8080"].ports == {8080}
    assert rules["ufw allow from 10.0.0.0/8"].ports is None  # every port, from that network
    assert rules["ufw allow from 10.1.0.0/16 to any port 5432 proto tcp"].ports == {5432}
    assert rules["ufw allow OpenSSH"].ports == {22}
    assert rules["ufw allow 'Nginx Full'"].ports == {80, 443}
    assert not rules["ufw allow out 53"].opens and not rules["ufw deny 23/tcp"].opens
    assert "ufw route allow 8000/tcp" not in rules  # routed, not incoming
    assert parse_rule("ufw allow 6000:6002/tcp").ports == {6000, 6001, 6002}  # type: ignore[union-attr]
    assert rules["ufw allow from 10.0.0.0/8"].delete_argv == ("ufw", "--force", "delete", "allow", "from",
                                                              "10.0.0.0/8")


def test_ufw_state_lists_missing_and_extra_rules() -> None:
    state = UfwState(True, True, "deny", tuple(parse_added(ADDED)), "DROP", frozenset({22}), 22)
    assert state.missing == []  # 80 and 443 come from 'Nginx Full'
    assert [r.text for r in state.extra] == [
        "ufw allow 8080", "ufw limit 2222/tcp", "ufw allow from 10.0.0.0/8",
        "ufw allow from 10.1.0.0/16 to any port 5432 proto tcp"]
    bare = UfwState(True, False, "deny", (), "ACCEPT", frozenset({2222}), 2222)
    assert bare.missing == [80, 443, 2222]


def test_ufw_status_active_and_default() -> None:
    text = "Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing), deny (routed)\n"
    assert parse_status(text) == (True, "deny")
    assert parse_status("Status: inactive\n") == (False, "")


# -- sshd -------------------------------------------------------------------------------------------

SSHD_T = """port 22
port 2222
permitrootlogin without-password
passwordauthentication yes
kbdinteractiveauthentication no
permitemptypasswords no
maxauthtries 6
allowtcpforwarding yes
x11forwarding yes
allowagentforwarding no
clientaliveinterval 300
clientalivecountmax 2
tcpkeepalive no
loglevel VERBOSE
compression no
"""


def test_sshd_effective_values_against_the_wanted_ones() -> None:
    config = parse_effective(SSHD_T)
    assert config["port"] == ["22", "2222"]
    assert mismatches(config, AUTH) == {"passwordauthentication": "yes"}  # without-password is accepted
    assert mismatches(config, LIMITS) == {"maxauthtries": "6", "allowtcpforwarding": "yes",
                                          "x11forwarding": "yes"}
    assert mismatches({}, AUTH)["permitrootlogin"] == "(unset)"


def test_drop_in_merges_by_keyword_in_a_stable_order() -> None:
    first = render_drop_in({}, {"passwordauthentication": "no"})
    merged = render_drop_in(parse_drop_in(first), {"maxauthtries": "3", "passwordauthentication": "no"})
    assert merged.splitlines()[1:] == ["MaxAuthTries 3", "PasswordAuthentication no"]
    assert render_drop_in(parse_drop_in(merged), {}) == merged  # re-rendering changes nothing


# -- published ports, containers ---------------------------------------------------------------------

def _container(service: str, *ports: str, state: str = "running") -> ContainerInfo:
    return ContainerInfo(f"p-{service}-1", "id", service, "img", "sha", state, "healthy", ports)


def test_exposures_from_compose_and_containers() -> None:
    config = {"services": {
        "prometheus": {"ports": [{"target": 9090, "published": "9090", "protocol": "tcp"}]},
        "nginx": {"ports": [{"host_ip": "127.0.0.1", "target": 443, "published": "8443"}]},
        "api": {"expose": ["8000"]},
    }}
    containers = [_container("grafana", "0.0.0.0:3000->3000/tcp"), _container("redis", ":::6379->6379/tcp"),
                  _container("postgres", "0.0.0.0:5432->5432/tcp", state="exited")]
    found = {(e.service, e.where): e for e in exposures(config, containers)}
    # The exited container publishes nothing.
    assert set(found) == {("prometheus", "compose file"), ("nginx", "compose file"),
                          ("grafana", "p-grafana-1"), ("redis", "p-redis-1")}
    assert found["prometheus", "compose file"].public and not found["nginx", "compose file"].public
    assert found["redis", "p-redis-1"].host_ip == "::" and found["redis", "p-redis-1"].public
    assert found["grafana", "p-grafana-1"].describe() == (
        "grafana publishes 3000 on 0.0.0.0:3000 (p-grafana-1): Grafana open to the internet")


def test_container_facts_are_read_from_docker_inspect() -> None:
    inspected = {
        "HostConfig": {"Privileged": True, "Memory": 536870912},
        "Mounts": [{"Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
                   {"Source": "/srv/data", "Destination": "/data"}],
        "Config": {"Healthcheck": {"Test": ["CMD", "true"]}},
    }
    assert ContainerFacts.from_inspect("p-api-1", inspected) == ContainerFacts(
        "p-api-1", True, ("/var/run/docker.sock",), 536870912, True)
    disabled = {"HostConfig": None, "Mounts": None, "Config": {"Healthcheck": {"Test": ["NONE"]}}}
    assert ContainerFacts.from_inspect("p-x-1", disabled) == ContainerFacts("p-x-1", False, (), 0, False)
    assert not ContainerFacts.from_inspect("p-y-1", {}).healthcheck


# -- nginx --------------------------------------------------------------------------------------------

def test_nginx_directives_and_headers() -> None:
    config = "http {\n server_tokens off;\n limit_req_zone $binary_remote_addr zone=api:10m rate=20r/s;\n"
    assert directives(config, "server_tokens") == ["off"]
    assert directives(config, "limit_req") == []  # limit_req_zone is another directive
    location = "server { location / { limit_req zone=api burst=5; } }"
    assert directives(location, "limit_req") == ["zone=api burst=5"]
    good = {"strict-transport-security": "max-age=63072000", "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
            "referrer-policy": "no-referrer"}
    assert missing_headers(good) == []
    assert missing_headers({"x-content-type-options": "nosniff"}) == [
        "Strict-Transport-Security", "X-Frame-Options (or CSP frame-ancestors)", "Referrer-Policy"]


def test_commented_out_directives_do_not_count() -> None:
    from finaiflow_ops.hardening.nginx import _strip_comments

    config = _strip_comments('server_tokens on; # server_tokens off;\n'
                             'add_header X-Note "a # b";\n# limit_req zone=x;')
    assert directives(config, "server_tokens") == ["on"]
    assert directives(config, "add_header") == ['X-Note "a # b"']
    assert directives(config, "limit_req") == []


# -- scanners -----------------------------------------------------------------------------------------

def test_pip_audit_that_audited_nothing_is_counted_as_such() -> None:
    skipped = {"dependencies": [{"name": "fastapi", "skip_reason": "Dependency not found on PyPI"},
                                {"name": "redis", "skip_reason": "Dependency not found on PyPI"}]}
    assert interpret_pip_audit(skipped).audited == 0
    mixed = {"dependencies": [
        {"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-1", "fix_versions": ["2.10.1"]}]},
        {"name": "idna", "version": "3.7", "vulns": []},
        {"name": "local-pkg", "skip_reason": "not on PyPI"}]}
    result = interpret_pip_audit(mixed)
    assert (result.total, result.audited) == (3, 2)
    assert result.vulnerable == ("jinja2 2.10: PYSEC-1 (fixed in 2.10.1)",)


# -- daemon, sysctl, fail2ban, apt ---------------------------------------------------------------------

def test_tcp_sockets_without_tls_are_found_in_config_and_command_line() -> None:
    state = DaemonState(None, {"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]}, True, "",
                        ("/usr/bin/dockerd", "-H", "fd://", "--host=tcp://127.0.0.1:2375"))
    assert tcp_hosts(state) == (["tcp://0.0.0.0:2375"], ["tcp://127.0.0.1:2375"])
    protected = DaemonState(None, {"hosts": ["tcp://0.0.0.0:2376"], "tlsverify": True}, True, "", ())
    assert tcp_hosts(protected) == ([], [])


def test_the_daemon_settings_in_effect_come_from_docker_info_before_daemon_json() -> None:
    info = EngineInfo.from_json({"LoggingDriver": "journald", "LiveRestoreEnabled": False, "ID": "x"})
    assert info == EngineInfo("journald", False)
    config = {"log-driver": "local", "live-restore": True}
    running = DaemonState(info, config, True, "", ())
    assert DaemonSettingsRule._driver(running) == "journald"
    assert not DaemonSettingsRule._live_restore(running)
    stopped = DaemonState(None, config, True, "", ())
    assert DaemonSettingsRule._driver(stopped) == "local"
    assert DaemonSettingsRule._live_restore(stopped)
    bare = DaemonState(EngineInfo.from_json({}), {}, False, "", ())
    assert DaemonSettingsRule._driver(bare) == "json-file"


@dataclass
class Flaky:
    """A target that fails `failures` times as unreachable, then answers."""

    failures: int
    runs: int = 0

    def run(self, *argv: str) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise TargetUnreachable(f"the SSH connection to ssh://h was lost (try {self.runs})")


def test_wait_reachable_retries_an_unreachable_target_until_it_answers() -> None:
    target = Flaky(failures=2)
    wait_reachable(target, timeout=60)  # type: ignore[arg-type]
    assert target.runs == 3


def test_wait_reachable_raises_the_last_error_at_the_deadline() -> None:
    with pytest.raises(TargetUnreachable, match=r"\(try 1\)"):
        wait_reachable(Flaky(failures=5), timeout=0)  # type: ignore[arg-type]


def test_sysctl_never_turns_forwarding_off() -> None:
    assert wanted(docker_runs=True)[FORWARDING] == "1"
    assert FORWARDING not in wanted(docker_runs=False)
    assert f"{FORWARDING} = 0" not in render_conf({**wanted(True), FORWARDING: "0"})
    assert "net.ipv4.conf.all.send_redirects = 0" in render_conf(wanted(False))


def test_jail_is_the_runbooks_banning_in_docker_user() -> None:
    jail = render_jail("/var/lib/docker/volumes/finaiflow_nginx_logs/_data/error.log")
    for line in ("[nginx-limit-req]", "maxretry = 10", "findtime = 60", "bantime = 3600",
                 "chain = DOCKER-USER", "port = http,https",
                 "logpath = /var/lib/docker/volumes/finaiflow_nginx_logs/_data/error.log"):
        assert line in jail.splitlines()


def test_apt_periodic_values() -> None:
    dump = ('APT::Periodic "";\nAPT::Periodic::Update-Package-Lists "1";\n'
            'APT::Periodic::Unattended-Upgrade "0";\n')
    assert periodic_values(dump) == {"APT::Periodic::Update-Package-Lists": "1",
                                     "APT::Periodic::Unattended-Upgrade": "0"}


# -- the rule flow ---------------------------------------------------------------------------------------

@dataclass
class Box:
    """A fake host: a value, and what the rule may do to it."""

    value: int = 0
    refuse: bool = False
    manual: bool = False
    absent: bool = False
    log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SetValue(Operation):
    box: Box
    value: int

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"set {self.value}"

    def run(self, ctx: Context) -> None:
        self.box.log.append(self.description)
        self.box.value = self.value


class ValueRule(Rule[int]):
    id = "test.value"
    title = "the value is 3"
    severity = Severity.HIGH

    def __init__(self, box: Box) -> None:
        self.box = box

    def facts(self, ctx: Context) -> int:
        if self.box.absent:
            raise NotApplicable("nothing here")
        return self.box.value

    def evaluate(self, ctx: Context, state: int) -> Verdict:
        return Verdict(() if state == 3 else (f"value is {state}",), "memory")

    def plan(self, ctx: Context, state: int) -> Sequence[Operation]:
        if self.box.refuse:
            raise Refuse("unsafe")
        if self.box.manual:
            raise Manual("by hand")
        return [SetValue(self.box, 3)]


CTX = Context(Target.parse("local://"))


def test_apply_changes_what_differs_then_nothing() -> None:
    box = Box()
    rule = ValueRule(box)
    assert rule.check(CTX).problems == ("value is 0",)
    first = rule.apply(CTX)
    assert (first.outcome, first.actions, first.ok) == (Outcome.CHANGED, ("set 3",), True)
    assert first.after is not None and first.after.status is Status.PASS
    second = rule.apply(CTX)
    assert (second.outcome, second.changed) == (Outcome.UNCHANGED, False)
    assert second.reason == "no change: already compliant"
    assert box.log == ["set 3"]


@pytest.mark.parametrize(("flag", "outcome"), [("refuse", Outcome.REFUSED), ("manual", Outcome.MANUAL),
                                                ("absent", Outcome.SKIPPED)])
def test_apply_that_does_not_change_says_why(flag: str, outcome: Outcome) -> None:
    box = Box(**{flag: True})
    change = ValueRule(box).apply(CTX)
    assert change.outcome is outcome and change.reason and not box.log
    assert change.ok is (outcome is Outcome.SKIPPED)


def test_rule_selection_and_report_verdict() -> None:
    assert [r.id for r in select(["firewall.ufw", "ssh.auth"])] == ["ssh.auth", "firewall.ufw"]  # apply order
    with pytest.raises(UsageError, match="unknown rule nope"):
        select(["nope"])
    high = Finding("a", "A", Severity.HIGH, Status.FAIL, ("x",))
    medium = Finding("b", "B", Severity.MEDIUM, Status.FAIL, ("y",))
    skipped = Finding("c", "C", Severity.HIGH, Status.SKIP, detail="not run: no scanner")
    assert AuditReport("t", "", (medium, skipped)).passed  # a skipped high rule is not a failure...
    assert not skipped.failed and skipped.status is not Status.PASS  # ...nor a pass
    assert AuditReport("t", "", (high, medium)).high_failures == ("a",)
