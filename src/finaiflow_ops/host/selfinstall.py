"""finaiflow-ops on the host itself, so that the jobs scheduled there (the daily backup) can run.

The host is not expected to reach the package index (these tests' VPS cannot; a production VPS
may sit behind an egress policy), so everything is prepared on this machine and sent over the
target's connection as one tar stream:

- this checkout's wheel (`pip wheel --no-deps` of a clean copy of pyproject.toml, the readme and
  src/), cached by a digest of those files under ~/.cache/finaiflow-ops/wheels;
- a wheelhouse of its dependencies for the host's Python: `pip download --only-binary=:all:` with
  the host's version, ABI and manylinux platforms (from its glibc and machine), cached under
  ~/.cache/finaiflow-ops/wheelhouse by the wheel's requirements and those tags.

The host installs them offline (`pip install --no-index`) into a virtualenv of its own:

    /opt/finaiflow-ops/releases/DIGEST/      the virtualenv of one wheel
    /opt/finaiflow-ops/venv -> releases/...  switched (rename) once the new one works
    /usr/local/bin/finaiflow-ops             -> /opt/finaiflow-ops/venv/bin/finaiflow-ops
    /opt/finaiflow-ops/installed.sha256      the digest of the installed wheel

The digest is of the wheel's contents (file names and bytes, not the zip's timestamps), so the
same source gives the same digest and a second `host setup` sends nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import finaiflow_ops
from finaiflow_ops.errors import CommandFailed, TargetUnreachable, UsageError
from finaiflow_ops.host.system import Login
from finaiflow_ops.progress import Progress
from finaiflow_ops.target import Target

__all__ = [
    "INSTALL_ROOT",
    "PythonFacts",
    "build_wheel",
    "checkout",
    "installed_digest",
    "pip_target_args",
    "python_facts",
    "send_and_install",
    "wheel_digest",
    "wheelhouse",
]

INSTALL_ROOT = "/opt/finaiflow-ops"
LINK = "/usr/local/bin/finaiflow-ops"
_PIP_TIMEOUT = 900.0
# The legacy manylinux names and the glibc they stand for (PEP 600): pip does not expand a
# perennial tag (manylinux_2_28_x86_64) to the older ones, so every one is listed.
_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
_LEGACY_ARCHES = {"manylinux2014": {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"},
                  "manylinux2010": {"x86_64", "i686"}, "manylinux1": {"x86_64", "i686"}}
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
_PYTHON_FACTS = ("import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
                 "'implementation': sys.implementation.name, 'machine': platform.machine(), "
                 "'libc': platform.libc_ver()}))")
# Run as root; $1 the install root, $2 the release (a short digest), $3 the wheel's file name,
# $4 the link on PATH, $5 the full digest.
_INSTALL = """set -eu
root=$1 release=$1/releases/$2 incoming=$1/incoming
rm -rf "$release"
python3 -m venv "$release"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$release/bin/pip" install -q --no-index --find-links "$incoming" \\
  "$incoming/$3[acme]"
"$release/bin/finaiflow-ops" --version >/dev/null
ln -sfn "releases/$2" "$root/venv.new" && mv -T "$root/venv.new" "$root/venv"
ln -sfn "$root/venv/bin/finaiflow-ops" "$4"
printf '%s\\n' "$5" >"$root/installed.sha256.new"
mv -f "$root/installed.sha256.new" "$root/installed.sha256"
for old in "$root"/releases/*; do [ "$old" = "$release" ] || rm -rf "$old"; done
rm -rf "$incoming"
"""


# -- the host's Python -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PythonFacts:
    """The host's python3, as pip needs it to choose wheels for it."""

    version: str  # "3.11.2"
    machine: str  # "x86_64"
    libc: str = "glibc"
    libc_version: str = ""  # "2.36"
    implementation: str = "cpython"

    @classmethod
    def parse(cls, text: str) -> PythonFacts:
        data = json.loads(text)
        libc, libc_version = [*(data.get("libc") or []), "", ""][:2]
        return cls(data["version"], data["machine"], libc, libc_version,
                   data.get("implementation", "cpython"))


def python_facts(target: Target) -> PythonFacts:
    result = target.run("python3", "-c", _PYTHON_FACTS, check=False)
    if not result.ok:
        raise CommandFailed(f"python3 does not run on {target}", output_tail=result.stderr,
                            hint="host setup installs it (python3-venv); see the lines above")
    return PythonFacts.parse(result.stdout)


def pip_target_args(facts: PythonFacts, *, where: str = "the host") -> list[str]:
    """`pip download` options that choose wheels for `facts`' Python rather than this one's."""
    if facts.implementation != "cpython":
        raise UsageError(f"{where} runs {facts.implementation}, not CPython",
                         hint="host setup installs finaiflow-ops for Debian's python3")
    if facts.libc != "glibc" or not facts.libc_version:
        raise UsageError(f"{where}'s python3 is not linked against glibc ({facts.libc or 'unknown libc'})",
                         hint="host setup prepares Debian hosts")
    major, minor = (int(part) for part in facts.version.split(".")[:2])
    args = ["--implementation", "cp", "--python-version", facts.version, "--abi", f"cp{major}{minor}"]
    for platform in manylinux_platforms(facts.machine, facts.libc_version):
        args += ["--platform", platform]
    return args


def manylinux_platforms(machine: str, glibc: str) -> list[str]:
    """The manylinux platform tags a host with this machine and glibc accepts, newest first."""
    arch = _MACHINES.get(machine, machine)
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise UsageError(f"glibc {glibc} is not one manylinux wheels know",
                         hint="host setup prepares Debian hosts")
    oldest = 5 if arch in ("x86_64", "i686") else 17  # the first manylinux of each architecture
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, oldest - 1, -1)]
    tags += [f"{name}_{arch}" for name, needs in _LEGACY.items()
             if minor >= needs and arch in _LEGACY_ARCHES[name]]
    return tags


# -- this checkout's wheel -----------------------------------------------------------------------------

def checkout() -> Path | None:
    """The source tree this finaiflow-ops runs from: the package's own tree (an editable
    install), or the directory pip installed it from; None for an installed wheel."""
    candidates = [Path(finaiflow_ops.__file__).resolve().parents[2]]
    try:
        direct = importlib.metadata.distribution("finaiflow-ops").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        direct = None
    if direct:
        info = json.loads(direct)
        url = urlsplit(info.get("url", ""))
        if url.scheme == "file" and "dir_info" in info:
            candidates.append(Path(unquote(url.path)))
    return next((root for root in candidates if _is_checkout(root)), None)


def _is_checkout(root: Path) -> bool:
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(project.get("name") == "finaiflow-ops" and (root / "src" / "finaiflow_ops").is_dir())


def build_wheel(root: Path | None = None, *, progress: Progress | None = None) -> Path:
    """This checkout's wheel, built once per state of its sources (cached)."""
    root = root or checkout()
    if root is None:
        raise UsageError("this finaiflow-ops is not installed from a checkout, so there is no wheel to send",
                         hint="run it from a checkout (pip install -e .), or give a wheel with --wheel FILE")
    sources = _build_sources(root)
    digest = hashlib.sha256()
    for rel in sources:
        digest.update(rel.as_posix().encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    cached = cache_dir() / "wheels" / digest.hexdigest()[:16]
    wheels = sorted(cached.glob("*.whl"))
    if wheels:
        return wheels[0]
    if progress:
        progress(f"building the finaiflow-ops wheel from {root}")
    with tempfile.TemporaryDirectory(prefix="finaiflow-wheel-") as tmp:
        tree, out = Path(tmp) / "src", Path(tmp) / "out"
        # A clean copy: setuptools builds in the tree and keeps stale files in build/ between builds.
        for rel in sources:
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tree / rel)
        _pip("wheel", "--no-deps", "-q", "-w", str(out), str(tree), what=f"building the wheel of {root}")
        built = next(out.glob("*.whl"))
        shutil.rmtree(cached.parent, ignore_errors=True)  # one wheel kept: older ones are never reused
        cached.mkdir(parents=True)
        return Path(shutil.copy2(built, cached / built.name))


def _build_sources(root: Path) -> list[Path]:
    """What a wheel is built from: pyproject.toml, the readme it names, and src/ (no caches)."""
    project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    readme = project.get("readme")
    readme = readme.get("file") if isinstance(readme, dict) else readme
    files = [Path("pyproject.toml"), *([Path(readme)] if readme else [])]
    for path in sorted((root / "src").rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(p == "__pycache__" or p.endswith(".egg-info") for p in rel.parts) \
                and path.suffix not in (".pyc", ".pyo"):
            files.append(rel)
    return files


def wheel_digest(wheel: Path) -> str:
    """sha256 of a wheel's contents (names and bytes, RECORD aside): the same for the same
    source, whenever it was built."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith(".dist-info/RECORD"):
                digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = BytesParser().parsebytes(archive.read(name))
    return sorted(metadata.get_all("Requires-Dist") or [])


# -- its dependencies, for the host's Python ------------------------------------------------------------

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "finaiflow-ops"


def wheelhouse(wheel: Path, facts: PythonFacts, *, where: str = "the host",
               progress: Progress | None = None) -> Path:
    """The wheels of `wheel`'s dependencies for the host's Python (downloaded once, then cached)."""
    args = pip_target_args(facts, where=where)
    key = hashlib.sha256(json.dumps([_requirements(wheel), args, "acme"]).encode()).hexdigest()[:16]
    house = cache_dir() / "wheelhouse" / key
    if (house / ".complete").exists():
        return house
    if progress:
        progress(f"downloading the dependencies' wheels for Python {facts.version} on {facts.machine}")
    house.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=house.parent))
    try:
        # [acme]: certbot beside it, for `tls issue|renew` on the host.
        _pip("download", "-q", "--only-binary=:all:", "-d", str(partial), *args, f"{wheel}[acme]",
             what=f"downloading finaiflow-ops's dependencies for Python {facts.version} ({facts.machine})")
        (partial / wheel.name).unlink(missing_ok=True)  # pip saves the wheel itself beside them
        (partial / ".complete").touch()
        shutil.rmtree(house, ignore_errors=True)
        partial.rename(house)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return house


def _pip(*args: str, what: str) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                              timeout=_PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{what} took more than {_PIP_TIMEOUT:.0f} s", argv=exc.cmd) from None
    if done.returncode != 0:
        raise CommandFailed(f"{what} failed (pip exit {done.returncode})", argv=done.args,
                            exit_status=done.returncode, output_tail=_tail(done.stderr or done.stdout),
                            hint="pip's last lines are above; this machine must reach the package index")


# -- on the host ----------------------------------------------------------------------------------------

def installed_digest(target: Target) -> str:
    """The digest of the finaiflow-ops installed by host setup, "" when none is (or it is broken)."""
    check = ('cat "$1/installed.sha256" && test -x "$1/venv/bin/finaiflow-ops" '
             '&& test "$(readlink "$2")" = "$1/venv/bin/finaiflow-ops"')
    result = target.run("sh", "-c", check, "sh", INSTALL_ROOT, LINK, check=False)
    return result.stdout.strip() if result.ok else ""


def send_and_install(target: Target, who: Login, wheel: Path, house: Path, digest: str) -> int:
    """Send the wheel and the wheelhouse as one tar stream and install them on the host; the
    bytes sent."""
    sent = _send_tar(target, who, [wheel, *sorted(p for p in house.iterdir() if p.suffix == ".whl")])
    target.run(*who.as_root("sh", "-c", _INSTALL, "sh", INSTALL_ROOT, digest[:16], wheel.name, LINK, digest),
               timeout=_PIP_TIMEOUT)
    return sent


def _send_tar(target: Target, who: Login, files: list[Path]) -> int:
    unpack = 'rm -rf "$1" && mkdir -p "$1" && tar -x -C "$1"'
    argv = target.command_argv(who.as_root("sh", "-c", unpack, "sh", f"{INSTALL_ROOT}/incoming"))
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=errors, stderr=errors)
        assert proc.stdin is not None
        counter = _Counting(proc.stdin)
        try:
            with tarfile.open(fileobj=counter, mode="w|") as tar:  # type: ignore[call-overload]
                for path in files:
                    tar.add(path, arcname=path.name)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the host's side ended first: its exit status says why
        code = proc.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if code == 255 and target.kind == "ssh":
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "connection failed"
        raise TargetUnreachable(f"cannot reach {target}: {last}",
                                hint="check the connection, then run host setup again")
    if code != 0:
        raise CommandFailed(f"unpacking finaiflow-ops's wheels on {target} failed (exit {code})",
                            argv=argv, exit_status=code, output_tail=_tail(stderr),
                            hint=f"is there room in {INSTALL_ROOT} on the host?")
    return counter.count


class _Counting:
    """A write-only stream that counts what goes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.count = stream, 0

    def write(self, data: Any) -> int:
        self.stream.write(data)
        self.count += len(data)
        return len(data)


def version_on(target: Target) -> str:
    """`finaiflow-ops --version` on the host, as the login user (as its scheduled jobs run)."""
    out = target.run(LINK, "--version").stdout.strip()
    return out.rsplit(" ", 1)[-1] if out else ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
