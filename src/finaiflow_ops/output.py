"""Printing results: readable text for people, one JSON document for programs.

Results are frozen dataclasses; their JSON form is their fields plus their public properties
(derived facts such as `healthy`), so `--json` says exactly what the table shows.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["err", "jsonable", "out", "print_json"]

# Piped output is read by people too (CI logs): wide enough that tables do not truncate names.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


def jsonable(value: Any) -> Any:
    """Turn a result (dataclasses, tuples, dicts, paths) into JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in dir(type(value)):
            if not name.startswith("_") and isinstance(getattr(type(value), name), property):
                data[name] = jsonable(getattr(value, name))
        return data
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def print_json(value: Any) -> None:
    """Print one JSON document on stdout and nothing else."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
