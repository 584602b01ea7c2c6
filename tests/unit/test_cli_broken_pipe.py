"""A broken pipe in the middle of a command (the connection to the target gone) is said in one
line with exit 3, not swallowed as click does for `... | head`."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from finaiflow_ops.cli import cli, main
from finaiflow_ops.cli.options import progress
from finaiflow_ops.errors import TargetUnreachable


@pytest.fixture
def breaks() -> Iterator[None]:
    @click.command("breaks")
    def command() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    cli.add_command(command)
    try:
        yield
    finally:
        cli.commands.pop("breaks")


@pytest.mark.usefixtures("breaks")
def test_a_broken_pipe_is_a_clear_error_naming_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--target", "ssh://ops@vps.example", "breaks"])
    assert exited.value.code == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the connection to ssh://ops@vps.example broke" in last and "finaiflow-ops check" in last, last


def test_a_connection_lost_on_the_way_names_the_last_step_reached(capsys: pytest.CaptureFixture[str]) -> None:
    @click.command("cut")
    def command() -> None:
        progress("switching nginx to the new containers")
        raise TargetUnreachable("the SSH connection to ssh://vps was lost", hint="run it again")

    cli.add_command(command)
    try:
        with pytest.raises(SystemExit) as exited:
            main(["--target", "ssh://vps", "cut"])
    finally:
        cli.commands.pop("cut")
    assert exited.value.code == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    wanted = "was lost (last step reached: switching nginx to the new containers): run it again"
    assert last.endswith(wanted), last
