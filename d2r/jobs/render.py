"""`python -m d2r render`: videos of greedy episodes of a trained policy, one per task (d2r/video.py).

The simulator is imported only after the rendering backend is chosen (MuJoCo reads MUJOCO_GL
once), so the training code is imported inside `run`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from d2r.jobs.arguments import add_run_arguments
from d2r.runtime.seeding import RENDER_STREAM
from d2r.video import RenderError, choose_backend, render_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--run-dir", required=True, type=Path, help="the training run's directory (model.pt)")
    parser.add_argument("--out", required=True, type=Path, help="the directory to write (videos and index.json)")


def run(args) -> int:
    try:
        backend = choose_backend()     # before anything imports mujoco (it reads MUJOCO_GL once)
    except RenderError as err:
        print(f"error: render {args.experiment}/{args.method}/seed{args.seed}: {err}", file=sys.stderr)
        return 1

    import torch

    from d2r.config import load_params
    from d2r.runtime.io import atomic_write_json
    from d2r.sac.build import make_run_envs
    from d2r.sac.policy import load_policy

    params = load_params(args.params)
    params.run(args.experiment, args.method, args.seed)   # (an unknown method or seed: one line)
    cfg = params.render_config(args.experiment)
    torch.set_num_threads(args.threads or 1)
    policy = load_policy(args.run_dir, "cpu")   # the run's own network and envs (d2r.sac.policy)
    exp = policy.run.experiment
    tasks = list(exp.tasks)
    envs = make_run_envs(policy.run, RENDER_STREAM, vector_strategy="sync")  # stepped one env at a time
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    videos = {}
    try:
        with torch.no_grad():
            for i, task in enumerate(tasks):
                videos[task] = render_task(envs.envs[i], i, policy, cfg, tmp / f"{task}.mp4")
                print(f"{task}: {videos[task]['frames']} frames, success {videos[task]['success']}", flush=True)
    finally:
        envs.close()
    index = {"experiment": exp.name, "method": args.method, "seed": args.seed, "stream": RENDER_STREAM,
             "backend": backend, "camera": cfg.camera, "width": cfg.width, "height": cfg.height,
             "frame_stride": cfg.frame_stride, "fps": cfg.fps, "tasks": tasks, "videos": videos}
    atomic_write_json(tmp / "index.json", index)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"{args.experiment}/{args.method}/seed{args.seed}: {len(tasks)} videos ({backend}, "
          f"{cfg.width}x{cfg.height}) in {time.perf_counter() - start:.1f} s -> {out}")
    return 0
