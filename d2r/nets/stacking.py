"""Several seeds' copies of one network as one network, their weights stacked along a leading seed
dimension (issue 31: a group of seeds trained together runs one kernel for all seeds, not one per
seed).

The stacked network takes the S seeds' batches one after the other (seed-major rows: S * B samples)
and gives each seed's rows what that seed's own network gives them, to float rounding: every
nn.Linear becomes a StackedLinear (one batched matmul over the seeds), and every other operation
of the networks works sample by sample already. D2R's module stack multiplies by its [S, H, H]
weights the same way (d2r.nets.module_stack). Random draws take each seed's rows from that seed's
generator (d2r.runtime.seeding.SeedGenerators); D2R's routing temperatures are then [S, T].

The networks whose weights are all nn.Linear layers' (D2R in every variant, MT-SAC) stack that
way. The other baselines (multi-head, mixture of experts, Soft Modularization) keep weights of
their own shapes, and no random draws in their forward: their stacked form (SeedMapped) maps one
network's forward over the seeds with torch.func.vmap, which batches each operation over the seed
dimension the same way.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

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


class SeedMapped(MultiTaskNet):
    """S networks of a kind without routes, buffers or random draws, as one: each parameter stacked
    [S, *shape] (named p0, p1, ... in the order of the networks' own), the forward of one network
    mapped over the seeds' rows with torch.func.vmap."""

    def __init__(self, nets: list[MultiTaskNet]):
        super().__init__()
        first = nets[0]
        self.in_dim, self.out_dim, self.num_tasks = first.in_dim, first.out_dim, first.num_tasks
        self.seeds = len(nets)
        self._names = [name for name, _ in first.named_parameters()]
        for i, name in enumerate(self._names):
            stacked = torch.stack([net.get_parameter(name).detach() for net in nets])
            self.register_parameter(f"p{i}", nn.Parameter(stacked))
        self._network = [copy.deepcopy(first).to("meta")]  # its code and structure; in a list: no submodule

    def forward(self, x, task, **route_kw) -> tuple[torch.Tensor, None]:
        """See MultiTaskNet.forward (the routing arguments are ignored): x [S * B, in_dim] and task
        [S * B], seed-major -> ([S * B, out_dim], None)."""
        weights = dict(zip(self._names, self.parameters()))

        def one_seed(seed_weights, seed_x, seed_task):
            return functional_call(self._network[0], seed_weights, (seed_x, seed_task))[0]

        out = vmap(one_seed)(weights, x.reshape(self.seeds, -1, x.shape[-1]), task.reshape(self.seeds, -1))
        return out.reshape(-1, out.shape[-1]), None


def stackable(net: nn.Module) -> bool:
    """Every weight of `net` belongs to an nn.Linear (else it stacks as a SeedMapped)."""
    return all(isinstance(module, nn.Linear) for module in net.modules()
               if any(True for _ in module.parameters(recurse=False)))


def stack_nets(nets: list[MultiTaskNet]) -> MultiTaskNet:
    """The S networks (same kind and sizes) as one seed-stacked network, its weights copies of
    theirs; its parameters come in the order of each one's, each [S, *shape]."""
    if not stackable(nets[0]):
        if nets[0].routed or any(True for _ in nets[0].buffers()):
            raise ValueError(f"{type(nets[0]).__name__} cannot be stacked: routes or buffers outside nn.Linear")
        return SeedMapped(nets)
    stacked = copy.deepcopy(nets[0])
    for name, module in list(stacked.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, attribute = name.rpartition(".")
            # setattr on an existing child keeps its place: the parameter order stays each net's
            setattr(stacked.get_submodule(parent), attribute, StackedLinear([net.get_submodule(name) for net in nets]))
    return stacked
