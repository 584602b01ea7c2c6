"""exec_answered: a docker exec that got no answer is made once more, only when it may be."""

from __future__ import annotations

from collections.abc import Sequence

from finaiflow_ops.container_exec import ExecResult, exec_answered


class FakeContainer:
    """Answers exec_run from a script of (exit code, stdout, stderr)."""

    def __init__(self, *answers: tuple[int | None, bytes | None, bytes | None]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def exec_run(self, argv: Sequence[str], user: str,
                 demux: bool) -> tuple[int | None, tuple[bytes | None, bytes | None]]:
        assert demux
        self.calls.append([*argv, *([f"(as {user})"] if user else [])])
        code, out, err = self.answers.pop(0)
        return code, (out, err)


def has_output(result: ExecResult) -> bool:
    return bool(result.stdout or result.stderr)


def test_an_answer_at_the_first_call_is_returned_as_it_is() -> None:
    container = FakeContainer((0, b"ok\n200", None))
    result = exec_answered(container, ["curl", "x"], has_output, pause=0)
    assert result == ExecResult(0, b"ok\n200", b"") and result.text == "ok\n200"
    assert container.calls == [["curl", "x"]]


def test_no_answer_is_asked_once_more_and_the_second_result_returned() -> None:
    container = FakeContainer((0, None, None), (0, b"{}", None))
    result = exec_answered(container, ["curl"], has_output, pause=0)
    assert result.text == "{}" and len(container.calls) == 2


def test_two_calls_at_most_the_last_result_is_returned() -> None:
    container = FakeContainer((7, None, None), (7, None, b"curl: (7) refused"), (0, b"never", None))
    result = exec_answered(container, ["curl"], lambda r: r.exit_code == 0, pause=0)
    assert result.exit_code == 7 and result.error == "curl: (7) refused"
    assert len(container.calls) == 2


def test_a_call_that_may_not_be_repeated_is_made_once() -> None:
    container = FakeContainer((0, None, None), (0, b"applied twice", None))
    result = exec_answered(container, ["curl", "-X", "POST"], has_output, repeat=False, pause=0)
    assert result == ExecResult(0, b"", b"") and len(container.calls) == 1


def test_the_user_is_passed_and_an_exit_code_the_engine_did_not_give_is_0() -> None:
    container = FakeContainer((None, b"-----BEGIN CERTIFICATE-----", None))
    result = exec_answered(container, ["cat", "cert.pem"], has_output, user="nginx", pause=0)
    assert result.exit_code == 0 and container.calls == [["cat", "cert.pem", "(as nginx)"]]
