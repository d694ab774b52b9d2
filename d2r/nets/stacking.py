"""Several seeds' copies of one network as one network, their weights stacked along a leading seed
dimension (issue 31: a group of seeds trained together runs one kernel for all seeds, not one per
seed).

The stacked network takes the S seeds' batches one after the other (seed-major rows: S * B samples)
and gives each seed's rows what that seed's own network gives them, to float rounding: every
nn.Linear becomes a StackedLinear (one batched matmul over the seeds), and every other operation
of the networks works sample by sample already. D2R's module stack multiplies by its [S, H, H]
weights the same way (d2r.nets.module_stack). Random draws take each seed's rows from that seed's
generator (d2r.runtime.seeding.SeedGenerators); D2R's routing temperatures are then [S, T].

A network can be stacked when all its weights are nn.Linear layers' (D2R in every variant,
MT-SAC); the other baselines keep weights of their own shapes (`stackable` says no) and a group
of them updates seed after seed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from d2r.nets.base import MultiTaskNet


class StackedLinear(nn.Module):
    """S nn.Linear layers of the same shape as one: weight [S, out, in], bias [S, out]; input and
    output [S * B, features], seed-major."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seeds, out_features, in_features = self.weight.shape
        per_seed = x.reshape(seeds, -1, in_features)
        return torch.baddbmm(self.bias.unsqueeze(1), per_seed, self.weight.transpose(1, 2)).view(-1, out_features)


def stackable(net: nn.Module) -> bool:
    """Every weight of `net` belongs to an nn.Linear."""
    return all(isinstance(module, nn.Linear) for module in net.modules()
               if any(True for _ in module.parameters(recurse=False)))


def stack_nets(nets: list[MultiTaskNet]) -> MultiTaskNet:
    """The S networks (same kind and sizes) as one seed-stacked network, its weights copies of
    theirs; its parameters come in the order of each one's, each [S, *shape]."""
    if not all(stackable(net) for net in nets):
        raise ValueError(f"{type(nets[0]).__name__} has weights other than nn.Linear layers: not stackable")
    stacked = copy.deepcopy(nets[0])
    for name, module in list(stacked.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, attribute = name.rpartition(".")
            # setattr on an existing child keeps its place: the parameter order stays each net's
            setattr(stacked.get_submodule(parent), attribute, StackedLinear([net.get_submodule(name) for net in nets]))
    return stacked
