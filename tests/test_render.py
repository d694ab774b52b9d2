"""The render job (`python -m d2r render`): a real MuJoCo offscreen video of a tiny policy.

Needs a MuJoCo GL backend: OSMesa (Debian's libosmesa6, installed here with apt-get when missing,
as root) or EGL. Skipped, saying why, only when neither can be had. The end-to-end pipeline test
(tests/test_pipeline.py) renders through Snakemake and checks the videos in the report.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO, mujoco_rendering, run_d2r

EXPERIMENT, TASK, SIZE, STRIDE, STEPS = "vid", "reach", 64, 10, 50


@pytest.fixture(scope="module")
def backend_ready():
    why = mujoco_rendering()
    if why:
        pytest.skip(f"MuJoCo cannot render offscreen here: {why}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """params.yaml with a one-task experiment, the untrained D2R policy of its seed 0 as model.pt and
    its configuration as run.json (what d2r.load_policy reads)."""
    import torch

    from d2r.config import load_params
    from d2r.runtime.checkpoint import save_model
    from d2r.runtime.io import atomic_write_json
    from d2r.sac.build import build_agent

    root = tmp_path_factory.mktemp("render")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["env"]["max_episode_steps"] = STEPS
    raw["nets"]["d2r"] = {"encoder": [32, 32], "num_modules": 4, "width": 16, "top_k": 2, "router_hidden": [32]}
    raw["experiments"][EXPERIMENT] = {
        "benchmark": "MT10", "tasks": [TASK], "goal_mode": "fixed", "methods": ["d2r"], "seeds": [0],
        "preset": "smoke", "final_eval_episodes": 1, "metaworld_eval_episodes": 1,
        "render": {"enabled": True, "width": SIZE, "height": SIZE, "frame_stride": STRIDE}}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_dir = root / "results" / EXPERIMENT / "d2r" / "seed0"
    torch.manual_seed(0)
    run = load_params(params).run(EXPERIMENT, "d2r", 0)
    agent = build_agent(run, torch.device("cpu"))
    save_model(run_dir / "model.pt", agent.state_dict())
    atomic_write_json(run_dir / "run.json", {"config": run.training_dict()})
    return {"root": root, "params": params, "run_dir": run_dir}


def _render(run: dict, out: Path, env: dict | None = None, check: bool = True):
    args = ("render", "--params", str(run["params"]), "--experiment", EXPERIMENT, "--method", "d2r",
            "--seed", "0", "--run-dir", str(run["run_dir"]), "--out", str(out))
    if env is None:
        return run_d2r(*args, check=check)
    import subprocess
    import sys

    env = dict(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "d2r", *args], cwd=REPO, env=env, capture_output=True, text=True)


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_render_video(backend_ready, tiny_run):
    import imageio_ffmpeg
    import numpy as np

    before = _digest(tiny_run["run_dir"])
    out = tiny_run["run_dir"] / "videos"
    _render(tiny_run, out)
    index = json.loads((out / "index.json").read_text())
    assert index["tasks"] == [TASK] and index["method"] == "d2r" and index["seed"] == 0
    assert (index["width"], index["height"], index["frame_stride"]) == (SIZE, SIZE, STRIDE)
    assert index["backend"] in ("osmesa", "egl") and index["stream"] == 3
    video = index["videos"][TASK]
    # frames at steps 0, 10, 20, 30, 40 (step 50 ends the episode: the env has reset by then)
    assert video["steps"] == STEPS and video["frames"] == STEPS // STRIDE
    reader = imageio_ffmpeg.read_frames(str(out / video["file"]))
    meta = next(reader)
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(SIZE, SIZE, 3) for f in reader]
    assert tuple(meta["size"]) == (SIZE, SIZE) and len(frames) == video["frames"]
    assert all(f.std() > 10 for f in frames), "blank frames"
    # Rendering wrote its directory only: the run's files are unchanged.
    after = _digest(tiny_run["run_dir"])
    assert {k: v for k, v in after.items() if not k.startswith("videos/")} == before


@pytest.mark.slow
def test_rendered_episode_is_the_evaluated_one(backend_ready, tiny_run, tmp_path):
    """Fixed goals and a greedy policy: the rendered episode (its own env stream) is the episode the
    final evaluation runs, step for step, so rendering changes nothing in the dynamics it shows."""
    out = tmp_path / "videos"
    _render(tiny_run, out)
    video = json.loads((out / "index.json").read_text())["videos"][TASK]
    ev_path = tmp_path / "eval.json"
    run_d2r("evaluate", "--params", str(tiny_run["params"]), "--experiment", EXPERIMENT, "--method", "d2r",
            "--seed", "0", "--run-dir", str(tiny_run["run_dir"]), "--out", str(ev_path))
    ev = json.loads(ev_path.read_text())
    assert video["return"] == pytest.approx(ev["return"][TASK], abs=1e-4)
    assert video["success"] == (ev["success"][TASK] > 0.5)


@pytest.mark.slow
def test_no_backend_is_one_clear_line(tiny_run, tmp_path):
    """GLFW without a display cannot render: the job stops with one line saying what to do."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MUJOCO_GL"] = "glfw"
    out = tmp_path / "videos"
    proc = _render(tiny_run, out, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: render {EXPERIMENT}/d2r/seed0: no MuJoCo rendering backend works here (glfw: ")
    assert "render.enabled: false" in lines[0]
    assert not out.exists()


def test_choose_backend_names_every_failure(monkeypatch):
    from d2r import video as render

    monkeypatch.setenv("MUJOCO_GL", "")       # restored afterwards (choose_backend sets it)
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "x")   # choose_backend drops it: restored too
    monkeypatch.setattr(render, "_probe", lambda backend: f"{backend} is broken")
    with pytest.raises(render.RenderError) as err:
        render.choose_backend()
    message = str(err.value)
    assert "osmesa: osmesa is broken" in message and "egl: egl is broken" in message
    assert "apt-get install -y libosmesa6" in message and "\n" not in message
    assert "MUJOCO_GL" not in os.environ
    monkeypatch.setattr(render, "_probe", lambda backend: "" if backend == "egl" else "no")
    assert render.choose_backend() == "egl" and os.environ["MUJOCO_GL"] == "egl"
