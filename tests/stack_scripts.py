"""Python scripts that run inside the stack's images (stack/*/...py), imported by path for unit
tests of their logic: they are not part of the finaiflow_ops package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

STACK = Path(__file__).resolve().parent.parent / "stack"


def load(relative: str) -> ModuleType:
    """stack/RELATIVE as a module named after the file."""
    path = STACK / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module
