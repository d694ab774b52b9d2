"""A trained policy, loaded from its run directory: `d2r.load_policy(run_dir)`.

The network is rebuilt from the run's own recorded configuration (run.json "config", written by
the training job), not from today's params.yaml, so a run stays loadable after params.yaml has
changed; model.pt's policy weights go into it. `act(obs, task)` is the evaluation's action: the
greedy route and tanh(mean), deterministic. The evaluate and render jobs load runs this way.

    policy = d2r.load_policy("results/smoke/d2r/seed0")          # device="cpu" | "cuda" | "cuda:1"
    action = policy.act(obs, "reach")                              # obs: Meta-World's 39 floats
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from d2r.config import RunConfig, run_from_dict
from d2r.nets import build_net
from d2r.runtime.checkpoint import load_checkpoint_file
from d2r.runtime.io import ResultFileError, read_json
from d2r.runtime.rundir import RunDir
from d2r.sac.agent import TanhGaussianPolicy
from d2r.tasks import ACTION_DIM, STATE_DIM, short_name

POLICY_PREFIX = "policy."     # the policy's weights in model.pt (the whole agent's state dict)


class Policy(nn.Module):
    """The policy network of one run, in evaluation mode, with the run's task names."""

    def __init__(self, run: RunConfig, net: TanhGaussianPolicy, device: torch.device):
        super().__init__()
        self.run = run                           # the run's configuration, as it was trained
        self.tasks = tuple(run.experiment.tasks)  # task index -> name (the one-hot order)
        self.net = net
        self.device = device
        self.eval()

    @property
    def routed(self) -> bool:
        return self.net.net.routed

    @torch.no_grad()
    def act_greedy(self, state: torch.Tensor, task: torch.Tensor):
        """(action [B, 4], route or None) for states [B, 39] and task indices [B] on self.device."""
        return self.net.greedy(state, task)

    def task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            name = short_name(task)
            if name not in self.tasks:
                raise ValueError(f"task {task!r} is not one of this run's tasks: {', '.join(self.tasks)}")
            return self.tasks.index(name)
        index = int(task)
        if not 0 <= index < len(self.tasks):
            raise ValueError(f"task index {index} is out of range: this run has {len(self.tasks)} tasks")
        return index

    def act(self, obs, task) -> np.ndarray:
        """The action for one observation [>= 39] or a batch [B, >= 39] (numpy or torch): Meta-World's
        39 floats come first, anything after them (a one-hot task id) is ignored. `task`: a task
        name ("reach" or "reach-v3"), an index into self.tasks, or one of them per row."""
        state = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = state.ndim == 1
        state = state.reshape(1, -1) if single else state
        if state.ndim != 2 or state.shape[1] < STATE_DIM:
            raise ValueError(f"obs must have at least {STATE_DIM} values per row (Meta-World's observation), "
                             f"got shape {tuple(np.shape(obs))}")
        tasks = [task] * len(state) if isinstance(task, (str, int, np.integer)) else list(task)
        if len(tasks) != len(state):
            raise ValueError(f"got {len(tasks)} tasks for {len(state)} observations")
        index = torch.tensor([self.task_index(t) for t in tasks], device=self.device)
        action, _ = self.act_greedy(state[:, :STATE_DIM].to(self.device), index)
        action = action.cpu().numpy()
        return action[0] if single else action


def load_policy(run_dir: str | Path, device: str | torch.device = "cpu") -> Policy:
    """The trained policy of a run directory (results/E/M/seedS: run.json and model.pt) on `device`.

    A missing or unreadable file raises ResultFileError naming it."""
    files = RunDir(run_dir)
    for path in (files.run_info, files.model):
        if not path.exists():
            raise ResultFileError(f"{path}: not found (train the run first)")
    try:
        run = run_from_dict(read_json(files.run_info)["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ResultFileError(f"{files.run_info}: not a run configuration this version can read ({err})") from None
    device = torch.device(device)
    method = run.method
    with torch.random.fork_rng(devices=[]):   # the initial weights are overwritten: leave the caller's RNG be
        net = TanhGaussianPolicy(build_net(method.net, STATE_DIM, 2 * ACTION_DIM, len(run.experiment.tasks),
                                           **method.net_args), ACTION_DIM)
    state = load_checkpoint_file(files.model, map_location="cpu")
    weights = {k[len(POLICY_PREFIX):]: v for k, v in state.items() if k.startswith(POLICY_PREFIX)}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ResultFileError(f"{files.model}: does not fit the network of {files.run_info} "
                              f"({str(err).splitlines()[0]})") from None
    return Policy(run, net, device).to(device)
