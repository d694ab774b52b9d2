"""Several seeds of one (experiment, method) trained together in one process on one device, in
lockstep (issue 31): the `train` job with `--seed` given more than once.

Each seed is a whole d2r.sac.training.Trainer, built right after seeding the process with its
seed, as a solo run is: its own envs, replay buffer, collector, agent (temperatures,
optimisers), checkpoints, logs and run directory. Its global random streams (python, numpy,
torch's CPU generator and the device's CUDA generator: the update's route and action noise) are
its own too: d2r.runtime.seeding.RandomStreams puts them in place around everything the seed
does (collection, updates, evaluation, checkpoints, resuming) and takes them back after. So seed
s in a group draws, computes and writes exactly what it does alone.

Lockstep: the seeds' runs are stepped one unit in turn (Trainer.units: an epoch's episode, each
update, each epoch's end), so in each epoch every seed collects its episode, then update i of
every seed runs before update i+1 of any, and checkpoints, evaluation and log lines come at the
same epoch boundaries.

Stops and faults: on SIGTERM/SIGINT every seed stops at its own next safe point with a checkpoint
of exactly there (the seeds may stop a unit apart; rerunning the same command resumes each
exactly). A seed that fails (a non-finite value, a failed write) ends alone, its last good
checkpoint kept; the others run on to the end and write their outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from d2r.config import RunConfig
from d2r.runtime.io import WriteError
from d2r.runtime.seeding import RandomStreams
from d2r.runtime.signals import GracefulStop
from d2r.sac.nonfinite import NonFiniteError
from d2r.sac.run_state import Stopped
from d2r.sac.training import Trainer

#: what ends one seed's run early; anything else (a bug, a second signal) ends the whole group
ENDS_A_SEED = (Stopped, NonFiniteError, WriteError)


@dataclasses.dataclass
class Member:
    """One seed of the group: its run, its random streams and how its run ended."""

    trainer: Trainer
    streams: RandomStreams
    units: Iterator[None] | None = None
    ended: BaseException | None = None  # Stopped, NonFiniteError or WriteError; None when finished

    @property
    def seed(self) -> int:
        return self.trainer.run.seed


class SeedGroup:
    def __init__(self, runs: list[RunConfig], out_dirs: list[Path], device: torch.device, progress: bool = True,
                 stop: GracefulStop | None = None):
        self.members: list[Member] = []
        for position, (run, out_dir) in enumerate(zip(runs, out_dirs, strict=True)):
            # The Trainer seeds the process's streams with its seed and builds from them (what a solo
            # run draws); the streams as they are after that are this seed's from now on.
            trainer = Trainer(run, out_dir, progress=progress, stop=stop, device=device,
                              bar_position=position if len(runs) > 1 else None)
            if len(runs) > 1:
                trainer.prefix = f"seed {run.seed}: "
            self.members.append(Member(trainer, RandomStreams(device)))

    def train(self, on_end: Callable[[Member], None] | None = None) -> list[Member]:
        """Every seed's run from its newest checkpoint to the end, in lockstep; a seed that stops
        (Stopped) or fails (NonFiniteError, WriteError) ends alone and `on_end(member)` is called
        then (and when one finishes). Returns the members, each with how its run ended."""
        running = list(self.members)
        for member in running:
            member.units = member.trainer.units()
        while running:
            for member in list(running):
                try:
                    with member.streams:
                        next(member.units)
                    continue
                except StopIteration:
                    member.ended = None
                except ENDS_A_SEED as err:
                    member.ended = err
                running.remove(member)
                if on_end is not None:
                    on_end(member)
        return self.members

    def close(self) -> None:
        for member in self.members:
            with member.streams:
                if member.units is not None:
                    member.units.close()  # an unfinished run: its overlapped episode is joined
                member.trainer.close()
