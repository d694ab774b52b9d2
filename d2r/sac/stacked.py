"""The update of several seeds' agents as one, their weights stacked along a seed dimension (issue
31, `group_update: stacked`): one kernel serves all seeds of a group (d2r.sac.group) where each
seed's own update would launch its own.

StackedSAC is a MultiTaskSAC over the S seeds at once: its networks are the seeds' networks stacked
(d2r.nets.stacking), its per-task tensors (log_alpha, temperature, the loss terms, the skipped
counts) S * T entries long, seed-major, and the batch the S seeds' batches one after the other. What
stays per seed: each seed's loss is the mean over its own tasks (the stacked loss is their sum, so
each seed's weights get exactly its own gradient), each seed's gradient is clipped to its own norm,
each seed's checks are its own agent's (d2r.sac.nonfinite), and each seed's random draws come from
its own stream (d2r.runtime.seeding.SeedGenerators). Adam and Polyak act element by element. So
each seed's update is its solo update to float rounding (the batched matmuls sum in another order).

The seeds' agents stay the seeds' own: after `StackedSAC(agents)` their parameters, temperatures,
skipped counts and optimiser states are views into the stacked tensors, so everything a seed's
trainer does between updates (acting, evaluation, logs, checkpoints) reads the current values
without a copy; a checkpoint stores each view as a tensor of its own (d2r.runtime.checkpoint).
The stack is made when every seed is at the same update (its optimisers at the same step) and
left when the group changes (a seed ended): `release` gives each agent back tensors of its own.

With `cuda_graphs: on` on CUDA the stacked update is captured as one CUDA graph and replayed
(d2r.sac.cuda_graph), as a solo update is. Its random draws come from the seeds' own generators,
which a graph would not advance: they are drawn before each replay, eagerly, into static tensors
the graph reads (NoiseTape), in the order and shapes the eager warm-up updates asked for; each
seed's numbers are the ones it would draw in the update itself.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from d2r.nets.stacking import stack_nets
from d2r.runtime.seeding import RandomStreams, SeedGenerators
from d2r.sac.agent import MultiTaskSAC, TanhGaussianPolicy
from d2r.sac.cuda_graph import GraphedUpdate
from d2r.sac.nonfinite import NonFiniteError, UpdateChecks
from d2r.sac.replay import Batch

OPTIMISERS = ("policy_optim", "q_optim", "alpha_optim")
NETWORKS = ("policy", "q1", "q2", "q1_target", "q2_target")


def can_stack(agents: list[MultiTaskSAC]) -> bool:
    """Their update can be stacked: several seeds, their optimisers at one step."""
    return len(agents) > 1 and len({_steps(a) for a in agents}) == 1


def _steps(agent: MultiTaskSAC) -> float:
    """How many steps its optimisers took (0 before the first)."""
    state = agent.policy_optim.state.get(agent.policy_optim.param_groups[0]["params"][0])
    return float(state["step"]) if state else 0.0


def _network(agent: MultiTaskSAC, name: str) -> nn.Module:
    return agent.policy.net if name == "policy" else getattr(agent, name)


class SeedChecks:
    """The seeds' own checks (each seed's agent's UpdateChecks), given each seed's slice of the
    stacked update's norms, terms, losses and kept tasks. A seed whose immediate check fails is
    noted in `faults` (its error) and not checked again in this update; the others' steps go on."""

    def __init__(self, checks: list[UpdateChecks]):
        self.checks = checks
        self.faults: dict[int, NonFiniteError] = {}

    def _each(self, check) -> None:
        for position, seed_checks in enumerate(self.checks):
            if position not in self.faults:
                try:
                    check(position, seed_checks)
                except NonFiniteError as err:
                    self.faults[position] = err

    def begin_update(self) -> None:
        self.faults = {}
        for seed_checks in self.checks:
            seed_checks.begin_update()

    def before_step(self, norms, terms, loss, keep) -> None:
        seeds = len(self.checks)

        def check(s, seed_checks):
            seed_checks.before_step({g: norm[s] for g, norm in norms.items()},
                                    {k: v.view(seeds, -1)[s] for k, v in terms.items()}, loss[s],
                                    keep.view(seeds, -1)[s])
        self._each(check)

    def after_step(self) -> None:
        self._each(lambda s, seed_checks: seed_checks.after_step())


class NoiseTape:
    """The random draws of a stacked update made before it: `record(generators)` passes the draws of
    the update that follows to the seeds' generators and notes each one's kind and shape;
    `predraw(generators)` then makes the draws noted, each seed's rows from its generator and in
    the noted order, into static tensors, and the update that follows gets those tensors in that
    order (a CUDA graph of it reads them as inputs). Stands in for SeedGenerators
    (d2r.runtime.seeding.uniform_, randn)."""

    def __init__(self):
        self.draws: list[tuple[str, torch.Size, torch.device, torch.dtype]] = []
        self.tensors: list[torch.Tensor] = []
        self.generators: SeedGenerators | None = None
        self.recording = False
        self.position = 0

    def record(self, generators: SeedGenerators) -> None:
        self.generators, self.recording, self.draws, self.tensors = generators, True, [], []

    def predraw(self, generators: SeedGenerators) -> None:
        self.recording, self.position = False, 0
        if not self.tensors:
            self.tensors = [torch.empty(shape, device=device, dtype=dtype) for _, shape, device, dtype in self.draws]
        for (kind, *_), tensor in zip(self.draws, self.tensors, strict=True):
            for rows, generator in zip(tensor.chunk(len(generators)), generators, strict=True):
                rows.uniform_(generator=generator) if kind == "uniform" else rows.normal_(generator=generator)

    def _next(self, kind: str, shape: torch.Size) -> torch.Tensor:
        noted_kind, noted_shape, *_ = self.draws[self.position]
        if (noted_kind, tuple(noted_shape)) != (kind, tuple(shape)):
            raise RuntimeError(f"the stacked update drew {kind} {tuple(shape)} where its warm-up drew "
                               f"{noted_kind} {tuple(noted_shape)}")
        self.position += 1
        return self.tensors[self.position - 1]

    def uniform_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.recording:
            self.draws.append(("uniform", tensor.shape, tensor.device, tensor.dtype))
            return self.generators.uniform_(tensor)
        return tensor.copy_(self._next("uniform", tensor.shape))

    def randn(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.recording:
            self.draws.append(("normal", torch.Size(shape), device, dtype))
            return self.generators.randn(shape, device, dtype)
        return self._next("normal", shape)


class StackedSAC(MultiTaskSAC):
    """The S agents' update as one; `update_seeds` runs it."""

    def __init__(self, agents: list[MultiTaskSAC]):
        nn.Module.__init__(self)  # its parts are made from the agents', not built afresh
        first = agents[0]
        self.agents, self.seeds = agents, len(agents)
        self.method, self.sac = first.method, first.sac
        self.num_tasks, self.action_dim = first.num_tasks, first.action_dim
        self.task_rows = self.seeds * self.num_tasks
        self.update_generator = None
        self.target_entropy = first.target_entropy
        self.device, self.update_mode = first.device, first.update_mode
        self.policy = TanhGaussianPolicy(stack_nets([a.policy.net for a in agents]), self.action_dim)
        for name in NETWORKS[1:]:
            setattr(self, name, stack_nets([getattr(a, name) for a in agents]))
        self.log_alpha = nn.Parameter(torch.cat([a.log_alpha.detach() for a in agents]))
        self.register_buffer("temperature", torch.cat([a.temperature for a in agents]))
        self.skipped = torch.cat([a.skipped for a in agents], dim=1)
        adam = dict(fused=True, capturable=self.update_mode == "graph")
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=self.sac.lr, **adam)
        self.q_optim = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=self.sac.lr, **adam)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=self.sac.lr_alpha, **adam)
        self.checks = SeedChecks([a.checks for a in agents])
        self._graphed: GraphedUpdate | None = None
        #: draw the update's noise before it (NoiseTape): what a CUDA graph of it needs
        self.predraw_noise = self.update_mode == "graph"
        self._tape = NoiseTape()
        self._seed_of_sample: torch.Tensor | None = None
        self._import_optimiser_states()
        self._bind()

    # ---- the seeds' agents as views of the stack ----------------------------------------------
    def _param_pairs(self):
        """(stacked parameter, [each seed's]) of every network and log_alpha."""
        for name in NETWORKS:
            mine = list(_network(self, name).parameters())
            theirs = zip(*(list(_network(a, name).parameters()) for a in self.agents), strict=True)
            yield from zip(mine, theirs, strict=True)
        yield self.log_alpha, tuple(a.log_alpha for a in self.agents)

    def _optimiser_pairs(self):
        """(stacked optimiser's parameter and state, [each seed's optimiser, parameter])."""
        for name in OPTIMISERS:
            mine = getattr(self, name)
            theirs = [getattr(a, name) for a in self.agents]
            for position, param in enumerate(mine.param_groups[0]["params"]):
                yield mine, param, [(optim, optim.param_groups[0]["params"][position]) for optim in theirs]

    def _seed_view(self, stacked: torch.Tensor, s: int, like: torch.Tensor) -> torch.Tensor:
        return stacked.detach().view(self.seeds, *like.shape)[s]

    def _import_optimiser_states(self) -> None:
        """The seeds' Adam moments and step, stacked (none before their first step)."""
        for optim, param, seeds in self._optimiser_pairs():
            states = [seed_optim.state.get(seed_param) for seed_optim, seed_param in seeds]
            if not all(states):
                continue
            optim.state[param] = {
                "step": states[0]["step"].clone(),
                **{key: torch.stack([st[key] for st in states]).view_as(param) for key in ("exp_avg", "exp_avg_sq")},
            }

    def _bind(self) -> None:
        """Each seed's parameters, temperature, skipped counts and (once they exist) optimiser
        moments become views of the stacked ones; each seed's Adam step shares the stack's."""
        for stacked, params in self._param_pairs():
            for s, param in enumerate(params):
                param.data = self._seed_view(stacked, s, param)
        for s, agent in enumerate(self.agents):
            agent._buffers["temperature"] = self.temperature.view(self.seeds, -1)[s]
            agent.skipped = self.skipped.view(2, self.seeds, -1)[:, s]
        self._bind_optimisers()

    def _bind_optimisers(self) -> None:
        """The seeds' Adam moments as views of the stack's, their step the stack's: once the stack's
        exist (Adam makes them at its first step)."""
        self._optimisers_bound = True
        for optim, param, seeds in self._optimiser_pairs():
            state = optim.state.get(param)
            if not state:
                self._optimisers_bound = False
                continue
            for s, (seed_optim, seed_param) in enumerate(seeds):
                seed_optim.state[seed_param] = {"step": state["step"], **{
                    key: self._seed_view(state[key], s, seed_param) for key in ("exp_avg", "exp_avg_sq")}}

    def release(self) -> None:
        """Each seed's agent holds tensors of its own again (the stack is no longer stepped)."""
        for _, params in self._param_pairs():
            for param in params:
                param.data = param.data.clone()
        for agent in self.agents:
            agent._buffers["temperature"] = agent.temperature.clone()
            agent.skipped = agent.skipped.clone()
        for _, _, seeds in self._optimiser_pairs():
            for seed_optim, seed_param in seeds:
                state = seed_optim.state.get(seed_param)
                if state:
                    seed_optim.state[seed_param] = {key: value.clone() for key, value in state.items()}

    # ---- the update --------------------------------------------------------------------------
    def update_seeds(self, batches: list[Batch], generators: SeedGenerators) -> list[dict | NonFiniteError]:
        """Each seed's update of its batch, drawing from its generator: per seed its statistics, or
        the NonFiniteError its checks raised (its values are then garbage: that seed's run ends)."""
        batch = Batch(**{field.name: None if getattr(batches[0], field.name) is None else
                         torch.cat([getattr(b, field.name) for b in batches])
                         for field in dataclasses.fields(Batch)})
        try:
            stats = self._update_with(batch, generators)
        finally:
            self.update_generator = None
        if not self._optimisers_bound:
            self._bind_optimisers()
        faults = self.checks.faults
        return [faults.get(s) or {key: value[s] for key, value in stats.items()} for s in range(self.seeds)]

    def update_in_streams(self, batches: list[Batch], streams: list[RandomStreams]) -> list[dict | NonFiniteError]:
        """update_seeds drawing from each seed's own torch stream (a group's RandomStreams), which
        then continues where the update left it."""
        generators = SeedGenerators(seed_streams.generator() for seed_streams in streams)
        outcomes = self.update_seeds(batches, generators)
        for seed_streams, generator in zip(streams, generators, strict=True):
            seed_streams.take_back(generator)
        return outcomes

    def _update_with(self, batch: Batch, generators: SeedGenerators) -> dict[str, torch.Tensor]:
        """The update drawing from `generators`: directly, or (predraw_noise) through the tape,
        recording while the update runs eagerly the first time(s) and predrawn after; in graph mode
        captured once and replayed (d2r.sac.cuda_graph.GraphedUpdate)."""
        if not self.predraw_noise:
            self.update_generator = generators
            return self._update(batch)
        if self.update_mode == "graph" and self._graphed is None:
            self._graphed = GraphedUpdate(self._update)
        warming_up = self._graphed.warming_up if self._graphed is not None else not self._tape.draws
        if warming_up:
            self._tape.record(generators)
        else:
            self._tape.predraw(generators)
        self.update_generator = self._tape
        if self._graphed is None:
            return self._update(batch)
        with torch.cuda.device(self.device):
            return self._graphed(batch)

    def update(self, batch):
        raise TypeError("a StackedSAC updates with update_seeds (one batch and generator per seed)")

    def task_weights(self) -> torch.Tensor:
        return self.num_tasks * torch.softmax(-self.log_alpha.detach().view(self.seeds, -1), dim=1).view(-1)

    def _task_index(self, batch: Batch) -> torch.Tensor:
        if self._seed_of_sample is None or self._seed_of_sample.shape != batch.task.shape:
            per_seed = batch.task.shape[0] // self.seeds
            self._seed_of_sample = torch.arange(self.seeds, device=self.device).repeat_interleave(per_seed)
        return batch.task + self.num_tasks * self._seed_of_sample

    def _route_temperature(self) -> torch.Tensor:
        return self.temperature.view(self.seeds, -1)

    def _run_mean(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(self.seeds, -1).mean(dim=1)

    def _run_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(self.seeds, -1).sum(dim=1)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.sum().backward()  # each seed's weights get their seed's loss's gradient alone

    def _clip(self, params: list[nn.Parameter]) -> torch.Tensor:
        """Each seed's gradient clipped to norm grad_clip by itself (clip_grad_norm_'s arithmetic);
        [S] the norms before."""
        per_seed = [g for p in params if p.grad is not None for g in p.grad.view(self.seeds, -1).unbind(0)]
        norms = torch.stack(torch._foreach_norm(per_seed)).view(-1, self.seeds)  # [tensors, S]
        total = torch.linalg.vector_norm(norms, dim=0)
        scale = (self.sac.grad_clip / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(per_seed, list(scale.repeat(norms.shape[0]).unbind(0)))
        return total
