"""Evaluation with greedy routes and tanh(mean) actions: per-task success, return and routing.

Used by training (periodic evaluation) and by the `evaluate` job (d2r/jobs/evaluate.py: final
rollouts of a trained model, written to eval.json). Two protocols:

- the paper's (evaluate_agent): `episodes` episodes per task on the run's own envs (its goals,
  its episode length, 200 steps in the paper), success if the flag fired at any step;
- Meta-World's own (metaworld_evaluation): metaworld.evaluation.evaluation, the protocol of work
  on Meta-World 3 (Meta-World+, arXiv 2505.11289): episodes over each task's 50 goal variations,
  500 steps, an episode ends at success, success if it did. Called as the library ships it.

An actor is anything with `act_greedy(state, task) -> (action, route)`, `device` and `routed`
that is an nn.Module (the training agent, or a loaded d2r.sac.policy.Policy).
"""

from __future__ import annotations

import numpy as np
import torch

from d2r.envs import STATE_DIM, full_name, make_metaworld_eval_envs
from d2r.nets import routes as route_ops
from d2r.sac.rollout import run_episode


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


#: how eval.json labels the two protocols (the report and the paper table use these)
PAPER_PROTOCOL = "paper"
METAWORLD_PROTOCOL = "metaworld.evaluation"


class _MetaWorldAgent:
    """metaworld.evaluation's Agent: env i runs task i; the policy keeps no state between steps."""

    def __init__(self, actor, num_tasks: int):
        self.actor = actor
        self.task = torch.arange(num_tasks, device=actor.device)

    def eval_action(self, obs: np.ndarray) -> np.ndarray:
        state = torch.as_tensor(np.asarray(obs)[:, :STATE_DIM], dtype=torch.float32, device=self.actor.device)
        action, _ = self.actor.act_greedy(state, self.task)
        return action.cpu().numpy()

    def reset(self, env_mask: np.ndarray) -> None:
        pass


@torch.no_grad()
def metaworld_evaluation(actor, tasks: list[str], seed: int, episodes: int, reward_version: str = "v2") -> dict:
    """Meta-World's protocol (metaworld.evaluation.evaluation, `episodes` per task) on Meta-World's
    own evaluation envs (d2r.envs.make_metaworld_eval_envs, seeded with the run's seed)."""
    from metaworld.evaluation import evaluation

    was_training = actor.training
    actor.eval()
    envs = make_metaworld_eval_envs(tasks, seed, reward_version)
    try:
        steps = int(envs.get_attr("max_path_length")[0])   # the episodes' time limit (Meta-World: 500)
        _, _, success, returns = evaluation(_MetaWorldAgent(actor, len(tasks)), envs, episodes)
    finally:
        envs.close()
        actor.train(was_training)
    success = {t: float(success[full_name(t)]) for t in tasks}
    mean_return = {t: round(float(np.mean(returns[full_name(t)])), 6) for t in tasks}
    return {
        "protocol": METAWORLD_PROTOCOL,
        "episodes": episodes,
        "max_episode_steps": steps,
        "success": success,
        "return": mean_return,
        "mean_success": float(np.mean(list(success.values()))),
    }
