"""Pure logic of the host rules for Lynis: settings kept in shared files (login.defs), files owned
whole, and kernel sysctls that a container cannot set."""

from __future__ import annotations

from finaiflow_ops.hardening.base import Context, WriteFile
from finaiflow_ops.hardening.host import AIDE_DB, FileIntegrityRule, LoginDefsRule, ProcessAccountingRule
from finaiflow_ops.hardening.hostconfig import ConfigState, read_keys, set_keys
from finaiflow_ops.hardening.sysctl import KERNEL_CONF, KernelState, KernelSysctlRule, render_kernel_conf
from finaiflow_ops.target import Target

CTX = Context(Target.parse("local://"))
LOGIN_DEFS = """# /etc/login.defs
MAIL_DIR        /var/mail
#SHA_CRYPT_MIN_ROUNDS 5000
UMASK\t\t022
ENCRYPT_METHOD SHA512
SHA_CRYPT_MAX_ROUNDS 5000
SHA_CRYPT_MAX_ROUNDS 9
"""


def test_settings_replace_the_first_line_append_missing_ones_and_keep_the_rest() -> None:
    text = set_keys(LOGIN_DEFS, {"SHA_CRYPT_MIN_ROUNDS": "10000", "SHA_CRYPT_MAX_ROUNDS": "100000"})
    lines = text.splitlines()
    assert "SHA_CRYPT_MAX_ROUNDS 100000" in lines and lines[-1] == "SHA_CRYPT_MIN_ROUNDS 10000"
    assert "#SHA_CRYPT_MIN_ROUNDS 5000" in lines and "UMASK\t\t022" in lines  # comments and others kept
    assert any(line.startswith("# SHA_CRYPT_MAX_ROUNDS 9") for line in lines)  # a second value disarmed
    assert read_keys(text, ["SHA_CRYPT_MIN_ROUNDS", "SHA_CRYPT_MAX_ROUNDS", "UMASK"]) == {
        "SHA_CRYPT_MIN_ROUNDS": "10000", "SHA_CRYPT_MAX_ROUNDS": "100000", "UMASK": "022"}
    assert set_keys(text, {"SHA_CRYPT_MIN_ROUNDS": "10000"}) == text  # idempotent


def test_login_defs_rule_names_each_setting_and_writes_only_when_they_differ() -> None:
    rule = LoginDefsRule()
    state = ConfigState((), {"/etc/login.defs": LOGIN_DEFS})
    assert rule.evaluate(CTX, state).problems == (
        "/etc/login.defs: SHA_CRYPT_MIN_ROUNDS is unset (wanted 10000)",
        "/etc/login.defs: SHA_CRYPT_MAX_ROUNDS is 5000 (wanted 100000)",
        "/etc/login.defs: PASS_MIN_DAYS is unset (wanted 1)")
    ops = rule.plan(CTX, state)
    assert len(ops) == 1 and isinstance(ops[0], WriteFile) and "UMASK\t\t022" in ops[0].content
    done = ConfigState((), {"/etc/login.defs": ops[0].content})
    assert rule.evaluate(CTX, done).problems == () and rule.plan(CTX, done) == []


def test_packages_and_steps_only_when_needed() -> None:
    missing = ConfigState(("aide",), {}, (False,))
    rule = FileIntegrityRule()
    assert rule.evaluate(CTX, missing).problems[0] == "aide is not installed"
    said = [op.description for op in rule.plan(CTX, missing)]
    assert said[0].startswith("install aide (apt-get")
    assert said[-1] == "initialise AIDE's database (aide --init)"
    owned = {f.path: f.content for f in rule.managed(CTX)}
    ready = ConfigState((), dict[str, str | None](owned), (True,))
    assert rule.evaluate(CTX, ready).problems == () and rule.plan(CTX, ready) == []
    no_db = ConfigState((), dict(ready.files), (False,))
    assert rule.evaluate(CTX, no_db).problems == (f"no AIDE database ({AIDE_DB})",)
    # acct's package makes its file: a missing file is only a problem once the package is there
    assert ProcessAccountingRule().evaluate(CTX, ConfigState(("acct",), {}, (False,))).problems == (
        "acct is not installed",)


def test_kernel_sysctls_a_container_cannot_set_pass_once_persisted_for_boot() -> None:
    seen = {"kernel.dmesg_restrict": "0", "kernel.sysrq": "1", "kernel.unprivileged_bpf_disabled": "2"}
    rule = KernelSysctlRule()
    fresh = KernelState(seen, frozenset({"kernel.sysrq"}), {}, None)
    assert rule.evaluate(CTX, fresh).problems == (
        "kernel.sysrq is 1 (wanted 0)",
        f"kernel.dmesg_restrict is 0 and cannot be set here: not persisted in {KERNEL_CONF} either")
    ops = [op.description for op in rule.plan(CTX, fresh)]
    assert ops[0].startswith(f"write {KERNEL_CONF}") and ops[1:] == ["sysctl -w kernel.sysrq=0"]
    conf = render_kernel_conf(list(seen))
    assert "kernel.unprivileged_bpf_disabled = 1" in conf  # written as 1, but 2 (stricter) is accepted
    persisted = KernelState({**seen, "kernel.sysrq": "0"}, frozenset({"kernel.sysrq"}),
                            {"kernel.dmesg_restrict": "1", "kernel.sysrq": "0"}, conf)
    verdict = rule.evaluate(CTX, persisted)
    assert verdict.problems == ()
    assert "1 read-only here" in verdict.detail and "kernel.dmesg_restrict" in verdict.detail
