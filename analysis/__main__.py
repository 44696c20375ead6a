"""``python -m analysis RESULTS_DIR [--out DIR]``: figures, CSV tables and report.html; prints the tables
and whether the paper's findings hold."""

from __future__ import annotations

import argparse
import os
import sys

from analysis.findings import check, format_findings
from analysis.loader import AnalysisError, load
from analysis.report import build_report, table_title
from analysis.tables import to_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("results_dir", help="a sweep's results directory: <output_dir>/<sweep name>")
    parser.add_argument("--out", default=None, help="where to write the report (default RESULTS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        if args.out:
            _check_out(args.out)
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


def _check_out(out: str) -> None:
    """--out can become a writable folder: the nearest existing path on it is a folder we may write to."""
    p = os.path.abspath(out)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        raise AnalysisError(f"--out {out}: {p} is a file, not a folder; allowed: a folder path (created if missing)")
    if not os.access(p, os.W_OK | os.X_OK):
        raise AnalysisError(f"--out {out}: folder {p} is not writable; allowed: a folder you can write to")


if __name__ == "__main__":
    sys.exit(main())
