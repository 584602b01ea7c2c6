"""Backups encrypted to public keys with age: recipients, identities, and the one-time read-back key.

The database host only ever holds public keys (recipients): a stolen backup disk, or a stolen
host, does not give the data away. The private key (an age identity file) lives elsewhere and is
named with `--identity FILE` only where a backup is read in full: verify, restore, drill.

A backup is proven by reading it back in full, and a file encrypted to someone else's key cannot
be read back here. So every encrypted backup has one more recipient: a one-time key generated for
this run, held in memory only (age reads it from a pipe), used to decrypt the file that was
written and read it back through pg_restore, then forgotten. The stored bytes themselves are
proven, as for a plaintext backup, and plaintext never touches a disk. A run killed at any point
leaves only ciphertext.

Private keys are never printed, logged or written into a manifest; age's own messages are
redacted before they are shown, since age echoes a misplaced secret key in some of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from finaiflow_ops.backup.errors import BackupFailed
from finaiflow_ops.errors import UsageError
from finaiflow_ops.process import die_with_parent
from finaiflow_ops.target import Target

__all__ = [
    "TOOL",
    "Identity",
    "OneTimeKey",
    "Undecryptable",
    "age_version",
    "encrypting",
    "first_bytes",
    "job_recipients",
    "parse_recipients",
    "recipients",
    "redact",
]

TOOL = "age"
SUFFIX = ".age"
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{20,}")  # X25519 and plugin recipients (bech32)
_SSH_RECIPIENT = re.compile(r"(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,2}")
_SECRET = re.compile(r"AGE-(SECRET-KEY|PLUGIN-[A-Z0-9-]+)-1[0-9A-Za-z]+")
_INSTALL = "install age (apt-get install age; scripts/provision does)"


def redact(text: str) -> str:
    """age's messages with anything that looks like a private key taken out."""
    return _SECRET.sub("AGE-SECRET-KEY-(redacted)", text)


def age_version() -> str:
    try:
        done = subprocess.run([TOOL, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        raise UsageError("age is not installed on this machine", hint=_INSTALL) from None
    return done.stdout.strip()


# -- recipients --------------------------------------------------------------------------------------

def recipients(values: Sequence[str]) -> tuple[str, ...]:
    """The public keys named by `values` (see parse_recipients), each accepted by age itself before
    any dump starts."""
    keys = parse_recipients(values)
    if keys:
        _check_with_age(keys)
    return keys


def parse_recipients(values: Sequence[str]) -> tuple[str, ...]:
    """The public keys named by `values`: each an age recipient (age1...), an ssh public key, or a
    recipients file (one key a line, # comments), as `age -R` reads it. Private keys are refused
    without being shown."""
    keys: list[str] = []
    for value in values:
        if _SECRET.search(value):
            raise UsageError("--encrypt-to was given a private key (an age identity)",
                             hint="give its public key (age-keygen -y FILE prints it); keep the private "
                                  "one off this host")
        key = _recipient(value)
        keys += [key] if key else _recipients_file(Path(value))
    return tuple(dict.fromkeys(keys))  # in order, once each


def job_recipients(target: Target, values: Sequence[str]) -> tuple[str, ...]:
    """--encrypt-to values for the daily job on `target`: public keys as they are, recipients files by
    their absolute path on the target (read there at each run, so a key rotated in the file is used)."""
    found = []
    for value in values:
        if _SECRET.search(value):
            parse_recipients([value])  # refuses it, without showing it
        if not _recipient(value) and not (value.startswith("/") and target.exists(value)):
            raise UsageError(f"--encrypt-to {value!r} is neither a public key nor a file on {target}",
                             hint="give an age public key (age1...) or the absolute path of a recipients "
                                  "file on the target")
        found.append(_recipient(value) or value)
    return tuple(found)


def _check_with_age(keys: Sequence[str]) -> None:
    """age itself accepts every key (a bech32 checksum, an ssh key's encoding), before any dump starts."""
    argv = [TOOL, "--encrypt", *(arg for key in keys for arg in ("-r", key))]
    try:
        done = subprocess.run(argv, input=b"", capture_output=True, check=False, timeout=30)
    except FileNotFoundError:
        raise UsageError("age is not installed on this machine", hint=_INSTALL) from None
    if done.returncode != 0:
        raise UsageError(f"age refuses --encrypt-to: {age_failure(done.stderr.decode(errors='replace'))}",
                         hint="give age public keys (age1...) or ssh public keys, or files of them")


def _recipient(text: str) -> str:
    """The canonical form of one public key ("" when `text` is not one): ssh keys without their comment."""
    text = text.strip()
    if _AGE_RECIPIENT.fullmatch(text):
        return text
    ssh = _SSH_RECIPIENT.match(text)
    return ssh.group(0) if ssh and len(text.split()) <= 3 else ""


def _recipients_file(path: Path) -> list[str]:
    forms = "an age public key (age1...), an ssh public key, or a recipients file"
    if not path.is_file():
        raise UsageError(f"--encrypt-to {str(path)!r} is neither a public key nor a file",
                         hint=f"give {forms}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the recipients file {path}: {exc}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _SECRET.search(line):
            raise UsageError(f"{path} holds a private key (line {number}), not public keys",
                             hint="give a file of public keys (age-keygen -y FILE prints them); keep the "
                                  "private key off this host")
        key = _recipient(line)
        if not key:
            raise UsageError(f"line {number} of {path} is not a public key", hint=f"give {forms}")
        keys.append(key)
    if not keys:
        raise UsageError(f"the recipients file {path} names no public key", hint=f"give {forms}")
    return keys


# -- identities ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """A private key to decrypt with: an identity file the operator names, or a one-time key held in
    memory (`secret`, handed to age through a pipe: it never touches a disk)."""

    path: str = ""
    secret: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"the identity {self.path}" if self.path else "the one-time read-back key"

    def check(self) -> Identity:
        if self.path and not Path(self.path).is_file():
            raise UsageError(f"no identity file at {self.path}",
                             hint="--identity names the age identity (private key) file of one of the "
                                  "backup's recipients")
        return self

    def decrypt(self, source: Path, *, stdout: int | IO[bytes], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        """`age -d` of the file `source`, its plaintext on `stdout`."""
        if self.path:
            return _spawn([TOOL, "--decrypt", "-i", self.path, "--", str(source)], stdout=stdout,
                          stderr=stderr)
        read, write = os.pipe()
        try:
            with os.fdopen(write, "wb") as w:
                w.write(self.secret.encode())  # a few hundred bytes: the pipe holds them
            return _spawn([TOOL, "--decrypt", "-i", f"/dev/fd/{read}", "--", str(source)], stdout=stdout,
                          stderr=stderr, pass_fds=(read,))
        finally:
            os.close(read)


def _spawn(argv: list[str], *, stdout: int | IO[bytes], stderr: IO[bytes], stdin: int | None = None,
           pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """age, killed by the kernel if finaiflow-ops dies (a killed run leaves no writer behind)."""
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                                preexec_fn=die_with_parent)
    except FileNotFoundError:
        raise UsageError("age is not installed on this machine", hint=_INSTALL) from None


def age_failure(stderr: str) -> str:
    """age's complaint, one line, redacted."""
    lines = [ln.strip().removeprefix("age: error: ") for ln in redact(stderr).splitlines()
             if ln.strip() and "report unexpected or unhelpful errors" not in ln]
    return lines[0] if lines else "age failed without a message"


class Undecryptable(ValueError):
    """The identity is right but the file does not decrypt: it is damaged."""


def first_bytes(identity: Identity, source: Path, count: int, *, recipients: Sequence[str] = ()) -> bytes:
    """The first `count` bytes of the plaintext of `source`: proves that `identity` decrypts it before
    anything is changed (age reads the header first). A UsageError naming what to do when the
    identity is wrong or unreadable; Undecryptable when the file itself is damaged."""
    identity.check()
    with tempfile.TemporaryFile() as errors:
        proc = identity.decrypt(source, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout
        head = b""
        try:
            while len(head) < count and (chunk := proc.stdout.read(count - len(head))):
                head += chunk
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        if head:
            return head
        errors.seek(0)
        problem = age_failure(errors.read().decode(errors="replace"))
    if "no identity matched" in problem:
        to = f" ({', '.join(short(r) for r in recipients)})" if recipients else ""
        raise UsageError(f"{identity} cannot decrypt {source.name}: it is not the private key of any of its "
                         f"recipients{to}",
                         hint="pass the identity whose public key (age-keygen -y FILE) is in the manifest; "
                              "nothing was changed")
    if identity.path and (identity.path in problem or "identity" in problem):
        raise UsageError(f"{identity} cannot decrypt {source.name}: {problem}",
                         hint="check the --identity file; nothing was changed")
    raise Undecryptable(f"decrypting it with age failed: {problem}")


def short(recipient: str) -> str:
    """A public key shortened for messages (its end tells keys apart)."""
    return recipient if len(recipient) <= 24 else f"{recipient[:8]}…{recipient[-8:]}"


# -- encrypting ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OneTimeKey:
    """A key pair made for one backup run, to read the encrypted file back; never stored."""

    recipient: str
    identity: Identity = field(repr=False)

    @classmethod
    def generate(cls) -> OneTimeKey:
        try:
            done = subprocess.run(["age-keygen"], capture_output=True, text=True, check=False, timeout=30)
        except FileNotFoundError:
            raise UsageError("age-keygen is not installed on this machine", hint=_INSTALL) from None
        public = re.search(r"^# public key: (age1\S+)$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or not public:
            raise BackupFailed(f"age-keygen failed: {age_failure(done.stderr)}")
        return cls(public.group(1), Identity(secret=done.stdout))


@contextmanager
def encrypting(keys: Sequence[str], dest: IO[bytes], *, into: str) -> Iterator[IO[bytes]]:
    """A pipe into `age -e` to `keys`, whose ciphertext goes to `dest`; age's exit status is checked
    when the block ends, and its failure (a full disk) is what is reported, not the writer's
    broken pipe that follows from it."""
    argv = [TOOL, "--encrypt", *(arg for key in keys for arg in ("-r", key))]
    with tempfile.TemporaryFile() as errors:
        proc = _spawn(argv, stdin=subprocess.PIPE, stdout=dest, stderr=errors)
        assert proc.stdin
        try:
            yield proc.stdin
        finally:
            with suppress(BrokenPipeError):
                proc.stdin.close()
            status = proc.wait()
            if status != 0:
                errors.seek(0)
                problem = age_failure(errors.read().decode(errors="replace"))
                if "no space left" in problem.lower():
                    raise BackupFailed(f"no space left on the file system of {into} while writing the "
                                       "encrypted dump",
                                       hint="free space, or choose a larger file system with --dir") from None
                raise BackupFailed(f"age failed while encrypting the dump: {problem}") from None
