"""Multi-task SAC with per-task entropy coefficients and D2R's route balancing (spec sections 3-4).

The agent works with any d2r.nets.MultiTaskNet; routing arguments are simply ignored by
networks that do not route. All tensors of an update stay on the agent's device.
`MultiTaskSAC._update` is the update, top to bottom; the loss terms follow it.

The update runs in one of three modes (`sac.cuda_graphs`, resolve_cuda_graphs):
- off: as written, with two host reads per update (the NaN/Inf checks, d2r.sac.nonfinite), which
  raise NonFiniteError in the update that fails;
- eager (`on` on a CPU): the same update without any host read: its checks are recorded on the
  device and read once per epoch (pop_fault); the D2R module stack runs its capturable variant;
- graph (`on` on CUDA): the eager mode's update captured once as a CUDA graph and replayed
  (d2r.sac.cuda_graph), with capturable optimisers.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from d2r.config import MethodConfig, SACConfig
from d2r.nets import build_net
from d2r.nets.base import MultiTaskNet
from d2r.runtime import seeding
from d2r.sac.nonfinite import NonFiniteError, UpdateChecks
from d2r.sac.replay import Batch

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

#: what `cuda_graphs: auto` means on a CUDA device: False (off) until benchmarks/gpu_check.sh has
#: measured the CUDA-graph update faster there. On a CPU auto is always off.
AUTO_CUDA_GRAPHS = False


def resolve_cuda_graphs(setting: str, device: torch.device | str) -> str:
    """`sac.cuda_graphs` (auto | on | off) on `device` -> the update mode: off, eager or graph."""
    device = torch.device(device)
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"cuda_graphs must be auto, on or off, got {setting!r}")
    on = setting == "on" or (setting == "auto" and device.type == "cuda" and AUTO_CUDA_GRAPHS)
    if not on:
        return "off"
    return "graph" if device.type == "cuda" else "eager"


@contextmanager
def _frozen(*nets: nn.Module):
    """Parameters of `nets` not requiring grad inside the block (autograd records that at forward)."""
    params = [p for net in nets for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def behaviour_action(policy: "TanhGaussianPolicy", temperature: torch.Tensor, state, task,
                     generator: torch.Generator | None = None):
    """Data collection: a route sampled with the per-task temperatures, a sampled action."""
    action, _, route = policy.sample(state, task, generator, route_mode="sampled", temperature=temperature)
    return action, route


class TanhGaussianPolicy(nn.Module):
    """Policy head around a multi-task network whose output is [mean; log-std]."""

    def __init__(self, net: MultiTaskNet, action_dim: int):
        super().__init__()
        self.net = net
        self.action_dim = action_dim

    def distribution(self, state, task, **route_kw):
        out, route = self.net(state, task, **route_kw)
        mean, log_std = out.split(self.action_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), route

    def sample(self, state, task, generator: torch.Generator | None = None, **route_kw):
        """Reparameterised tanh-Gaussian sample: (action, log-prob [B], route).

        `generator` drives both the route sampling and the action noise (default: global RNG).
        """
        mean, log_std, route = self.distribution(state, task, generator=generator, **route_kw)
        std = log_std.exp()
        noise = seeding.randn(mean.shape, generator, mean.device, mean.dtype)
        u = mean + std * noise
        # log N(u; mean, std) minus the tanh Jacobian, log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob, route

    def greedy(self, state, task):
        """Evaluation action tanh(mean) on the greedy route."""
        mean, _, route = self.distribution(state, task, route_mode="greedy")
        return torch.tanh(mean), route


class MultiTaskSAC(nn.Module):
    def __init__(self, method: MethodConfig, sac: SACConfig, state_dim: int, action_dim: int,
                 num_tasks: int, device: torch.device | str = "cpu"):
        super().__init__()
        self.method, self.sac = method, sac
        self.num_tasks, self.action_dim = num_tasks, action_dim
        #: entries of the per-task tensors (log_alpha, temperature, the loss terms): T here, S * T in
        #: a seed-stacked agent (d2r.sac.stacked)
        self.task_rows = num_tasks
        #: the update's random stream: None, torch's global one (a seed-stacked agent: one per seed)
        self.update_generator = None

        def net(in_dim, out_dim):
            return build_net(method.net, in_dim, out_dim, num_tasks, **method.net_args)

        self.policy = TanhGaussianPolicy(net(state_dim, 2 * action_dim), action_dim)
        self.q1, self.q2 = net(state_dim + action_dim, 1), net(state_dim + action_dim, 1)
        self.q1_target, self.q2_target = net(state_dim + action_dim, 1), net(state_dim + action_dim, 1)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(num_tasks))
        self.target_entropy = -float(action_dim)
        # Per-task routing temperatures T_tau, recomputed after every update (no gradient).
        self.register_buffer("temperature", torch.full((num_tasks,), float(method.temperature)))
        self.to(device)
        self.device = torch.device(device)
        self.update_mode = resolve_cuda_graphs(sac.cuda_graphs, self.device)
        for module in (self.policy.net, self.q1, self.q2, self.q1_target, self.q2_target):
            if hasattr(type(module), "capturable"):  # D2R's module stack (the baselines have no host reads)
                module.capturable = self.deferred_checks

        # fused: one vectorised kernel per tensor (CPU and CUDA); the default on a CPU is a Python
        # loop of ~10 ops per tensor, ~1,300 ops per D2R update. capturable: required by a CUDA
        # graph's capture (the fused kernels keep their step counts on the device anyway)
        adam = dict(fused=True, capturable=self.update_mode == "graph")
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=sac.lr, **adam)
        self.q_optim = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=sac.lr, **adam)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=sac.lr_alpha, **adam)
        self.refresh_temperature()
        #: per task, updates whose losses dropped the task: [non-finite, over the threshold]. Not
        #: state: the trainer reads and clears it every epoch (pop_skipped), before checkpointing.
        self.skipped = torch.zeros(2, num_tasks, dtype=torch.long, device=self.device)
        networks = {"policy": self.policy, "q1": self.q1, "q2": self.q2, "q1_target": self.q1_target,
                    "q2_target": self.q2_target}
        params = {name: [(f"{name}.{k}", p) for k, p in net.named_parameters()] for name, net in networks.items()}
        params["alpha"] = [("log_alpha", self.log_alpha)]
        trained = [*self.policy.parameters(), *self.q1.parameters(), *self.q2.parameters(), self.log_alpha]
        self.checks = UpdateChecks(params, trained, num_tasks, self.device, deferred=self.deferred_checks)
        self._graphed = None  # the CUDA graph of the update (graph mode), made at the first update

    @property
    def deferred_checks(self) -> bool:
        """The update has no host reads: its NaN/Inf checks are read once per epoch (pop_fault)."""
        return self.update_mode != "off"

    @property
    def routed(self) -> bool:
        return self.policy.net.routed

    def task_weights(self) -> torch.Tensor:
        """num_tasks * softmax(-log alpha): mean 1 over tasks, larger for tasks with smaller alpha."""
        return self.num_tasks * torch.softmax(-self.log_alpha.detach(), dim=0)

    def refresh_temperature(self) -> None:
        if self.method.route_balance:
            self.temperature.copy_(self.method.temperature * self.task_weights())
        else:
            self.temperature.fill_(self.method.temperature)

    # ---- acting -------------------------------------------------------------------------
    def act(self, state: torch.Tensor, task: torch.Tensor, generator: torch.Generator | None = None):
        return behaviour_action(self.policy, self.temperature, state, task, generator)

    @torch.no_grad()
    def act_greedy(self, state: torch.Tensor, task: torch.Tensor):
        return self.policy.greedy(state, task)

    # ---- the update ---------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One multi-task SAC step (spec section 4), in `sac.update_order`. Returns detached diagnostics.

        In graph mode (cuda_graphs on, on CUDA) the step is the replay of a CUDA graph of _update
        (d2r.sac.cuda_graph.GraphedUpdate): the batch is copied into its static inputs."""
        if self.update_mode == "graph":
            if self._graphed is None:
                from d2r.sac.cuda_graph import GraphedUpdate

                self._graphed = GraphedUpdate(self._update)
            with torch.cuda.device(self.device):  # its streams and capture are the current device's
                return self._graphed(batch)
        return self._update(batch)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.checks.begin_update()
        batch, data_ok = self._finite_batch(batch)
        alpha = self.log_alpha.exp().detach()[self._task_index(batch)]          # [B]
        if self.sac.update_order == "joint":
            # The release: every loss from the parameters before the step, one backward, then every
            # optimiser steps (the Qs' weights get no gradient from J_pi: they are frozen there).
            terms = self._critic_terms(batch, alpha)
            actor_terms, log_prob = self._actor_terms(batch, alpha)
            terms.update(actor_terms)
            loss, keep, finite = self._masked_mean(terms, data_ok)
            self._step(loss, terms, keep, ("policy", "q1", "q2", "alpha"))
        else:
            terms, log_prob, keep, finite = self._sequential_steps(batch, alpha, data_ok)
        with torch.no_grad():
            self.log_alpha.clamp_(max=0.0)
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):  # Polyak
                torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), self.sac.tau)
        self.refresh_temperature()
        self.checks.after_step()
        with torch.no_grad():
            self.skipped += torch.stack([~finite, finite & ~keep])
            kept = {name: self._run_mean(torch.where(keep, value.detach(), 0.0)) for name, value in terms.items()}
        return {
            "loss_q": (kept["q1"] + kept["q2"]) / 2,
            "loss_pi": kept["policy"],
            "loss_alpha": kept["alpha"],
            "masked_tasks": self._run_sum(~keep),
            "entropy": -self._run_mean(log_prob.detach()),
        }

    def _step(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], keep: torch.Tensor,
              groups: tuple[str, ...]) -> None:
        """Backward of `loss`, each group's gradient clipped to norm grad_clip, checked, stepped."""
        optim_of = {"policy": self.policy_optim, "q1": self.q_optim, "q2": self.q_optim, "alpha": self.alpha_optim}
        stepped = {optim_of[g] for g in groups}  # Q1 and Q2 share theirs
        optims = [o for o in (self.q_optim, self.policy_optim, self.alpha_optim) if o in stepped]
        for optim in optims:
            optim.zero_grad(set_to_none=True)
        self._backward(loss)
        params = {"policy": self.policy.parameters, "q1": self.q1.parameters, "q2": self.q2.parameters,
                  "alpha": lambda: [self.log_alpha]}
        # The norms before clipping double as the gradient check: a NaN/Inf anywhere makes one non-finite.
        norms = {g: self._clip(list(params[g]())) for g in groups}
        self.checks.before_step(norms, terms, loss, keep)
        for optim in optims:
            optim.step()

    def _sequential_steps(self, batch: Batch, alpha: torch.Tensor, data_ok: torch.Tensor):
        """`update_order: sequential`: the critics step first; then the actor and alpha, through the
        updated critics. Each phase drops a task whose own summed terms (J_Q1 + J_Q2, then J_pi +
        J_alpha) are over the threshold."""
        terms = self._critic_terms(batch, alpha)
        loss_q, keep, finite = self._masked_mean(terms, data_ok)
        self._step(loss_q, terms, keep, ("q1", "q2"))
        actor_terms, log_prob = self._actor_terms(batch, alpha)
        loss_pi, keep_pi, finite_pi = self._masked_mean(actor_terms, data_ok)
        self._step(loss_pi, actor_terms, keep_pi, ("policy", "alpha"))
        return {**terms, **actor_terms}, log_prob, keep & keep_pi, finite & finite_pi

    # ---- the loss terms of spec section 4, per task ([T]) -------------------------------
    # J_pi and J_Q weighted by w_tau where the method weights task losses, J_alpha never (as the release).
    def _critic_terms(self, batch: Batch, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """J_Q1, J_Q2: each Q on a route sampled with T_tau (ResRouting where the method has it)
        against y = r + gamma (1 - d) (min Qbar(s', a'; greedy) - alpha log pi(a'|s'; greedy))."""
        sac = self.sac
        with torch.no_grad():
            next_action, next_log_prob, _ = self.policy.sample(batch.next_state, batch.task, self.update_generator,
                                                               route_mode="greedy")
            next_sa = torch.cat([batch.next_state, next_action], dim=-1)
            q_next = torch.min(self.q1_target(next_sa, batch.task)[0], self.q2_target(next_sa, batch.task)[0])
            target = sac.reward_scale * batch.reward + sac.gamma * (1.0 - batch.done) * (
                q_next.squeeze(-1) - alpha * next_log_prob
            )
        sa = torch.cat([batch.state, batch.action], dim=-1)
        q_kw = dict(route_mode="sampled", temperature=self._route_temperature(), resrouting=self._resrouting,
                    generator=self.update_generator)
        w = self._loss_weights()
        return {name: w * self._per_task((q(sa, batch.task, **q_kw)[0].squeeze(-1) - target) ** 2)
                for name, q in (("q1", self.q1), ("q2", self.q2))}

    def _actor_terms(self, batch: Batch, alpha: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """J_pi and J_alpha, and log pi(a_new|s) [B]. The policy on the behaviour route replayed
        (with ResRouting) or on the current router's own path; the action judged by the current Qs
        on their greedy route, with ResRouting as the release (its Qs are in training mode)."""
        if self.routed and self.method.policy_route == "replayed":
            pi_kw = dict(route_mode="replayed", route=batch.route, resrouting=self.method.resrouting)
        else:
            pi_kw = dict(route_mode="greedy")
        new_action, log_prob, _ = self.policy.sample(batch.state, batch.task, self.update_generator, **pi_kw)
        new_sa = torch.cat([batch.state, new_action], dim=-1)
        # Gradient reaches the action through the Qs; their own weights are frozen for this forward
        # (the release uses copies), so the backward skips weight gradients nobody would use.
        q_kw = dict(route_mode="greedy", resrouting=self._resrouting)
        with _frozen(self.q1, self.q2):
            q_new = torch.min(self.q1(new_sa, batch.task, **q_kw)[0], self.q2(new_sa, batch.task, **q_kw)[0])
        alpha_term = -self.log_alpha[self._task_index(batch)] * (log_prob.detach() + self.target_entropy)
        terms = {"policy": self._loss_weights() * self._per_task(alpha * log_prob - q_new.squeeze(-1)),
                 "alpha": self._per_task(alpha_term)}
        return terms, log_prob

    @property
    def _resrouting(self) -> bool:
        return self.routed and self.method.resrouting

    def _loss_weights(self) -> torch.Tensor:
        return self.task_weights() if self.method.task_loss_weights else torch.ones(self.task_rows, device=self.device)

    def _per_task(self, values: torch.Tensor) -> torch.Tensor:
        """[T * b] per-sample values -> [T] per-task means (batches are task-major)."""
        return values.view(self.task_rows, -1).mean(dim=1)

    # ---- what a seed-stacked agent (d2r.sac.stacked) does per seed ------------------------------
    def _task_index(self, batch: Batch) -> torch.Tensor:
        """[B] each sample's entry in the per-task tensors."""
        return batch.task

    def _route_temperature(self) -> torch.Tensor:
        return self.temperature

    def _run_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of the run's values (per task or per sample)."""
        return values.mean()

    def _run_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum()

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _clip(self, params: list[nn.Parameter]) -> torch.Tensor:
        """Clip the gradient of `params` to norm grad_clip; its norm before."""
        return nn.utils.clip_grad_norm_(params, self.sac.grad_clip)

    def _masked_mean(self, terms: dict[str, torch.Tensor], data_ok: torch.Tensor):
        """Mean over tasks of L_tau = the sum of `terms` ([T] per-task losses, already weighted),
        dropping a task from all of them when its L_tau exceeds the threshold or is not finite, or
        when its sampled transitions were not finite (`data_ok` [T] False), as the release's
        extreme-task mask: (loss, keep [T] bool, finite [T] bool).

        A dropped task contributes exactly zero to the loss and to every gradient (torch.where, not
        a product with the mask, so a NaN of a dropped task does not leak).
        """
        total = sum(terms.values())
        raw = total.detach()
        finite = torch.isfinite(raw) & data_ok
        keep = finite & (raw <= self.sac.loss_mask_threshold)
        return self._run_mean(torch.where(keep, total, 0.0)), keep, finite

    def _finite_batch(self, batch: Batch) -> tuple[Batch, torch.Tensor]:
        """Zero the non-finite values of a sampled batch; [T] flags: all of the task's samples were finite.

        A task with a NaN/Inf transition is dropped from this update's losses like an extreme task
        (zeroing keeps its forward pass finite, so its zero gradient stays zero). Finite values pass
        through unchanged.
        """
        ok = torch.ones_like(batch.reward, dtype=torch.bool)
        clean = {}
        for name in ("state", "action", "reward", "next_state"):
            value = getattr(batch, name)
            finite = torch.isfinite(value)
            clean[name] = torch.where(finite, value, 0.0)
            ok &= finite if finite.dim() == 1 else finite.all(dim=-1)
        return dataclasses.replace(batch, **clean), ok.view(self.task_rows, -1).all(dim=1)

    # ---- what the trainer reads once per epoch ------------------------------------------
    def pop_fault(self) -> NonFiniteError | None:
        """The first fault the deferred checks recorded since the last call (d2r.sac.nonfinite)."""
        return self.checks.pop()

    def pop_skipped(self) -> dict[str, list[int]]:
        """Per task, updates since the last call whose losses dropped it (one host sync); then cleared."""
        counts = self.skipped.tolist()
        self.skipped.zero_()
        return {"nonfinite": counts[0], "over_threshold": counts[1]}

    # ---- state --------------------------------------------------------------------------
    def optimizer_state(self) -> dict:
        return {
            "policy": self.policy_optim.state_dict(),
            "q": self.q_optim.state_dict(),
            "alpha": self.alpha_optim.state_dict(),
        }

    def load_optimizer_state(self, state: dict) -> None:
        self._graphed = None  # the optimisers' state tensors are replaced: a graph would use the old ones
        for optim, name in ((self.policy_optim, "policy"), (self.q_optim, "q"), (self.alpha_optim, "alpha")):
            optim.load_state_dict(state[name])
            # load_state_dict takes the writer's settings too; capturable must be this run's mode (with
            # cuda_graphs auto, the writer may have resolved it otherwise), or a graph capture fails
            for group in optim.param_groups:
                group["capturable"] = self.update_mode == "graph"
