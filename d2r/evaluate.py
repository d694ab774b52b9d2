"""Evaluation with greedy routes and tanh(mean) actions: per-task success, return and routing.

Used by training (periodic evaluation) and by the `evaluate` job (final rollouts of a trained
model, written to eval.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from d2r.cli import add_run_arguments
from d2r.io import atomic_write_json
from d2r.nets import routes as route_ops
from d2r.rollout import run_episode

FINAL_EVAL_STREAM = 2  # env stream of the final evaluation (0 = training, 1 = periodic evaluation)


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--run-dir", required=True, type=Path, help="the training run's directory (model.pt)")
    parser.add_argument("--out", required=True, type=Path, help="where to write eval.json")


def run(args) -> int:
    from d2r.config import load_params
    from d2r.checkpoint import load_checkpoint_file
    from d2r.train import build_agent, make_run_envs, resolve_device

    run_cfg = load_params(args.params).run(args.experiment, args.method, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = run_cfg.experiment
    model_path = args.run_dir / "model.pt"
    if not model_path.exists():
        raise SystemExit(f"error: {model_path} not found: train this run first")
    device = resolve_device(run_cfg.device)
    torch.manual_seed(run_cfg.seed)
    agent = build_agent(run_cfg, device)
    agent.load_state_dict(load_checkpoint_file(model_path, map_location=device))
    envs = make_run_envs(run_cfg, FINAL_EVAL_STREAM)
    start = time.perf_counter()
    try:
        result = evaluate_agent(agent, envs, list(exp.tasks), exp.final_eval_episodes)
    finally:
        envs.close()
    result.update(experiment=exp.name, method=args.method, seed=args.seed,
                  wall_time=round(time.perf_counter() - start, 3))
    atomic_write_json(args.out, result)
    print(f"{args.experiment}/{args.method}/seed{args.seed}: mean success {result['mean_success']:.3f} "
          f"over {exp.final_eval_episodes} episodes per task")
    return 0
