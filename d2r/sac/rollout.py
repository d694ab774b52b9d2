"""Running one episode on every task at once (the tasks step in lock step).

Meta-World never terminates an episode early, and every task has the same time limit, so all
envs of the vector env end their episode at the same step; anything else is reported as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from d2r.envs import STATE_DIM, step_outcome


@dataclass
class EpisodeResult:
    success: np.ndarray                     # [T] bool: success flag seen at any step
    returns: np.ndarray                     # [T] sum of env rewards (unscaled)
    routes: list[torch.Tensor] = field(default_factory=list)  # per step [T, N, K] (when recorded)


def run_episode(envs, act: Callable, device, on_step: Callable | None = None,
                record_routes: bool = False) -> EpisodeResult:
    """Reset `envs`, act until every task's episode ends, return per-task success and return.

    act(state [T, S], task [T]) -> (action [T, A], route or None).
    on_step(state, action, reward, next_state, terminated, truncated, route) sees every
    transition with the true next observation (not the auto-reset one).
    """
    num_tasks = envs.num_envs
    task = torch.arange(num_tasks, device=device)
    obs, _ = envs.reset()
    success = np.zeros(num_tasks, dtype=bool)
    returns = np.zeros(num_tasks)
    result = EpisodeResult(success, returns)
    while True:
        state = torch.as_tensor(obs[:, :STATE_DIM], dtype=torch.float32, device=device)
        action, route = act(state, task)
        obs, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
        next_obs, step_success = step_outcome(obs, infos, terminated, truncated)
        success |= step_success
        returns += reward
        if record_routes and route is not None:
            result.routes.append(route.cpu())
        if on_step is not None:
            next_state = torch.as_tensor(next_obs[:, :STATE_DIM], dtype=torch.float32, device=device)
            on_step(state, action, reward, next_state, terminated, truncated, route)
        done = terminated | truncated
        if done.all():
            return result
        if done.any():
            raise RuntimeError(
                f"tasks {np.flatnonzero(done).tolist()} ended their episode before the others; "
                "lock-step collection needs one time limit for all tasks and no early termination"
            )
