"""`python -m d2r report`: one self-contained HTML report and a metrics JSON for one experiment.

Reads files only, never training code: params.yaml and the experiment's results tree (the files
are listed in d2r/reporting/load.py).

Writes ``reports/{exp}.html``, ``metrics/{exp}.json`` and, with --curves, the learning curves as
a small CSV for `dvc plots` (``reports/curves/{exp}.csv``); with --timing, the wall times
(``reports/{exp}.timing.json``). Both depend on these files only, so a rebuild from the same
results gives the same bytes: no timestamps, no random ids (every figure has a fixed div id),
keys sorted, plotly.js inlined once in <head> so the page opens offline. The definitions and the
files' layouts are in d2r/reporting/metrics.py.

A missing or broken results file, or a bad params.yaml, is one line on stderr and exit status 1;
nothing is written then.
"""

from __future__ import annotations

import argparse
import sys

from d2r.config import ParamsError
from d2r.reporting.load import ReportError, load
from d2r.reporting.metrics import compute_metrics, compute_timing, curves_csv
from d2r.reporting.page import render
from d2r.reporting.stats import StatsError
from d2r.reporting.videos import load_videos
from d2r.runtime.io import atomic_write_json, atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--results", required=True, help="results/{experiment}")
    parser.add_argument("--out", required=True, help="where to write the HTML report")
    parser.add_argument("--metrics", required=True, help="where to write the metrics JSON")
    parser.add_argument("--timing", help="where to write the wall times JSON (optional)")
    parser.add_argument("--videos", nargs="*", default=None,
                        help="the render job's video directories to embed (results/E/M/seedS/videos)")
    parser.add_argument("--curves", help="where to write the learning curves CSV for `dvc plots` (optional)")


def run(args: argparse.Namespace) -> int:
    try:
        data = load(args.params, args.experiment, args.results)
        if args.videos:
            data.videos = load_videos(args.videos, data.methods, data.tasks)
        metrics, timing = compute_metrics(data), compute_timing(data)
    except (ReportError, ParamsError, StatsError, FileNotFoundError) as err:
        print(f"error: report {args.experiment}: {err}", file=sys.stderr)
        return 1
    atomic_write_json(args.metrics, metrics)
    if args.timing:
        atomic_write_json(args.timing, timing)
    if args.curves:
        atomic_write_text(args.curves, curves_csv(data))
    atomic_write_text(args.out, render(data, metrics, timing))
    print(f"report: {args.experiment}: {len(data.methods)} methods x {len(data.seeds)} seeds -> "
          f"{args.out}, {args.metrics}", file=sys.stderr)
    return 0
