"""Baseline multi-task networks named by the D2R paper (spec section 6).

All four follow :class:`d2r.nets.base.MultiTaskNet`: ``forward(x, task, ...) -> (out, None)``.
None of them is routed (``route_shape = None``); the routing keyword arguments
(``route_mode``, ``route``, ``temperature``, ``resrouting``) are accepted and ignored.
Each network builds the task one-hot itself from ``task`` ([B] int64).

The same class serves the SAC policy (``in_dim = 39`` state, ``out_dim = 2 * 4`` mean and
log-std) and each Q network (``in_dim = 39 + 4`` state and action, ``out_dim = 1``).

==========================  =================  ==============================================
class                       routing level      reference structure
==========================  =================  ==============================================
:class:`MTSACNet`           none               MLP on ``[x; one-hot]`` (Soft-Module release,
                                               ``meta_config/mt10/mtsac.json``: 400-400-400)
:class:`MultiHeadNet`       output level       shared trunk + one linear head per task
                                               (Soft-Module release ``mtmhsac.json``:
                                               400-400 + 400, ``BootstrappedNet`` heads)
:class:`MixtureOfExpertsNet` model level       E expert MLPs on ``x``, task-conditioned gate
:class:`SoftModularNet`     layer level        Yang et al. 2020, ``ModularGatedCascadeCondNet``
==========================  =================  ==============================================

Initialisation (``init``, see :mod:`d2r.nets.init`): ``"release"`` (default) as the D2R and
Soft-Module releases, hidden layers U(+-1/sqrt(out_features)) with bias 0.1 and the last layer
U(+-3e-3); ``"torch"`` keeps PyTorch's default ``nn.Linear`` initialisation. Which layers count
as last: the output layer of every network (the per-task heads of multi-head SAC, each expert's
output layer of the mixture of experts) and, as in the Soft-Module release, the layers that
give Soft Modularization's routing logits.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from d2r.nets import init as inits
from d2r.nets.base import MultiTaskNet, RouteMode
from d2r.nets.mlp import mlp

__all__ = [
    "MTSACNet",
    "MultiHeadNet",
    "MixtureOfExpertsNet",
    "SoftModularNet",
    "parameter_count",
]


def parameter_count(net: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of `net`."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only))


def _linear_init(fan_in: int, shape: Sequence[int]) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the distribution of nn.Linear's default weights
    (kaiming_uniform with a=sqrt(5)) and biases, for stacked (batched) layers."""
    bound = 1.0 / fan_in**0.5
    return torch.empty(*shape).uniform_(-bound, bound)


def _check_task(task: torch.Tensor, x: torch.Tensor, num_tasks: int) -> None:
    if task.dim() != 1 or task.shape[0] != x.shape[0]:
        raise ValueError(f"task must have shape [B]={x.shape[0]}, got {tuple(task.shape)}")
    if task.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"task must be an integer tensor, got {task.dtype}")


class _Baseline(MultiTaskNet):
    """Common bookkeeping of the non-routed baselines (route_shape None: not routed)."""

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, init: str) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0 or num_tasks <= 0:
            raise ValueError("in_dim, out_dim and num_tasks must be positive")
        inits.check_scheme(init)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.num_tasks = int(num_tasks)

    def one_hot(self, task: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(task.long(), self.num_tasks).to(dtype=like.dtype)

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
    ) -> tuple[torch.Tensor, None]:
        # Routing arguments are part of the shared interface and deliberately ignored.
        _check_task(task, x, self.num_tasks)
        return self._forward(x, task), None

    def _forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------- MT-SAC
class MTSACNet(_Baseline):
    """MT-SAC: one shared MLP on ``[x; one-hot(task)]`` with ReLU hidden layers.

    ``[x; c] -> 400 -> ReLU -> 400 -> ReLU -> 400 -> ReLU -> out_dim`` by default, as the
    Soft-Module release's MT-SAC (``hidden_shapes [400, 400, 400]``, observation "with goal
    and id").
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_tasks: int, *, hidden: Sequence[int] = (400, 400, 400),
        init: str = "release",
    ) -> None:
        super().__init__(in_dim, out_dim, num_tasks, init)
        self.hidden = tuple(int(h) for h in hidden)
        self.net = mlp([in_dim + num_tasks, *self.hidden, out_dim], activate_last=False)
        if init == "release":
            inits.release_linears_(self, last=[self.net[-1]])

    def _forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, self.one_hot(task, x)], dim=-1))


# --------------------------------------------------------------------------- Multi-head
class MultiHeadNet(_Baseline):
    """Multi-head SAC (output-level routing).

    Trunk: ReLU MLP on ``[x; one-hot(task)]`` with widths `hidden` (ReLU after the last hidden
    layer too); heads: one ``Linear(hidden[-1] -> out_dim)`` per task, stored batched as
    ``head_weight`` [T, hidden[-1], out_dim] and ``head_bias`` [T, out_dim].

    Sample b's output is head ``task[b]`` applied to its trunk feature. All T heads are
    evaluated as one matmul ([B, H] x [H, T*out]) and the right one is picked with
    ``gather``; gather's backward is exactly zero for the unselected heads, so a head gets
    gradient only from its own task's samples (a dense matmul over B x T*out is cheaper on
    CPU/GPU than materialising W[task] of size [B, H, out]).

    Matches the Soft-Module release's MT-MH-SAC (hidden 400-400 + appended 400, then a
    ``BootstrappedNet`` last layer with one head per task, input with the one-hot).
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_tasks: int, *, hidden: Sequence[int] = (400, 400, 400),
        init: str = "release",
    ) -> None:
        super().__init__(in_dim, out_dim, num_tasks, init)
        self.hidden = tuple(int(h) for h in hidden)
        if not self.hidden:
            raise ValueError("MultiHeadNet needs at least one hidden layer")
        self.trunk = mlp([in_dim + num_tasks, *self.hidden], activate_last=True)  # the heads read its ReLU
        h = self.hidden[-1]
        self.head_weight = nn.Parameter(_linear_init(h, (num_tasks, h, out_dim)))
        self.head_bias = nn.Parameter(_linear_init(h, (num_tasks, out_dim)))
        if init == "release":
            inits.release_linears_(self.trunk, last=[])
            inits.last_(self.head_weight, self.head_bias)  # the heads are the network's last layer

    def _forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        z = self.trunk(torch.cat([x, self.one_hot(task, x)], dim=-1))  # [B, H]
        T, H, O = self.head_weight.shape
        w = self.head_weight.permute(1, 0, 2).reshape(H, T * O)  # [H, T*O]
        all_heads = (z @ w).view(-1, T, O) + self.head_bias  # [B, T, O]
        idx = task.long().view(-1, 1, 1).expand(-1, 1, O)
        return all_heads.gather(1, idx).squeeze(1)  # [B, O]


# --------------------------------------------------------------------------- MoE
class MixtureOfExpertsNet(_Baseline):
    """Mixture of experts (model-level routing).

    Experts: `num_experts` independent MLPs on the input ``x`` only (no one-hot),
    ``x -> hidden[0] -> ReLU -> ... -> hidden[-1] -> ReLU -> out_dim``; each expert is a
    complete network producing an output of size `out_dim`.
    Gate: ``g = softmax(Linear(one-hot(task) -> E))`` [B, E], i.e. a learned per-task mixture
    (depends on the task only, not on the state).
    Output: ``sum_e g_e * expert_e(x)``.

    The experts are batched: each layer stores a stacked weight [E, d_in, d_out] and runs
    as one batched matmul (the first layer, whose input is shared, as a single matmul).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        *,
        num_experts: int = 4,
        hidden: Sequence[int] = (400, 400),
        init: str = "release",
    ) -> None:
        super().__init__(in_dim, out_dim, num_tasks, init)
        if num_experts < 1:
            raise ValueError("num_experts must be >= 1")
        self.num_experts = int(num_experts)
        self.hidden = tuple(int(h) for h in hidden)
        dims = (in_dim, *self.hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(_linear_init(d_in, (self.num_experts, d_in, d_out))))
            self.biases.append(nn.Parameter(_linear_init(d_in, (self.num_experts, d_out))))
        self.gate = nn.Linear(num_tasks, self.num_experts)
        if init == "release":
            inits.release_linears_(self.gate, last=[])
            *hidden_layers, last_layer = zip(self.weights, self.biases)
            for weight, bias in hidden_layers:  # stacked [E, d_in, d_out]: a Linear of d_out outputs
                inits.hidden_(weight, bias, weight.shape[-1])
            inits.last_(*last_layer)

    def gate_weights(self, task: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """[B, E] softmax mixture weights for the tasks in `task`."""
        dtype_ref = like if like is not None else self.gate.weight
        return torch.softmax(self.gate(self.one_hot(task, dtype_ref)), dim=-1)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """[B, E, out_dim] outputs of every expert."""
        E = self.num_experts
        n_layers = len(self.weights)
        w0, b0 = self.weights[0], self.biases[0]
        d_in, d_out = w0.shape[1], w0.shape[2]
        # shared input: one matmul for all experts' first layer
        h = (x @ w0.permute(1, 0, 2).reshape(d_in, E * d_out)).view(-1, E, d_out) + b0
        h = h.transpose(0, 1)  # [E, B, d]
        for i in range(1, n_layers):
            h = torch.relu(h)
            h = torch.baddbmm(self.biases[i].unsqueeze(1), h, self.weights[i])
        return h.transpose(0, 1)  # [B, E, out]

    def _forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        g = self.gate_weights(task, x)  # [B, E]
        y = self.expert_outputs(x)  # [B, E, O]
        return torch.bmm(g.unsqueeze(1), y).squeeze(1)


# --------------------------------------------------------------------------- Soft Modularization
class SoftModularNet(_Baseline):
    """Soft Modularization (Yang et al., NeurIPS 2020), layer-level routing.

    Follows the authors' release (RchalYang/Soft-Module, ``torchrl/networks/nets.py``,
    ``ModularGatedCascadeCondNet`` with ``add_bn=False, pre_softmax=False, cond_ob=True``;
    config ``modular_4_4_2_128``: 4 layers x 4 modules of width 128, 2 routing layers of 256,
    encoder 400-400, task embedding 400):

    * state encoder ``f(s)``: MLP ``x -> 400 -> ReLU -> 400`` (no activation on the output);
    * task embedding ``h(z) = Linear(one-hot -> embed_dim)`` (``em_hidden_shapes [400]``);
    * routing input ``u = f(s) * h(z)``; routing trunk
      ``e = W_2 ReLU(W_1 ReLU(u))`` (``routing_layers`` Linear layers of ``routing_hidden``,
      no activation after the last);
    * first routing matrix ``p^1 = softmax_rows(W_d^0 ReLU(e))`` [n, n];
    * further matrices ``p^{l+1} = softmax_rows(W_d^l ReLU(W_u^l c^l * e))`` where the
      condition ``c^l`` is, by default (``routing_condition="all"``, the release's
      "cascade"), the concatenation of the flattened ``p^1..p^l``; with
      ``routing_condition="previous"`` it is ``p^l`` only, as the paper's formula
      ``g^{l+1} = W_d^l(ReLU(W_u^l p^l * (h(z) f(s))))``;
    * output weights ``q = softmax(W_out ReLU(W_u^out c^{L-1} * e))`` [n] over the last
      layer's modules (release); with ``output_routing=False`` the last layer's modules are
      simply summed instead;
    * modules (base network): layer 0 module j: ``y^0_j = A^0_j ReLU(f(s))``
      (``Linear(encoder[-1] -> module_width)``); layer l >= 1 module j:
      ``y^l_j = A^l_j ReLU(sum_i p^l[j, i] y^{l-1}_i)`` (``Linear(width -> width)``);
      i.e. each module is Linear+ReLU with the ReLU applied after the soft mixing, as in
      the release; output ``Linear(width -> out_dim)(ReLU(sum_j q_j y^{L-1}_j))``.

    ``p^l[b, j, i]`` is the weight of source module i (layer l-1) for target module j
    (layer l); each row sums to 1. There are ``num_layers - 1`` such [n, n] matrices.

    Deviations from the paper's text (all taken from the official code, which produced the
    published numbers): the routing trunk has `routing_layers` hidden layers between
    ``f(s) * h(z)`` and the first ``W_d``; the multiplicative conditioning uses the trunk
    output ``e`` (not ``f(s) * h(z)`` itself); routing for layer l+1 is conditioned on all
    previous routing matrices (switch: ``routing_condition``); the last layer is combined
    with learned soft weights (switch: ``output_routing``); ReLU is applied after mixing.
    Not copied: the release's BatchNorm option (off in its configs).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        *,
        num_layers: int = 4,
        num_modules: int = 4,
        module_width: int = 128,
        encoder: Sequence[int] = (400, 400),
        embed_dim: int = 400,
        routing_hidden: int = 256,
        routing_layers: int = 2,
        routing_condition: Literal["all", "previous"] = "all",
        output_routing: bool = True,
        init: str = "release",
    ) -> None:
        super().__init__(in_dim, out_dim, num_tasks, init)
        encoder = tuple(int(h) for h in encoder)
        if not encoder or encoder[-1] != embed_dim:
            raise ValueError(
                f"the encoder's last width ({encoder[-1] if encoder else None}) must equal "
                f"embed_dim ({embed_dim}): the routing input is f(s) * h(z)"
            )
        if num_layers < 2:
            raise ValueError("num_layers must be >= 2 (at least one routing matrix)")
        if num_modules < 1 or routing_layers < 1:
            raise ValueError("num_modules and routing_layers must be >= 1")
        if routing_condition not in ("all", "previous"):
            raise ValueError("routing_condition must be 'all' or 'previous'")
        self.num_layers = int(num_layers)
        self.num_modules = n = int(num_modules)
        self.module_width = W = int(module_width)
        self.encoder_dims = encoder
        self.embed_dim = int(embed_dim)
        self.routing_hidden = R = int(routing_hidden)
        self.routing_condition = routing_condition
        self.output_routing = bool(output_routing)

        # f(s): ReLU between layers, none after the last
        self.encoder = mlp([in_dim, *encoder], activate_last=False)
        # h(z)
        self.task_embed = nn.Linear(num_tasks, embed_dim)
        # routing trunk (applied to ReLU(f(s) * h(z)))
        self.routing_trunk = mlp([embed_dim] + [R] * routing_layers, activate_last=False)

        nn2 = n * n
        n_mats = self.num_layers - 1
        self.route_out = nn.ModuleList([nn.Linear(R, nn2) for _ in range(n_mats)])  # W_d^l
        # W_u^l for l = 1 .. n_mats-1 (conditions p^2..p^{L-1}); plus one for the output.
        cond_in = [self._cond_dim(l) for l in range(1, n_mats)]
        self.route_cond = nn.ModuleList([nn.Linear(c, R) for c in cond_in])
        if self.output_routing:
            self.out_cond = nn.Linear(self._cond_dim(n_mats), R)
            self.out_gate = nn.Linear(R, n)

        # modules, batched per layer: layer 0 shares its input -> one Linear to n*W
        self.layer0 = nn.Linear(encoder[-1], n * W)
        self.module_weight = nn.ParameterList()
        self.module_bias = nn.ParameterList()
        for _ in range(1, self.num_layers):
            self.module_weight.append(nn.Parameter(_linear_init(W, (n, W, W))))
            self.module_bias.append(nn.Parameter(_linear_init(W, (n, W))))
        self.head = nn.Linear(W, out_dim)
        if init == "release":
            # the Soft-Module release gives its routing-logit layers the last layers' scheme
            logit_layers = [*self.route_out, *([self.out_gate] if self.output_routing else [])]
            inits.release_linears_(self, last=[*logit_layers, self.head])
            # layer 0 and the stacked modules stand for n Linear layers of W outputs each
            inits.hidden_(self.layer0.weight, self.layer0.bias, W)
            for weight, bias in zip(self.module_weight, self.module_bias):
                inits.hidden_(weight, bias, W)

    def _cond_dim(self, num_prev: int) -> int:
        """Input size of the conditioning layer that sees `num_prev` routing matrices."""
        nn2 = self.num_modules * self.num_modules
        return num_prev * nn2 if self.routing_condition == "all" else nn2

    # -- routing network
    def _routing(
        self, x: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Returns (f(s) [B, D], [p^1..p^{L-1}] each [B, n, n], output weights [B, n] or None)."""
        n = self.num_modules
        f = self.encoder(x)
        u = f * self.task_embed(self.one_hot(task, x))
        e = self.routing_trunk(torch.relu(u))  # [B, R]
        probs: list[torch.Tensor] = []
        flat: list[torch.Tensor] = []
        logits = self.route_out[0](torch.relu(e))
        for l in range(self.num_layers - 1):
            if l > 0:
                cond = torch.cat(flat, -1) if self.routing_condition == "all" else flat[-1]
                logits = self.route_out[l](torch.relu(self.route_cond[l - 1](cond) * e))
            p = torch.softmax(logits.view(-1, n, n), dim=-1)
            probs.append(p)
            flat.append(p.reshape(-1, n * n))
        q = None
        if self.output_routing:
            cond = torch.cat(flat, -1) if self.routing_condition == "all" else flat[-1]
            q = torch.softmax(self.out_gate(torch.relu(self.out_cond(cond) * e)), dim=-1)
        return f, probs, q

    def routing_weights(
        self, x: torch.Tensor, task: torch.Tensor, *, include_output: bool = False
    ) -> list[torch.Tensor]:
        """The soft routing matrices ``[p^1, ..., p^{L-1}]``, each [B, n, n] with
        ``p[b, j, i]`` = weight of previous-layer module i for module j (rows sum to 1).
        With ``include_output=True`` (and ``output_routing``) the output weights are appended
        as a [B, 1, n] tensor."""
        _check_task(task, x, self.num_tasks)
        _, probs, q = self._routing(x, task)
        if include_output and q is not None:
            probs = probs + [q.unsqueeze(1)]
        return probs

    def _forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        n, W = self.num_modules, self.module_width
        f, probs, q = self._routing(x, task)
        y = self.layer0(torch.relu(f)).view(-1, n, W)  # [B, n, W] (pre-activation)
        for l in range(1, self.num_layers):
            mixed = torch.relu(torch.bmm(probs[l - 1], y))  # [B, n, W]: row j mixes sources
            # module j of layer l on its own input: [n, B, W] x [n, W, W]
            y = torch.baddbmm(
                self.module_bias[l - 1].unsqueeze(1), mixed.transpose(0, 1), self.module_weight[l - 1]
            ).transpose(0, 1)
        if q is not None:
            z = torch.bmm(q.unsqueeze(1), y).squeeze(1)
        else:
            z = y.sum(dim=1)
        return self.head(torch.relu(z))
