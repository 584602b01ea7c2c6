"""The global options (--target, --project-dir, --env-file, --json, --yes) are accepted after the
command as well as before it, as people type them, and every command's --help lists them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from finaiflow_ops import relay
from finaiflow_ops.cli import cli, main
from finaiflow_ops.cli.options import Options, accept_global_options, pass_options, relayed_args
from finaiflow_ops.stack import Stack
from finaiflow_ops.target import Target

GLOBAL_OPTIONS = ("--target", "--project-dir", "--env-file", "--json", "--yes")


@pytest.fixture(autouse=True)
def no_global_options_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("FINAIFLOW_TARGET", "FINAIFLOW_PROJECT_DIR", "FINAIFLOW_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a default --project-dir (.) writes here, not in the checkout


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return int(exited.value.code or 0)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    path = tmp_path / "stack"
    path.mkdir()
    return path


@pytest.fixture
def probe() -> Iterator[list[dict[str, Any]]]:
    """`finaiflow-ops probe run`: a command with options of every kind, recording what it got."""
    seen: list[dict[str, Any]] = []

    @click.group("probe")
    def group() -> None:
        """A test group."""

    @group.command("run")
    @click.argument("files", nargs=-1)
    @click.option("--comment", default=None)
    @click.option("--tag", multiple=True)
    @click.option("--compress/--no-compress", default=True)
    @pass_options
    def command(opts: Options, files: tuple[str, ...], comment: str | None, tag: tuple[str, ...],
                compress: bool) -> None:
        seen.append({"options": dataclasses.asdict(opts), "files": files, "comment": comment, "tags": tag,
                     "compress": compress, "relayed": relayed_args(click.get_current_context())})

    cli.add_command(group)
    try:
        yield seen
    finally:
        cli.commands.pop("probe")


# -- real commands that need no Docker ----------------------------------------------------------------

def test_project_dir_after_the_command_is_where_env_generate_writes(stack_dir: Path) -> None:
    assert run("env", "generate", "--project-dir", str(stack_dir)) == 0
    assert (stack_dir / ".env").is_file()
    assert not (Path.cwd() / ".env").exists()


def test_project_dir_after_the_command_wins_over_the_one_before(stack_dir: Path, tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    assert run("--project-dir", str(before), "env", "generate", "--project-dir", str(stack_dir)) == 0
    assert (stack_dir / ".env").is_file() and not (before / ".env").exists()


def test_json_after_env_check_prints_one_json_document(stack_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--project-dir", str(stack_dir), "env", "generate") == 0
    capsys.readouterr()
    assert run("env", "check", "--project-dir", str(stack_dir), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["path"] == str(stack_dir / ".env") and document["ok"] is True


def test_json_between_the_group_and_its_command_is_accepted(stack_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--project-dir", str(stack_dir), "env", "generate") == 0
    capsys.readouterr()
    assert run("--project-dir", str(stack_dir), "env", "--json", "check") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_yes_after_env_generate_force_answers_the_confirmation(stack_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run("env", "generate", "--project-dir", str(stack_dir)) == 0
    first = (stack_dir / ".env").read_text()
    # Without a terminal and without --yes it is refused, and the .env stays as it was.
    assert run("env", "generate", "--force", "--project-dir", str(stack_dir)) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert (stack_dir / ".env").read_text() == first
    assert run("env", "generate", "--force", "--project-dir", str(stack_dir), "--yes") == 0
    assert (stack_dir / ".env").read_text() != first  # new secrets drawn
    assert run("env", "generate", "--force", "--project-dir", str(stack_dir), "-y") == 0


def test_target_after_the_command_is_the_target_reached(stack_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--project-dir", str(stack_dir), "env", "generate") == 0
    capsys.readouterr()
    code = run("--project-dir", str(stack_dir), "env", "check", "--target", "ssh://127.0.0.1:1")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3, last
    assert last.startswith("error: cannot reach ssh://127.0.0.1:1"), last


# -- how the options are parsed -----------------------------------------------------------------------

def test_every_global_option_after_the_command_reaches_the_options(probe: list[dict[str, Any]]) -> None:
    assert run("probe", "run", "--target", "docker://box", "--project-dir", "/srv/f", "--env-file",
               "/srv/f/prod.env", "--json", "--yes") == 0
    options = probe[0]["options"]
    assert (options["target_url"], options["project_dir"], options["env_file"]) == (
        "docker://box", "/srv/f", "/srv/f/prod.env")
    assert options["json"] is True and options["yes"] is True
    assert options["explicit"] == {"target_url", "project_dir", "env_file", "json", "yes"}


def test_without_global_options_the_defaults_hold(probe: list[dict[str, Any]]) -> None:
    assert run("probe", "run") == 0
    options = probe[0]["options"]
    assert (options["target_url"], options["project_dir"], options["json"], options["yes"]) == (
        "local://", ".", False, False)
    assert options["explicit"] == frozenset()


def test_a_value_that_looks_like_an_option_stays_a_value(probe: list[dict[str, Any]]) -> None:
    assert run("probe", "run", "--comment", "--json", "--tag", "--yes") == 0
    got = probe[0]
    assert got["comment"] == "--json" and got["tags"] == ("--yes",)
    assert got["options"]["json"] is False and got["options"]["yes"] is False


def test_arguments_after_a_double_dash_are_not_options(probe: list[dict[str, Any]]) -> None:
    assert run("probe", "run", "--json", "--", "--yes", "--target") == 0
    got = probe[0]
    assert got["files"] == ("--yes", "--target")
    assert got["options"]["json"] is True and got["options"]["yes"] is False
    assert got["options"]["target_url"] == "local://"


def test_a_command_with_its_own_global_option_is_refused() -> None:
    @click.command("clash")
    @click.option("--json", "as_json", is_flag=True)
    def clash(as_json: bool) -> None:
        """Means something else by --json."""

    with pytest.raises(ValueError, match="--json"):
        accept_global_options(clash)


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _command_paths(sub, (*path, name))
    if path:
        yield path


COMMAND_PATHS = sorted(_command_paths(cli))


def test_the_paths_cover_every_command() -> None:
    assert ("deploy",) in COMMAND_PATHS and ("stack", "status") in COMMAND_PATHS
    assert ("host", "setup") in COMMAND_PATHS and ("restore", "file") in COMMAND_PATHS
    assert len(COMMAND_PATHS) > 40


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_help_lists_the_global_options(path: tuple[str, ...],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*path, "--help") == 0
    text = capsys.readouterr().out
    missing = [name for name in GLOBAL_OPTIONS if name not in text]
    assert not missing, f"`finaiflow-ops {' '.join(path)} --help` does not list {missing}"


def test_the_top_level_help_says_what_the_tool_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help") == 0
    text = capsys.readouterr().out
    assert "more as they land" not in text
    for words in ("FinaiFlow", "zero downtime", "backups", "TLS", "before or after the command"):
        assert words in " ".join(text.split()), words


def test_host_setup_project_dir_is_the_global_one(probe: list[dict[str, Any]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run("host", "setup", "--help") == 0
    assert capsys.readouterr().out.count("--project-dir") == 2  # the option, and the command's text
    # Given before or after the command it counts as given (host setup then creates it).
    for argv in (("--project-dir", "/opt/f", "probe", "run"), ("probe", "run", "--project-dir", "/opt/f")):
        probe.clear()
        assert run(*argv) == 0
        assert "project_dir" in probe[0]["options"]["explicit"], argv


# -- relaying the command to the host's own finaiflow-ops ----------------------------------------------

def test_the_relayed_command_is_rebuilt_from_what_was_parsed(probe: list[dict[str, Any]]) -> None:
    assert run("--target", "ssh://vps", "probe", "run", "--comment", "--target", "--tag", "a", "--tag",
               "--project-dir=x", "--no-compress", "--json", "--project-dir", "/mine", "--", "--odd") == 0
    assert probe[0]["relayed"] == ["--json", "probe", "run", "--comment=--target", "--tag=a",
                                   "--tag=--project-dir=x", "--no-compress", "--", "--odd"]


def test_the_host_parses_the_relayed_command_to_the_same_values(probe: list[dict[str, Any]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("probe", "run", "--target", "ssh://vps", "--comment", "--json", "--tag", "--env-file",
               "--yes", "--", "-f", "--target") == 0
    here = probe.pop()
    monkeypatch.setattr(relay, "executable", lambda _stack: "/opt/ops/bin/finaiflow-ops")
    host = Stack(Target.parse("ssh://vps"), "/opt/finaiflow")
    on_host = relay.command_line(host, here["relayed"], yes=True)
    assert on_host[:4] == ["/opt/ops/bin/finaiflow-ops", "--project-dir", "/opt/finaiflow", "--yes"]
    assert run(*on_host[1:]) == 0
    there = probe.pop()
    for key in ("files", "comment", "tags", "compress"):
        assert there[key] == here[key], key
    assert (there["options"]["target_url"], there["options"]["project_dir"]) == ("local://", "/opt/finaiflow")
    assert there["options"]["yes"] is True and there["options"]["json"] is False


@pytest.fixture
def host_stack(monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setattr(relay, "executable", lambda _stack: "/usr/local/bin/finaiflow-ops")
    return Stack(Target.parse("ssh://vps"), "/opt/finaiflow", env_file="/opt/finaiflow/prod.env")


def test_relay_replaces_this_machines_global_options_before_and_after_the_command(host_stack: Stack) -> None:
    args = ["--target", "ssh://vps", "--project-dir=/here", "--json", "backup", "list", "--env-file",
            "/here/.env", "--target=ssh://vps", "--database", "app"]
    assert relay.command_line(host_stack, args) == [
        "/usr/local/bin/finaiflow-ops", "--project-dir", "/opt/finaiflow", "--env-file",
        "/opt/finaiflow/prod.env", "--json", "backup", "list", "--database", "app"]


def test_relay_keeps_what_follows_a_double_dash(host_stack: Stack) -> None:
    args = ["restore", "file", "--target", "ssh://vps", "--", "--target", "x.dump"]
    assert relay.command_line(host_stack, args, yes=True)[-6:] == [
        "--yes", "restore", "file", "--", "--target", "x.dump"]
