"""The image a service runs, on the target: its id, the .env key naming it (and the one-line edit of
that key), which images are missing, and the Alembic revisions an image carries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from finaiflow_ops import envfile
from finaiflow_ops.errors import CommandFailed, UsageError
from finaiflow_ops.progress import Progress
from finaiflow_ops.project import Project

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = [
    "image_id",
    "image_revisions",
    "image_variable",
    "missing_images",
    "parse_duration",
    "sed_set_line",
    "set_env_value",
]

_IMAGE_VAR_RE = re.compile(r"^\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}$")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_REVISIONS_PY = (
    "from alembic.config import Config; from alembic.script import ScriptDirectory; "
    "s = ScriptDirectory.from_config(Config('alembic.ini')); "
    "print(' '.join(s.get_heads())); print(' '.join(r.revision for r in s.walk_revisions()))"
)


def parse_duration(text: str | float | int | None, default: float = 10.0) -> float:
    """A compose/Go duration ("35s", "1m30s", "500ms") in seconds; `default` when unset."""
    if text is None or text == "":
        return default
    if isinstance(text, int | float):
        return float(text)
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise UsageError(f"invalid duration {text!r}", hint="write it like 35s or 1m30s")
    return sum(float(n) * scale[u] for n, u in parts)


def sed_set_line(key: str, value: str, *, present: bool) -> str:
    """The sed program that sets KEY=value in a .env, touching that line only (appending it when
    absent). Values are image references: no character sed or the .env syntax would interpret."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not _IMAGE_RE.fullmatch(value):
        raise UsageError(f"refusing to write {key}={value!r} into .env", hint="give an image reference")
    if present:
        return rf"s|^\(export[ \t]\+\)\?{key}[ \t]*=.*$|{key}={value}|"
    return f"$a {key}={value}"


def set_env_value(project: Project, key: str, value: str) -> bool:
    """Set one non-secret key of the project's .env on the target; True when the file changed.

    GNU sed edits the one line in place: it writes a new file and renames it over the old one
    (atomic; mode 0600 and owner kept), and no secret ever leaves the target or reaches a
    command line. The result is read back: every other key must be unchanged.
    """
    read = project.target.read_text
    before = envfile.parse(read(project.env_path))
    if before.get(key) == value:
        return False
    project.target.run(
        "sed",
        "-i",
        "--follow-symlinks",
        "-e",
        sed_set_line(key, value, present=key in before),
        "--",
        project.env_path,
    )
    after = envfile.parse(read(project.env_path))
    before.pop(key, None)
    if after.pop(key, None) != value or after != before:
        raise CommandFailed(
            f"setting {key} in {project.env_path} on {project.target} changed more than that line",
            hint="check the file by hand (env check)",
        )
    return True


def image_variable(project: Project, service: str) -> str:
    """The .env key the service's image comes from (`image: ${API_IMAGE:-...}` gives API_IMAGE)."""
    return image_variable_in(project.raw_config, service)


def image_variable_in(raw_config: Mapping[str, Any], service: str) -> str:
    """image_variable, read from an uninterpolated compose config."""
    expr = str(raw_config.get("services", {}).get(service, {}).get("image", ""))
    match = _IMAGE_VAR_RE.match(expr)
    if not match:
        raise UsageError(
            f"the image of {service} is not taken from .env ({expr or 'none'})",
            hint=f"write it as image: ${{{service.upper()}_IMAGE:-...}} in the compose file",
        )
    return match["var"]


def image_id(project: Project, ref: str) -> str:
    """The id (content digest) of an image on the target; UsageError when the target lacks it."""
    import docker.errors

    if not _IMAGE_RE.fullmatch(ref):
        raise UsageError(f"invalid image reference {ref!r}", hint="e.g. finaiflow/api:1.1.0")
    try:
        return str(project.target.docker().images.get(ref).id)
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"image {ref} is not on {project.target}",
            hint="build or load it there first: a deploy never builds or pulls",
        ) from None


def missing_images(project: Project) -> dict[str, str]:
    """Service -> image for the images the engine does not have (nothing is ever pulled)."""
    import docker.errors

    missing = {}
    for service, image in project.images().items():
        try:
            project.target.docker().images.get(image)
        except docker.errors.ImageNotFound:
            missing[service] = image
    return missing


def require_images(project: Project, *, hint: str) -> None:
    """UsageError naming the images the engine lacks, if any."""
    missing = missing_images(project)
    if missing:
        listed = ", ".join(f"{img} ({svc})" for svc, img in sorted(missing.items()))
        raise UsageError(f"images missing on {project.target}: {listed}", hint=hint)


def image_revisions(container: Container, image: str, say: Progress) -> tuple[str, tuple[str, ...]]:
    """(head, every revision) of the Alembic scripts in a running container of `image`; empty
    when they cannot be read (an image without Alembic)."""
    code, output = container.exec_run(["python", "-c", _REVISIONS_PY])
    out = output.decode(errors="replace").splitlines() if isinstance(output, bytes) else []
    if code != 0 or len(out) < 2:
        say(f"could not read the Alembic revisions of {image}; recorded without them")
        return "", ()
    return out[-2].strip(), tuple(out[-1].split())
