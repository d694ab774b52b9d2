"""What several test files share: small agents and their replay buffers, the faults injected into an
update, a tiny training job, and the tiny experiment run through Snakemake in a copy of the
repository. Test files import from here (or use conftest.py's fixtures), never from each other
(tests/test_architecture.py checks it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from d2r.config import MethodConfig, SACConfig
from d2r.sac.agent import MultiTaskSAC
from d2r.sac.collect import Collector
from d2r.sac.replay import TaskReplayBuffer

REPO = Path(__file__).resolve().parents[1]


# ---- a small agent -----------------------------------------------------------------------------
SAC = SACConfig(gamma=0.99, tau=0.005, lr=3e-4, lr_alpha=1e-4, reward_scale=0.1, grad_clip=1.0,
                loss_mask_threshold=3000.0, bootstrap_on_truncation=False, overlap_collection=False,
                update_order="joint")
SMALL_D2R = dict(encoder=[32, 32], num_modules=4, width=16, top_k=2, router_hidden=[16])
STATE, ACTION, TASKS = 6, 2, 3


def d2r_method(**switches) -> MethodConfig:
    return MethodConfig(name="d2r", net="d2r", net_args=dict(SMALL_D2R), **switches)


def make_agent(method=None, sac=SAC) -> MultiTaskSAC:
    torch.manual_seed(0)
    return MultiTaskSAC(method or d2r_method(), sac, STATE, ACTION, TASKS)


def filled_buffer(agent, steps=20, seed=0) -> TaskReplayBuffer:
    torch.manual_seed(seed)
    net = agent.policy.net
    buf = TaskReplayBuffer(TASKS, 50, STATE, ACTION, net.route_shape if net.routed else None, seed=seed)
    task = torch.arange(TASKS)
    for _ in range(steps):
        s = torch.randn(TASKS, STATE)
        a, route = agent.act(s, task)
        buf.add(s, a, torch.rand(TASKS), torch.randn(TASKS, STATE), torch.zeros(TASKS, dtype=torch.bool), route)
    return buf


#: every method's update, with its update order (test_capturable.py on the CPU, test_cuda.py on a GPU)
CASES = {
    "d2r": (d2r_method(), "joint"),  # ResRouting on the replayed route, and in the actor's pass through the Qs
    "d2r-sequential": (d2r_method(), "sequential"),
    "d2r-current-path": (d2r_method(resrouting=False, policy_route="greedy"), "joint"),
    "mtsac": (MethodConfig(name="mtsac", net="mtsac", net_args={"hidden": [32, 32]}, task_loss_weights=False), "joint"),
    "mhsac": (MethodConfig(name="mhsac", net="mhsac", net_args={"hidden": [32, 32]}, task_loss_weights=False), "joint"),
    "moe": (MethodConfig(name="moe", net="moe", net_args={"num_experts": 3, "hidden": [32, 32]},
                         task_loss_weights=False), "joint"),
    "softmod": (MethodConfig(name="softmod", net="softmod",
                             net_args=dict(num_layers=3, num_modules=2, module_width=16, encoder=[32, 32],
                                           embed_dim=32, routing_hidden=16)), "joint"),
}


# ---- faults injected before an update: fault(agent, batch) -> batch -------------------------------
def nan_parameter(agent, batch):
    with torch.no_grad():
        dict(agent.q2.named_parameters())["head.weight"][0, 0] = float("nan")
    return batch


def nan_after_policy_step(agent, batch):
    step = agent.policy_optim.step

    def broken_step(*args, **kwargs):  # a step that writes a NaN (a faulty kernel, say)
        result = step(*args, **kwargs)
        with torch.no_grad():
            next(agent.policy.parameters()).view(-1)[0] = float("nan")
        return result

    agent.policy_optim.step = broken_step
    return batch


# ---- the training job on a tiny budget ---------------------------------------------------------
def tiny_params(tmp_path: Path, epochs: int = 6) -> Path:
    """params.yaml with the experiment `tiny` (D2R, seed 0, 2 MT10 tasks, small networks), on the CPU."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["device"] = "cpu"
    raw["nets"]["d2r"].update(encoder=[32, 32], num_modules=4, width=16, router_hidden=[16])
    raw["presets"]["tiny"] = dict(epochs=epochs, warmup_epochs=1, min_replay=0, updates_per_epoch=3,
                                  batch_per_task=8, replay_size=4000, eval_every=2, eval_episodes=1,
                                  checkpoint_every=1)
    raw["experiments"] = {"tiny": dict(benchmark="MT10", tasks=["reach", "drawer-close"], goal_mode="random",
                                       methods=["d2r"], seeds=[0], preset="tiny", final_eval_episodes=1,
                                       metaworld_eval_episodes=1)}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train_cmd(params: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "d2r", "train", "--params", str(params), "--experiment", "tiny",
            "--method", "d2r", "--seed", "0", "--out", str(out), "--no-progress"]


# ---- the tiny experiment through Snakemake, in a copy of the repository ---------------------------
EXPERIMENT = "tiny"
TARGET = f"reports/{EXPERIMENT}.html"
METHODS = ["d2r", "mtsac"]
TIMEOUT = 900

# Paths of the repository that are not copied: outputs, environments, caches, VCS data.
NOT_COPIED = {".venv", ".git", ".snakemake", "results", "logs", "metrics", ".pytest_cache", ".dvc",
              "__pycache__", "d2r.egg-info", ".hypothesis"}


def ignore_outputs(directory: str, names: list[str]) -> set[str]:
    """shutil.copytree's `ignore` for a copy of the repository without outputs (NOT_COPIED)."""
    skip = {n for n in names if n in NOT_COPIED or n.endswith(".pyc")}
    rel = Path(directory).resolve().relative_to(REPO) if Path(directory).resolve() != REPO else Path(".")
    if rel == Path("reports"):
        skip |= {n for n in names if n.endswith(".html")}
    if rel == Path("benchmarks"):
        skip |= {"runs"}
    return skip


def repo_copy(path: Path, change) -> Path:
    """A copy of the repository at `path`, without outputs, its params.yaml edited by `change`."""
    shutil.copytree(REPO, path, ignore=ignore_outputs, symlinks=True)
    edit_params(path, change)
    return path


def tiny_experiment(raw: dict) -> dict:
    """Raw params with the experiment `tiny`: 2 MT10 tasks, D2R and MT-SAC with small networks, one
    seed, 2 epochs of 50-step episodes (for edit_params)."""
    raw["env"]["max_episode_steps"] = 50
    raw["nets"]["d2r"] = {"encoder": [32, 32], "num_modules": 4, "width": 16, "top_k": 2, "router_hidden": [32]}
    raw["nets"]["mtsac"] = {"hidden": [32, 32]}
    raw["presets"]["tiny"] = {"epochs": 2, "warmup_epochs": 1, "min_replay": 0, "updates_per_epoch": 2,
                              "batch_per_task": 8, "replay_size": 1000, "eval_every": 1, "eval_episodes": 1,
                              "checkpoint_every": 1}
    raw["experiments"][EXPERIMENT] = {"benchmark": "MT10", "tasks": ["reach", "drawer-close"], "goal_mode": "fixed",
                                      "methods": list(METHODS), "seeds": [0], "preset": "tiny",
                                      "final_eval_episodes": 1, "metaworld_eval_episodes": 1,
                                      "render": {"enabled": False}}
    return raw


def edit_params(repo: Path, change) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def pipeline_env() -> dict[str, str]:
    """The environment of snakemake and dvc in a copy: this Python's tools first, the copy's d2r."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)      # jobs must import the copy's d2r (python -m runs in the copy)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def sh(repo: Path, *cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=pipeline_env(), capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((repo / "logs").rglob("*.log"))
                         if p.stat().st_size) if (repo / "logs").exists() else ""
        raise AssertionError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{out[-6000:]}\n{logs}")
    return out


def snakemake(repo: Path, *args: str) -> str:
    return sh(repo, sys.executable, "-m", "snakemake", *args)


def planned(repo: Path, *args: str, target: str = TARGET) -> dict[str, int]:
    """Jobs a dry run of the tiny report (or `target`; with these extra arguments) would run:
    rule -> count ({} when nothing)."""
    out = snakemake(repo, "-n", target, *args)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines():
        m = re.match(r"^([\w-]+)\s+(\d+)$", line.strip())  # group rules: train-E-M-seeds0-1
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
        if line.strip().startswith("total"):
            break
    assert jobs, f"could not read the dry run's plan:\n{out[-3000:]}"
    return jobs


# ---- an update without host reads (cuda_graphs on: what a CUDA graph captures) ---------------------
#: every way a tensor's value reaches Python
HOST_READS = ("item", "tolist", "__bool__", "cpu", "numpy", "__float__", "__int__", "__index__")


def refuse_host_reads(patch) -> None:
    """Every way a tensor's value reaches Python raises, under the monkeypatch `patch`."""
    def refused(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read in the update: Tensor.{name}")
        return read

    for name in HOST_READS:
        patch.setattr(torch.Tensor, name, refused(name))


# ---- run logs and injected events ------------------------------------------------------------------
TIMING = ("wall_time", "sps")   # log fields that differ from run to run


def without_timing(path: Path) -> list[dict]:
    """A JSON-lines log's records without their timing fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def signal_at(monkeypatch, where: str, number: int, signum=signal.SIGTERM) -> None:
    """Send `signum` to this process during the `number`-th update or episode (1-based)."""
    cls, name = (MultiTaskSAC, "update") if where == "update" else (Collector, "_episode")
    original, calls = getattr(cls, name), [0]

    def patched(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == number:
            os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, patched)


def on_update(monkeypatch, number: int, action) -> None:
    """Call action(agent, batch) -> batch before the `number`-th update (1-based) of the run."""
    original, calls = MultiTaskSAC.update, [0]

    def update(agent, batch):
        calls[0] += 1
        return original(agent, action(agent, batch) if calls[0] == number else batch)

    monkeypatch.setattr(MultiTaskSAC, "update", update)


def nan_gradient(agent, batch):
    """A NaN gradient in Q1 (the check before the step must stop it)."""
    next(agent.q1.parameters()).register_hook(lambda grad: grad * float("nan"))

    def step(*args, **kwargs):  # never reached: the check comes before the step
        raise AssertionError("stepped with a NaN gradient")

    agent.q_optim.step = step
    return batch


def training_pid(repo: Path, method: str) -> int | None:
    """The pid of the `python -m d2r train` process of `repo`'s run of `method` (under Snakemake)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if (b"d2r" in cmd and b"train" in cmd and b"--method" in cmd
                and cmd[cmd.index(b"--method") + 1] == method.encode() and Path(cwd) == repo
                and Path(cmd[0].decode()).name.startswith("python")):
            return int(proc.name)
    return None


def start_pipeline(repo: Path) -> subprocess.Popen:
    """snakemake for the tiny report in its own process group (as a terminal's foreground job),
    SIGINT not ignored; its output in repo/snakemake.out."""
    log = open(repo / "snakemake.out", "w")
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", TARGET], cwd=repo, env=pipeline_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_file(path: Path, repo: Path, proc: subprocess.Popen) -> None:
    """Until `path` exists (a checkpoint the running pipeline `proc` writes), or fail with its output."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert proc.poll() is None, (repo / "snakemake.out").read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {path.name} in time"
        time.sleep(0.05)
