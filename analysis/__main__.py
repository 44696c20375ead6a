"""``python -m analysis RESULTS_DIR [--out DIR]``: figures, CSV tables and report.html; prints the tables
and whether the paper's findings hold."""

from __future__ import annotations

import sys

from analysis.findings import check, format_findings
from analysis.loader import AnalysisError, load
from analysis.report import build_report, table_title
from analysis.tables import to_markdown
from mia_ray.errors import OneLineParser
from mia_ray.results import folder_problem


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("results_dir", help="a sweep's results directory: <output_dir>/<sweep name>")
    parser.add_argument("--out", default=None, help="where to write the report (default RESULTS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        problem = folder_problem(args.out) if args.out else None
        if problem:
            raise AnalysisError(f"--out {args.out}: {problem}")
        results = load(args.results_dir)
        path, tables = build_report(results, args.out)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, frame in tables.items():
        print(f"\n## {table_title(name)}\n")
        print(to_markdown(frame) if len(frame) else "(no rows)")
    print("\n" + format_findings(*check(results)))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
