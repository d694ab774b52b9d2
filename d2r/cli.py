"""`python -m d2r <job> ...`: the jobs the pipeline's rules call.

Each job lives in its own module of d2r/jobs/ exposing `add_arguments(parser)` and
`run(args) -> int`; a job's module is imported only when it runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from d2r.config import ParamsError, load_params
from d2r.runtime.io import CheckpointError, ResultFileError

#: the jobs the pipeline's rules run (d2r.pipeline.layout.JOBS), each able to write its build record
PIPELINE_JOBS = ("setup", "train", "evaluate", "analyse", "report", "render", "paper")
JOBS = {
    "setup": ("d2r.jobs.setup", "record versions and the device, build the task set once"),
    "train": ("d2r.jobs.train", "train one (experiment, method, seed); resumes from its last checkpoint"),
    "evaluate": ("d2r.jobs.evaluate", "final rollouts with greedy routes: per-task success and return"),
    "analyse": ("d2r.jobs.analyse", "routing depth, modules used and edge frequency per task"),
    "report": ("d2r.jobs.report", "self-contained HTML report and metrics JSON for one experiment"),
    "paper": ("d2r.jobs.paper", "the results table in the paper's shape: every experiment with metrics beside "
                                "published numbers (reports/paper.html)"),
    "render": ("d2r.jobs.render", "videos of greedy episodes of a trained policy, one per task (MuJoCo offscreen)"),
    "bench": ("d2r.jobs.bench", "throughput benchmarks: env steps/s, updates/s, FLOP/s"),
}


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
        if name in PIPELINE_JOBS:
            job.add_argument("--record", metavar="PATH",
                             help="after the job succeeded, write its build record here: the parameters, code "
                                  "and inputs it was made from and its outputs (the pipeline's rules pass it; "
                                  "d2r.pipeline.records)")
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
    records = built = made = None
    try:
        if getattr(args, "record", None):
            # What the outputs are made from is taken before the job reads anything. The record
            # modules are imported only here: they are no job's sources (d2r.pipeline.sources.BOOKKEEPING).
            from d2r.pipeline import records
            built = _pipeline_job(args)
            made = records.made_from(built, load_params(args.params))
        status = int(importlib.import_module(args._module).run(args) or 0)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ResultFileError) as err:  # an unreadable or refused file: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return 1
    if status == 0 and built:
        records.write_record(built, made)
    return status


def _pipeline_job(args):
    """The pipeline job these arguments run (a d2r.pipeline.layout.Job), for its build record."""
    from d2r.pipeline.layout import Job

    if getattr(args, "experiment", None) is None and args.job != "paper":
        raise SystemExit(f"error: {args.job} --record needs --experiment (and --method, --seed for one run's job)")
    job = Job(args.job, getattr(args, "experiment", None), getattr(args, "method", None), getattr(args, "seed", None))
    if args.record != job.record:  # the record's place is part of the results layout (d2r.pipeline.layout)
        raise SystemExit(f"error: --record {args.record}: the build record of {job.label} is {job.record}")
    return job


if __name__ == "__main__":
    sys.exit(main())
