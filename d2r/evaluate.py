"""Evaluation with greedy routes and tanh(mean) actions: per-task success, return and routing.

Used by training (periodic evaluation) and by the `evaluate` job (d2r/jobs/evaluate.py: final
rollouts of a trained model, written to eval.json).
"""

from __future__ import annotations

import numpy as np
import torch

from d2r.nets import routes as route_ops
from d2r.rollout import run_episode


def route_statistics(routes: torch.Tensor, num_modules: int) -> dict:
    """Depth, modules used and edge frequency of one task's routes [samples, N, K]."""
    depth = route_ops.route_depth(routes).numpy()
    used = route_ops.used_modules(routes).numpy()
    values, counts = np.unique(depth, return_counts=True)
    return {
        "depth_mean": float(depth.mean()),
        "depth_hist": {str(int(v)): int(c) for v, c in zip(values, counts)},
        "modules_used_mean": float(used.sum(axis=1).mean()),
        "module_use": [float(x) for x in used.mean(axis=0)],
        "edge_frequency": np.asarray(route_ops.edge_frequency(routes, num_modules), dtype=float).round(6).tolist(),
    }


@torch.no_grad()
def evaluate_agent(agent, envs, tasks: list[str], episodes: int) -> dict:
    """Run `episodes` greedy episodes per task. Success = success flag at any step of an episode."""
    was_training = agent.training
    agent.eval()
    success, returns, routes = [], [], []
    for _ in range(episodes):
        result = run_episode(envs, agent.act_greedy, agent.device, record_routes=agent.routed)
        success.append(result.success)
        returns.append(result.returns)
        routes.extend(result.routes)
    agent.train(was_training)
    success_rate = np.mean(success, axis=0)
    mean_return = np.mean(returns, axis=0)
    out = {
        "episodes": episodes,
        "tasks": list(tasks),
        "success": {t: float(s) for t, s in zip(tasks, success_rate)},
        "return": {t: round(float(r), 6) for t, r in zip(tasks, mean_return)},
        "mean_success": float(success_rate.mean()),
        "routed": agent.routed,
    }
    if agent.routed:
        stacked = torch.stack(routes, dim=1)  # [T, steps, N, K]
        num_modules = stacked.shape[-2]
        out["routes"] = {t: route_statistics(stacked[i], num_modules) for i, t in enumerate(tasks)}
    return out
