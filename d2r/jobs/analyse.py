"""`python -m d2r analyse`: routing per task for one run -> routes.json (d2r/analysis.py; files only)."""

from __future__ import annotations

import argparse
import sys

from d2r.analysis import AnalyseError, analyse
from d2r.runtime.io import ResultFileError, atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="results/{experiment}/{method}/seed{seed}")
    parser.add_argument("--out", required=True, help="where to write routes.json")
    # The run, named for the build record only (--record): analyse reads the files above.
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default params.yaml)")
    parser.add_argument("--experiment", help="experiment name in params.yaml (with --record)")
    parser.add_argument("--method", help="method name (with --record)")
    parser.add_argument("--seed", type=int, help="run seed (with --record)")


def run(args: argparse.Namespace) -> int:
    try:
        result = analyse(args.run_dir)
    except (AnalyseError, ResultFileError, KeyError, FileNotFoundError) as err:
        kind = {KeyError: "missing key: ", FileNotFoundError: "FileNotFoundError: "}.get(type(err), "")
        print(f"error: analyse {args.run_dir}: {kind}{err}", file=sys.stderr)
        return 1
    atomic_write_json(args.out, result)
    summary = (f"mean depth {result['mean']['depth']:.2f}, modules used {result['mean']['modules_used']:.2f}"
               if result["routed"] else "not routed")
    print(f"analyse: {args.run_dir}: {summary} -> {args.out}", file=sys.stderr)
    return 0
