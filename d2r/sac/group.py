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

The updates (`group_update`, resolve_group_update): `sequential` runs each seed's update on its
own, one after the other, each exactly its solo update; `stacked` runs update i of every seed
as one update of the seeds' weights stacked along a seed dimension (d2r.sac.stacked: one kernel
for all seeds, each seed's result its solo update's to float rounding), and collects their
episodes with one act() per step, when the seeds are at the same update (after a resume they may
be a unit apart: they update one by one until they are level).

Stops and faults: on SIGTERM/SIGINT every seed stops at its own next safe point with a checkpoint
of exactly there (the seeds may stop a unit apart; rerunning the same command resumes each
exactly). A seed that fails (a non-finite value, a failed write) ends alone, its last good
checkpoint kept; the others run on to the end and write their outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch

from d2r.config import RunConfig
from d2r.runtime.io import WriteError
from d2r.runtime.seeding import RandomStreams
from d2r.runtime.signals import GracefulStop
from d2r.sac.collect import collect_together, start_together
from d2r.sac.nonfinite import NonFiniteError
from d2r.sac.run_state import Stopped
from d2r.sac.stacked import StackedSAC, can_stack
from d2r.sac.training import Collection, Request, Trainer, fulfil, resume_units

#: what ends one seed's run early; anything else (a bug, a second signal) ends the whole group
ENDS_A_SEED = (Stopped, NonFiniteError, WriteError)

#: what `group_update: auto` means: stacked where benchmarks measured it faster than sequential
#: (`python -m d2r bench --sections seed-groups`; on CUDA, benchmarks/gpu_check.sh), per device type
AUTO_STACKED = {"cpu": False, "cuda": False}


def resolve_group_update(setting: str, device: torch.device | str) -> str:
    """`group_update` (auto | stacked | sequential) on `device` -> stacked or sequential."""
    if setting not in ("auto", "stacked", "sequential"):
        raise ValueError(f"group_update must be auto, stacked or sequential, got {setting!r}")
    if setting == "auto":
        return "stacked" if AUTO_STACKED.get(torch.device(device).type, False) else "sequential"
    return setting


@dataclasses.dataclass
class Member:
    """One seed of the group: its run, its random streams and how its run ended."""

    trainer: Trainer
    streams: RandomStreams
    units: Generator[Request | None, Any, None] | None = None
    request: Request | None = None  # its next update or episode, while it waits for the others'
    outcome: Any = None  # what its last request came to (d2r.sac.training.fulfil), to hand back
    ended: BaseException | None = None  # Stopped, NonFiniteError or WriteError; None when finished

    @property
    def seed(self) -> int:
        return self.trainer.run.seed


class SeedGroup:
    def __init__(self, runs: list[RunConfig], out_dirs: list[Path], device: torch.device, progress: bool = True,
                 stop: GracefulStop | None = None, group_update: str = "sequential"):
        self.stacked = resolve_group_update(group_update, device) == "stacked"
        self._stack: StackedSAC | None = None
        self.members: list[Member] = []
        for position, (run, out_dir) in enumerate(zip(runs, out_dirs, strict=True)):
            # The Trainer seeds the process's streams with its seed and builds from them (what a solo
            # run draws); the streams as they are after that are this seed's from now on.
            trainer = Trainer(run, out_dir, progress=progress, stop=stop, device=device,
                              bar_position=position if len(runs) > 1 else None)
            self.members.append(Member(trainer, RandomStreams(device)))
        if len(runs) > 1:
            update = "stacked" if self.stacked else "sequential"
            for member in self.members:
                member.trainer.prefix = f"seed {member.seed}: "
                member.trainer.group = {"seeds": [run.seed for run in runs], "update": update}

    def train(self, on_end: Callable[[Member], None] | None = None) -> list[Member]:
        """Every seed's run from its newest checkpoint to the end, in lockstep; a seed that stops
        (Stopped) or fails (NonFiniteError, WriteError) ends alone and `on_end(member)` is called
        then (and when one finishes). Returns the members, each with how its run ended."""
        running = list(self.members)
        for member in running:
            member.units = member.trainer.units()
        while running:
            for member in list(running):
                if member.request is not None:
                    continue  # its request waits for the other seeds'
                try:
                    with member.streams:
                        request = resume_units(member.units, member.outcome)
                        member.outcome = None
                        if request is not None and not self.stacked:
                            member.outcome = fulfil(member.trainer.agent, request)
                        else:
                            member.request = request
                    continue
                except StopIteration:
                    member.ended = None
                except ENDS_A_SEED as err:
                    member.ended = err
                running.remove(member)
                if on_end is not None:
                    on_end(member)
            if running and all(member.request is not None for member in running):
                self._together(running)
        return self.members

    def _together(self, members: list[Member]) -> None:
        """Every running seed's request, together where they can be: all updates as one stacked
        update, all episodes collected with one act() per step; else one by one."""
        requests = [member.request for member in members]
        collections = [r for r in requests if isinstance(r, Collection)]
        background = {r.background for r in collections}
        if not collections:
            self._update_together(members)
        elif len(collections) == len(requests) > 1 and len(background) == 1:
            if background == {True}:  # overlapped: one background episode for all
                start_together([r.collector for r in collections])
            else:
                episodes = collect_together([r.collector for r in collections])
                for member, episode in zip(members, episodes, strict=True):
                    member.outcome = episode
        else:
            self._one_by_one(members)
        for member in members:
            member.request = None

    @staticmethod
    def _one_by_one(members: list[Member]) -> None:
        for member in members:
            with member.streams:
                member.outcome = fulfil(member.trainer.agent, member.request)

    def _update_together(self, members: list[Member]) -> None:
        """Every running seed's update of the batch it waits with, stacked (one update for all)
        where the network and the seeds' positions allow it, else one by one."""
        agents = [member.trainer.agent for member in members]
        if self._stack is not None and self._stack.agents != agents:  # a seed ended: stack the rest anew
            self._stack.release()
            self._stack = None
        if self._stack is None and can_stack(agents):
            self._stack = StackedSAC(agents)
        if self._stack is None:
            self._one_by_one(members)
        else:
            outcomes = self._stack.update_in_streams([member.request for member in members],
                                                     [member.streams for member in members])
            for member, outcome in zip(members, outcomes, strict=True):
                member.outcome = outcome

    def close(self) -> None:
        for member in self.members:
            with member.streams:
                if member.units is not None:
                    member.units.close()  # an unfinished run: its overlapped episode is joined
                member.trainer.close()
