"""A run's objects from its typed configuration: the agent and its vector envs."""

from __future__ import annotations

import torch

from d2r import envs as mw
from d2r.config import RunConfig
from d2r.sac.agent import MultiTaskSAC


def build_agent(run: RunConfig, device: torch.device) -> MultiTaskSAC:
    return MultiTaskSAC(run.method, run.sac, mw.STATE_DIM, mw.ACTION_DIM, len(run.experiment.tasks), device)


def make_run_envs(run: RunConfig, stream: int, vector_strategy: str | None = None):
    """The run's task set as a vector env on env stream `stream` (d2r.runtime.seeding names them);
    `vector_strategy` overrides params.yaml's (the render job steps its envs itself: sync)."""
    return mw.make_task_envs(list(run.experiment.tasks), run.seed, goal_mode=run.experiment.goal_mode,
                             max_episode_steps=run.env.max_episode_steps, reward_version=run.env.reward_version,
                             vector_strategy=vector_strategy or run.env.vector_strategy, stream=stream)
