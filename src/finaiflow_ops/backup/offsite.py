"""Copies of a verified backup away from its host: another directory, or a remote path over ssh.

    --copy-to /mnt/backup2                      a local directory (another disk, a mounted share)
    --copy-to ssh://user@host[:port]/path       a directory on another host (?identity_file=PATH too)

Over ssh the archive streams into a hidden temporary name on the remote host and is synced there;
its sha256 is then computed on the remote host, from the file as it landed, and must equal the
manifest's before the file is renamed into place and the manifest written beside it (last, as
locally). A mismatch removes the temporary file: no remote file ever counts as a backup unless
it is the verified archive. Everything goes through the project's Target (OpenSSH, BatchMode,
one shared connection), so a key that is not accepted fails instead of prompting.
"""

from __future__ import annotations

import posixpath
import subprocess
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from finaiflow_ops.backup import archive
from finaiflow_ops.backup.errors import BackupFailed
from finaiflow_ops.backup.manifest import PARTIAL_SUFFIX, manifest_path, read_manifest
from finaiflow_ops.errors import CommandFailed, OpsError, UsageError
from finaiflow_ops.process import die_with_parent
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.target import Target

__all__ = ["Destination", "copy", "parse_destination"]

COPY_TIMEOUT = 3600.0
# The remote side of the stream: private files, written whole, then on disk before it is hashed.
_RECEIVE = 'umask 077 && cat >"$1" && sync "$1"'
# Archive into place, then its manifest written beside it under a temporary name and renamed.
_PUBLISH = ('mv -f -- "$1" "$2" && umask 077 && printf "%s" "$4" >"$3" && sync "$3" '
            '&& mv -f -- "$3" "$5" && sync "$6"')


@dataclass(frozen=True)
class Destination:
    """Where a copy goes: a local directory (`target` None), or a directory on an ssh target."""

    path: str
    target: Target | None = None

    def __str__(self) -> str:
        return f"{self.target.url.split('?')[0]}{self.path}" if self.target else self.path


def parse_destination(text: str) -> Destination:
    """A local directory, or ssh://user@host[:port]/absolute/path[?identity_file=PATH]."""
    if "://" not in text:
        return Destination(str(Path(text).resolve()))
    parts = urlsplit(text)
    if parts.scheme != "ssh":
        raise UsageError(f"cannot copy to {text!r}", hint="give a directory or ssh://user@host[:port]/path")
    if not parts.path.startswith("/") or parts.path == "/":
        raise UsageError(f"no remote directory in {text!r}",
                         hint="give its absolute path: ssh://user@host[:port]/srv/backups")
    target = Target.parse(urlunsplit(("ssh", parts.netloc, "", parts.query, "")))
    return Destination(posixpath.normpath(parts.path), target)


def copy(archive_path: Path, destination: Destination, *, progress: Progress | None = None) -> str:
    """Copy a verified backup and its manifest to `destination`; where the copy is."""
    if destination.target is None:
        return str(archive.copy(archive_path, Path(destination.path), progress=progress))
    return _copy_over_ssh(archive_path, destination.target, destination.path, or_quiet(progress))


def _copy_over_ssh(path: Path, target: Target, directory: str, say: Progress) -> str:
    manifest = read_manifest(path)  # the local backup is verified; its manifest is the reference
    final = posixpath.join(directory, path.name)
    tmp = posixpath.join(directory, f".{path.name}{PARTIAL_SUFFIX}")
    where = f"{target.url.split('?')[0]}{final}"
    target.run("mkdir", "-p", "-m", "700", "--", directory)  # unreachable: TargetUnreachable (exit 3)
    say(f"copying {path.name} ({manifest.size / 1e6:.1f} MB) to {where}")
    try:
        _stream(path, target, tmp, where)
        remote = target.run("sha256sum", "--", tmp, timeout=COPY_TIMEOUT).stdout.split()
        if not remote or remote[0] != manifest.sha256:
            seen = remote[0][:16] if remote else "nothing"
            raise BackupFailed(f"the copy of {path.name} at {where} reads back differently on the remote "
                               f"host (sha256 {seen}…, the manifest says {manifest.sha256[:16]}…)",
                               hint="the local backup is kept and fine; check the link and that host's disk")
        target.run("sh", "-c", _PUBLISH, "publish", tmp, final, f"{final}.json{PARTIAL_SUFFIX}",
                   manifest_path(path).read_text(encoding="utf-8"), f"{final}.json", directory)
    except BaseException as exc:
        with suppress(OpsError):
            target.run("rm", "-f", "--", tmp, check=False)
        if isinstance(exc, CommandFailed):
            detail = (exc.output_tail.splitlines() or [exc.message])[-1]
            raise BackupFailed(f"copying {path.name} to {where} failed: {detail}",
                               hint="the local backup is kept and fine; check space and permissions there"
                               ) from None
        raise
    say(f"{where}: sha256 computed on the remote host matches the manifest")
    return where


def _stream(path: Path, target: Target, tmp: str, where: str) -> None:
    """The archive, through ssh, into `tmp` on the target."""
    with path.open("rb") as f, tempfile.TemporaryFile() as errors:
        try:
            done = subprocess.run(target.command_argv(["sh", "-c", _RECEIVE, "receive", tmp]), stdin=f,
                                  stdout=subprocess.DEVNULL, stderr=errors, timeout=COPY_TIMEOUT, check=False,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise BackupFailed(f"copying to {where} timed out after {COPY_TIMEOUT:g} s",
                               hint="the local backup is kept and fine") from None
        errors.seek(0)
        lines = [ln.strip() for ln in errors.read().decode(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("Warning:")]
    if done.returncode != 0:
        detail = lines[-1] if lines else "no error output"
        raise BackupFailed(f"copying to {where} failed (exit {done.returncode}): {detail}",
                           hint="the local backup is kept and fine; check space and permissions there")
