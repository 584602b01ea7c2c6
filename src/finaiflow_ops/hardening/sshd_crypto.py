"""sshd's cryptography as ssh-audit's hardening guide has it for OpenSSH 9.2 (Debian 12).

`harden`'s other sshd rules set who may log in and how; left at their defaults, the algorithms
are what ssh-audit fails a host on: NIST-curve key exchange (`ecdh-sha2-nistp*`) and an
`ecdsa-sha2-nistp256` host key, and warns about `umac-64`, `hmac-sha1` and the MACs that are not
encrypt-then-MAC. This rule reads what sshd really offers (`sshd -T`), the host keys it loads
(`ssh-keygen -l`) and the Diffie-Hellman group-exchange moduli, and:

- offers only the guide's key exchanges, ciphers, MACs and host key algorithms (no ChaCha20-Poly1305:
  the guide dropped it after Terrapin, CVE-2023-48795);
- has an ed25519 host key and RSA host keys of at least 3072 bits (smaller or missing ones are made
  anew; an ECDSA key may stay on disk, it is no longer offered);
- removes the moduli under 3072 bits from /etc/ssh/moduli (group exchange would pick 2048).

The algorithms go into the same drop-in as the other sshd rules, with the same safety: `sshd -t`,
the current session's login checked, reload, then a new login with the new settings while the
old session stays open; the drop-in is restored through that session if the new login fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.hardening.base import (
    Command,
    Context,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    run_many,
)
from finaiflow_ops.hardening.sshd import SSHD, SshdDropIn, effective_from

__all__ = ["ALGORITHMS", "MIN_MODULUS_BITS", "MIN_RSA_BITS", "MODULI", "HostKey", "SshCryptoRule",
           "parse_key_lengths", "weak_algorithms"]

# ssh-audit's hardening guide for Debian 12 / OpenSSH 9.2 (GSSAPI key exchange left out: unused).
# keyword (as `sshd -T` prints it) -> (spelling in a config file, the algorithms, in order)
ALGORITHMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kexalgorithms": ("KexAlgorithms", (
        "sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
        "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
        "diffie-hellman-group-exchange-sha256")),
    "ciphers": ("Ciphers", (
        "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr")),
    "macs": ("MACs", ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
                      "umac-128-etm@openssh.com")),
    "hostkeyalgorithms": ("HostKeyAlgorithms", (
        "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519-cert-v01@openssh.com",
        "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
        "ssh-ed25519", "sk-ssh-ed25519@openssh.com", "rsa-sha2-512", "rsa-sha2-256")),
}
# The same algorithms under other names sshd may print (OpenSSH 9.9 gave sntrup761x25519 its IETF
# name; Debian's 9.2 lists both): accepted when offered, never written.
SAME_AS_WRITTEN = {"kexalgorithms": frozenset({"sntrup761x25519-sha512"})}
MIN_RSA_BITS = 3072
NEW_RSA_BITS = 4096
MIN_MODULUS_BITS = 3072
MODULI = "/etc/ssh/moduli"
KEY_DIR = "/etc/ssh"
# /etc/ssh/moduli's fifth field is the size minus one (3071 for a 3072-bit prime).
_COUNT_SMALL = (f"awk '$1 !~ /^#/ && NF >= 7 && $5 + 1 < {MIN_MODULUS_BITS} {{n++}} END {{print n + 0}}' "
                f"{MODULI}")
_FILTER = (f"set -e; awk '$1 ~ /^#/ || NF < 7 || $5 + 1 >= {MIN_MODULUS_BITS}' {MODULI} >{MODULI}.new; "
           f"chmod 0644 {MODULI}.new; mv -f {MODULI}.new {MODULI}")


@dataclass(frozen=True)
class HostKey:
    path: str
    kind: str  # ED25519, RSA, ECDSA, ... as ssh-keygen -l names it; "" when unreadable
    bits: int


def parse_key_lengths(text: str) -> tuple[int, str]:
    """`ssh-keygen -l -f KEY`'s line: (bits, type), e.g. `3072 SHA256:... root@h (RSA)`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    match = re.match(r"\s*(\d+)\s+\S+.*\((\w[\w-]*)\)\s*$", first)
    return (int(match.group(1)), match.group(2).upper()) if match else (0, "")


def weak_algorithms(config: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """keyword -> the algorithms sshd offers that the guide does not list (only keywords with some)."""
    weak = {}
    for key, (_, allowed) in ALGORITHMS.items():
        offered = [a for line in config.get(key, []) for a in line.split(",") if a]
        extra = tuple(a for a in offered if a not in allowed and a not in SAME_AS_WRITTEN.get(key, ()))
        if extra or not offered:
            weak[key] = extra or ("(none offered)",)
    return weak


@dataclass(frozen=True)
class CryptoState:
    weak: dict[str, tuple[str, ...]]
    host_keys: tuple[HostKey, ...]
    small_moduli: int

    @property
    def has_ed25519(self) -> bool:
        return any(k.kind == "ED25519" for k in self.host_keys)

    @property
    def small_rsa(self) -> tuple[HostKey, ...]:
        return tuple(k for k in self.host_keys if k.kind == "RSA" and k.bits < MIN_RSA_BITS)

    @property
    def has_rsa(self) -> bool:
        return any(k.kind == "RSA" for k in self.host_keys)


class SshCryptoRule(Rule[CryptoState]):
    id = "ssh.crypto"
    title = "sshd: key exchange, ciphers, MACs and host keys as ssh-audit's hardening guide (OpenSSH 9.2)"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> CryptoState:
        effective, moduli = run_many(ctx.target, (*SSHD, "-T"), ("sh", "-c", _COUNT_SMALL))
        config = effective_from(effective)
        if config is None:
            raise NotApplicable("openssh-server is not installed")
        paths = config.get("hostkey", [])
        lengths = run_many(ctx.target, *(("ssh-keygen", "-l", "-f", path) for path in paths)) if paths else []
        keys = []
        for path, result in zip(paths, lengths, strict=True):
            bits, kind = parse_key_lengths(result.stdout if result.ok else "")
            keys.append(HostKey(path, kind, bits))
        if not moduli.ok:
            raise CheckFailed(f"cannot read {MODULI}: {moduli.stderr.strip() or 'no output'}")
        return CryptoState(weak_algorithms(config), tuple(keys), int(moduli.stdout.strip() or "0"))

    def evaluate(self, ctx: Context, state: CryptoState) -> Verdict:
        problems = [f"{ALGORITHMS[key][0]} offers {', '.join(extra)}" for key, extra in state.weak.items()]
        problems += [f"no {kind} host key" for kind, has in (("ed25519", state.has_ed25519),
                                                                 ("RSA", state.has_rsa)) if not has]
        problems += [f"host key {k.path} is RSA {k.bits} bits (wanted at least {MIN_RSA_BITS})"
                     for k in state.small_rsa]
        if state.small_moduli:
            problems.append(f"{MODULI} has {state.small_moduli} group-exchange moduli under "
                            f"{MIN_MODULUS_BITS} bits")
        keys = ", ".join(f"{k.kind} {k.bits}" for k in state.host_keys if k.kind in ("ED25519", "RSA"))
        return Verdict(tuple(problems), f"sshd -T, ssh-keygen -l, {MODULI}",
                       f"algorithms as ssh-audit's guide; host keys {keys}; moduli of "
                       f"{MIN_MODULUS_BITS} bits or more")

    def plan(self, ctx: Context, state: CryptoState) -> Sequence[Operation]:
        ops: list[Operation] = []
        if not state.has_ed25519:
            path = f"{KEY_DIR}/ssh_host_ed25519_key"
            ops.append(Command(f"make the ed25519 host key {path}", _keygen("ed25519", path)))
        missing = () if state.has_rsa else (HostKey(f"{KEY_DIR}/ssh_host_rsa_key", "RSA", 0),)
        ops += [Command(f"make the RSA host key {k.path} ({NEW_RSA_BITS} bits; was {k.bits or 'missing'})",
                        _keygen("rsa", k.path, "-b", str(NEW_RSA_BITS))) for k in state.small_rsa or missing]
        if state.small_moduli:
            ops.append(Command(f"remove the {state.small_moduli} moduli under {MIN_MODULUS_BITS} bits "
                               f"from {MODULI}", ("sh", "-c", _FILTER)))
        fix = {key: ",".join(ALGORITHMS[key][1]) for key in state.weak}
        ops.append(SshdDropIn(fix, {key: spelled for key, (spelled, _) in ALGORITHMS.items()}))
        return ops


def _keygen(kind: str, path: str, *options: str) -> tuple[str, ...]:
    return ("sh", "-c", 'rm -f "$1" "$1.pub" && shift && ssh-keygen -q -N "" "$@"', "sh", path,
            "-t", kind, *options, "-f", path)

