"""A live view of a running training job: TensorBoard event files, written as training goes.

    tensorboard --logdir results/E       # every run of experiment E, one curve each

One directory per run (results/E/M/seedS/tensorboard/), scalars against environment steps per
task: the epoch's mean losses, entropy and dropped tasks, steps per second, per task alpha,
routing temperature and training success; per periodic evaluation, per task success, return
and (routed methods) depth and modules used. Written from the same records as train_log.jsonl
and eval_log.jsonl; a resumed run rewrites the directory from its checkpoint's records, so the
view never shows steps that the run went back on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

#: epoch statistics shown as they are (train_log.jsonl keys)
EPOCH_SCALARS = ("loss_q", "loss_pi", "loss_alpha", "entropy", "masked_tasks", "sps")
#: per-task dictionaries of a train_log.jsonl record, and of an eval_log.jsonl record
EPOCH_PER_TASK = ("alpha", "temperature", "train_success")
EVAL_PER_TASK = ("success", "return", "depth", "modules_used")


class LiveView:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.writer: SummaryWriter | None = None

    def restart(self, train_records: list[dict], eval_records: list[dict]) -> None:
        """Start the view afresh from the records of the checkpoint the run continues from."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.writer = SummaryWriter(str(self.directory), flush_secs=30)
        for record in train_records:
            self.epoch(record, flush=False)
        for record in eval_records:
            self.evaluation(record, flush=False)
        self.writer.flush()

    def epoch(self, record: dict, flush: bool = True) -> None:
        step = record["env_steps"]
        for key in EPOCH_SCALARS:
            if key in record:
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for key in EPOCH_PER_TASK:
            for task, value in record.get(key, {}).items():
                self.writer.add_scalar(f"{key}/{task}", value, step)
        if flush:
            self.writer.flush()

    def evaluation(self, record: dict, flush: bool = True) -> None:
        step = record["env_steps"]
        self.writer.add_scalar("eval/mean_success", record["mean_success"], step)
        for key in EVAL_PER_TASK:
            for task, value in record.get(key, {}).items():
                self.writer.add_scalar(f"eval_{key}/{task}", value, step)
        if flush:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
