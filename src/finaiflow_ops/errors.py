"""The errors finaiflow_ops raises, all under one root, all defined here.

    OpsError                  root: a one-line message, a hint (what to do), and where it happened
    ├── UsageError            bad input: missing file, bad option, invalid value         (exit 2)
    │   ├── EnvFileError      a .env that is missing, unreadable or malformed
    │   └── CertificateRejected   a certificate/key pair that fails validation; `problems`
    ├── TargetUnreachable     the target host or its Docker engine cannot be reached      (exit 3)
    ├── CommandFailed         a command on the target exited non-zero: argv, exit status  (exit 1)
    │   └── DeployFailed      a deploy or rollback that was undone: traffic stayed where it was
    ├── CheckFailed           a check ran and found problems; `problems`, one line each   (exit 1)
    │   ├── VerifyFailed      a backup file failed verification; `path`
    │   └── StaleBackups      prune refused: no verified backup recent enough
    ├── HealthTimeout         a service did not become healthy before its deadline        (exit 1)
    ├── DeployLocked          another deploy holds the lock of this stack                 (exit 1)
    ├── BackupFailed          a backup could not be made; no file of it counts             (exit 1)
    └── RestoreFailed         a restore stopped before the swap; the live database untouched (exit 1)
        └── ArchiveGap        the WAL archive misses or holds a damaged segment a restore needs

Every error may say where it happened, as fields a caller (or a test) reads instead of parsing the
message: `service`, `image`, `container`, and `log_tail` (the last lines of the output or log that
explain it, secrets redacted). Messages never contain secret values: callers name keys, files and
services, never contents. tests/unit/test_errors.py checks that this drawing is the real tree.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ArchiveGap",
    "BackupFailed",
    "CertificateRejected",
    "CheckFailed",
    "CommandFailed",
    "DeployFailed",
    "DeployLocked",
    "EnvFileError",
    "HealthTimeout",
    "OpsError",
    "RestoreFailed",
    "StaleBackups",
    "TargetUnreachable",
    "UsageError",
    "VerifyFailed",
]


class OpsError(Exception):
    """Root of every error this library raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, service: str | None = None,
                 image: str | None = None, container: str | None = None, log_tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.service = service
        self.image = image
        self.container = container
        self.log_tail = log_tail

    def one_line(self) -> str:
        """The message and the hint as a single line, for the last line on stderr."""
        text = " ".join(self.message.split())
        return f"{text}: {self.hint}" if self.hint else text


class UsageError(OpsError):
    """Bad usage or input: a missing file, a bad option, an invalid value."""

    exit_code = 2


class EnvFileError(UsageError):
    """A .env file that is missing, unreadable or malformed."""


class CertificateRejected(UsageError):
    """A certificate/key pair that fails validation; `problems` says why, one line each."""

    def __init__(self, message: str, *, problems: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = tuple(problems)


class TargetUnreachable(OpsError):
    """The target host, or the Docker engine that runs the stack, cannot be reached."""

    exit_code = 3


class CommandFailed(OpsError):
    """A command on the target exited non-zero. `output_tail` is its output's last lines (the
    same text as `log_tail`)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        exit_status: int | None = None,
        output_tail: str = "",
        hint: str | None = None,
        service: str | None = None,
        image: str | None = None,
        container: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, service=service, image=image, container=container,
                         log_tail=output_tail)
        self.argv = tuple(argv)
        self.exit_status = exit_status

    @property
    def output_tail(self) -> str:
        return self.log_tail


class DeployFailed(CommandFailed):
    """A deploy or rollback that could not complete and was undone: traffic stayed where it was.
    `container` names the container that failed, `log_tail` its last log lines (secrets redacted)."""


class CheckFailed(OpsError):
    """A check ran and found problems; `problems` lists them, one line each."""

    def __init__(self, message: str, *, problems: Sequence[str] = (), hint: str | None = None,
                 service: str | None = None, image: str | None = None, container: str | None = None,
                 log_tail: str = "") -> None:
        super().__init__(message, hint=hint, service=service, image=image, container=container,
                         log_tail=log_tail)
        self.problems = tuple(problems)


class VerifyFailed(CheckFailed):
    """A backup file failed verification: it is not a backup anyone should restore."""

    def __init__(self, path: str, problems: Sequence[str], *, hint: str | None = None) -> None:
        super().__init__(f"{path} failed verification: {problems[0]}", problems=problems,
                         hint=hint or "do not restore it; take a new backup (finaiflow-ops backup create)")
        self.path = path


class StaleBackups(CheckFailed):
    """Prune refused: deleting old backups while new ones fail would leave nothing to restore."""


class HealthTimeout(OpsError):
    """A service or container did not become healthy before its deadline."""


class DeployLocked(OpsError):
    """Another deploy holds the lock of this stack."""


class BackupFailed(OpsError):
    """A backup could not be made; no file of it counts as a backup."""


class RestoreFailed(OpsError):
    """A restore stopped before the swap: the live database was not touched."""


class ArchiveGap(RestoreFailed):
    """The WAL archive misses a segment (or holds a damaged one) a point-in-time restore needs:
    refused before anything is changed."""
