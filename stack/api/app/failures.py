"""Describing failures of PostgreSQL and Redis without leaking credentials."""

from __future__ import annotations


def reason(error: BaseException) -> str:
    """The class name of the innermost cause, e.g. InvalidPasswordError or gaierror.

    The innermost cause is the specific one (wrappers say only DBAPIError or
    ConnectionError), and a class name never carries the user, host or password
    that driver messages may contain.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__
