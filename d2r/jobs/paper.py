"""`python -m d2r paper`: the results table in the paper's shape, reports/paper.html (d2r/reporting/paper_table.py).

Reads the metrics of every experiment of params.yaml that has them (metrics/E.json, as they are:
nothing is trained or rebuilt for it) and the published numbers (d2r/reporting/published.yaml).
An experiment without metrics is named as not run. A missing or broken file is one line, exit 1.
"""

from __future__ import annotations

import argparse
import sys

from d2r.config import ParamsError, load_params
from d2r.pipeline.layout import existing_reports
from d2r.reporting.load import ReportError
from d2r.reporting.paper_table import load_published, render
from d2r.runtime.io import ResultFileError, atomic_write_text, read_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    parser.add_argument("--out", default="reports/paper.html", help="where to write the table (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
        reports = existing_reports(params)
        experiments = {r.experiment: read_json(r.outputs()["metrics"]) for r in reports}
        not_run = [e for e in params.experiments if e not in experiments]
        page = render(experiments, not_run, load_published())
    except (ReportError, ParamsError, ResultFileError) as err:
        print(f"error: paper: {err}", file=sys.stderr)
        return 1
    atomic_write_text(args.out, page)
    print(f"paper: {len(experiments)} experiments with metrics ({', '.join(experiments) or 'none'}) -> {args.out}",
          file=sys.stderr)
    return 0
