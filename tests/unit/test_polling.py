from __future__ import annotations

import pytest

from finaiflow_ops import polling
from finaiflow_ops.progress import or_quiet, quiet


def test_attempts_are_bounded_and_end_with_a_last_look_at_the_deadline() -> None:
    seen = list(polling.attempts(within=0.05, every=0.01))
    assert seen[0].number == 1 and not seen[0].last
    assert seen[-1].last and all(not a.last for a in seen[:-1])
    assert seen[-1].elapsed >= 0.05
    assert len(seen) <= 0.05 / 0.01 + 2


def test_a_zero_timeout_still_looks_once() -> None:
    seen = list(polling.attempts(within=0, every=1))
    assert [(a.number, a.last) for a in seen] == [(1, True)]


def test_the_body_stops_the_polling_by_returning() -> None:
    def first_even() -> int:
        for attempt in polling.attempts(within=10, every=0.001):
            if attempt.number % 2 == 0:
                return attempt.number
        raise AssertionError("timed out")

    assert first_even() == 2


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        next(polling.attempts(within=1, every=0))


def test_or_quiet_keeps_a_given_progress_and_drops_none() -> None:
    said: list[str] = []
    or_quiet(said.append)("x")
    assert said == ["x"]
    assert or_quiet(None) is quiet
    assert quiet("anything") is None
