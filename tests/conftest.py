"""Shared fixtures: a small synthetic results tree written by hand, following the file contract
of the train / evaluate jobs (see d2r/reporting/load.py and README "Outputs"), so that the analyse
and report jobs can be tested without training anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from d2r.runtime.io import atomic_write_json, dump_json

SYNTH_EXPERIMENT = "synth"
SYNTH_TASKS = ["reach", "push", "pick-place"]
SYNTH_METHODS = ["d2r", "mtsac"]
SYNTH_SEEDS = [0, 1]
N_MODULES = 4

# Final per-task success rates by hand: (method, seed) -> rates in SYNTH_TASKS order.
FINAL_SUCCESS = {
    ("d2r", 0): [1.0, 0.5, 0.0],     # mean 0.5
    ("d2r", 1): [1.0, 1.0, 0.25],    # mean 0.75
    ("mtsac", 0): [0.5, 0.0, 0.0],   # mean 1/6
    ("mtsac", 1): [1.0, 0.5, 0.0],   # mean 1/2
}
# Final mean episode return per task (paper protocol): 100 (i + 1) + 10 seed, D2R 50 more.
# Meta-World's protocol: half the paper protocol's success rates.
# Hand values of metrics/synth.json (population std over seeds).
EXPECTED = {
    "d2r": {"success_mean": 0.625, "success_std": 0.125,
            "per_task": {"reach": 1.0, "push": 0.75, "pick-place": 0.125},
            "return_mean": 255.0, "return_std": 5.0,
            "per_task_return": {"reach": 155.0, "push": 255.0, "pick-place": 355.0},
            "metaworld_success_mean": 0.3125},
    "mtsac": {"success_mean": (1 / 6 + 1 / 2) / 2, "success_std": (1 / 2 - 1 / 6) / 2,
              "per_task": {"reach": 0.75, "push": 0.25, "pick-place": 0.0},
              "return_mean": 205.0, "return_std": 5.0,
              "per_task_return": {"reach": 105.0, "push": 205.0, "pick-place": 305.0},
              "metaworld_success_mean": (1 / 6 + 1 / 2) / 4},
}
MW_EPISODES = 3
TRAIN_WALL, EVAL_WALL = 100.0, 10.0
EPOCHS, EVAL_EVERY, STEPS = 6, 2, 200
VIDEO_SIZE, VIDEO_FRAMES = 64, 12


def _edge_frequency(task_index: int, seed: int) -> list[list[float]]:
    """Row n-1 = node n (modules 1..N-1, 0-based, then the output); col j = source module j.

    Each node takes k = min(2, candidates) edges per step, so a row sums to k."""
    rows = []
    for r in range(N_MODULES):
        row = [0.0] * N_MODULES
        candidates = list(range(N_MODULES)) if r == N_MODULES - 1 else list(range(r + 1))
        if len(candidates) <= 2:
            for j in candidates:
                row[j] = 1.0
        else:
            shift = (task_index + seed) % len(candidates)
            pattern = [1.0, 0.6, 0.4] + [0.0] * (len(candidates) - 3)
            for j, v in zip(candidates, pattern[shift:] + pattern[:shift]):
                row[j] = v
        rows.append(row)
    return rows


def write_synthetic_results(root: Path, params_src: Path | None = None) -> tuple[Path, Path]:
    """Write params.yaml (with experiment `synth`) and results/synth/ under `root`.

    Returns (params path, results dir)."""
    params_src = params_src or REPO / "params.yaml"
    raw = yaml.safe_load(params_src.read_text())
    raw["experiments"][SYNTH_EXPERIMENT] = {
        "benchmark": "MT50", "tasks": list(SYNTH_TASKS), "goal_mode": "fixed", "methods": list(SYNTH_METHODS),
        "seeds": list(SYNTH_SEEDS), "preset": "smoke", "final_eval_episodes": 4,
    }
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    results = root / "results" / SYNTH_EXPERIMENT
    atomic_write_json(results / "environment.json", {
        "experiment": SYNTH_EXPERIMENT,
        "code": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "mujoco": "3.3.0", "metaworld": "3.1.1",
                     "gymnasium": "1.4.0", "numpy": "2.4.6", "snakemake": "9.27.1", "dvc": "3.67.1",
                     "plotly": "7.1.0", "d2r": "0.1.0"},
        "platform": {"system": "Linux", "release": "6", "machine": "x86_64", "platform": "Linux-6-x86_64",
                     "python_implementation": "CPython", "cpu_count": 2},
        "device": {"requested": "auto", "resolved": "cpu", "cuda_available": False, "torch_cuda": None,
                   "gpu_name": None},
        "task_set": {"benchmark": "MT50", "goal_mode": "fixed", "tasks": list(SYNTH_TASKS),
                     "num_tasks": len(SYNTH_TASKS), "obs_shape": [3, 42], "single_obs_dim": 42,
                     "action_shape": [4], "max_episode_steps": STEPS, "reward_version": "v2",
                     "vector_strategy": "sync"},
    })
    budget = dict(raw["presets"]["smoke"])
    for method in SYNTH_METHODS:
        routed = method == "d2r"
        for seed in SYNTH_SEEDS:
            d = results / method / f"seed{seed}"
            final = FINAL_SUCCESS[(method, seed)]
            config = {
                "experiment": {"name": SYNTH_EXPERIMENT, "benchmark": "MT50", "tasks": list(SYNTH_TASKS),
                               "goal_mode": "fixed", "methods": list(SYNTH_METHODS), "seeds": list(SYNTH_SEEDS),
                               "preset": "smoke", "budget": budget},
                "method": {"name": method, "net": method,
                           "net_args": dict(raw["nets"][method], **({"num_modules": N_MODULES} if routed else {})),
                           "resrouting": True, "policy_route": "replayed", "route_balance": True,
                           "temperature": 1.0, "task_loss_weights": routed},
                "seed": seed, "env": raw["env"], "sac": raw["train"], "device": "auto",
            }
            atomic_write_json(d / "run.json", {
                "config": config, "param_counts": {"policy": 12345 if routed else 23456, "q": 12000 if routed else 23000},
                "epochs": EPOCHS, "env_steps_per_task": EPOCHS * STEPS, "updates": 40, "wall_time": TRAIN_WALL,
                "code": {"commit": "fedcba9876543210fedcba9876543210fedcba98", "dirty": routed},
            })
            (d / "model.pt").write_bytes(b"not a real model")
            train_lines, eval_lines = [], []
            for epoch in range(1, EPOCHS + 1):
                train_lines.append({
                    "epoch": epoch, "env_steps": epoch * STEPS, "updates": 10 * epoch, "wall_time": 10.0 * epoch,
                    "sps": 100.0, "loss_q": 1.0 / epoch, "loss_pi": -0.5 * epoch,
                    "alpha": {t: 0.5 for t in SYNTH_TASKS}, "temperature": {t: 1.0 for t in SYNTH_TASKS},
                    "train_success": {t: int(epoch > 3) for t in SYNTH_TASKS},
                })
                if epoch % EVAL_EVERY == 0:
                    frac = epoch / EPOCHS
                    success = {t: round(final[i] * frac, 4) for i, t in enumerate(SYNTH_TASKS)}
                    rec = {"epoch": epoch, "env_steps": epoch * STEPS, "success": success,
                           "return": {t: 100.0 * frac for t in SYNTH_TASKS},
                           "mean_success": sum(success.values()) / len(success)}
                    if routed:
                        rec["depth"] = {t: 1.0 + i * frac for i, t in enumerate(SYNTH_TASKS)}
                        rec["modules_used"] = {t: 2.0 + i * frac for i, t in enumerate(SYNTH_TASKS)}
                    eval_lines.append(rec)
            (d / "train_log.jsonl").write_text("".join(dump_json(r).replace("\n", "") + "\n" for r in train_lines))
            (d / "eval_log.jsonl").write_text("".join(dump_json(r).replace("\n", "") + "\n" for r in eval_lines))
            ev = {
                "experiment": SYNTH_EXPERIMENT, "method": method, "seed": seed, "episodes": 4,
                "tasks": list(SYNTH_TASKS), "success": dict(zip(SYNTH_TASKS, final)),
                "return": {t: 100.0 * (i + 1) + 10.0 * seed + 50.0 * routed for i, t in enumerate(SYNTH_TASKS)},
                "mean_success": sum(final) / len(final), "routed": routed, "wall_time": EVAL_WALL,
                "protocol": "paper",
                "metaworld": {"protocol": "metaworld.evaluation", "episodes": MW_EPISODES, "max_episode_steps": 500,
                              "success": {t: final[i] / 2 for i, t in enumerate(SYNTH_TASKS)},
                              "return": {t: 1000.0 + i for i, t in enumerate(SYNTH_TASKS)},
                              "mean_success": sum(final) / len(final) / 2},
            }
            if routed:
                ev["routes"] = {
                    t: {"depth_mean": 1.0 + i + 0.1 * seed, "depth_hist": {str(1 + i): 600, str(2 + i): 200},
                        "modules_used_mean": 2.0 + i, "module_use": [1.0, 0.5 + 0.1 * i, 0.25, 1.0],
                        "edge_frequency": _edge_frequency(i, seed)}
                    for i, t in enumerate(SYNTH_TASKS)
                }
            atomic_write_json(d / "eval.json", ev)
    return params, results


def write_synthetic_videos(results: Path, seed: int = SYNTH_SEEDS[0]) -> list[Path]:
    """The render job's output (d2r/video.py) for each method's first seed, with drawn frames: a
    square crossing a coloured background (no MuJoCo needed). Returns the video directories."""
    import numpy as np

    from d2r.config import RenderConfig
    from d2r.video import _writer

    cfg = RenderConfig(enabled=True, width=VIDEO_SIZE, height=VIDEO_SIZE, frame_stride=10, fps=8,
                       camera="corner2", shadows=False)
    dirs = []
    for m, method in enumerate(SYNTH_METHODS):
        d = results / method / f"seed{seed}" / "videos"
        d.mkdir(parents=True, exist_ok=True)
        videos = {}
        for i, task in enumerate(SYNTH_TASKS):
            writer = _writer(d / f"{task}.mp4", cfg)
            for k in range(VIDEO_FRAMES):
                frame = np.zeros((VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
                frame[..., 0], frame[..., 2] = 60 * m, 80 * i
                frame[20:36, 4 * k:4 * k + 16, 1] = 255
                writer.send(frame.tobytes())
            writer.close()
            success = FINAL_SUCCESS[(method, seed)][i] > 0.5
            videos[task] = {"file": f"{task}.mp4", "frames": VIDEO_FRAMES, "steps": 10 * VIDEO_FRAMES,
                            "success": success, "return": 10.0 * (i + 1)}
        atomic_write_json(d / "index.json", {
            "experiment": SYNTH_EXPERIMENT, "method": method, "seed": seed, "stream": 3, "backend": "synthetic",
            "camera": cfg.camera, "width": cfg.width, "height": cfg.height, "frame_stride": cfg.frame_stride,
            "fps": cfg.fps, "tasks": list(SYNTH_TASKS), "videos": videos})
        dirs.append(d)
    return dirs


def run_d2r(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m d2r ...` with this checkout's d2r first on the path."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "d2r", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m d2r {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory) -> dict[str, Path]:
    """The synthetic tree, analysed (routes.json per run) and reported (HTML + metrics)."""
    root = tmp_path_factory.mktemp("synthetic")
    params, results = write_synthetic_results(root)
    for method in SYNTH_METHODS:
        for seed in SYNTH_SEEDS:
            d = results / method / f"seed{seed}"
            run_d2r("analyse", "--run-dir", str(d), "--out", str(d / "routes.json"))
    videos = write_synthetic_videos(results)
    report, metrics = root / "reports" / f"{SYNTH_EXPERIMENT}.html", root / "metrics" / f"{SYNTH_EXPERIMENT}.json"
    timing = root / "reports" / f"{SYNTH_EXPERIMENT}.timing.json"
    curves = root / "reports" / "curves" / f"{SYNTH_EXPERIMENT}.csv"
    run_d2r("report", "--params", str(params), "--experiment", SYNTH_EXPERIMENT, "--results", str(results),
            "--out", str(report), "--metrics", str(metrics), "--timing", str(timing), "--curves", str(curves),
            "--videos", *map(str, videos))
    return {"root": root, "params": params, "results": results, "report": report, "metrics": metrics,
            "timing": timing, "curves": curves, "videos": videos}


APT_TIMEOUT = 900


def mujoco_rendering() -> str:
    """Why MuJoCo cannot render offscreen here ("" when it can, after installing libosmesa6 if
    need be). With D2R_REQUIRE_RENDER=1 (set by .ci/run) a reason is a failure, not a skip."""
    why = _mujoco_rendering()
    if why and os.environ.get("D2R_REQUIRE_RENDER") == "1":
        pytest.fail(f"D2R_REQUIRE_RENDER=1 but MuJoCo cannot render offscreen: {why}")
    return why


def _mujoco_rendering() -> str:
    """'' when MuJoCo can render offscreen here (OSMesa or EGL), after installing Debian's
    libosmesa6 with apt-get when neither works (as root); else why not. CI machines start without
    it: the render tests install it themselves, as tests/test_slurm.py does for Slurm."""
    from d2r.video import _probe

    if not _probe("osmesa") or not _probe("egl"):
        return ""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "no rendering backend, and not running as root, so apt-get cannot install libosmesa6"
    if not shutil.which("apt-get"):
        return "no rendering backend, and no apt-get to install libosmesa6"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libosmesa6"]
    for cmds in ([install], [["apt-get", "update", "-q"], install]):   # the package list may be stale
        try:
            procs = [subprocess.run(c, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT) for c in cmds]
        except subprocess.TimeoutExpired as err:
            return f"`{' '.join(err.cmd)}` took longer than {APT_TIMEOUT} s"
        if procs[-1].returncode == 0:
            break
    else:
        return f"`{' '.join(install)}` failed: {(procs[-1].stderr or procs[-1].stdout).strip()[-400:]}"
    why = _probe("osmesa")
    return f"libosmesa6 installed, but OSMesa does not render: {why}" if why else ""


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None
