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
    on_steps = None if on_step is None else [on_step]
    return run_episodes([envs], act, device, on_steps, record_routes)[0]


def run_episodes(envs_of_runs: list, act: Callable, device, on_steps: list[Callable] | None = None,
                 record_routes: bool = False) -> list[EpisodeResult]:
    """run_episode for several runs' vector envs at once (a group of seeds, d2r.sac.collect): one
    act() per step for all their tasks, the runs' states one after the other (act(state [R T, S],
    task [R T])), each run's envs stepped with its part of the actions (asynchronous envs all
    at once), each run's transitions to its own on_step. One run: exactly run_episode."""
    runs = len(envs_of_runs)
    num_tasks = envs_of_runs[0].num_envs
    task = torch.arange(num_tasks, device=device)
    if runs > 1:
        task = task.repeat(runs)
    observations = [envs.reset()[0] for envs in envs_of_runs]
    results = [EpisodeResult(np.zeros(num_tasks, dtype=bool), np.zeros(num_tasks)) for _ in envs_of_runs]
    all_async = runs > 1 and all(hasattr(envs, "step_async") for envs in envs_of_runs)
    parts = [slice(r * num_tasks, (r + 1) * num_tasks) for r in range(runs)] if runs > 1 else [slice(None)]
    while True:
        states = [torch.as_tensor(obs[:, :STATE_DIM], dtype=torch.float32, device=device) for obs in observations]
        action, route = act(states[0] if runs == 1 else torch.cat(states), task)
        actions = action.cpu().numpy()
        if all_async:  # every run's env workers step at the same time
            for envs, part in zip(envs_of_runs, parts):
                envs.step_async(actions[part])
            steps = [envs.step_wait() for envs in envs_of_runs]
        else:
            steps = [envs.step(actions[part]) for envs, part in zip(envs_of_runs, parts)]
        ended = []
        for r, (result, (obs, reward, terminated, truncated, infos)) in enumerate(zip(results, steps)):
            observations[r] = obs
            next_obs, step_success = step_outcome(obs, infos, terminated, truncated)
            result.success |= step_success
            result.returns += reward
            run_route = None if route is None else route[parts[r]]
            if record_routes and run_route is not None:
                result.routes.append(run_route.cpu())
            if on_steps is not None:
                next_state = torch.as_tensor(next_obs[:, :STATE_DIM], dtype=torch.float32, device=device)
                on_steps[r](states[r], action[parts[r]], reward, next_state, terminated, truncated, run_route)
            done = terminated | truncated
            if done.any() and not done.all():
                raise RuntimeError(
                    f"tasks {np.flatnonzero(done).tolist()} ended their episode before the others; "
                    "lock-step collection needs one time limit for all tasks and no early termination"
                )
            ended.append(bool(done.all()))
        if all(ended):
            return results
        if any(ended):
            raise RuntimeError("the runs' episodes ended at different steps; collecting them together needs "
                               "one episode length")
