"""`python -m d2r <job> ...`: the jobs the pipeline's rules call.

Each job lives in its own module of d2r/jobs/ exposing `add_arguments(parser)` and
`run(args) -> int`; a job's module is imported only when it runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from d2r.config import ParamsError, load_params
from d2r.jobs.arguments import UsageError
from d2r.runtime.io import CheckpointError, ResultFileError

#: the jobs the pipeline's rules run (d2r.pipeline.layout.JOBS), each able to write its build record
PIPELINE_JOBS = ("setup", "train", "evaluate", "analyse", "report", "render", "paper")
JOBS = {
    "setup": ("d2r.jobs.setup", "record versions and the device, build the task set once"),
    "train": ("d2r.jobs.train", "train one (experiment, method, seed), or several seeds of it together (--seed "
                                "repeated); resumes from its last checkpoint"),
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
    records = made = None
    built = []
    try:
        if getattr(args, "record", None):
            # What the outputs are made from is taken before the job reads anything. The record
            # modules are imported only here: they are no job's sources (d2r.pipeline.sources.BOOKKEEPING).
            from d2r.pipeline import records
            built = _pipeline_jobs(args)
            made = [records.made_from(job, load_params(args.params)) for job in built]
        status = int(importlib.import_module(args._module).run(args) or 0)
    except (ParamsError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ResultFileError) as err:  # an unreadable or refused file: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return 1
    if status == 0:
        for job, made_from in zip(built, made or []):  # a group of seeds' train job: one record per seed
            records.write_record(job, made_from)
    return status


def _pipeline_jobs(args) -> list:
    """The pipeline jobs these arguments run (d2r.pipeline.layout.Job), for their build records:
    one, or one per seed of a group's train job (--record then holds {seed}, filled per seed)."""
    from d2r.jobs.arguments import per_seed, seeds_of
    from d2r.pipeline.layout import Job

    if getattr(args, "experiment", None) is None and args.job != "paper":
        raise SystemExit(f"error: {args.job} --record needs --experiment (and --method, --seed for one run's job)")
    seeds = seeds_of(args) if getattr(args, "seed", None) is not None else [None]
    jobs = []
    for seed, record in zip(seeds, per_seed("--record", args.record, seeds)):
        job = Job(args.job, getattr(args, "experiment", None), getattr(args, "method", None), seed)
        if record != job.record:  # the record's place is part of the results layout (d2r.pipeline.layout)
            raise SystemExit(f"error: --record {record}: the build record of {job.label} is {job.record}")
        jobs.append(job)
    return jobs


if __name__ == "__main__":
    sys.exit(main())
