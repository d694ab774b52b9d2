"""Fast paths against the plain reference on the smoke experiment: the same learning, within seed noise.

For each seed, the smoke experiment's D2R run is trained twice from the same start:
  fast:  D2RNet (routed module stack, hand-written backward), fused Adam, and collection overlapped
         with updates;
  plain: d2r.nets.reference.PlainD2RNet (spec sections 1-2 written one module at a time, dense weights
         over all candidate sources, torch.softmax), torch's per-tensor Adam, and collection in sequence;
then evaluated greedily (the final evaluation's env stream). Per metric it prints each seed, the
mean and standard deviation over seeds of both, and z = (mean_fast - mean_plain) / standard error of
that difference: |z| < 2 is "within seed noise". The two never agree bitwise after the first update
(float sums in another order; the overlapped collector acts with a policy one epoch older).

    python benchmarks/fast_vs_plain_smoke.py --seeds 0 1 2 3 --threads 2     (~5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from d2r.benchmark import use_plain_networks
from d2r.config import load_params
from d2r.nets.reference import PlainD2RNet
from d2r.runtime.seeding import FINAL_EVAL_STREAM
from d2r.sac.build import make_run_envs
from d2r.sac.evaluation import evaluate_agent
from d2r.sac.training import Trainer

METRICS = ("eval_mean_return", "eval_mean_success", "eval_depth_mean", "last_loss_q", "last_loss_pi", "last_entropy")


def train_once(params, seed: int, fast: bool, episodes: int) -> dict:
    run = params.run("smoke", "d2r", params.experiment("smoke").seeds[0])
    run = dataclasses.replace(run, seed=seed, device="cpu",
                              sac=dataclasses.replace(run.sac, overlap_collection=fast))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, Path(tmp), progress=False)
        if not fast:
            agent = use_plain_networks(trainer.agent)  # the same parameters, the plain forward pass
            trainer.collector.policy.net = PlainD2RNet(trainer.collector.policy.net)
            for optim in (agent.policy_optim, agent.q_optim, agent.alpha_optim):
                for group in optim.param_groups:
                    group["fused"] = False  # torch's per-tensor Adam loop
        trainer.train()
        last = json.loads((Path(tmp) / "train_log.jsonl").read_text().splitlines()[-1])
    envs = make_run_envs(run, FINAL_EVAL_STREAM)
    result = evaluate_agent(trainer.agent, envs, list(run.experiment.tasks), episodes)
    envs.close()
    return {
        "eval_mean_return": float(np.mean(list(result["return"].values()))),
        "eval_mean_success": result["mean_success"],
        "eval_depth_mean": float(np.mean([r["depth_mean"] for r in result["routes"].values()])),
        "last_loss_q": last["loss_q"],
        "last_loss_pi": last["loss_pi"],
        "last_entropy": last["entropy"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=None,
                        help="evaluation episodes per task (default: the smoke experiment's final_eval_episodes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    episodes = args.episodes or params.experiment("smoke").final_eval_episodes

    results = {"fast": [], "plain": []}
    for seed in args.seeds:
        for name in ("fast", "plain"):
            results[name].append(train_once(params, seed, name == "fast", episodes))
            print(f"seed {seed} {name:5s}: " + ", ".join(f"{k} {results[name][-1][k]:.4g}" for k in METRICS),
                  file=sys.stderr, flush=True)

    n = len(args.seeds)
    print(f"\nsmoke experiment, D2R, seeds {args.seeds}: fast (module stack, fused Adam, overlapped collection) "
          f"vs plain (PlainD2RNet, per-tensor Adam, sequential)")
    print(f"{'metric':20s} {'fast mean':>10s} {'fast sd':>9s} {'plain mean':>11s} {'plain sd':>9s} {'z':>6s}")
    for key in METRICS:
        fast = np.array([r[key] for r in results["fast"]])
        plain = np.array([r[key] for r in results["plain"]])
        se = math.sqrt((fast.var(ddof=1) + plain.var(ddof=1)) / n) if n > 1 else float("nan")
        z = (fast.mean() - plain.mean()) / se if se > 0 else 0.0
        print(f"{key:20s} {fast.mean():10.4g} {fast.std(ddof=1):9.3g} {plain.mean():11.4g} "
              f"{plain.std(ddof=1):9.3g} {z:6.2f}{'' if abs(z) < 2 else '  <- beyond seed noise'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
