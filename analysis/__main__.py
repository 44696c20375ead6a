"""``python -m analysis RESULTS_DIR [--out DIR]``: figures, CSV tables and report.html; prints the tables
and whether the paper's findings hold."""

from __future__ import annotations

import os
import sys

from analysis.completeness import missing_table_warnings
from analysis.findings import check, format_findings
from analysis.loader import AnalysisError, load
from analysis.report import build_report, table_title
from analysis.score_health import nonfinite_warnings
from analysis.tables import to_markdown
from mia_ray.errors import OneLineParser
from mia_ray.results import SCHEMAS, folder_problem


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("results_dir", help="a sweep's results directory: <output_dir>/<sweep name>")
    parser.add_argument("--out", default=None, help="where to write the report (default RESULTS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        if not args.results_dir.strip():  # "" read the current folder
            raise AnalysisError("results_dir ''; allowed: a sweep's results directory <output>/<sweep name>/")
        if args.out is not None and not args.out.strip():  # "" wrote to the default folder instead
            raise AnalysisError("--out ''; allowed: a folder path (default: RESULTS_DIR/report)")
        problem = folder_problem(args.out) if args.out else None
        if problem:
            raise AnalysisError(f"--out {args.out}: {problem}")
        results = load(args.results_dir)
        _check_out_outside_tables(args.results_dir, args.out)
        path, tables = build_report(results, args.out)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, frame in tables.items():
        print(f"\n## {table_title(name)}\n")
        print(to_markdown(frame) if len(frame) else "(no rows)")
    warnings = missing_table_warnings(results) + nonfinite_warnings(results)
    if warnings:
        print("\n" + "\n".join(warnings))
    print("\n" + format_findings(*check(results)))
    print(f"\nreport: {path}")
    return 0


def _check_out_outside_tables(root: str, out: str | None) -> None:
    """--out inside a results table (``metrics/``, ``scores/``, ...) put CSV, PNG and HTML files among its Parquet
    files, where a reader of the table as a dataset (pyarrow, the sweep's next run) takes them for Parquet."""
    if not out or "://" in out or "://" in root:
        return
    where = os.path.realpath(out)
    for table in SCHEMAS:
        folder = os.path.realpath(os.path.join(root, table))
        if where == folder or where.startswith(folder + os.sep):
            raise AnalysisError(
                f"--out {out} is inside the results table {os.path.join(root, table)}; allowed: a folder outside "
                f"the tables ({', '.join(t + '/' for t in SCHEMAS)}), default RESULTS_DIR/report"
            )


if __name__ == "__main__":
    sys.exit(main())
