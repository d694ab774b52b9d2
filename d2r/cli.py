"""`python -m d2r <job> ...`: the jobs the pipeline's rules call.

Each job lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their job runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from d2r.config import ParamsError

JOBS = {
    "setup": ("d2r.setup", "record versions and the device, build the task set once"),
    "train": ("d2r.train", "train one (experiment, method, seed); resumes from its last checkpoint"),
    "evaluate": ("d2r.evaluate", "final rollouts with greedy routes: per-task success and return"),
    "analyse": ("d2r.analyse", "routing depth, modules used and edge frequency per task"),
    "report": ("d2r.report", "self-contained HTML report and metrics JSON for one experiment"),
    "render": ("d2r.render", "videos of greedy episodes of a trained policy, one per task (MuJoCo offscreen)"),
    "bench": ("d2r.jobs.bench", "throughput benchmarks: env steps/s, updates/s, FLOP/s"),
}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments naming one run (experiment, method, seed), shared by train and evaluate."""
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--method", required=True, help="method name in params.yaml")
    parser.add_argument("--seed", type=int, required=True, help="run seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: OMP_NUM_THREADS, which Snakemake sets to the "
                             "rule's threads; more threads than free cores make OpenMP spin, many times slower)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m d2r",
        description="D2R (Dynamic Depth Routing) multi-task RL on Meta-World: the pipeline's jobs.",
    )
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    job_parsers = {}
    for name, (module, summary) in JOBS.items():
        job = sub.add_parser(name, help=summary, description=summary)
        job.set_defaults(_module=module)
        job_parsers[name] = job
    # Job arguments are added lazily (see main) so that importing torch is paid only when needed.
    return parser, job_parsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, job_parsers = build_parser()
    # Find the job first, then let its module add its own arguments and parse again.
    job = next((a for a in argv if not a.startswith("-")), None)
    if job in JOBS:
        importlib.import_module(JOBS[job][0]).add_arguments(job_parsers[job])
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # A refused or unreadable checkpoint/model file: one clear line, no traceback. (Imported
        # here: only a job that has read a checkpoint can raise it, and torch is loaded by then.)
        from d2r.checkpoint import CheckpointError

        if not isinstance(err, CheckpointError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
