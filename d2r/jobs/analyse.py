"""`python -m d2r analyse`: routing per task for one run -> routes.json (d2r/analyse.py; files only)."""

from __future__ import annotations

import argparse
import sys

from d2r.analyse import AnalyseError, analyse
from d2r.io import atomic_write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="results/{experiment}/{method}/seed{seed}")
    parser.add_argument("--out", required=True, help="where to write routes.json")


def run(args: argparse.Namespace) -> int:
    try:
        result = analyse(args.run_dir)
    except (AnalyseError, KeyError, FileNotFoundError) as err:
        kind = "missing key" if isinstance(err, KeyError) else type(err).__name__
        print(f"error: analyse {args.run_dir}: {kind}: {err}", file=sys.stderr)
        return 1
    atomic_write_json(args.out, result)
    summary = (f"mean depth {result['mean']['depth']:.2f}, modules used {result['mean']['modules_used']:.2f}"
               if result["routed"] else "not routed")
    print(f"analyse: {args.run_dir}: {summary} -> {args.out}", file=sys.stderr)
    return 0
