"""emit(): the one place a command chooses between its --json document and its text for a person."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from finaiflow_ops.cli.options import Options, emit


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool


def options(*, json_output: bool) -> Options:
    return Options("local://", "/srv/finaiflow", None, json_output, False)


def test_json_prints_the_result_as_one_document_and_never_renders(capsys: pytest.CaptureFixture[str]) -> None:
    rendered: list[Result] = []
    emit(options(json_output=True), Result("api", True), rendered.append)
    assert json.loads(capsys.readouterr().out) == {"name": "api", "ok": True}
    assert rendered == []


def test_without_json_the_result_goes_to_the_renderer_only(capsys: pytest.CaptureFixture[str]) -> None:
    rendered: list[Result] = []
    emit(options(json_output=False), Result("api", False), rendered.append)
    assert rendered == [Result("api", False)]
    assert capsys.readouterr().out == ""


def test_a_stream_of_results_is_one_compact_json_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    rendered: list[Result] = []
    for result in (Result("api", True), Result("nginx", False)):
        emit(options(json_output=True), result, rendered.append, line=True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"name": "api", "ok": True},
                                                    {"name": "nginx", "ok": False}]
    assert rendered == []
