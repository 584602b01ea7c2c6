"""Vulnerability scans: the api's Python dependencies (pip-audit) and the stack's images (trivy).

The runbook's `safety check` and `trivy image` print "no vulnerabilities" in situations where
they checked nothing. These hooks only pass when the scanner ran AND its database answered:
pip-audit exits 0 and says "No known vulnerabilities found" when the vulnerability service knew
none of the packages (each one then carries a skip_reason), so the packages actually audited are
counted, and zero audited is "not run", with the reason. A missing scanner is "not run" too.

pip-audit runs where finaiflow-ops runs, on the exact distributions installed in the api
container (read there with importlib.metadata). trivy runs on the target, where the images are.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finaiflow_ops.errors import UsageError
from finaiflow_ops.hardening.base import (
    Context,
    Manual,
    NotApplicable,
    Operation,
    Rule,
    Severity,
    Verdict,
    run_optional,
)
from finaiflow_ops.target import Target

__all__ = ["DependencyAudit", "DependencyAuditRule", "ImageScanRule", "interpret_pip_audit", "pip_audit_path"]

API_SERVICE = "api"
_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m\n"
    "for d in m.distributions():\n"
    "    print(f\"{d.metadata['Name']}=={d.version}\")\n"
)
SCAN_TIMEOUT = 300.0


@dataclass(frozen=True)
class DependencyAudit:
    total: int
    audited: int
    unknown: tuple[str, ...]  # why the service could not audit a package, one per package
    vulnerable: tuple[str, ...]  # "name version: ID, ID (fixed in ...)"


def interpret_pip_audit(report: dict[str, Any]) -> DependencyAudit:
    """Count what pip-audit really audited in its JSON report."""
    deps = report.get("dependencies") or []
    unknown = tuple(str(d["skip_reason"]) for d in deps if d.get("skip_reason"))
    vulnerable = []
    for d in deps:
        vulns = d.get("vulns") or []
        if vulns:
            fixes = sorted({v for vuln in vulns for v in vuln.get("fix_versions") or ()})
            ids = ", ".join(v.get("id", "?") for v in vulns)
            vulnerable.append(f"{d.get('name')} {d.get('version')}: {ids}"
                              + (f" (fixed in {', '.join(fixes)})" if fixes else ""))
    return DependencyAudit(len(deps), len(deps) - len(unknown), unknown, tuple(vulnerable))


def pip_audit_path(configured: str | None) -> str | None:
    """The pip-audit program: the configured one, else from PATH, else next to this Python."""
    if configured:
        return configured if Path(configured).is_file() or shutil.which(configured) else None
    beside = Path(sys.executable).parent / "pip-audit"
    return shutil.which("pip-audit") or (str(beside) if beside.is_file() else None)


class DependencyAuditRule(Rule[DependencyAudit]):
    id = "audit.dependencies"
    title = "the api's Python dependencies have no known vulnerabilities (pip-audit)"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> DependencyAudit:
        stack = ctx.need_stack()
        program = pip_audit_path(ctx.pip_audit)
        if program is None:
            raise NotApplicable("not run: pip-audit is not installed (pip install pip-audit)")
        try:
            stack.container(API_SERVICE)
        except UsageError as exc:
            raise NotApplicable(f"not run: the {API_SERVICE} service is not running") from exc
        listed = stack.exec(API_SERVICE, ["python3", "-c", _LIST_DISTRIBUTIONS]).stdout
        requirements = "".join(sorted({line.strip() + "\n" for line in listed.splitlines() if "==" in line}))
        with tempfile.TemporaryDirectory(prefix="finaiflow-pip-audit-") as tmp:
            path = Path(tmp, "requirements.txt")
            path.write_text(requirements)
            result = Target.parse("local://").run(
                program, "-r", str(path), "--no-deps", "--disable-pip", "--progress-spinner", "off",
                "-f", "json", check=False, timeout=SCAN_TIMEOUT)
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise NotApplicable(f"not run: pip-audit could not reach a vulnerability service ({last})"
                                ) from None
        return interpret_pip_audit(report)

    def evaluate(self, ctx: Context, state: DependencyAudit) -> Verdict:
        if state.audited == 0:
            first = state.unknown[0] if state.unknown else "no packages"
            raise NotApplicable(f"not run: the vulnerability service knew none of the {state.total} packages "
                                f"(e.g. {first}); unreachable or incomplete")
        detail = f"{state.audited} of {state.total} packages audited, none vulnerable"
        if state.unknown:
            detail += f"; {len(state.unknown)} unknown to the service"
        return Verdict(state.vulnerable, f"pip-audit on the {API_SERVICE} container's packages", detail)

    def plan(self, ctx: Context, state: DependencyAudit) -> Sequence[Operation]:
        raise Manual("upgrade the named packages in stack/api/requirements.txt and rebuild the api image")


@dataclass(frozen=True)
class ImageFindings:
    image: str
    high: int
    critical: int


class ImageScanRule(Rule[list[ImageFindings]]):
    id = "audit.images"
    title = "the stack's images have no HIGH or CRITICAL vulnerabilities (trivy)"
    severity = Severity.MEDIUM

    def facts(self, ctx: Context) -> list[ImageFindings]:
        stack = ctx.need_stack()
        if run_optional(ctx.target, ctx.trivy, "--version") is None:
            raise NotApplicable(f"not run: trivy is not installed on {ctx.target}")
        found = []
        for image in sorted(set(stack.images().values())):
            result = ctx.target.run(ctx.trivy, "image", "--quiet", "--format", "json", "--severity",
                                    "HIGH,CRITICAL", image, check=False, timeout=SCAN_TIMEOUT)
            if not result.ok:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise NotApplicable(f"not run: trivy failed on {image}, no vulnerability database? "
                                    f"({last[:200]})")
            vulns = [v for r in json.loads(result.stdout or "{}").get("Results") or ()
                     for v in r.get("Vulnerabilities") or ()]
            found.append(ImageFindings(image, sum(v.get("Severity") == "HIGH" for v in vulns),
                                       sum(v.get("Severity") == "CRITICAL" for v in vulns)))
        return found

    def evaluate(self, ctx: Context, state: list[ImageFindings]) -> Verdict:
        problems = [f"{i.image}: {i.critical} critical, {i.high} high" for i in state if i.high or i.critical]
        return Verdict(tuple(problems), "trivy image", f"{len(state)} images scanned")

    def plan(self, ctx: Context, state: list[ImageFindings]) -> Sequence[Operation]:
        raise Manual("rebuild the named images on an updated base image (scripts/provision)")
