"""Pure logic of sshd's cryptography rule, the sshd fail2ban jail and the agreement of audit and
apply reports: what `sshd -T` and `ssh-keygen -l` print, and what is decided from it."""

from __future__ import annotations

import pytest

from finaiflow_ops.hardening import ApplyReport, AuditReport
from finaiflow_ops.hardening.base import Change, Context, Finding, Outcome, Severity, Status
from finaiflow_ops.hardening.fail2ban import render_sshd_jail
from finaiflow_ops.hardening.sshd import parse_effective, render_drop_in
from finaiflow_ops.hardening.sshd_crypto import (
    ALGORITHMS,
    CryptoState,
    HostKey,
    SshCryptoRule,
    parse_key_lengths,
    weak_algorithms,
)
from finaiflow_ops.target import Target

# `sshd -T` of Debian 12's openssh-server with its defaults (the lines this rule reads).
DEBIAN_DEFAULT = """\
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,\
ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,\
diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256
ciphers chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,\
aes256-gcm@openssh.com
macs umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,\
hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,\
hmac-sha2-256,hmac-sha2-512,hmac-sha1
hostkeyalgorithms ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ssh-ed25519,\
ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256
hostkey /etc/ssh/ssh_host_rsa_key
hostkey /etc/ssh/ssh_host_ecdsa_key
hostkey /etc/ssh/ssh_host_ed25519_key
"""
CTX = Context(Target.parse("local://"))


def test_debians_defaults_name_what_ssh_audit_fails_and_warns_about() -> None:
    weak = weak_algorithms(parse_effective(DEBIAN_DEFAULT))
    assert weak["kexalgorithms"] == ("ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
                                     "diffie-hellman-group14-sha256")
    assert weak["ciphers"] == ("chacha20-poly1305@openssh.com",)  # Terrapin: the guide dropped it
    assert set(weak["macs"]) == {"umac-64-etm@openssh.com", "hmac-sha1-etm@openssh.com",
                                 "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha2-256",
                                 "hmac-sha2-512", "hmac-sha1"}
    assert weak["hostkeyalgorithms"] == ("ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp256")


def test_the_guides_algorithms_are_compliant_and_an_empty_list_is_not() -> None:
    guide = "".join(f"{key} {','.join(algs)}\n" for key, (_, algs) in ALGORITHMS.items())
    assert weak_algorithms(parse_effective(guide)) == {}
    assert weak_algorithms(parse_effective(guide.replace("macs ", "nomacs ")))["macs"] == ("(none offered)",)


@pytest.mark.parametrize(("line", "parsed"), [
    ("3072 SHA256:abc root@vps (RSA)\n", (3072, "RSA")),
    ("256 SHA256:x3Y/+z no comment (ED25519)", (256, "ED25519")),
    ("256 SHA256:q root@h (ECDSA)", (256, "ECDSA")),
    ("", (0, "")),
    ("ssh-keygen: /x: No such file", (0, "")),
])
def test_host_key_lengths_from_ssh_keygen(line: str, parsed: tuple[int, str]) -> None:
    assert parse_key_lengths(line) == parsed


def test_host_keys_and_moduli_are_judged() -> None:
    state = CryptoState({}, (HostKey("/etc/ssh/ssh_host_rsa_key", "RSA", 2048),
                             HostKey("/etc/ssh/ssh_host_ecdsa_key", "ECDSA", 256)), small_moduli=12)
    verdict = SshCryptoRule().evaluate(CTX, state)
    assert verdict.problems == ("no ed25519 host key",
                                "host key /etc/ssh/ssh_host_rsa_key is RSA 2048 bits (wanted at least 3072)",
                                "/etc/ssh/moduli has 12 group-exchange moduli under 3072 bits")
    good = CryptoState({}, (HostKey("/k/rsa", "RSA", 3072), HostKey("/k/ecdsa", "ECDSA", 256),
                            HostKey("/k/ed", "ED25519", 256)), small_moduli=0)
    assert SshCryptoRule().evaluate(CTX, good).problems == ()  # an ECDSA key on disk is not offered


def test_plan_makes_missing_and_small_keys_then_the_drop_in() -> None:
    state = CryptoState({"macs": ("hmac-sha1",)}, (HostKey("/etc/ssh/ssh_host_rsa_key", "RSA", 2048),), 3)
    ops = SshCryptoRule().plan(CTX, state)
    said = [op.description for op in ops]
    assert said[0] == "make the ed25519 host key /etc/ssh/ssh_host_ed25519_key"
    assert said[1].startswith("make the RSA host key /etc/ssh/ssh_host_rsa_key (4096 bits; was 2048)")
    assert said[2] == "remove the 3 moduli under 3072 bits from /etc/ssh/moduli"
    assert said[3].startswith("set MACs hmac-sha2-256-etm@openssh.com,") and said[3].endswith("log in anew")


def test_algorithms_merge_into_the_drop_in_with_their_spelling() -> None:
    spelling = {key: spelled for key, (spelled, _) in ALGORITHMS.items()}
    text = render_drop_in({"passwordauthentication": "PasswordAuthentication no"},
                          {"kexalgorithms": "curve25519-sha256"}, spelling)
    assert text.splitlines()[1:] == ["KexAlgorithms curve25519-sha256", "PasswordAuthentication no"]


def test_sshd_jail_reads_the_journal_under_systemd_and_auth_log_elsewhere() -> None:
    assert "backend = systemd" in render_sshd_jail(True) and "logpath" not in render_sshd_jail(True)
    assert "logpath = /var/log/auth.log" in render_sshd_jail(False)
    assert "[sshd]\nenabled = true\n" in render_sshd_jail(False)


def test_audit_and_apply_exit_on_the_same_meaning() -> None:
    medium = Finding("m", "M", Severity.MEDIUM, Status.FAIL, ("x",))
    skipped = Finding("s", "S", Severity.MEDIUM, Status.SKIP, detail="not applicable yet")
    passing = Finding("p", "P", Severity.HIGH, Status.PASS)
    audit = AuditReport("t", "", (medium, skipped, passing))
    assert audit.failures == ("m",) and not audit.compliant  # a medium failure is not compliant
    applied = ApplyReport("t", "", (Change("m", Outcome.REFUSED, reason="unsafe", after=medium),
                                    Change("s", Outcome.SKIPPED, reason="not applicable yet", after=skipped),
                                    Change("p", Outcome.UNCHANGED, after=passing)))
    assert applied.failures == audit.failures and not applied.ok
    assert AuditReport("t", "", (skipped, passing)).compliant
