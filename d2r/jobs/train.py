"""`python -m d2r train`: train one (experiment, method, seed); resumes from its last checkpoint.

Exit status: 0 done, 1 a failed write, 2 a parameter problem, 3 a non-finite value (the message
names update, network and task), 75 stopped by a signal after writing a checkpoint (EX_TEMPFAIL:
run the same command again to continue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from d2r.config import load_params
from d2r.jobs.arguments import add_run_arguments
from d2r.runtime.devices import claim_device
from d2r.runtime.io import WriteError
from d2r.runtime.signals import GracefulStop
from d2r.sac.nonfinite import NonFiniteError
from d2r.sac.run_state import Stopped
from d2r.sac.training import Trainer

EXIT_NONFINITE, EXIT_STOPPED = 3, 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, logs, model.pt)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    run_cfg = load_params(args.params).run(args.experiment, args.method, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _gpu_lock = claim_device(run_cfg.device)  # held until the job ends
    with GracefulStop() as stop:
        trainer = Trainer(run_cfg, args.out, progress=not args.no_progress, stop=stop, device=device)
        try:
            trainer.train()
        except NonFiniteError as err:
            print(f"error: {trainer.nonfinite_message(err)}", file=sys.stderr)
            return EXIT_NONFINITE
        except Stopped as stopped:
            print(stopped.describe(), file=sys.stderr)
            return EXIT_STOPPED
        except WriteError as err:
            print(f"error: {err}; {trainer.last_checkpoint_note()}", file=sys.stderr)
            return 1
        finally:
            trainer.close()  # the envs too: async env workers then end on "close", not on a broken pipe
    return 0
