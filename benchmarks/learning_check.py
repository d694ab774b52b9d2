"""The learning check: does each method learn the easy tasks, per seed? (a benchmark, not a test)

Run the experiment, then read its results:

    snakemake --cores 2 reports/easy3.html        # easy3: reach, drawer-close, button-press-topdown
    python benchmarks/learning_check.py easy3     # the table below, as Markdown

Prints per method and seed: the final evaluation's success per task (final_eval_episodes greedy
episodes each), its mean, the first periodic evaluation at which each task was solved (success
1.0; "-" when never), the mean depth of D2R's greedy routes per task, and the training job's wall
time (Snakemake's benchmark file).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="easy3")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks/runs"))
    args = parser.parse_args()
    runs = sorted((args.results / args.experiment).glob("*/seed*/eval.json"))
    if not runs:
        raise SystemExit(f"no finished runs under {args.results / args.experiment} (run its report first)")
    tasks = json.loads(runs[0].read_text())["tasks"]
    print(f"| method | seed | {' | '.join(tasks)} | mean | first solved (epoch) | depth | train wall time |")
    print("|---" * (len(tasks) + 6) + "|")
    for path in runs:
        final = json.loads(path.read_text())
        method, seed = final["method"], final["seed"]
        evals = read_jsonl(path.parent / "eval_log.jsonl")
        solved = [next((str(e["epoch"]) for e in evals if e["success"][t] >= 1.0), "-") for t in tasks]
        depth = "/".join(f"{final['routes'][t]['depth_mean']:.1f}" for t in tasks) if final.get("routed") else "-"
        bench = args.benchmarks / args.experiment / method / f"seed{seed}" / "train.tsv"
        wall = "?"
        if bench.exists():
            seconds = float(next(csv.DictReader(bench.open(), delimiter="\t"))["s"])
            wall = f"{seconds / 60:.0f} min"
        cells = [f"{final['success'][t]:.2f}" for t in tasks]
        print(f"| {method} | {seed} | {' | '.join(cells)} | {final['mean_success']:.2f} | {' / '.join(solved)} "
              f"| {depth} | {wall} |")


if __name__ == "__main__":
    main()
