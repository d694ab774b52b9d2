"""A training run's state on disk: what a checkpoint holds, and resuming from the newest one.

A checkpoint is written every `checkpoint_every` epochs at an epoch boundary, and of the exact
position (mid-epoch included) when a signal stops the run. It holds the agent, optimisers, replay
buffer, step counters, every random state (python, numpy, torch, the buffer's generator, the
collector's, the envs') and every log line so far. Re-running the same command continues from the
newest intact checkpoint and rewrites train_log.jsonl and eval_log.jsonl from it, so the logs read
as one run even when they were deleted (as Snakemake deletes a failed job's outputs). Raising
`epochs` of a finished run continues it from its last checkpoint; other parameters or other code
start afresh.

The functions take the d2r.sac.training.Trainer whose state they write or restore.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import warnings
from pathlib import Path

import torch

from d2r import envs as mw
from d2r.runtime.checkpoint import checkpoint_files, load_latest_checkpoint, save_checkpoint
from d2r.runtime.io import CheckpointError
from d2r.runtime.seeding import global_rng_state, restore_global_rng_state


@dataclasses.dataclass
class EpochProgress:
    """How far the epoch in progress got when a signal stopped it (a mid-epoch checkpoint)."""

    success: list[int] | None = None    # training success per task, once the episode is collected
    updates: int = 0                    # updates done in this epoch
    totals: dict = dataclasses.field(default_factory=dict)  # sums of the update statistics
    elapsed: float = 0.0                # seconds spent in this epoch so far
    pending: list | None = None         # overlapped collection: the episode, stored after the updates
    skipped: torch.Tensor | None = None  # the agent's counts of dropped tasks in this epoch

    @property
    def step(self) -> int:
        """Units done: the episode (1), then each update."""
        return int(self.success is not None) + self.updates


class Stopped(Exception):
    """Training stopped by a signal at a safe point, after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, progress: EpochProgress, path: Path):
        self.signum, self.epoch, self.progress, self.path = signum, epoch, progress, path

    def describe(self) -> str:
        where = (f"after {self.progress.updates} updates of epoch {self.epoch + 1}" if self.progress.step
                 else f"at the end of epoch {self.epoch}")
        return (f"stopped by {signal.Signals(self.signum).name} {where}: checkpoint {self.path} written; "
                "run the same command again to continue")


def _comparable(config_json: str) -> dict:
    """A run's training configuration without `epochs`: raising it continues the run. A run
    checkpointed before `train.cuda_graphs` existed had its default (auto: off then everywhere)."""
    config = json.loads(config_json)
    config["experiment"]["budget"].pop("epochs")
    config["sac"].setdefault("cuda_graphs", "auto")
    return config


def checkpoint_state(trainer, progress: EpochProgress | None = None) -> dict:
    """What a checkpoint holds: the run's whole state at an epoch boundary or, with `progress`, mid-epoch."""
    state = {
        "config": trainer.config_json,
        "code": trainer.code,
        "epoch": trainer.epoch,
        "updates": trainer.updates,
        "wall_time": trainer.wall_time,
        "agent": trainer.agent.state_dict(),
        "optimizers": trainer.agent.optimizer_state(),
        "replay": trainer.buffer.state_dict(),
        "device": trainer.device.type,
        "rng": global_rng_state(trainer.device),
        "collector_rng": trainer.collector.generator.get_state(),
        "env_rng": {"train": mw.get_rng_state(trainer.envs), "eval": mw.get_rng_state(trainer.eval_envs)},
        "logs": {"train": trainer.train_log.records, "eval": trainer.eval_log.records},
    }
    if progress is not None:
        state["progress"] = dataclasses.asdict(progress)
    return state

def resume(trainer) -> bool:
    """Restore `trainer` from its newest intact checkpoint made by this code and these parameters
    (`epochs` may have been raised); False (nothing restored) when there is none."""
    files = checkpoint_files(trainer.checkpoint_dir)
    # Read onto the CPU: torch restores random states from CPU byte tensors only; the agent,
    # optimisers and replay buffer copy their tensors to the device as they load them.
    state = load_latest_checkpoint(trainer.checkpoint_dir)
    if state is None:
        if files:
            print(f"warning: none of the {len(files)} checkpoints in {trainer.checkpoint_dir} is readable; "
                  "training starts from scratch", file=sys.stderr)
        return False
    if state.get("code") != trainer.code:
        old = state.get("code") or {}
        changed = sorted(f for f in trainer.code.keys() | old.keys() if trainer.code.get(f) != old.get(f))
        what = f"{', '.join(changed[:3])} changed" if old else "written before checkpoints recorded it"
        print(f"checkpoints in {trainer.checkpoint_dir} were written by other code ({what}); training starts "
              "afresh", file=sys.stderr)
        shutil.rmtree(trainer.checkpoint_dir)
        return False
    if state["config"] != trainer.config_json:
        if _comparable(state["config"]) != _comparable(trainer.config_json) or state["epoch"] > trainer.budget.epochs:
            warnings.warn(f"checkpoints in {trainer.checkpoint_dir} belong to other parameters; starting afresh")
            shutil.rmtree(trainer.checkpoint_dir)
            return False
        old = json.loads(state["config"])["experiment"]["budget"]["epochs"]
        if old != trainer.budget.epochs:
            print(f"{trainer.prefix}continuing the run of {old} epochs to {trainer.budget.epochs} epochs (epochs raised)",
                  file=sys.stderr)
    written_on = state.get("device", "cpu")  # (checkpoints from before the key: no GPU run had been made)
    if written_on != trainer.device.type:
        raise CheckpointError(
            f"{trainer.checkpoint_dir}: the checkpoints were written by a run on {written_on} and this run is on "
            f"{trainer.device.type}; a run resumes only on the kind of device that wrote it (the collector's random "
            f"stream is device-specific): set device: {written_on} in params.yaml to continue it, or delete "
            f"{trainer.checkpoint_dir} to start afresh")
    trainer.epoch, trainer.updates, trainer.wall_time = state["epoch"], state["updates"], state["wall_time"]
    trainer.agent.load_state_dict(state["agent"])
    trainer.agent.load_optimizer_state(state["optimizers"])
    trainer.buffer.load_state_dict(state["replay"])
    restore_global_rng_state(state["rng"], trainer.device)
    trainer.collector.generator.set_state(state["collector_rng"].cpu())
    mw.set_rng_state(trainer.envs, state["env_rng"]["train"])
    mw.set_rng_state(trainer.eval_envs, state["env_rng"]["eval"])
    trainer.train_log.restore(state["logs"]["train"])
    trainer.eval_log.restore(state["logs"]["eval"])
    if "progress" in state:
        trainer.partial = EpochProgress(**state["progress"])
    return True

def save(trainer, progress: EpochProgress | None = None) -> Path:
    """A checkpoint at an epoch boundary, or of the epoch in progress."""
    return save_checkpoint(trainer.checkpoint_dir, trainer.epoch, checkpoint_state(trainer, progress),
                           step=None if progress is None else progress.step)
