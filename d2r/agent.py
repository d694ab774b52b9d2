"""Multi-task SAC with per-task entropy coefficients and D2R's route balancing (spec sections 3-4).

The agent works with any d2r.nets.MultiTaskNet; routing arguments are simply ignored by
networks that do not route. All tensors of an update stay on the agent's device.
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
from d2r.replay import Batch

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class NonFiniteError(FloatingPointError):
    """A NaN or Inf found in an update: the quantity, the network and, where known, the tasks (indices)."""

    def __init__(self, quantity: str, network: str, tasks=(), detail: str = "", during_update: bool = True):
        self.quantity, self.network, self.tasks, self.detail = quantity, network, tuple(tasks), detail
        self.during_update = during_update
        super().__init__(self.describe())

    def describe(self, task_names=None) -> str:
        text = f"non-finite {self.quantity} in {self.network}"
        if self.detail:
            text += f" ({self.detail})"
        if self.tasks:
            names = ", ".join(repr(task_names[t]) if task_names else str(t) for t in self.tasks)
            text += f" from task{'s' if len(self.tasks) > 1 else ''} {names}"
        return text


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


def _all_finite(values) -> bool:
    """One fused check of 0-dim norms and losses: a single host synchronisation."""
    return bool(torch.isfinite(torch.stack(values)).all())


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
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
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

        # fused: one vectorised kernel per tensor (CPU and CUDA); the default on a CPU is a Python
        # loop of ~10 ops per tensor, ~1,300 ops per D2R update
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=sac.lr, fused=True)
        self.q_optim = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=sac.lr, fused=True)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=sac.lr_alpha, fused=True)
        self.refresh_temperature()
        # Per task, updates whose losses dropped the task: [non-finite, over the threshold]. Not
        # state: the trainer reads and clears it every epoch (pop_skipped), before checkpointing.
        self._skipped = torch.zeros(2, num_tasks, dtype=torch.long, device=self.device)
        self._trained = [*self.policy.parameters(), *self.q1.parameters(), *self.q2.parameters(), self.log_alpha]

    @property
    def routed(self) -> bool:
        return bool(getattr(self.policy.net, "routed", False))

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

    # ---- update -------------------------------------------------------------------------
    def _per_task(self, values: torch.Tensor) -> torch.Tensor:
        """[T * b] per-sample values -> [T] per-task means (batches are task-major)."""
        return values.view(self.num_tasks, -1).mean(dim=1)

    def _task_loss(self, per_sample: torch.Tensor, data_ok: torch.Tensor | None = None):
        """Weighted mean over tasks of per-task losses, dropping tasks whose loss exceeds the threshold
        or is not finite, or whose sampled transitions were not finite (`data_ok` [T] False):
        (loss, keep [T] float, finite [T] bool).

        A dropped task contributes exactly zero to the loss and to every gradient (torch.where, not a
        product with the mask, so a NaN of a dropped task does not leak); kept tasks' values are
        bit-for-bit those of a plain product with the mask.
        """
        per_task = self._per_task(per_sample)
        raw = per_task.detach()
        finite = torch.isfinite(raw) if data_ok is None else torch.isfinite(raw) & data_ok
        keep = finite & (raw <= self.sac.loss_mask_threshold)
        weights = self.task_weights() if self.method.task_loss_weights else torch.ones_like(per_task)
        return (weights * torch.where(keep, per_task, 0.0)).mean(), keep.float(), finite

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
        return dataclasses.replace(batch, **clean), ok.view(self.num_tasks, -1).all(dim=1)

    def _fault(self, norms: dict[str, torch.Tensor], losses: dict) -> NonFiniteError:
        """Name what went non-finite (slow path, only after a failed check): a parameter first (the
        cause), then a loss, then a gradient, with the tasks whose own loss was not finite."""
        for name, params in self._named("policy", "q1", "q2", "q1_target", "q2_target", "alpha").items():
            for pname, p in params:
                if not torch.isfinite(p).all():
                    return NonFiniteError("parameter", name, detail=pname)
        for name, (total, raw) in losses.items():
            if not torch.isfinite(total):
                return NonFiniteError("loss", name)
        for name, norm in norms.items():
            if not torch.isfinite(norm):
                raw = losses.get(name, (None, None))[1]
                tasks = [] if raw is None else torch.nonzero(~torch.isfinite(raw)).flatten().tolist()
                return NonFiniteError("gradient", name, tasks)
        return NonFiniteError("value", "/".join(norms) or "update")

    def _named(self, *names: str) -> dict[str, list]:
        groups = {"policy": self.policy, "q1": self.q1, "q2": self.q2, "q1_target": self.q1_target,
                  "q2_target": self.q2_target}
        out = {n: [(f"{n}.{k}", p) for k, p in groups[n].named_parameters()] for n in names if n in groups}
        if "alpha" in names:
            out["alpha"] = [("log_alpha", self.log_alpha)]
        return out

    def pop_skipped(self) -> dict[str, list[int]]:
        """Per task, updates since the last call whose losses dropped it (one host sync); then cleared."""
        counts = self._skipped.tolist()
        self._skipped.zero_()
        return {"nonfinite": counts[0], "over_threshold": counts[1]}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One multi-task SAC step (spec section 4). Returns detached diagnostics."""
        sac, routed = self.sac, self.routed
        batch, data_ok = self._finite_batch(batch)
        alpha = self.log_alpha.exp().detach()[batch.task]          # [B]
        sa = torch.cat([batch.state, batch.action], dim=-1)

        # Critic target: greedy routes everywhere, sampled next action.
        with torch.no_grad():
            next_action, next_log_prob, _ = self.policy.sample(batch.next_state, batch.task, route_mode="greedy")
            next_sa = torch.cat([batch.next_state, next_action], dim=-1)
            q_next = torch.min(self.q1_target(next_sa, batch.task)[0], self.q2_target(next_sa, batch.task)[0])
            target = sac.reward_scale * batch.reward + sac.gamma * (1.0 - batch.done) * (
                q_next.squeeze(-1) - alpha * next_log_prob
            )

        # Critic: each Q on a route sampled with T_tau, with ResRouting.
        q_kw = dict(route_mode="sampled", temperature=self.temperature, resrouting=routed and self.method.resrouting)
        q1 = self.q1(sa, batch.task, **q_kw)[0].squeeze(-1)
        q2 = self.q2(sa, batch.task, **q_kw)[0].squeeze(-1)
        q1_loss, q1_keep, q1_finite = self._task_loss((q1 - target) ** 2, data_ok)
        q2_loss, q2_keep, q2_finite = self._task_loss((q2 - target) ** 2, data_ok)
        self.q_optim.zero_grad(set_to_none=True)
        (q1_loss + q2_loss).backward()
        # The clipping norms double as the gradient check: NaN/Inf anywhere makes the norm non-finite.
        q1_norm = nn.utils.clip_grad_norm_(self.q1.parameters(), sac.grad_clip)
        q2_norm = nn.utils.clip_grad_norm_(self.q2.parameters(), sac.grad_clip)
        if not _all_finite([q1_norm, q2_norm, q1_loss.detach(), q2_loss.detach()]):  # no step on a bad gradient
            raise self._fault({"q1": q1_norm, "q2": q2_norm},
                              {"q1": (q1_loss.detach(), self._per_task(((q1 - target) ** 2).detach())),
                               "q2": (q2_loss.detach(), self._per_task(((q2 - target) ** 2).detach()))})
        self.q_optim.step()

        # Actor: the behaviour route replayed (with ResRouting), or the current router's own path.
        if routed and self.method.policy_route == "replayed":
            pi_kw = dict(route_mode="replayed", route=batch.route, resrouting=self.method.resrouting)
        else:
            pi_kw = dict(route_mode="greedy")
        new_action, log_prob, _ = self.policy.sample(batch.state, batch.task, **pi_kw)
        new_sa = torch.cat([batch.state, new_action], dim=-1)
        # Gradient reaches the action through the Qs; their own weights are frozen for this
        # forward, so the backward skips their weight gradients (which the actor would discard).
        with _frozen(self.q1, self.q2):
            q_new = torch.min(self.q1(new_sa, batch.task)[0], self.q2(new_sa, batch.task)[0]).squeeze(-1)
        pi_loss, pi_keep, pi_finite = self._task_loss(alpha * log_prob - q_new, data_ok)
        self.policy_optim.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), sac.grad_clip)

        # Entropy coefficients, one per task; log alpha clamped to <= 0. The gradient only needs
        # log_prob, so it is taken before the policy step and checked with the policy's. A task
        # dropped for non-finite values is left out here too (its log_prob is meaningless).
        alpha_term = torch.where(pi_finite[batch.task], log_prob.detach() + self.target_entropy, 0.0)
        alpha_loss = -(self.log_alpha[batch.task] * alpha_term).mean()
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        if not _all_finite([pi_norm, pi_loss.detach(), alpha_loss.detach()]):
            raise self._fault({"policy": pi_norm},
                              {"policy": (pi_loss.detach(), self._per_task((alpha * log_prob - q_new).detach())),
                               "alpha": (alpha_loss.detach(), None)})
        self.policy_optim.step()
        self.alpha_optim.step()
        with torch.no_grad():
            self.log_alpha.clamp_(max=0.0)
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), sac.tau)
        self.refresh_temperature()
        # Parameters after the steps: one fused norm per trained tensor (a NaN/Inf makes it non-finite),
        # one host sync.
        if not _all_finite(torch._foreach_norm(self._trained)):
            raise self._fault({}, {})
        with torch.no_grad():
            finite = q1_finite & q2_finite & pi_finite
            self._skipped += torch.stack([~finite, finite & (q1_keep * q2_keep * pi_keep == 0)])

        return {
            "loss_q": (q1_loss + q2_loss).detach() / 2,
            "loss_pi": pi_loss.detach(),
            "loss_alpha": alpha_loss.detach(),
            "masked_tasks": (2 - q1_keep - q2_keep).sum() + (1 - pi_keep).sum(),
            "entropy": -log_prob.detach().mean(),
        }

    # ---- state --------------------------------------------------------------------------
    def optimizer_state(self) -> dict:
        return {
            "policy": self.policy_optim.state_dict(),
            "q": self.q_optim.state_dict(),
            "alpha": self.alpha_optim.state_dict(),
        }

    def load_optimizer_state(self, state: dict) -> None:
        self.policy_optim.load_state_dict(state["policy"])
        self.q_optim.load_state_dict(state["q"])
        self.alpha_optim.load_state_dict(state["alpha"])
