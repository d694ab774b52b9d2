"""`python -m d2r setup`: record the software and the device, and build the task set once.

Writes ``results/{experiment}/environment.json``::

    {"experiment": "mt10",
     "versions": {"python": ..., "torch": ..., "mujoco": ..., "metaworld": ..., "gymnasium": ...,
                  "numpy": ..., "snakemake": ..., "dvc": ..., "plotly": ..., "d2r": ...},
     "platform": {"system", "release", "machine", "platform", "python_implementation", "cpu_count"},
     "device": {"requested": "auto", "resolved": "cpu", "cuda_available": false,
                "torch_cuda": null, "gpu_name": null},
     "task_set": {"benchmark", "goal_mode", "tasks", "num_tasks", "obs_shape", "single_obs_dim",
                  "action_shape", "max_episode_steps", "reward_version", "vector_strategy"},
     "code": {"commit": git commit of the checkout or null, "dirty": uncommitted changes or null}}

No timestamps or host names: on one machine and one commit the file is the same byte for byte
every time. (Each run's run.json records the commit that trained it too.)
Building the task set here makes a broken Meta-World install fail in seconds, before any
training job starts. A device of ``cuda`` on a machine without CUDA is an error here too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from d2r.config import load_params
from d2r.envs import make_task_envs
from d2r.runtime.devices import device_record
from d2r.runtime.io import atomic_write_json
from d2r.runtime.provenance import code_version, platform_info, versions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    parser.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    parser.add_argument("--out", required=True, help="where to write environment.json")


def task_set(params, experiment: str) -> dict[str, Any]:
    """Build the experiment's vector env once (sync), reset it, record its shapes, close it."""
    exp = params.experiment(experiment)
    envs = make_task_envs(
        list(exp.tasks),
        seed=0,
        goal_mode=exp.goal_mode,
        max_episode_steps=params.env.max_episode_steps,
        reward_version=params.env.reward_version,
        vector_strategy="sync",
    )
    try:
        obs, _ = envs.reset()
        single_obs = envs.single_observation_space.shape
        action = envs.single_action_space.shape
    finally:
        envs.close()
    if obs.shape[0] != len(exp.tasks):
        raise RuntimeError(f"the vector env has {obs.shape[0]} envs for {len(exp.tasks)} tasks")
    return {
        "benchmark": exp.benchmark,
        "goal_mode": exp.goal_mode,
        "tasks": list(exp.tasks),
        "num_tasks": len(exp.tasks),
        "obs_shape": [int(n) for n in obs.shape],
        "single_obs_dim": int(single_obs[0]),
        "action_shape": [int(n) for n in action],
        "max_episode_steps": params.env.max_episode_steps,
        "reward_version": params.env.reward_version,
        "vector_strategy": params.env.vector_strategy,
    }


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    params.experiment(args.experiment)  # a clear error for an unknown name, before any work
    record = {
        "experiment": args.experiment,
        "versions": versions(),
        "platform": platform_info(),
        "device": device_record(params.device),
        "task_set": task_set(params, args.experiment),
        "code": code_version(),
    }
    atomic_write_json(args.out, record)
    print(f"setup: {args.experiment}: {record['task_set']['num_tasks']} tasks, obs {record['task_set']['obs_shape']}, "
          f"device {record['device']['resolved']} -> {args.out}", file=sys.stderr)
    return 0
