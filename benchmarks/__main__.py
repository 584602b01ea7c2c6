"""`python -m benchmarks`: run the benchmarks, write reports/bench.json, print ours beside the baseline.

Exit status 1 when a target is missed (our verified backup slower than the plain dump, our
restore slower than 1.2x the plain pg_restore, or the verified pgBackRest full backup slower than
half the plain dump).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import backup
from finaiflow_ops.output import err, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rows", type=int, default=2_200_000,
                        help="rows of random data (default: about 1.1 GB of COPY text, 1 GB on disk)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds per comparison (3 or more on a busy machine)")
    parser.add_argument("--output", type=Path, default=Path("reports/bench.json"))
    args = parser.parse_args(argv)

    results = {"backup": backup.run(rows=args.rows, rounds=args.rounds,
                                     say=lambda msg: err.print(f"[dim]…[/dim] {msg}"))}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    out.print(_table(results["backup"]))
    out.print(f"numbers written to {args.output}")
    return 0 if all(results["backup"][k]["passed"] for k in ("backup", "restore", "physical_backup")) else 1


def _table(r: dict[str, Any]) -> Table:
    db = r["database"]
    table = Table(title=f"backup and restore, {db['size_mb']:.0f} MB database, best of {db['rounds']} rounds "
                        f"(load {r['machine']['load_average'][0]}, {r['machine']['cpus']} cpus)",
                  title_justify="left")
    for column in ("", "baseline (runbook)", "ours", "ratio", "target"):
        table.add_column(column)
    for key in ("backup", "restore", "physical_backup", "physical_restore"):
        base, ours = r[key]["baseline"], r[key]["ours"]
        mark = "[green]pass[/green]" if r[key]["passed"] else "[red]FAIL[/red]"
        table.add_row(key, f"{base['best_seconds']:.1f} s, {base['mb_per_s']:.1f} MB/s",
                      f"{ours['best_seconds']:.1f} s, {ours['mb_per_s']:.1f} MB/s",
                      f"{r[key]['ratio']:.2f}", f"{r[key]['target']} {mark}")
    table.add_row("archive size", f"{r['backup']['baseline']['output_mb']:.0f} MB",
                  f"{r['backup']['ours']['output_mb']:.0f} MB", "", "")
    parallel = r["informational"]["parallel_directory_dump"]
    table.add_row("(info) -Fd -j2 -Z1", "", f"{parallel['best_seconds']:.1f} s, in the container", "", "")
    return table


if __name__ == "__main__":
    sys.exit(main())
