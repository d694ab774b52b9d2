"""`python -m d2r train`: train one (experiment, method, seed), or several seeds of it together in
lockstep in this one process (`--seed` given more than once; d2r.sac.group); each run resumes from
its last checkpoint.

Exit status: 0 done, 1 a failed write, 2 a parameter problem, 3 a non-finite value (the message
names update, network and task, and in a group the seed), 75 stopped by a signal after writing a
checkpoint (EX_TEMPFAIL: run the same command again to continue). In a group a seed that fails
ends alone, the others run to their end; the status is then the worst: 1, else 3, else 75.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from d2r.config import load_params
from d2r.jobs.arguments import add_run_arguments, per_seed
from d2r.runtime.devices import claim_device
from d2r.runtime.io import WriteError
from d2r.runtime.signals import GracefulStop
from d2r.sac.group import Member, SeedGroup
from d2r.sac.nonfinite import NonFiniteError
from d2r.sac.run_state import Stopped

EXIT_WRITE, EXIT_NONFINITE, EXIT_STOPPED = 1, 3, 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, several_seeds=True)
    parser.add_argument("--out", required=True,
                        help="run directory (checkpoints, logs, model.pt); {seed} in it is the seed's number")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    seeds = args.seed
    out_dirs = [Path(out) for out in per_seed("--out", args.out, seeds)]
    params = load_params(args.params)
    runs = [params.run(args.experiment, args.method, seed) for seed in seeds]
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _gpu_lock = claim_device(runs[0].device)  # held until the job ends
    prefix = (lambda member: f"seed {member.seed}: ") if len(seeds) > 1 else (lambda member: "")
    statuses = []

    def on_end(member: Member) -> None:
        err, trainer = member.ended, member.trainer
        if isinstance(err, NonFiniteError):
            print(f"error: {prefix(member)}{trainer.nonfinite_message(err)}", file=sys.stderr)
            statuses.append(EXIT_NONFINITE)
        elif isinstance(err, Stopped):
            print(f"{prefix(member)}{err.describe()}", file=sys.stderr)
            statuses.append(EXIT_STOPPED)
        elif isinstance(err, WriteError):
            print(f"error: {prefix(member)}{err}; {trainer.last_checkpoint_note()}", file=sys.stderr)
            statuses.append(EXIT_WRITE)

    with GracefulStop() as stop:
        group = SeedGroup(runs, out_dirs, device, progress=not args.no_progress, stop=stop,
                          group_update=runs[0].experiment.group_update)
        try:
            group.train(on_end)
        finally:
            group.close()  # the envs too: async env workers then end on "close", not on a broken pipe
    for status in (EXIT_WRITE, EXIT_NONFINITE, EXIT_STOPPED):
        if status in statuses:
            return status
    return 0
