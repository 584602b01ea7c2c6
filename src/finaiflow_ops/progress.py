"""Progress lines: what a long operation is doing now, for a person (the CLI prints them on stderr)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_message: str) -> None:
    """Progress that goes nowhere (a library caller who did not ask for it)."""


def or_quiet(progress: Progress | None) -> Progress:
    """`progress`, or nowhere when the caller gave none."""
    return progress if progress is not None else quiet
