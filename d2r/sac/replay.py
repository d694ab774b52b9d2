"""Per-task replay buffer that also stores the behaviour route of the policy.

One ring buffer per task, kept as tensors [T, capacity_per_task, ...] on the training device,
so a batch of `batch_per_task` samples from every task is one gather with no host round trip.
Sampling uses the buffer's own seeded generator, so its stream does not depend on anything
else the run draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ROUTE_DTYPE = torch.int8  # module indices < 128 (the schema caps num_modules at 127), -1 = padding


@dataclass
class Batch:
    """Transitions grouped by task: every tensor's first dim is T * batch_per_task, task-major."""

    state: torch.Tensor        # [B, S]
    action: torch.Tensor       # [B, A]
    reward: torch.Tensor       # [B] (unscaled env reward)
    next_state: torch.Tensor   # [B, S]
    done: torch.Tensor         # [B] 1.0 where bootstrapping is cut
    task: torch.Tensor         # [B] int64
    route: torch.Tensor | None  # [B, N, K] behaviour route of the policy, or None


class TaskReplayBuffer:
    def __init__(self, num_tasks: int, capacity_per_task: int, state_dim: int, action_dim: int,
                 route_shape: tuple[int, int] | None, seed: int, device: torch.device | str = "cpu"):
        self.num_tasks, self.capacity = num_tasks, capacity_per_task
        self.device = torch.device(device)
        shape = (num_tasks, capacity_per_task)
        self.state = torch.zeros(*shape, state_dim, device=self.device)
        self.action = torch.zeros(*shape, action_dim, device=self.device)
        self.reward = torch.zeros(shape, device=self.device)
        self.next_state = torch.zeros(*shape, state_dim, device=self.device)
        self.done = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.route = (torch.zeros(*shape, *route_shape, dtype=ROUTE_DTYPE, device=self.device)
                      if route_shape is not None else None)
        self.position = 0   # next slot to write (the same for every task: tasks step in lock step)
        self.size = 0       # filled slots per task
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Transitions stored over all tasks."""
        return self.size * self.num_tasks

    def add(self, state, action, reward, next_state, done, route=None) -> None:
        """One transition for every task: tensors with a leading dimension of num_tasks."""
        i = self.position
        self.state[:, i] = state
        self.action[:, i] = action
        self.reward[:, i] = reward
        self.next_state[:, i] = next_state
        self.done[:, i] = done
        if self.route is not None:
            self.route[:, i] = route.to(ROUTE_DTYPE)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_per_task: int) -> Batch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.from_numpy(self.rng.integers(0, self.size, size=(self.num_tasks, batch_per_task)))
        if self.device.type == "cuda":  # from pinned memory, a copy that does not wait for the GPU
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        else:
            idx = idx.to(self.device)
        rows = torch.arange(self.num_tasks, device=self.device).unsqueeze(1).expand_as(idx)

        def take(x):
            return x[rows, idx].flatten(0, 1)

        return Batch(
            state=take(self.state),
            action=take(self.action),
            reward=take(self.reward),
            next_state=take(self.next_state),
            done=take(self.done).float(),
            task=rows.flatten(),
            route=take(self.route).long() if self.route is not None else None,
        )

    # ---- checkpointing: only the filled part is saved ---------------------------------------
    def state_dict(self) -> dict:
        n = self.size
        data = {name: getattr(self, name)[:, :n].cpu() for name in ("state", "action", "reward", "next_state", "done")}
        if self.route is not None:
            data["route"] = self.route[:, :n].cpu()
        data.update(position=self.position, size=self.size, rng=self.rng.bit_generator.state)
        return data

    def load_state_dict(self, data: dict) -> None:
        n = data["size"]
        if n > self.capacity:
            raise ValueError(f"checkpointed replay holds {n} transitions per task, capacity is {self.capacity}")
        for name in ("state", "action", "reward", "next_state", "done", "route"):
            if getattr(self, name) is not None:
                getattr(self, name)[:, :n] = data[name].to(self.device)
        self.position, self.size = data["position"], n
        self.rng.bit_generator.state = data["rng"]
