"""`finaiflow-ops host setup` and `finaiflow-ops image push`: a fresh VPS, and local images onto it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from finaiflow_ops import host
from finaiflow_ops.cli.options import Options, emit, pass_options, progress
from finaiflow_ops.host import HostSetup, PushReport
from finaiflow_ops.output import out


@click.group("host")
def host_group() -> None:
    """The host the stack runs on: setup."""


@host_group.command("setup")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Install this finaiflow-ops wheel (default: built from this checkout).")
@pass_options
def host_setup(opts: Options, wheel: Path | None) -> None:
    """Prepare a Debian host over SSH: Docker engine, compose v2, cron, age, finaiflow-ops (idempotent).

    With --project-dir DIR (before or after the command), DIR is created on the host too (mode 0750).
    """
    project_dir = opts.project_dir if "project_dir" in opts.explicit else None
    opts.confirm(f"install what is missing of Docker, compose v2, cron, age and finaiflow-ops on "
                 f"{opts.target}, as root?")
    emit(opts, host.setup(opts.target, project_dir=project_dir, wheel=wheel, progress=progress), _print_setup)


def _print_setup(done: HostSetup) -> None:
    table = Table(title=f"{done.target} ({done.seconds:.1f} s)", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, value in (("docker", done.docker), ("compose", done.compose),
                        ("finaiflow-ops", done.finaiflow_ops), ("python", done.python),
                        ("project dir", done.project_dir or "-")):
        table.add_row(name, value)
    out.print(table)
    if done.changes:
        for change in done.changes:
            out.print(f"[cyan]changed[/cyan] {change}")
    else:
        out.print("[green]nothing changed[/green]: everything was in place")


@click.group("image")
def image_group() -> None:
    """Images on the target's engine: push."""


@image_group.command("push")
@click.argument("images", nargs=-1, required=True)
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="gzip the images on the way (faster over a slow link, slower over a fast one).")
@pass_options
def image_push(opts: Options, images: tuple[str, ...], compress: bool) -> None:
    """Send local IMAGES the host lacks over the target's connection (compared by image id)."""
    emit(opts, host.push_images(opts.target, images, compress=compress, progress=progress), _print_push)


def _print_push(report: PushReport) -> None:
    table = Table(title=f"images on {report.target}", title_justify="left")
    for column in ("image", "id", "action"):
        table.add_column(column)
    colour = {"pushed": "cyan", "tagged": "cyan", "skipped": "green"}
    for i in report.images:
        table.add_row(i.image, i.image_id.removeprefix("sha256:")[:12], f"[{colour[i.action]}]{i.action}[/]")
    out.print(table)
    if report.sent:
        ratio = f", gzip of {_size(report.image_bytes)}" if report.bytes != report.image_bytes else ""
        out.print(f"sent {_size(report.bytes)}{ratio} in {report.seconds:.1f} s")
    else:
        out.print("[green]nothing sent[/green]: the host had every image")


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"
