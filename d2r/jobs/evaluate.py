"""`python -m d2r evaluate`: final rollouts of a trained model with greedy routes -> eval.json."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from d2r.build import build_agent, make_run_envs
from d2r.checkpoint import load_checkpoint_file
from d2r.config import load_params
from d2r.devices import claim_device
from d2r.evaluate import evaluate_agent
from d2r.io import atomic_write_json
from d2r.jobs.arguments import add_run_arguments
from d2r.rundir import RunDir
from d2r.seeding import FINAL_EVAL_STREAM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--run-dir", required=True, type=Path, help="the training run's directory (model.pt)")
    parser.add_argument("--out", required=True, type=Path, help="where to write eval.json")


def run(args) -> int:
    run_cfg = load_params(args.params).run(args.experiment, args.method, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = run_cfg.experiment
    model_path = RunDir(args.run_dir).model
    if not model_path.exists():
        raise SystemExit(f"error: {model_path} not found: train this run first")
    device, _gpu_lock = claim_device(run_cfg.device)  # held until the job ends
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
