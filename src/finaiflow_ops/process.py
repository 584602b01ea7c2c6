"""Local child processes that must not outlive finaiflow-ops."""

from __future__ import annotations

import ctypes
import signal

__all__ = ["die_with_parent"]


def die_with_parent() -> None:
    """In a child, before exec: the kernel kills it when finaiflow-ops dies, even by SIGKILL, so a
    killed backup leaves no `docker exec` client behind still writing into its temp file."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
