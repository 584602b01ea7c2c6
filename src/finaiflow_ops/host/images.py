"""Local images onto a target's engine over the target's own connection, with no registry between.

Images are compared by id (the digest of the image's configuration, the same on every engine that
has the image). For each image asked for:

- skipped: the host's tag already names the same id;
- tagged:  the host has that id under another name (or it was sent earlier in this run):
           `docker tag` there, nothing sent;
- pushed:  sent with the others to push in ONE `docker save` here, gzip-compressed on the way
           (`docker load` reads gzip), piped into `docker load` there; the host's tag is checked to
           name the same id afterwards.

One archive for all: images built on the same base share its layers, and `docker save` puts a
shared layer in its archive once (the stack's six images: about the size of one, where one
archive each would send the base six times). So bytes and seconds are the stream's, in the report.

Every image must exist here before anything is sent. Both ends of the pipe are checked: a
`docker save` that fails half-way is an error even though `docker load` then fails too.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Literal

from finaiflow_ops.errors import CommandFailed, TargetUnreachable, UsageError
from finaiflow_ops.progress import Progress, or_quiet
from finaiflow_ops.target import Target

__all__ = ["Action", "ImagePush", "PushReport", "local_ids", "plan", "push_images"]

Action = Literal["pushed", "tagged", "skipped"]
_CHUNK = 1 << 20
_LOAD_TIMEOUT = 600.0  # for docker load to finish once everything is sent


@dataclass(frozen=True)
class ImagePush:
    """What happened to one image."""

    image: str
    image_id: str
    action: Action


@dataclass(frozen=True)
class PushReport:
    """The images asked for, and the one stream that carried those the host lacked."""

    target: str
    images: tuple[ImagePush, ...]
    bytes: int = 0  # sent over the connection (gzip-compressed unless --no-compress)
    image_bytes: int = 0  # the size of `docker save`'s archive
    seconds: float = 0.0

    @property
    def sent(self) -> tuple[str, ...]:
        return tuple(i.image for i in self.images if i.action == "pushed")


def plan(local: Mapping[str, str], remote_tags: Mapping[str, str | None],
         remote_ids: Collection[str]) -> list[tuple[str, Action]]:
    """What each image needs, in order: `local` maps each image to its id here, `remote_tags`
    each image to the id its name has on the host (None when absent), `remote_ids` the ids the
    host has under any name. An id is sent once: a second image with it is then only tagged."""
    present = set(remote_ids)
    steps: list[tuple[str, Action]] = []
    for image, image_id in local.items():
        if remote_tags.get(image) == image_id:
            steps.append((image, "skipped"))
        elif image_id in present:
            steps.append((image, "tagged"))
        else:
            steps.append((image, "pushed"))
            present.add(image_id)
    return steps


def local_ids(images: Iterable[str]) -> dict[str, str]:
    """Each image's id on this machine's engine; a missing one is a UsageError naming it."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        raise TargetUnreachable("the Docker engine on this machine is not reachable",
                                hint="start it, or check DOCKER_HOST") from exc
    ids: dict[str, str] = {}
    missing = []
    for image in dict.fromkeys(images):
        try:
            ids[image] = str(client.images.get(image).id)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        raise UsageError(f"no image {', '.join(missing)} on this machine: nothing was sent",
                         hint="build or pull it first (`docker images` lists what is here)")
    return ids


def push_images(target: Target, images: Iterable[str], *, compress: bool = True,
                progress: Progress | None = None) -> PushReport:
    """Put local `images` on the target's engine: each is skipped, tagged or pushed (see above)."""
    if target.is_local:
        raise UsageError("image push sends images to another host; these are on this machine's engine",
                         hint="give the host with --target ssh://user@host")
    say = or_quiet(progress)
    started = time.monotonic()
    ids = local_ids(images)
    remote_tags = {image: _remote_id(target, image) for image in ids}
    remote_ids = {i for i in set(ids.values()) if i in remote_tags.values() or _remote_id(target, i) == i}
    steps = [ImagePush(image, ids[image], action) for image, action in plan(ids, remote_tags, remote_ids)]
    to_send = [step.image for step in steps if step.action == "pushed"]
    sent = size = 0
    if to_send:
        say(f"sending {', '.join(to_send)} to {target} (one archive: shared layers once)")
        sent, size = _save_load(target, to_send, compress=compress)
        for image in to_send:
            there = _remote_id(target, image)
            if there != ids[image]:
                raise CommandFailed(f"{image} on {target} is {there or 'missing'} after docker load, "
                                    f"not {ids[image]}", hint="see `docker images` on the host", image=image)
    for step in steps:  # after the load: an id sent in this run is there to be tagged
        if step.action == "tagged":
            say(f"tagging {step.image} on {target}: it has {step.image_id[:19]} already")
            target.run("docker", "tag", step.image_id, step.image)
    return PushReport(str(target), tuple(steps), sent, size, round(time.monotonic() - started, 1))


def _remote_id(target: Target, reference: str) -> str | None:
    """The id `reference` (a name or an id) has on the target's engine; None when it has none."""
    result = target.run("docker", "image", "inspect", "-f", "{{.Id}}", reference, check=False)
    if result.ok:
        return result.stdout.strip()
    if "no such image" in result.stderr.lower():
        return None
    raise CommandFailed(f"cannot read the images of the engine on {target} (exit {result.exit_status})",
                        output_tail=result.stderr.strip(),
                        hint="is the engine running there (`finaiflow-ops host setup` starts it), and "
                             "may the login user use it (root, or the docker group)?")


def _save_load(target: Target, images: list[str], *, compress: bool) -> tuple[int, int]:
    """`docker save IMAGES` here into `docker load` there; (bytes sent, archive bytes)."""
    what = ", ".join(images)
    image = images[0] if len(images) == 1 else None  # what an error names, when it is one image
    save_argv = ["docker", "save", *images]
    load_argv = target.command_argv(["docker", "load", "-q"])
    with tempfile.TemporaryFile() as save_err, tempfile.TemporaryFile() as load_out:
        save = subprocess.Popen(save_argv, stdout=subprocess.PIPE, stderr=save_err)
        load = subprocess.Popen(load_argv, stdin=subprocess.PIPE, stdout=load_out, stderr=subprocess.STDOUT)
        assert save.stdout is not None and load.stdin is not None
        sent, size, cut = _relay(save.stdout, load.stdin, compress=compress)
        if cut:  # the host's side ended early: nothing reads what `docker save` still writes
            save.kill()
        save.stdout.close()
        save_code = save.wait()
        try:
            load_code = load.wait(timeout=_LOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()
            raise CommandFailed(f"docker load of {what} on {target} did not finish within "
                                f"{_LOAD_TIMEOUT:.0f} s after the image was sent", argv=load_argv,
                                image=image) from None
        save_err.seek(0)
        load_out.seek(0)
        save_text = save_err.read().decode(errors="replace")
        load_text = load_out.read().decode(errors="replace")
    # The failing end that came first is the cause: the host's when it stopped reading, else this one's.
    if save_code != 0 and not cut:
        raise CommandFailed(f"docker save {what} failed on this machine (exit {save_code})", argv=save_argv,
                            exit_status=save_code, output_tail=_tail(save_text),
                            hint="see `docker image inspect` of it here", image=image)
    if load_code != 0 or cut:
        if target.kind == "ssh" and load_code == 255:
            last = load_text.strip().splitlines()[-1] if load_text.strip() else "connection failed"
            raise TargetUnreachable(f"the connection to {target} failed while sending {what}: {last}",
                                    hint="run image push again: images already there are skipped")
        raise CommandFailed(f"docker load of {what} failed on {target} (exit {load_code})", argv=load_argv,
                            exit_status=load_code, output_tail=_tail(load_text),
                            hint="is there room for it on the host? (docker system df)", image=image)
    return sent, size


def _relay(source: IO[bytes], sink: IO[bytes], *, compress: bool) -> tuple[int, int, bool]:
    """Copy source to sink (gzip-compressed, fastest level, when asked); (bytes written, bytes
    read, whether the sink closed before the end)."""
    gzip = zlib.compressobj(1, zlib.DEFLATED, 31) if compress else None  # wbits 31: a gzip stream
    sent = size = 0
    try:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            data = gzip.compress(chunk) if gzip else chunk
            sink.write(data)
            sent += len(data)
        if gzip:
            data = gzip.flush()
            sink.write(data)
            sent += len(data)
        sink.close()
    except BrokenPipeError:
        return sent, size, True
    return sent, size, False


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
