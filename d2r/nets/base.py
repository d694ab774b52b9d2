"""The one interface every multi-task network (D2R and the baselines) exposes.

The SAC agent only talks to this interface, so it never needs to know which method it trains.

Routes. A routed network (D2R) returns, next to its output, the route it used as an integer
tensor of shape [B, N, K] (N modules, top-k K): row n-1 holds the selected source modules of
node n, for n = 1..N-1 the modules (module n picks among modules 0..n-1) and n = N the output
node (picks among all N modules). Modules are numbered 0..N-1. A node with fewer than K
candidates pads its row with -1 (module 1 has a single candidate, module 0). Networks without
discrete routes return None. The replay buffer stores routes as int8.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

RouteMode = Literal["greedy", "sampled", "replayed"]


class MultiTaskNet(nn.Module):
    """Base class: `forward(x, task, ...) -> (out, route_or_None)`.

    x:           [B, in_dim] float input (policy: state without one-hot; Q: [state; action]).
    task:        [B] int64 task indices in [0, num_tasks); the network builds the one-hot itself.
    route_mode:  "greedy" (top-k logits; evaluation and targets), "sampled" (k without
                 replacement from softmax(z / T_task); data collection and the Q update) or
                 "replayed" (use `route`, the behaviour route stored with the transition).
    route:       [B, N, K] int64 route to replay (route_mode="replayed" only).
    temperature: [num_tasks] float per-task routing temperatures (route_mode="sampled" only);
                 [S, num_tasks] for a seed-stacked network (d2r.nets.stacking).
    resrouting:  apply ResRouting (spec section 2) to whichever route is used: the policy update
                 replays the behaviour route, the Q update samples one with T_task.
    generator:   random stream for route sampling (default: torch's global one); one per seed
                 for a seed-stacked network (d2r.runtime.seeding.SeedGenerators).
    Non-routed networks ignore the routing arguments and return route None.
    """

    num_tasks: int
    in_dim: int
    out_dim: int
    #: route tensor shape (N, K) for routed networks, else None.
    route_shape: tuple[int, int] | None = None

    @property
    def routed(self) -> bool:
        """True when forward returns discrete routes (the replay buffer then stores them)."""
        return self.route_shape is not None

    def forward(
        self,
        x: torch.Tensor,
        task: torch.Tensor,
        *,
        route_mode: RouteMode = "greedy",
        route: torch.Tensor | None = None,
        temperature: torch.Tensor | None = None,
        resrouting: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError
