"""`restore --to-time|--latest|--before-release`: bad input is refused before the target is asked."""

from __future__ import annotations

import pytest

from finaiflow_ops.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["--project-dir", "/nonexistent/stack", *argv])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["restore", "--to-time", "2026-12-01T14:59:00", "--yes"], "has no time zone"),
    (["restore", "--to-time", "yesterday", "--yes"], "is not an ISO 8601 time"),
    (["restore", "--latest", "--to-time", "2026-12-01T14:59:00Z", "--yes"], "one of --to-time T"),
    (["restore", "--yes"], "give FILE, or one of --to-time T"),
    (["restore", "--latest", "undo", "--yes"], "--latest restores the whole cluster"),
    (["restore", "drill", "--pitr", "some.dump"], "--pitr drills the pgBackRest repository"),
])
def test_bad_point_in_time_options_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   says: str) -> None:
    code, err = run(capsys, *argv)
    assert code == 2 and says in err, err
