"""Videos of greedy episodes of a trained policy, one per task (the `render` job, d2r/jobs/render.py).

Loads ``{run_dir}/model.pt``, runs one episode per task with greedy routes and tanh(mean)
actions (as the evaluation does), renders every `frame_stride`-th step with MuJoCo's offscreen
renderer (``mujoco.Renderer``) and encodes each task's frames as an H.264 MP4 (imageio-ffmpeg's
ffmpeg, yuv420p, so that browsers play it). Writes the directory ``--out``::

    {task}.mp4 ...            one per task of the experiment
    index.json                {"experiment", "method", "seed", "stream", "backend", "camera",
                               "width", "height", "frame_stride", "fps", "tasks": [...],
                               "videos": {task: {"file", "frames", "steps", "success", "return"}}}

Results do not change: the episodes run on their own env stream (d2r.runtime.seeding.RENDER_STREAM; training
collects on 0, periodic evaluation on 1, the final evaluation on 2), in this job's own process,
and nothing writes outside the job's ``--out``. Fixed goals do not depend on the stream, so a video
shows the goal the policy was trained and evaluated on. The policy acts on the CPU (a video needs
no GPU arithmetic); rendering uses EGL where it works (a GPU), else OSMesa (software).

The rendering backend is chosen before MuJoCo is imported (it reads MUJOCO_GL once): MUJOCO_GL
when set, else the first of egl/osmesa (osmesa first without an NVIDIA GPU) that renders a
one-geom scene in a child process. When none works the job stops with one line naming what was
tried and how to fix it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from d2r.runtime.devices import gpu_present

#: Meta-World's corner cameras look at the table upside down; their images are turned by 180 deg.
UPSIDE_DOWN = {"corner", "corner2", "corner3", "corner4"}

_PROBE = (
    "import sys\n"
    "try:\n"
    "    import mujoco\n"
    "    m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 2\"/>"
    "<geom type=\"sphere\" size=\".1\"/></worldbody></mujoco>')\n"
    "    r = mujoco.Renderer(m, 16, 16)\n"
    "    r.update_scene(mujoco.MjData(m))\n"
    "    assert r.render().shape == (16, 16, 3), 'wrong image shape'\n"
    "    r.close()\n"
    "except BaseException as err:\n"
    "    print('probe failed:', f'{type(err).__name__}: {err}'.strip().replace(chr(10), ' '))\n"
    "    sys.exit(1)\n"
)
PROBE_TIMEOUT = 120


class RenderError(RuntimeError):
    """Rendering cannot run here; the message says why and what to do."""


def _probe(backend: str) -> str:
    """'' when MuJoCo renders with `backend` in a child process, else the reason it does not."""
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env["MUJOCO_GL"] = backend
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"no answer within {PROBE_TIMEOUT} s"
    if proc.returncode == 0:
        return ""
    said = [ln[len("probe failed: "):] for ln in proc.stdout.splitlines() if ln.startswith("probe failed: ")]
    lines = said or [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()][-1:]
    return lines[0] if lines else f"exit status {proc.returncode}"


def choose_backend() -> str:
    """The MuJoCo GL backend to use, set in MUJOCO_GL; raises RenderError when none works."""
    forced = os.environ.get("MUJOCO_GL", "").strip().lower()
    candidates = [forced] if forced else (["egl", "osmesa"] if gpu_present() else ["osmesa", "egl"])
    reasons = []
    for backend in candidates:
        why = _probe(backend)
        if not why:
            os.environ["MUJOCO_GL"] = backend
            if not forced:
                os.environ.pop("PYOPENGL_PLATFORM", None)   # mujoco sets the one that matches
            return backend
        reasons.append(f"{backend}: {why}")
    fix = ("unset MUJOCO_GL to let the job choose" if forced else
           "install OSMesa (apt-get install -y libosmesa6) or a GPU driver with EGL")
    raise RenderError(f"no MuJoCo rendering backend works here ({'; '.join(reasons)}); {fix}, "
                      "or set render.enabled: false in params.yaml")


def _writer(path: Path, cfg):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(
        str(path), (cfg.width, cfg.height), fps=cfg.fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=16, ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart", "-threads", "1"])
    gen.send(None)
    return gen


def render_task(env, index: int, agent, cfg, path: Path) -> dict:
    """One greedy episode of `env` (task `index` of the run), written to `path`."""
    import mujoco
    import numpy as np
    import torch

    from d2r.tasks import STATE_DIM

    sim = env.unwrapped
    renderer = mujoco.Renderer(sim.model, cfg.height, cfg.width)
    if not cfg.shadows:
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            renderer.scene.flags[flag] = False
    turn = cfg.camera in UPSIDE_DOWN

    def frame() -> bytes:
        renderer.update_scene(sim.data, camera=cfg.camera)
        img = renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1] if turn else img).tobytes()

    task = torch.tensor([index])
    writer = _writer(path, cfg)
    frames, steps, success, total = 0, 0, False, 0.0
    try:
        obs, _ = env.reset()
        writer.send(frame())
        frames += 1
        while True:
            state = torch.as_tensor(np.asarray(obs)[None, :STATE_DIM], dtype=torch.float32)
            action, _ = agent.act_greedy(state, task)
            obs, reward, terminated, truncated, info = env.step(action[0].numpy())
            steps += 1
            total += float(reward)
            success |= bool(float(info.get("success", 0.0)) > 0.5)
            if terminated or truncated:
                break
            if steps % cfg.frame_stride == 0:
                writer.send(frame())
                frames += 1
    finally:
        writer.close()
        renderer.close()
    return {"file": path.name, "frames": frames, "steps": steps, "success": success, "return": round(total, 6)}
