"""The D2R network written plainly from the spec (sections 1 and 2): the reference that the fast
`D2RNet` is checked against (tests) and measured against (the bench, benchmarks/).

`PlainD2RNet(net)` is built from a D2RNet and shares its layers (so its parameters, their names
and order, and every optimiser that holds them); it computes the same function as `net` with
none of net's code: the MLPs layer by layer, the router's chunk for each node, the mixing
weights as a softmax over the selected logits with 0 elsewhere, dense over all candidate sources,
one module at a time, and ResRouting's two streams. Nothing in it mixes samples, so calling it on
one sample at a time (as the tests do) is a check independent of batching.

Slow on purpose; not used in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from d2r.nets.base import MultiTaskNet, RouteMode
from d2r.nets.d2r_net import D2RNet


def _apply_mlp(seq: nn.Sequential, v: torch.Tensor) -> torch.Tensor:
    """The spec's MLP from the Linear layers of `seq`: ReLU between them, none after the last."""
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        v = F.linear(v, lin.weight, lin.bias)
        if i < len(linears) - 1:
            v = torch.relu(v)
    return v


class PlainD2RNet(MultiTaskNet):
    """`net`'s forward (see `MultiTaskNet.forward`), plainly; holds `net`'s layers, not a copy."""

    def __init__(self, net: D2RNet):
        super().__init__()
        if net.router is None:
            raise ValueError("a fixed_depth D2RNet has no router: its chain is checked by hand")
        self.in_dim, self.out_dim, self.num_tasks = net.in_dim, net.out_dim, net.num_tasks
        self.num_modules, self.top_k = net.num_modules, net.top_k
        self.route_shape = net.route_shape
        # registered in D2RNet's order: the same state_dict keys and parameter order
        self.encoder, self.layers, self.head = net.encoder, net.layers, net.head
        self.task_embed, self.router = net.task_embed, net.router

    def logit_chunks(self, x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(x0 = ReLU(h), [z^1, ..., z^N]): z^n [B, n] scores node n's candidates, modules 0..n-1."""
        h = _apply_mlp(self.encoder, x)
        c = F.one_hot(task.long(), self.num_tasks).to(h.dtype)
        u = F.linear(c, self.task_embed.weight, self.task_embed.bias) * h
        z = _apply_mlp(self.router, u)
        chunks, start = [], 0
        for n in range(1, self.num_modules + 1):  # chunks of size 1, 2, ..., N
            chunks.append(z[:, start : start + n])
            start += n
        return torch.relu(h), chunks

    def select(self, chunks: list[torch.Tensor], task: torch.Tensor, route_mode: RouteMode,
               route: torch.Tensor | None, temperature: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor:
        """The route [B, N, K]: row n-1 = node n's k = min(K, n) sources, then -1."""
        if route_mode == "replayed":
            if route is None:
                raise ValueError("route_mode='replayed' needs route")
            return route.to(device=chunks[0].device, dtype=torch.long)
        z = torch.cat(chunks, dim=1).detach()
        if route_mode == "sampled":
            # k draws without replacement from softmax(z / T_task) = the top k of z / T_task plus
            # Gumbel noise; one uniform per edge in the router's output order, as D2RNet draws
            # them, so that one random stream gives both networks the same route.
            temp = torch.ones_like(z[:, 0]) if temperature is None else temperature.to(z)[task.long()]
            u = torch.empty_like(z).uniform_(generator=generator).clamp(min=torch.finfo(z.dtype).tiny)
            z = z / temp[:, None] - torch.log(-torch.log(u))
        elif route_mode != "greedy":  # greedy: the k largest logits
            raise ValueError(f"unknown route_mode {route_mode!r}")
        out = torch.full((z.shape[0], *self.route_shape), -1, dtype=torch.long, device=z.device)
        for n, scores in enumerate(z.split(list(range(1, self.num_modules + 1)), dim=1), start=1):
            k = min(self.top_k, n)
            out[:, n - 1, :k] = scores.topk(k, dim=1).indices
        return out

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # node n mixes its candidates j < n with dense weights w_j (0 where not selected):
        #   spec 1:  x_n = r_n = sum_j w_j y_j ;  y_n = ReLU(W_n x_n + b_n) + r_n
        #   spec 2:  x_n = sum_j w_j [m_j y_j + (1 - m_j) y_hat_j] ;  y_hat_n = sg(ReLU(W_n x_n + b_n)) + r_n
        x0, chunks = self.logit_chunks(x, task)
        route = self.select(chunks, task, route_mode, route, temperature, generator)
        y = [torch.relu(F.linear(x0, self.layers[0].weight, self.layers[0].bias))]
        y_hat = [y[0].detach()]
        for n in range(1, self.num_modules + 1):  # modules 1..N-1, then the output node N
            z = chunks[n - 1]
            # dense over the n candidates: selected[:, j] when node n reads module j
            sources = route[:, n - 1, : min(self.top_k, n)]
            selected = torch.zeros_like(z, dtype=torch.bool).scatter(1, sources, True)
            w = torch.softmax(z.masked_fill(~selected, float("-inf")), dim=1)  # 0 where not selected
            r = sum(w[:, j : j + 1] * y[j] for j in range(n))
            if resrouting:  # edge j trusted when the current router's full softmax gives it > 1/(n+1)
                m = (torch.softmax(z.detach(), dim=1) > 1.0 / (n + 1)).to(z.dtype)
                x = sum(w[:, j : j + 1] * (m[:, j : j + 1] * y[j] + (1 - m[:, j : j + 1]) * y_hat[j])
                        for j in range(n))
            else:  # spec section 1: the module reads what its shortcut carries
                x = r
            if n == self.num_modules:
                return F.linear(x, self.head.weight, self.head.bias), route
            a = torch.relu(F.linear(x, self.layers[n].weight, self.layers[n].bias))
            y.append(a + r)
            y_hat.append(a.detach() + r)
