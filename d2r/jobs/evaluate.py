"""`python -m d2r evaluate`: final rollouts of a trained model -> eval.json, in two protocols.

The policy is loaded from the run directory (d2r.sac.policy.load_policy: the network of the run's own
run.json, the weights of its model.pt), and so are the envs' settings (tasks, goals, episode
length); params.yaml gives only this job's own settings: the episodes of each protocol and the
device. eval.json holds the paper's protocol at the top level (as before) and Meta-World's own
under "metaworld" (d2r/sac/evaluation.py describes both).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from d2r.config import load_params
from d2r.jobs.arguments import add_run_arguments
from d2r.runtime.devices import claim_device
from d2r.runtime.io import atomic_write_json
from d2r.runtime.seeding import FINAL_EVAL_STREAM
from d2r.sac.build import make_run_envs
from d2r.sac.evaluation import PAPER_PROTOCOL, evaluate_agent, metaworld_evaluation
from d2r.sac.policy import load_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--run-dir", required=True, type=Path, help="the training run's directory (model.pt)")
    parser.add_argument("--out", required=True, type=Path, help="where to write eval.json")


def run(args) -> int:
    params = load_params(args.params)
    exp = params.run(args.experiment, args.method, args.seed).experiment   # (an unknown method or seed: one line)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, _gpu_lock = claim_device(params.device)  # held until the job ends
    policy = load_policy(args.run_dir, device)
    run = policy.run
    tasks = list(run.experiment.tasks)
    envs = make_run_envs(run, FINAL_EVAL_STREAM)
    start = time.perf_counter()
    try:
        result = evaluate_agent(policy, envs, tasks, exp.final_eval_episodes)
    finally:
        envs.close()
    paper_time = time.perf_counter() - start
    result["protocol"] = PAPER_PROTOCOL
    result["metaworld"] = metaworld_evaluation(policy, tasks, run.seed, exp.metaworld_eval_episodes,
                                               run.env.reward_version)
    wall_time = time.perf_counter() - start       # (one wall time in eval.json: both protocols)
    result.update(experiment=exp.name, method=args.method, seed=args.seed, wall_time=round(wall_time, 3))
    atomic_write_json(args.out, result)
    print(f"{args.experiment}/{args.method}/seed{args.seed}: mean success {result['mean_success']:.3f} "
          f"over {exp.final_eval_episodes} episodes per task (paper protocol, {paper_time:.1f} s), "
          f"{result['metaworld']['mean_success']:.3f} over {exp.metaworld_eval_episodes} (metaworld.evaluation, "
          f"{wall_time - paper_time:.1f} s)")
    return 0
