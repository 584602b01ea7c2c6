"""errors.py draws the error tree in its docstring: the drawing must be the real tree."""

from __future__ import annotations

import inspect
import pkgutil
import re
from importlib import import_module

import finaiflow_ops
from finaiflow_ops import errors
from finaiflow_ops.errors import CheckFailed, CommandFailed, DeployFailed, OpsError, VerifyFailed


def drawn_tree() -> dict[str, str | None]:
    """{class name: parent name} as the docstring draws it."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^(\s*)(?:([│ ]*)[├└]── )?(\w+)\s", line + " ")
        if not m or not m.group(3)[0].isupper() or not line.strip():
            continue
        if m.group(3) == "OpsError" and not m.group(2) and "──" not in line:
            depth = 0
        elif "──" in line:
            depth = line.index("──") // 4 + 1
        else:
            continue
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[m.group(3)] = stack[-1][1] if stack else None
        stack.append((depth, m.group(3)))
    return parents


def every_error_class() -> dict[str, type[OpsError]]:
    """Every OpsError subclass defined anywhere in the package."""
    found: dict[str, type[OpsError]] = {}
    for info in pkgutil.walk_packages(finaiflow_ops.__path__, "finaiflow_ops."):
        if info.name.endswith("__main__"):
            continue
        module = import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, OpsError):
                found[name] = obj
    return found


def test_the_drawing_is_the_real_tree_and_holds_every_error() -> None:
    drawn = drawn_tree()
    real = every_error_class()
    assert set(drawn) == set(real), f"drawn but not real: {set(drawn) - set(real)}; " \
                                    f"real but not drawn: {set(real) - set(drawn)}"
    for name, cls in real.items():
        assert cls.__module__ == "finaiflow_ops.errors", f"{name} is defined in {cls.__module__}"
        parent = cls.__mro__[1].__name__ if cls is not OpsError else None
        assert drawn[name] == parent, f"{name}: drawn under {drawn[name]}, is under {parent}"


def test_errors_carry_where_they_happened_as_fields() -> None:
    exc = DeployFailed("new container unhealthy", service="api", image="finaiflow/api:1.1.0",
                       container="finaiflow-api-3", output_tail="Traceback ...", argv=["up"], exit_status=1)
    assert (exc.service, exc.image, exc.container, exc.log_tail) == (
        "api", "finaiflow/api:1.1.0", "finaiflow-api-3", "Traceback ...")
    assert exc.output_tail == exc.log_tail and isinstance(exc, CommandFailed)
    assert OpsError("x").service is None and OpsError("x").log_tail == ""


def test_a_failed_check_may_say_where_too() -> None:
    exc = CheckFailed("nginx -t rejects the new certificate", problems=["ee key too small"], service="nginx",
                      container="finaiflow-nginx-1", log_tail="[emerg] ee key too small")
    assert (exc.service, exc.container, exc.log_tail, exc.problems) == (
        "nginx", "finaiflow-nginx-1", "[emerg] ee key too small", ("ee key too small",))
    assert VerifyFailed("b.dump", ["no manifest"]).service is None
