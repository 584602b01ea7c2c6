"""Checklist: documentation updated (features/documentation.feature)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import click
from pytest_bdd import given, parsers, scenarios, then, when

from finaiflow_ops import cli as entry_point
from finaiflow_ops.cli import cli
from tests.acceptance.conftest import Staging

scenarios("documentation.feature")

REPO = Path(__file__).resolve().parents[2]
_GLOBAL_OPTIONS_WITH_VALUE = {"--target", "--project-dir", "--env-file"}


def command_path(line: str) -> list[str]:
    """The sub-command words of one `finaiflow-ops ...` line, skipping global options and arguments."""
    words = shlex.split(line)[1:]
    while words and words[0].startswith("-"):
        words = words[2:] if words[0] in _GLOBAL_OPTIONS_WITH_VALUE else words[1:]
    path: list[str] = []
    group: click.Command = cli
    while words and isinstance(group, click.Group) and words[0] in group.commands:
        group = group.commands[words[0]]
        path.append(words.pop(0))
    if not path:
        raise AssertionError(f"unknown command in {line!r}")
    return path


@given(parsers.parse('the runbook "{path}"'), target_fixture="runbook_commands")
def runbook_commands(path: str) -> list[str]:
    text = (REPO / path).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    commands = [line.strip() for block in blocks for line in block.splitlines()
                if line.strip().startswith("finaiflow-ops")]
    assert commands, f"{path} shows no finaiflow-ops command"
    return commands


def answer_to_help(args: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `finaiflow-ops ARGS --help`, run in this process through
    the CLI's own entry point (the same parsing, exit status and error line as the program)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            entry_point.main([*args, "--help"])
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return status, out.getvalue(), err.getvalue()


@then("every finaiflow-ops command it shows answers --help")
def commands_answer_help(staging: Staging, runbook_commands: list[str]) -> None:
    broken = []
    for line in runbook_commands:
        try:
            path = command_path(line)
        except AssertionError as exc:
            broken.append(str(exc))
            continue
        # The whole line with --help: click prints help only if every option shown exists.
        status, stdout, stderr = answer_to_help(shlex.split(line)[1:])
        if status != 0 or not stdout.startswith(f"Usage: finaiflow-ops {' '.join(path)}"):
            error = (stderr.strip().splitlines() or ["no help printed"])[-1]
            broken.append(f"`{line} --help`: exit {status}: {error}")
    assert not broken, f"{staging.name}: the runbook shows commands that do not exist: {'; '.join(broken)}"


@when("I ask the api which release it runs", target_fixture="release")
def deployed_release(staging: Staging) -> str:
    with staging.client() as client:
        r = client.get(f"{staging.base_url}/version")
    assert r.status_code == 200, f"{staging.name}: /version answered {r.status_code}"
    release: str = r.json()["release"]
    return release


@then(parsers.parse('the changelog "{path}" has an entry for that release'))
def changelog_entry(staging: Staging, release: str, path: str) -> None:
    text = (REPO / path).read_text()
    assert re.search(rf"^## {re.escape(release)}\b", text, flags=re.MULTILINE), (
        f"{staging.name}: runs release {release}, which {path} does not describe"
    )
