"""The layout of a results tree: where each job reads and writes (no torch; the rules use it too).

    results/{experiment}/environment.json          setup
    results/{experiment}/{method}/seed{seed}/      one run (RunDir):
        model.pt, run.json, train_log.jsonl, eval_log.jsonl, checkpoints/, tensorboard/   train
        eval.json                                                                          evaluate
        routes.json                                                                        analyse
        videos/                                                                            render
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENVIRONMENT = "environment.json"
MODEL, RUN_INFO, TRAIN_LOG, EVAL_LOG = "model.pt", "run.json", "train_log.jsonl", "eval_log.jsonl"
CHECKPOINTS, TENSORBOARD = "checkpoints", "tensorboard"
FINAL_EVAL, ROUTES, VIDEOS = "eval.json", "routes.json", "videos"


def run_path(results: str | Path, method: str, seed: int | str) -> Path:
    """results/{experiment} -> the directory of one run (seed may be a `{seed}` pattern)."""
    return Path(results) / method / f"seed{seed}"


@dataclass(frozen=True)
class RunDir:
    """The files of one run, by name."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    model = property(lambda self: self.path / MODEL)
    run_info = property(lambda self: self.path / RUN_INFO)
    train_log = property(lambda self: self.path / TRAIN_LOG)
    eval_log = property(lambda self: self.path / EVAL_LOG)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    final_eval = property(lambda self: self.path / FINAL_EVAL)
    routes = property(lambda self: self.path / ROUTES)
    videos = property(lambda self: self.path / VIDEOS)
